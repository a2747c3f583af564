// SPDX-License-Identifier: LGPL-2.1-or-later
// CRC-32 of zip archives (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and final XOR
// 0xFFFFFFFF), computed incrementally so that large records can be checked as they stream past.
#pragma once

#include <cstddef>
#include <cstdint>

namespace flashvsr::io {

class Crc32 {
 public:
  void update(const void* data, size_t n);
  // The CRC of every byte passed to `update` so far.
  uint32_t value() const { return ~state_; }

 private:
  uint32_t state_ = 0xFFFFFFFFu;
};

// The CRC-32 of one buffer.
uint32_t crc32(const void* data, size_t n);

}  // namespace flashvsr::io
