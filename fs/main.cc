// chainfs: mount libvirt storage pools and their backing chains (chainfs(1)).
#include <malloc.h>

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "fs/daemon.h"
#include "fs/options.h"

int main(int argc, char** argv) {
  // The loop's worker threads each allocate a little (replies, renders); a
  // malloc arena per thread would keep that memory apart and the resident
  // size up, for no speed the daemon needs.
  mallopt(M_ARENA_MAX, 2);
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    chainfs::core::Result<chainfs::fs::MountOptions> options = chainfs::fs::ParseMountOptions(args);
    if (!options.ok()) {
      std::fprintf(stderr, "chainfs: %s\nTry 'chainfs --help' for more information.\n",
                   options.status().message().c_str());
      return 2;
    }
    if (options->help) {
      std::fputs(chainfs::fs::MountUsage(), stdout);
      return 0;
    }
    if (options->version) {
      std::printf("chainfs %s\n", CHAINFS_VERSION);
      return 0;
    }
    return chainfs::fs::RunMount(*options);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "chainfs: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chainfs: %s\n", e.what());
  }
  return 1;
}
