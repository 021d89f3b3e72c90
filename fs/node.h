// NodeKey: what an inode of the mounted tree stands for. A node is named by
// (kind, pool, volume, chain index, file), never by a host path, so that the
// write operations (create, rename, rmdir) can address nodes the same way.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace chainfs::fs {

enum class NodeKind : uint8_t {
  kRoot,         // MOUNT/
  kControlDir,   // MOUNT/.chainfs/
  kControlFile,  // MOUNT/.chainfs/{log,version,stats}             file = name
  kPoolDir,      // MOUNT/POOL/                                     pool
  kPoolFile,     // MOUNT/POOL/.pool.xml                            pool, file
  kVolumeDir,    // MOUNT/POOL/VOL/                                 pool, volume
  kVolumeFile,   // MOUNT/POOL/VOL/{format,...,problems}            pool, volume, file
  kChainDir,     // MOUNT/POOL/VOL/chain/                           pool, volume
  kElementDir,   // MOUNT/POOL/VOL/chain/N/                         pool, volume, index
  kElementFile,  // MOUNT/POOL/VOL/chain/N/{path,format,...}        pool, volume, index, file
  kElementLink,  // MOUNT/POOL/VOL/chain/N/volume (symlink)         pool, volume, index
  // The domains' view (DESIGN section 8); `pool` holds the domain's name,
  // `volume` the disk's target.
  kDomainsDir,       // MOUNT/.domains/
  kDomainDir,        // MOUNT/.domains/DOM/                           pool
  kDomainFile,       // MOUNT/.domains/DOM/{state,uuid,domain.xml}    pool, file
  kDiskDir,          // MOUNT/.domains/DOM/TGT/                       pool, volume
  kDiskFile,         // MOUNT/.domains/DOM/TGT/{source,...,problems}  pool, volume, file
  kDiskChainDir,     // MOUNT/.domains/DOM/TGT/chain/                 pool, volume
  kDiskElementDir,   // MOUNT/.domains/DOM/TGT/chain/N/               pool, volume, index
  kDiskElementFile,  // MOUNT/.domains/DOM/TGT/chain/N/{path,...}     pool, volume, index, file
  kDiskElementLink,  // MOUNT/.domains/DOM/TGT/chain/N/volume         pool, volume, index
};

// Identifies one node. A value type.
struct NodeKey {
  NodeKey() = default;
  explicit NodeKey(NodeKind k, std::string p = {}, std::string v = {}, int i = -1,
                   std::string f = {})
      : kind(k), pool(std::move(p)), volume(std::move(v)), index(i), file(std::move(f)) {}

  NodeKind kind = NodeKind::kRoot;
  std::string pool;
  std::string volume;
  int index = -1;
  std::string file;

  bool operator==(const NodeKey&) const = default;
  // Returns true for directories.
  bool IsDir() const;
  // Returns true for the nodes under MOUNT/.domains.
  bool IsDomainNode() const { return kind >= NodeKind::kDomainsDir; }
  // Returns a canonical byte string (pool first, so that every node of one
  // pool or one volume shares a prefix); used as the node table's key.
  std::string Encode() const;
  // Returns the mount-relative path ("/pool/vol/chain/1/format"), for logs.
  std::string Path() const;
};

// Returns the prefix of Encode() shared by every node of `pool` (and of
// `volume` in it when not empty).
std::string EncodePrefix(const std::string& pool, const std::string& volume = {});

// Names of the files of the tree (DESIGN section 1).
inline constexpr const char* kControlDirName = ".chainfs";
inline constexpr const char* kDomainsDirName = ".domains";
inline constexpr const char* kPoolXmlName = ".pool.xml";
inline constexpr const char* kPoolTreeName = ".tree";  // the pool's chain forest
inline constexpr const char* kChainDirName = "chain";
inline constexpr const char* kVolumeLinkName = "volume";
// Returns the control files, in listing order.
const std::vector<std::string>& ControlFileNames();
// Returns the files of a volume directory (besides chain/), in listing order.
const std::vector<std::string>& VolumeFileNames();
// Returns the files of a chain/N directory (besides the volume link).
const std::vector<std::string>& ElementFileNames();
// Returns the files of a domain directory (besides its disks).
const std::vector<std::string>& DomainFileNames();
// Returns the files of a disk directory (besides chain/).
const std::vector<std::string>& DiskFileNames();
// Returns the files of a disk's chain/N directory (besides the volume link).
const std::vector<std::string>& DiskElementFileNames();
// Returns true if `name` is reserved in a pool directory (cannot be a volume).
bool IsReservedPoolEntry(const std::string& name);

}  // namespace chainfs::fs
