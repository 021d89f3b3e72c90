// Qcow2Writer: writes guest data into an existing qcow2 image (v2 and v3,
// clusters of 512 bytes to 2 MiB, any refcount width 1..64 bits) at cluster
// granularity, or at subcluster granularity (1/32 of a cluster) on images
// with extended L2 entries, allocating clusters at the end of the file with
// correct L1/L2 and refcount updates.
//
// Extended L2 (128-bit entries: descriptor + subcluster bitmap, half as many
// entries per table): a write sets the allocation bits of the subclusters it
// covers and clears their zero bits; every other subcluster of the cluster
// keeps its state, so an unallocated one still reads from the backing. That
// is qemu's semantics too: it copies backing data only into the unwritten
// part of a partially written subcluster, and this writer writes whole
// subclusters only. A cluster first written here gets a new host cluster
// whose unwritten subclusters stay unallocated (their host bytes are never
// read). A zero write sets the zero bits (allocation bits cleared), keeping
// the host cluster if there is one.
//
// Crash safety (DESIGN section 2): guest data goes to newly allocated
// clusters first; Flush() then makes the metadata point at them in the order
// that keeps the image consistent at every instant:
//   1. data clusters (fdatasync after each phase),
//   2. refcounts: new refcount blocks written before the refcount table
//      points at them, a grown refcount table written before the header
//      points at it,
//   3. L2 entries (new L2 tables written whole),
//   4. L1 entries.
// A crash anywhere leaves clusters whose refcount is at least the number of
// references: `qemu-img check` may report leaked clusters, never corruption,
// and the guest-visible content is either the old or the new one per
// cluster. Many clusters are batched per phase (one fsync per phase per
// batch); a batch is flushed automatically once `max_pending_bytes` of new
// data is waiting.
//
// Refcounts are always updated, even on images with lazy_refcounts: the
// dirty bit is never set, so no repair is ever needed after a crash.
//
// Refused (kUnsupported): encrypted images, external data files, internal
// snapshots, persistent bitmaps, images with the dirty bit set (qemu must
// repair them first), unknown incompatible features; kCorrupt for images
// marked corrupt or with tables that make no sense (for extended L2: a
// subcluster both allocated and zero, allocation bits without a host
// cluster, bit 0 of a descriptor set, clusters below 16 KiB). Writing over a
// compressed cluster is kUnsupported.
//
// Thread-safety: none; one thread drives a writer. The OFD locks taken at
// Open keep QEMU (and other writers) away while it lives.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/format/qcow2/header.h"
#include "core/status.h"

namespace chainfs::core {

// Tuning of a Qcow2Writer.
struct Qcow2WriterOptions {
  // fsync between the phases of a flush (turn off only for throwaway images).
  bool sync = true;
  // Flushes automatically once this much newly allocated data is pending
  // (or once 256K clusters are, to bound memory with small clusters).
  uint64_t max_pending_bytes = 256ull << 20;
};

// Counters of what a writer did.
struct Qcow2WriterStats {
  uint64_t data_clusters = 0;    // clusters written with data (new or in place)
  uint64_t zero_clusters = 0;    // clusters marked zero (v3 zero flag)
  uint64_t l2_tables = 0;        // L2 tables allocated
  uint64_t refcount_blocks = 0;  // refcount blocks allocated
  uint64_t table_grows = 0;      // refcount table relocations
  uint64_t flushes = 0;          // metadata flushes
};

class Qcow2Writer {
 public:
  // Opens the qcow2 image at `path` read-write and takes QEMU's image locks
  // (kBusy if another process holds them). Errors: open errors as
  // Status::FromErrno gives them; kUnsupported / kCorrupt as listed at the
  // top of this file.
  static Result<std::unique_ptr<Qcow2Writer>> Open(const std::string& path,
                                                   const Qcow2WriterOptions& options = {});
  // Closes the image WITHOUT flushing: pending writes are dropped, leaving
  // at most unreferenced clusters at the end of the file.
  ~Qcow2Writer();
  Qcow2Writer(const Qcow2Writer&) = delete;
  Qcow2Writer& operator=(const Qcow2Writer&) = delete;

  // Returns the parsed header (refcount table fields follow a growth).
  const Qcow2Header& header() const { return h_; }
  // Returns the cluster size in bytes.
  uint64_t cluster_size() const { return cs_; }
  // Returns the unit of WriteClusters and WriteZeroClusters: the subcluster
  // size (cluster size / 32) on extended L2 images, else the cluster size.
  uint64_t write_granularity() const { return granule_; }
  // Returns whether the image has extended L2 entries (subclusters).
  bool extended_l2() const { return ext_; }
  // Returns the virtual size in bytes.
  uint64_t size() const { return h_.size; }
  // Returns the counters so far.
  const Qcow2WriterStats& stats() const { return stats_; }

  // Writes `data` (a whole number of write_granularity() units: clusters,
  // or subclusters on extended L2 images) at the guest `offset` aligned to
  // that unit; the write may extend past the virtual size only as far as
  // the last cluster goes. Clusters without a host cluster (unallocated or zero)
  // get new clusters at the end of the file; clusters the image owns alone
  // (refcount 1) are overwritten in place. kInvalidArgument for misaligned
  // or out-of-range requests, kUnsupported for compressed or shared
  // clusters, kCorrupt for L2 entries that make no sense.
  Status WriteClusters(uint64_t offset, std::span<const uint8_t> data);
  // Makes `length` bytes (whole write_granularity() units) at the aligned
  // `offset` read as zeros: on v3 with the L2 zero flag or the subcluster
  // zero bits (no data written); on v2 by writing zero-filled clusters,
  // since v2 has no zero flag.
  Status WriteZeroClusters(uint64_t offset, uint64_t length);
  // Makes every pending write reach the metadata, in the crash-safe order
  // described at the top of this file.
  Status Flush();
  // Returns the number of guest clusters whose metadata update is pending.
  size_t pending_clusters() const { return pending_.size(); }

 private:
  Qcow2Writer(int fd, std::string path, Qcow2Header h, const Qcow2WriterOptions& options);
  Status Load(uint64_t file_size);
  Status Sync();
  void StartWriteback(uint64_t offset, uint64_t length);
  // One L2 entry as on disk; `bitmap` is 0 without extended L2.
  struct Entry {
    uint64_t desc = 0;
    uint64_t bitmap = 0;
    bool operator==(const Entry&) const = default;
  };
  using L2 = std::vector<Entry>;
  Status ReadCluster(uint64_t host, std::vector<uint8_t>& out, const char* what) const;
  Result<Entry> CurrentEntry(uint64_t guest_cluster);
  Result<L2*> L2Table(uint64_t l1_index);
  std::vector<uint8_t> EncodeL2(const L2& table, size_t first, size_t last) const;
  Status CheckRange(uint64_t offset, uint64_t length, const char* what) const;
  Status WriteInto(uint64_t host, std::span<const uint8_t> bytes);
  Result<std::vector<uint8_t>*> RefBlock(uint64_t block_index,
                                         std::map<uint64_t, std::vector<uint8_t>>& blocks,
                                         const std::map<uint64_t, uint64_t>& new_blocks);
  uint64_t Allocate(uint64_t clusters);
  Status UpdateRefcounts(const std::vector<uint64_t>& clusters);
  uint64_t GetRefcount(const std::vector<uint8_t>& block, uint64_t index) const;
  void SetRefcount(std::vector<uint8_t>& block, uint64_t index, uint64_t value) const;

  int fd_ = -1;
  std::string path_;
  Qcow2Header h_;
  Qcow2WriterOptions options_;
  uint64_t cs_ = 0;
  uint32_t cbits_ = 0;
  bool ext_ = false;               // extended L2 entries
  uint64_t entry_bytes_ = 8;       // bytes per L2 entry (16 with extended L2)
  uint64_t granule_ = 0;           // write unit: subcluster or cluster
  uint64_t l2_entries_ = 0;        // entries per L2 table
  uint64_t refblock_entries_ = 0;  // refcounts per refcount block
  uint64_t file_size_at_open_ = 0;
  std::vector<uint64_t> l1_;        // as on disk
  std::vector<uint64_t> reftable_;  // as on disk, capacity-sized
  uint64_t end_ = 0;                // next free host offset (allocation pointer)
  // L2 tables read so far (or being built), by L1 index, as on disk.
  std::map<uint64_t, L2> l2_cache_;
  // Guest cluster -> the L2 entry it gets at the next Flush.
  std::map<uint64_t, Entry> pending_;
  // End of the last new host cluster that was only partly written (extended
  // L2): the file is extended to it before the metadata points at it.
  uint64_t partial_end_ = 0;
  // Host offsets of clusters allocated for data since the last Flush.
  std::vector<uint64_t> new_data_;
  uint64_t pending_bytes_ = 0;
  // Range of appended data not yet handed to writeback (see StartWriteback).
  uint64_t writeback_start_ = 0;
  uint64_t writeback_end_ = 0;
  // Set when a write or flush failed half-way: the in-memory tables may no
  // longer match the disk, so every later call fails.
  bool failed_ = false;
  Qcow2WriterStats stats_;
};

}  // namespace chainfs::core
