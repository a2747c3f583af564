// SPDX-License-Identifier: LGPL-2.1-or-later
// Record layouts: PKWARE APPNOTE.TXT (as read by model/io/zip_reader.cpp).
#include "writers/zip_writer.h"

#include "error.h"
#include "io/crc32.h"

#include <algorithm>

namespace flashvsr::io {

namespace {

constexpr uint64_t kIoChunk = uint64_t(16) << 20;

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}

}  // namespace

ZipWriter::ZipWriter(const std::string& path, const std::string& label)
    : path_(path), label_(label), f_(path, std::ios::binary | std::ios::trunc) {
  if (!f_) throw Error(Error::Kind::NotFound, "cannot create " + label + " '" + path + "'");
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  Crc32 crc;
  crc.update(bytes, size);
  Record r{name, crc.value(), size, offset_};
  const bool big = size >= 0xFFFFFFFFu;
  // Local extra: an optional ZIP64 field, then "FB" padding so that the data starts 64-byte aligned.
  std::string extra;
  if (big) {
    put(extra, 0x0001, 2);
    put(extra, 16, 2);
    put(extra, size, 8);
    put(extra, size, 8);
  }
  const uint64_t header_end = offset_ + 30 + name.size() + extra.size() + 4;
  const uint64_t pad = (64 - header_end % 64) % 64;
  put(extra, 0x4246, 2);
  put(extra, pad, 2);
  extra.append(pad, 'Z');

  std::string h;
  put(h, 0x04034b50, 4);
  put(h, big ? 45 : 20, 2);  // version needed
  put(h, 0, 2);              // flags
  put(h, 0, 2);              // stored
  put(h, 0, 4);              // time, date
  put(h, r.crc, 4);
  put(h, big ? 0xFFFFFFFFu : size, 4);
  put(h, big ? 0xFFFFFFFFu : size, 4);
  put(h, name.size(), 2);
  put(h, extra.size(), 2);
  h += name;
  h += extra;
  write(h.data(), h.size());
  for (uint64_t done = 0; done < size;) {
    const uint64_t n = std::min(size - done, kIoChunk);
    write(bytes + done, n);
    done += n;
  }
  records_.push_back(std::move(r));
}

void ZipWriter::finish() {
  const uint64_t cd_offset = offset_;
  for (const auto& r : records_) {
    std::string zip64;
    if (r.size >= 0xFFFFFFFFu) {
      put(zip64, r.size, 8);
      put(zip64, r.size, 8);
    }
    if (r.offset >= 0xFFFFFFFFu) put(zip64, r.offset, 8);
    std::string h;
    put(h, 0x02014b50, 4);
    put(h, 45, 2);  // version made by
    put(h, zip64.empty() ? 20 : 45, 2);
    put(h, 0, 2);
    put(h, 0, 2);
    put(h, 0, 4);
    put(h, r.crc, 4);
    put(h, std::min<uint64_t>(r.size, 0xFFFFFFFFu), 4);
    put(h, std::min<uint64_t>(r.size, 0xFFFFFFFFu), 4);
    put(h, r.name.size(), 2);
    put(h, zip64.empty() ? 0 : zip64.size() + 4, 2);
    put(h, 0, 2);  // comment
    put(h, 0, 2);  // disk
    put(h, 0, 2);  // internal attributes
    put(h, 0, 4);  // external attributes
    put(h, std::min<uint64_t>(r.offset, 0xFFFFFFFFu), 4);
    h += r.name;
    if (!zip64.empty()) {
      put(h, 0x0001, 2);
      put(h, zip64.size(), 2);
      h += zip64;
    }
    write(h.data(), h.size());
  }
  const uint64_t cd_size = offset_ - cd_offset;
  const uint64_t eocd64 = offset_;
  const uint64_t n = records_.size();
  std::string e;
  put(e, 0x06064b50, 4);  // ZIP64 end of central directory, always written (as torch does)
  put(e, 44, 8);
  put(e, 45, 2);
  put(e, 45, 2);
  put(e, 0, 4);
  put(e, 0, 4);
  put(e, n, 8);
  put(e, n, 8);
  put(e, cd_size, 8);
  put(e, cd_offset, 8);
  put(e, 0x07064b50, 4);  // locator
  put(e, 0, 4);
  put(e, eocd64, 8);
  put(e, 1, 4);
  put(e, 0x06054b50, 4);  // end of central directory
  put(e, 0, 2);
  put(e, 0, 2);
  put(e, std::min<uint64_t>(n, 0xFFFF), 2);
  put(e, std::min<uint64_t>(n, 0xFFFF), 2);
  put(e, std::min<uint64_t>(cd_size, 0xFFFFFFFFu), 4);
  put(e, std::min<uint64_t>(cd_offset, 0xFFFFFFFFu), 4);
  put(e, 0, 2);
  write(e.data(), e.size());
  f_.flush();
  if (!f_) throw Error(Error::Kind::BadFile, "failed writing " + label_ + " '" + path_ + "'");
}

void ZipWriter::write(const void* p, uint64_t n) {
  f_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
  if (!f_) throw Error(Error::Kind::BadFile, "failed writing " + label_ + " '" + path_ + "'");
  offset_ += n;
}

}  // namespace flashvsr::io
