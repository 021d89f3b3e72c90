// `.chainfs/metrics`: the mount's figures in the Prometheus text exposition
// format (version 0.0.4), for node_exporter's textfile collector.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace chainfs::core {

// One pool: its volumes, their chains, and the lines of their `problems`
// files by code (in-use notes included, as `problems` shows them).
struct PoolFigures {
  std::string pool;
  uint64_t volumes = 0;
  uint64_t complete = 0;  // chains walked to their base with no problem that stops them
  uint64_t broken = 0;
  std::map<std::string, uint64_t> problems;  // code -> count
};

// One domain: its disks and the lines of their `problems` files by code.
struct DomainFigures {
  std::string domain;
  uint64_t disks = 0;
  std::map<std::string, uint64_t> problems;
};

// One figure of .chainfs/stats: a counter (only grows) or a gauge.
struct StatFigure {
  std::string name;  // as .chainfs/stats names it
  uint64_t value = 0;
  bool counter = true;
};

// The exposition: chainfs_pool_volumes{pool}, chainfs_pool_chains{pool,state},
// chainfs_pool_problems{pool,code}, chainfs_domain_disks{domain},
// chainfs_domain_problems{domain,code}, then each stat figure as
// chainfs_NAME_total (counters) or chainfs_NAME (gauges). Every family has
// its # HELP and # TYPE lines; label values are escaped as the format says.
std::string RenderMetrics(const std::vector<PoolFigures>& pools,
                          const std::vector<DomainFigures>& domains,
                          const std::vector<StatFigure>& stats);

}  // namespace chainfs::core
