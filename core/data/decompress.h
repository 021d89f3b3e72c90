// Decompression of qcow2 compressed clusters: raw deflate (zlib without a
// header, as qemu writes compression_type=zlib) and zstd. Output is always
// bounded by the caller's buffer: hostile input cannot make us allocate or
// write more than one cluster.
//
// Thread-safety: every function is safe to call from many threads at once
// (decoder state is per thread).
#pragma once

#include <cstdint>
#include <span>

#include "core/status.h"

namespace chainfs::core {

// Inflates a raw deflate stream from `in` until `out` is completely filled.
// Trailing input after the stream (sector padding) is ignored. kCorrupt when
// the stream is malformed or ends before `out` is full.
Status InflateRaw(std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses zstd frames from `in` until `out` is completely filled.
// kCorrupt when the input is malformed or runs out before `out` is full.
Status DecompressZstd(std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses one qcow2 cluster of `compression_type` (kQcow2Compression*)
// into `out` (exactly one cluster). kUnsupported for an unknown type.
Status DecompressCluster(uint8_t compression_type, std::span<const uint8_t> in,
                         std::span<uint8_t> out);

}  // namespace chainfs::core
