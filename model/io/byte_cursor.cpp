// SPDX-License-Identifier: LGPL-2.1-or-later
#include "io/byte_cursor.h"

#include "error.h"

#include <algorithm>
#include <cstring>

namespace flashvsr::io {

const unsigned char* ByteCursor::take(size_t n) {
  if (n > size_ - pos_)
    throw Error(Error::Kind::BadFile, context_ + ": truncated " + what_ + " (" + std::to_string(n) +
                                          " bytes needed at byte " + std::to_string(pos_) + ", " +
                                          std::to_string(size_ - pos_) + " left)");
  const unsigned char* p = data_ + pos_;
  pos_ += n;
  return p;
}

uint64_t ByteCursor::le(int bytes) {
  const unsigned char* p = take(static_cast<size_t>(bytes));
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t ByteCursor::be(int bytes) {
  const unsigned char* p = take(static_cast<size_t>(bytes));
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

bool ByteCursor::take_until(char delim, size_t max_len, std::string* out) {
  const unsigned char* start = data_ + pos_;
  const void* hit = std::memchr(start, delim, std::min(size_ - pos_, max_len + 1));
  if (!hit) return false;
  const size_t len = static_cast<size_t>(static_cast<const unsigned char*>(hit) - start);
  out->assign(reinterpret_cast<const char*>(start), len);
  pos_ += len + 1;
  return true;
}

}  // namespace flashvsr::io
