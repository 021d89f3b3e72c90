// `problems`, `chainctl chain` and the one-value element files.
#include <fmt/format.h>

#include <string>

#include "core/render/render.h"
#include "core/render/render_util.h"
#include "core/util/escape.h"

namespace chainfs::core {

std::string RenderProblemLines(const std::vector<Problem>& problems) {
  std::string out;
  for (const Problem& p : problems) {
    // The resolver builds messages from escaped tokens; OneLine guards
    // against any producer that did not, without doubling their backslashes.
    out += fmt::format("{}: {}", p.index, OneLine(p.message));
    if (!p.fix.empty()) out += fmt::format(" -- fix: {}", OneLine(p.fix));
    out += '\n';
  }
  return out;
}

std::string RenderProblems(const Chain& chain) { return RenderProblemLines(chain.problems); }

std::vector<Problem> InUseProblems(const Chain& chain, const std::vector<int>& held) {
  std::vector<Problem> out;
  for (int index : held) {
    if (index < 0 || size_t(index) >= chain.elements.size()) continue;
    out.push_back(Problem{
        index, ProblemKind::kInUse,
        fmt::format("in use: a process holds '{}' open for writing (QEMU's image locks), so its "
                    "guest data may change while it is read; chainfs reads it as qemu-img -U "
                    "does and the kernel keeps none of it",
                    OneLine(chain.elements[size_t(index)].path)),
        "for a stable copy, pause or shut off the domain first"});
  }
  return out;
}

std::string RenderInUse(const Chain& chain, const std::vector<int>& held) {
  return RenderProblemLines(InUseProblems(chain, held));
}

Json ProblemsJson(const Chain& chain, const std::vector<Problem>& problems) {
  Json out = Json::MakeArray();
  for (const Problem& p : problems) {
    Json o = Json::MakeObject();
    o.Set("index", p.index);
    // The element the problem is about; none past the end (a chain too deep).
    if (p.index >= 0 && size_t(p.index) < chain.elements.size()) {
      o.Set("path", chain.elements[size_t(p.index)].path);
    } else {
      o.Set("path", nullptr);
    }
    o.Set("code", ProblemCode(p.kind));
    o.Set("severity", IsWarning(p.kind) ? "warning" : "error");
    o.Set("message", OneLine(p.message));
    o.Set("fix", OneLine(p.fix));
    Json fixes = Json::MakeArray();
    for (const Fix& f : p.fixes) {
      Json fix = Json::MakeObject();
      fix.Set("kind", FixKindName(f.kind));
      fix.Set("text", f.text);
      fixes.Push(std::move(fix));
    }
    o.Set("fixes", std::move(fixes));
    out.Push(std::move(o));
  }
  return out;
}

std::string RenderProblemsJson(const Chain& chain, const std::vector<int>& held) {
  std::vector<Problem> all = chain.problems;
  std::vector<Problem> in_use = InUseProblems(chain, held);
  all.insert(all.end(), in_use.begin(), in_use.end());
  return ProblemsJson(chain, all).Dump(4) + "\n";
}

std::string RenderChainList(const Chain& chain) {
  std::string out;
  for (const ChainElement& element : chain.elements) {
    std::string format = render_internal::ElementFormat(element);
    out += fmt::format("{} {} {}\n", element.index, format.empty() ? "?" : OneLine(format),
                       OneLine(element.path));
  }
  return out;
}

std::string RenderElementField(const ChainElement& element, std::string_view field) {
  // Values from an image stay as recorded unless they hold a control
  // character (then escaped, see OneValue): one value, one line.
  auto line = [](std::string_view value) { return OneValue(value) + "\n"; };
  if (field == "path") return line(element.path);
  if (field == "format") {
    std::string format = render_internal::ElementFormat(element);
    return format.empty() ? "" : line(format);
  }
  if (field == "allocation") {
    return element.stat ? line(fmt::format("{}", element.stat->allocation)) : "";
  }
  // The rest comes from the image's own header: unknown when it was not read.
  if (!element.meta) return "";
  const ImageMeta& meta = *element.meta;
  if (field == "backing") return meta.backing ? line(*meta.backing) : "";
  if (field == "backing_format") return meta.backing_format ? line(*meta.backing_format) : "";
  if (field == "capacity") return line(fmt::format("{}", meta.virtual_size));
  return "";
}

}  // namespace chainfs::core
