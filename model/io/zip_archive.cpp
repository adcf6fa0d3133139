// Zip archive directory and member reads (see zip_archive.h).
#include "model/io/zip_archive.h"

#include <zlib.h>

#include <c10/util/Exception.h>

#include "model/io/little_endian.h"

namespace lookahead::model::io {

std::map<std::string, ZipMember> zip_directory(const uint8_t* d, size_t n, const std::string& path) {
  TORCH_CHECK(n >= 22, path, ": truncated zip archive");
  size_t eocd = n;
  for (size_t p = n - 22;; --p) {
    if (le32(d + p) == 0x06054b50u) {
      eocd = p;
      break;
    }
    if (p == 0 || n - p > 22 + 65535) break;
  }
  TORCH_CHECK(eocd < n, path, ": corrupt zip archive (no end of central directory record; truncated file?)");
  uint64_t entries = le16(d + eocd + 10);
  uint64_t cd_size = le32(d + eocd + 12);
  uint64_t cd_offset = le32(d + eocd + 16);
  if (entries == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
    TORCH_CHECK(eocd >= 20 && le32(d + eocd - 20) == 0x07064b50u, path, ": corrupt zip64 archive (no locator)");
    const uint64_t z = le64(d + eocd - 20 + 8);
    TORCH_CHECK(n >= 56 && z <= n - 56 && le32(d + z) == 0x06064b50u, path, ": corrupt zip64 end of central directory");
    entries = le64(d + z + 32);
    cd_size = le64(d + z + 40);
    cd_offset = le64(d + z + 48);
  }
  TORCH_CHECK(cd_offset <= n && cd_size <= n - cd_offset, path, ": corrupt zip archive (central directory at ",
              cd_offset, " + ", cd_size, " beyond the file's ", n, " bytes)");
  std::map<std::string, ZipMember> out;
  size_t p = cd_offset;
  const size_t end = cd_offset + cd_size;
  for (uint64_t e = 0; e < entries; ++e) {
    TORCH_CHECK(p + 46 <= end && le32(d + p) == 0x02014b50u, path, ": corrupt zip central directory entry ", e);
    ZipMember m;
    m.method = le16(d + p + 10);
    m.crc = le32(d + p + 16);
    uint64_t csize = le32(d + p + 20);
    m.size = le32(d + p + 24);
    const size_t name_len = le16(d + p + 28), extra_len = le16(d + p + 30), comment_len = le16(d + p + 32);
    m.header = le32(d + p + 42);
    TORCH_CHECK(p + 46 + name_len + extra_len + comment_len <= end, path, ": corrupt zip central directory entry ", e);
    std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
    // zip64 extended information: the 8-byte values of the fields saturated above, in this order.
    const uint8_t* x = d + p + 46 + name_len;
    for (size_t q = 0; q + 4 <= extra_len;) {
      const uint16_t id = le16(x + q), len = le16(x + q + 2);
      TORCH_CHECK(q + 4 + len <= extra_len, path, ": corrupt zip extra field of '", name, "'");
      if (id == 0x0001) {
        size_t r = q + 4;
        auto field = [&](uint64_t& v) {
          TORCH_CHECK(r + 8 <= q + 4 + len, path, ": corrupt zip64 field of '", name, "'");
          v = le64(x + r);
          r += 8;
        };
        if (m.size == 0xffffffffu) field(m.size);
        if (csize == 0xffffffffu) field(csize);
        if (m.header == 0xffffffffu) field(m.header);
      }
      q += 4 + len;
    }
    TORCH_CHECK(csize == m.size || m.method != 0, path, ": corrupt zip entry '", name, "' (sizes differ)");
    out[std::move(name)] = m;
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

ByteRange zip_read(const uint8_t* d, size_t n, const std::string& name, const ZipMember& m, const std::string& path,
                   bool verify_crc) {
  TORCH_CHECK(m.method == 0, path, ": zip entry '", name, "' is compressed (method ", m.method,
              "); torch.save stores entries uncompressed");
  TORCH_CHECK(m.header <= n && n - m.header >= 30 && le32(d + m.header) == 0x04034b50u, path,
              ": corrupt zip local header of '", name, "'");
  const uint64_t begin = m.header + 30 + le16(d + m.header + 26) + le16(d + m.header + 28);
  TORCH_CHECK(begin <= n && m.size <= n - begin, path, ": zip entry '", name, "' (", m.size, " bytes at ", begin,
              ") lies beyond the file's ", n, " bytes (truncated file?)");
  if (!verify_crc) return {d + begin, static_cast<size_t>(m.size)};
  const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), d + begin, static_cast<z_size_t>(m.size));
  TORCH_CHECK(crc == m.crc, path, ": CRC-32 mismatch in zip entry '", name, "' (corrupt file)");
  return {d + begin, static_cast<size_t>(m.size)};
}

}  // namespace lookahead::model::io
