#include "util/output_check.h"

#include "util/run.h"

namespace chainfs::testutil {

std::string StrictJsonComplaint(const std::string& json) {
  RunResult jq = RunWithInput({"jq", "."}, json);
  if (jq.exit_code != 0) return "jq: " + jq.err;
  RunResult py = RunWithInput(
      {"python3", "-c", "import json,sys; json.loads(sys.stdin.buffer.read().decode('utf-8'))"},
      json);
  if (py.exit_code != 0) return "python3: " + py.err;
  return "";
}

std::string XmlComplaint(const std::string& xml, const std::string& schema) {
  RunResult wf = RunWithInput({"xmllint", "--noout", "-"}, xml);
  if (wf.exit_code != 0) return "not well-formed: " + wf.err;
  RunResult v = RunWithInput(
      {"xmllint", "--noout", "--relaxng", std::string(kLibvirtSchemas) + schema, "-"}, xml);
  if (v.exit_code != 0) return schema + ": " + v.err;
  return "";
}

std::string WrapDisk(const std::string& disk) {
  return "<domain type='kvm'><name>x</name><memory>131072</memory><os><type>hvm</type></os>"
         "<devices>" +
         disk + "</devices></domain>";
}

}  // namespace chainfs::testutil
