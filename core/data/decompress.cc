#include "core/data/decompress.h"

#include <zlib.h>
#include <zstd.h>

#include <climits>
#include <memory>

#include "core/format/qcow2/header.h"

namespace chainfs::core {
namespace {

// One inflate state per thread, reset between clusters: inflateInit2 costs
// two allocations, which would dominate the decompression of small clusters.
class ThreadInflater {
 public:
  ThreadInflater() {
    // A negative window size selects a raw deflate stream (no zlib header);
    // 15 accepts any window a compressor may have used.
    ok_ = inflateInit2(&zs_, -15) == Z_OK;
  }
  ~ThreadInflater() {
    if (ok_) inflateEnd(&zs_);
  }
  ThreadInflater(const ThreadInflater&) = delete;
  ThreadInflater& operator=(const ThreadInflater&) = delete;

  Status Run(std::span<const uint8_t> in, std::span<uint8_t> out) {
    if (!ok_) return Error(Code::kIo, "cannot initialise zlib");
    if (inflateReset(&zs_) != Z_OK) return Error(Code::kIo, "cannot reset zlib");
    if (in.size() > UINT_MAX || out.size() > UINT_MAX) {
      return Error(Code::kCorrupt, "compressed cluster too large");
    }
    zs_.next_in = const_cast<Bytef*>(in.data());
    zs_.avail_in = uInt(in.size());
    zs_.next_out = out.data();
    zs_.avail_out = uInt(out.size());
    int ret = inflate(&zs_, Z_FINISH);
    // The stream may legitimately end exactly at the end of the cluster, or
    // the output may fill up before the end marker was seen (qemu accepts
    // both); anything else is a damaged cluster.
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && zs_.avail_out == 0) {
      return Status::Ok();
    }
    return Error(Code::kCorrupt, "compressed cluster does not inflate to {} bytes (zlib {})",
                 out.size(), ret);
  }

 private:
  z_stream zs_{};
  bool ok_ = false;
};

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

}  // namespace

Status InflateRaw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  thread_local ThreadInflater inflater;
  return inflater.Run(in, out);
}

Status DecompressZstd(std::span<const uint8_t> in, std::span<uint8_t> out) {
  thread_local std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return Error(Code::kIo, "cannot initialise zstd");
  ZSTD_DCtx_reset(dctx.get(), ZSTD_reset_session_only);
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  while (output.pos < output.size) {
    size_t in_before = input.pos;
    size_t out_before = output.pos;
    size_t ret = ZSTD_decompressStream(dctx.get(), &output, &input);
    if (ZSTD_isError(ret)) {
      return Error(Code::kCorrupt, "compressed cluster is not valid zstd: {}",
                   ZSTD_getErrorName(ret));
    }
    // No progress means the input ran out (or is padding) before the
    // cluster was complete.
    if (input.pos == in_before && output.pos == out_before) {
      return Error(Code::kCorrupt, "zstd cluster ends after {} of {} bytes", output.pos,
                   output.size);
    }
  }
  return Status::Ok();
}

Status DecompressCluster(uint8_t compression_type, std::span<const uint8_t> in,
                         std::span<uint8_t> out) {
  switch (compression_type) {
    case kQcow2CompressionZlib:
      return InflateRaw(in, out);
    case kQcow2CompressionZstd:
      return DecompressZstd(in, out);
    default:
      return Error(Code::kUnsupported, "unknown qcow2 compression type {}", compression_type);
  }
}

}  // namespace chainfs::core
