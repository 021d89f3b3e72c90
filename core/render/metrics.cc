#include "core/render/metrics.h"

#include <fmt/format.h>

namespace chainfs::core {
namespace {

// A label value: backslash, double quote and line feed escaped.
std::string LabelValue(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

void Family(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

std::string RenderMetrics(const std::vector<PoolFigures>& pools,
                          const std::vector<DomainFigures>& domains,
                          const std::vector<StatFigure>& stats) {
  std::string out;
  Family(out, "chainfs_pool_volumes", "gauge", "Volumes of each pool.");
  for (const PoolFigures& p : pools) {
    out += fmt::format("chainfs_pool_volumes{{pool=\"{}\"}} {}\n", LabelValue(p.pool), p.volumes);
  }
  Family(out, "chainfs_pool_chains", "gauge",
         "Volume chains by state: complete (walked to the base) or broken.");
  for (const PoolFigures& p : pools) {
    out += fmt::format("chainfs_pool_chains{{pool=\"{}\",state=\"complete\"}} {}\n",
                       LabelValue(p.pool), p.complete);
    out += fmt::format("chainfs_pool_chains{{pool=\"{}\",state=\"broken\"}} {}\n",
                       LabelValue(p.pool), p.broken);
  }
  Family(out, "chainfs_pool_problems", "gauge",
         "Lines of the volumes' problems files, by pool and problem code.");
  for (const PoolFigures& p : pools) {
    for (const auto& [code, n] : p.problems) {
      out += fmt::format("chainfs_pool_problems{{pool=\"{}\",code=\"{}\"}} {}\n",
                         LabelValue(p.pool), LabelValue(code), n);
    }
  }
  Family(out, "chainfs_domain_disks", "gauge", "Disks of each domain.");
  for (const DomainFigures& d : domains) {
    out += fmt::format("chainfs_domain_disks{{domain=\"{}\"}} {}\n", LabelValue(d.domain), d.disks);
  }
  Family(out, "chainfs_domain_problems", "gauge",
         "Lines of the domain disks' problems files, by domain and problem code.");
  for (const DomainFigures& d : domains) {
    for (const auto& [code, n] : d.problems) {
      out += fmt::format("chainfs_domain_problems{{domain=\"{}\",code=\"{}\"}} {}\n",
                         LabelValue(d.domain), LabelValue(code), n);
    }
  }
  for (const StatFigure& s : stats) {
    std::string name = "chainfs_" + s.name + (s.counter ? "_total" : "");
    Family(out, name, s.counter ? "counter" : "gauge",
           fmt::format("{} of .chainfs/stats.", s.name));
    out += fmt::format("{} {}\n", name, s.value);
  }
  return out;
}

}  // namespace chainfs::core
