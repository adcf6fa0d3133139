// Little-endian integer reads from unaligned bytes, for the binary formats model/io parses
// (torch.save pickles and zip archives). The host must be little-endian, as it is on every
// platform torch builds for here; a big-endian one would need byte swaps.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace lookahead::model::io {

static_assert(std::endian::native == std::endian::little, "model/io reads little-endian files natively");

inline uint16_t le16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace lookahead::model::io
