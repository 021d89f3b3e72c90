// Reader: positional reads of an image's bytes. Every parser reads through
// this one interface, so crafted in-memory headers and real files are alike.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace chainfs::core {

// Reads bytes at absolute offsets. Implementations are safe for concurrent
// callers (pread, never lseek + read).
class Reader {
 public:
  virtual ~Reader() = default;
  // Reads up to buf.size() bytes at `offset`; returns how many were read
  // (fewer only at end of file). Errors are kIo with the saved errno.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const = 0;
  // Returns the size in bytes at the time the reader was made.
  virtual uint64_t Size() const = 0;
  // Says that [offset, offset + length) will be read soon, so the host can
  // start reading it (posix_fadvise WILLNEED for files). A hint: no error,
  // and no effect for readers that have nothing to start.
  virtual void Advise(uint64_t /*offset*/, uint64_t /*length*/) const {}
};

// Reads exactly buf.size() bytes at `offset`. Checks the range against
// Size() first; a range past the end is kCorrupt naming `what`.
Status ReadExact(const Reader& r, uint64_t offset, std::span<uint8_t> buf, std::string_view what);

// Reads `length` bytes at `offset` into a new vector, bounds-checked as
// ReadExact; `max_length` caps the allocation (kCorrupt if exceeded).
Result<std::vector<uint8_t>> ReadVector(const Reader& r, uint64_t offset, uint64_t length,
                                        uint64_t max_length, std::string_view what);

// Returns true if [offset, offset + length) lies within [0, size) without overflow.
inline bool RangeWithin(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// A Reader over bytes held in memory (crafted headers in tests). Thread-safe.
class MemoryReader : public Reader {
 public:
  explicit MemoryReader(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) const override;
  uint64_t Size() const override { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace chainfs::core
