// The one place that picks the libfuse API level for fs/ (3.12: the
// fuse_loop_cfg_* calls of the multi-threaded loop).
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>
