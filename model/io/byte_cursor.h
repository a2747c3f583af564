// SPDX-License-Identifier: LGPL-2.1-or-later
// A bounded reader over bytes in memory (a zip record, a pickle): every read first checks that the bytes
// are there, so a field of a hostile file can never be read past the end of its buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flashvsr::io {

class ByteCursor {
 public:
  // `context` prefixes errors and must outlive the cursor (e.g. "torch archive 'x.pt'"); `what` names the
  // structure read ("central directory"). A read past the end throws Error(BadFile)
  // "<context>: truncated <what> (N bytes needed at byte P, M left)".
  ByteCursor(const void* data, size_t size, const std::string& context, const char* what)
      : data_(static_cast<const unsigned char*>(data)), size_(size), context_(context), what_(what) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  // The next `n` bytes (consumed).
  const unsigned char* take(size_t n);
  // An unsigned little-endian (`le`) or big-endian (`be`) integer of 1 to 8 bytes.
  uint64_t le(int bytes);
  uint64_t be(int bytes);
  uint8_t u8() { return static_cast<uint8_t>(le(1)); }
  uint16_t u16() { return static_cast<uint16_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  // The bytes before the next `delim` if one occurs within the next `max_len + 1` bytes (both consumed);
  // false, consuming nothing, when it does not.
  bool take_until(char delim, size_t max_len, std::string* out);

 private:
  const unsigned char* data_;
  size_t size_;
  const std::string& context_;
  const char* what_;
  size_t pos_ = 0;
};

}  // namespace flashvsr::io
