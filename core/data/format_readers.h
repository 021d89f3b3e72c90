// Readers of the table-mapped formats (each in its own <format>_reader.cc,
// built on BlockMapReader). Every one re-parses the header through its
// format driver and checks each table entry against the file size before
// use: a bad entry is kCorrupt with a one-line reason naming the guest
// offset, never a crash, a hang or an allocation the file size does not
// bound. Returned readers are safe for concurrent callers.
#pragma once

#include <memory>
#include <string>

#include "core/data/image_reader.h"
#include "core/io/reader.h"

namespace chainfs::core {

// Opens a qed image: unallocated clusters fall through to the backing, zero
// clusters (entry 1) read as zeros.
Result<std::unique_ptr<ImageReader>> OpenQedReader(std::unique_ptr<Reader> image,
                                                   const std::string& path);
// Opens a vdi image, static or dynamic (unallocated and discarded blocks
// read as zeros; vdi has no backing).
Result<std::unique_ptr<ImageReader>> OpenVdiReader(std::unique_ptr<Reader> image,
                                                   const std::string& path);
// Opens a vpc (VHD) image, fixed or dynamic; a differencing image reads as
// a dynamic one without parent, as in qemu.
Result<std::unique_ptr<ImageReader>> OpenVpcReader(std::unique_ptr<Reader> image,
                                                   const std::string& path);
// Opens a vhdx image, fixed or dynamic. kUnsupported for differencing
// images and for an image whose log is active (qemu-img refuses to open it
// read-only until `qemu-img check -r all` replays the log).
Result<std::unique_ptr<ImageReader>> OpenVhdxReader(std::unique_ptr<Reader> image,
                                                    const std::string& path);
// Opens a qcow (version 1) image: normal and compressed clusters;
// unallocated clusters fall through to the backing. Encrypted images are
// kUnsupported.
Result<std::unique_ptr<ImageReader>> OpenQcowReader(std::unique_ptr<Reader> image,
                                                    const std::string& path);

// How a vmdk reader may open extent files named by a text descriptor.
struct VmdkReaderOptions {
  // Extent names with a folder part (absolute, or with '/') are followed
  // only when the descriptor's format was read from metadata: a probed
  // descriptor (which a guest could have written into a raw disk) may name
  // only files next to it. Otherwise kPermissionDenied.
  bool follow_any_extent = false;
};

// Opens a vmdk image: a sparse extent (monolithicSparse, streamOptimized
// with zlib grains) or a text descriptor with FLAT, VMFS, ZERO and SPARSE
// extents (monolithicFlat, twoGbMaxExtentSparse/Flat). Unallocated grains
// fall through to the backing. kUnsupported for VMDK3 (COWD), seSparse and
// vmfsSparse extents.
Result<std::unique_ptr<ImageReader>> OpenVmdkReader(std::unique_ptr<Reader> image,
                                                    const std::string& path,
                                                    const VmdkReaderOptions& options = {});

}  // namespace chainfs::core
