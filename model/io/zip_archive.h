// The stored (uncompressed) members of a zip archive read in place from its bytes, as torch.save
// writes them: the central directory (zip64 included) with every offset checked against the file,
// and a member's bytes with their CRC-32 verified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

namespace lookahead::model::io {

/// Bytes inside a mapped file (not necessarily aligned for any dtype).
struct ByteRange {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

/// One stored (uncompressed) member of a zip archive.
struct ZipMember {
  uint64_t header = 0;  // offset of the local file header
  uint64_t size = 0;
  uint32_t crc = 0;
  uint16_t method = 0;
};


/// Central directory of the archive `d` [n bytes]; throws c10::Error naming `path` for anything
/// inconsistent (truncation, offsets beyond the file).
std::map<std::string, ZipMember> zip_directory(const uint8_t* d, size_t n, const std::string& path);

/// The bytes of member `name`, checked: stored (not compressed), inside the file, CRC-32 as recorded.
/// `verify_crc` false skips the CRC, the one check that reads the bytes: a header-only reader
/// (torch_checkpoint.h's load_torch_shapes) must not page in gigabytes to learn the shapes.
ByteRange zip_read(const uint8_t* d, size_t n, const std::string& name, const ZipMember& m, const std::string& path,
                   bool verify_crc = true);

}  // namespace lookahead::model::io
