// The driver table. Each format's file defines its Make*Driver() function.
#pragma once

#include <vector>

#include "core/format/driver.h"

namespace chainfs::core {

const FormatDriver* MakeQcow2Driver();
const FormatDriver* MakeQcowDriver();
const FormatDriver* MakeQedDriver();
const FormatDriver* MakeVmdkDriver();
const FormatDriver* MakeVdiDriver();
const FormatDriver* MakeVpcDriver();
const FormatDriver* MakeVhdxDriver();
const FormatDriver* MakePloopDriver();
const FormatDriver* MakeCowDriver();
const FormatDriver* MakeIsoDriver();
const FormatDriver* MakeLuksDriver();
const FormatDriver* MakeRawDriver();

// Returns the table in probe order, raw last.
inline std::vector<const FormatDriver*> BuildDriverTable() {
  return {MakeQcow2Driver(), MakeQcowDriver(), MakeQedDriver(),   MakeVmdkDriver(),
          MakeVdiDriver(),   MakeVpcDriver(),  MakeVhdxDriver(),  MakePloopDriver(),
          MakeCowDriver(),   MakeIsoDriver(),  MakeLuksDriver(),  MakeRawDriver()};
}

}  // namespace chainfs::core
