// SPDX-License-Identifier: LGPL-2.1-or-later
// Record layouts: PKWARE APPNOTE.TXT (4.3.7 local file header, 4.3.12 central directory header, 4.3.14-16
// ZIP64 end-of-central-directory record and locator, 4.5.3 ZIP64 extra field).
#include "io/zip_reader.h"

#include "error.h"
#include "io/byte_cursor.h"
#include "io/crc32.h"

#include <algorithm>

namespace flashvsr::io {

namespace {

// Limits on hostile input.
constexpr uint64_t kMaxCentralDirectory = uint64_t(256) << 20;
constexpr uint64_t kMaxEntries = uint64_t(1) << 20;
constexpr uint64_t kIoChunk = uint64_t(16) << 20;

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64End = 0x06064b50, kZip64Locator = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;

}  // namespace

ZipReader::ZipReader(const std::string& path, const std::string& label)
    : path_(path), context_(label + " '" + path + "'"), file_(path, label) {
  parse_directory();
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ZipReader::fail(const std::string& message) const { throw Error(Error::Kind::BadFile, context_ + ": " + message); }

std::string ZipReader::read_small(const ZipEntry& e, uint64_t limit) {
  const uint64_t start = data_start(e);
  if (e.usize > limit)
    fail("entry '" + e.name + "' is " + std::to_string(e.usize) + " bytes, more than the " + std::to_string(limit) +
         " expected");
  std::string out(e.usize, '\0');
  if (e.usize) file_.read(start, out.data(), e.usize);
  check_crc(e, crc32(out.data(), out.size()));
  return out;
}

void ZipReader::read_into(const ZipEntry& e, void* dst) {
  const uint64_t start = data_start(e);
  auto* p = static_cast<unsigned char*>(dst);
  Crc32 crc;
  for (uint64_t done = 0; done < e.usize;) {
    const uint64_t n = std::min(e.usize - done, kIoChunk);
    file_.read(start + done, p + done, n);
    crc.update(p + done, n);
    done += n;
  }
  check_crc(e, crc.value());
}

void ZipReader::check_crc(const ZipEntry& e, uint32_t crc) const {
  if (crc != e.crc)
    fail("entry '" + e.name + "' fails its CRC-32 check (stored " + std::to_string(e.crc) + ", computed " +
         std::to_string(crc) + ")");
}

void ZipReader::parse_directory() {
  const uint64_t size = file_.size();
  if (size < 22) fail("file is " + std::to_string(size) + " bytes, too short for a zip archive");
  // End of central directory: 22 bytes plus a comment of up to 65535 bytes at the end of the file.
  const uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
  std::vector<unsigned char> tail(tail_len);
  file_.read(size - tail_len, tail.data(), tail_len);
  int64_t found = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
    if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) {
      const uint64_t comment = tail[i + 20] | (uint64_t(tail[i + 21]) << 8);
      if (static_cast<uint64_t>(i) + 22 + comment <= tail_len) {
        found = i;
        break;
      }
    }
  }
  if (found < 0)
    fail("no zip end-of-central-directory record: the file is truncated or is not a torch.save zip archive "
         "(the legacy pre-1.6 format is not supported)");
  const uint64_t eocd_pos = size - tail_len + static_cast<uint64_t>(found);
  ByteCursor c(tail.data() + found, 22, context_, "end-of-central-directory record");
  c.u32();  // signature, matched above
  uint64_t disk = c.u16(), cd_disk = c.u16(), disk_entries = c.u16(), total = c.u16();
  uint64_t cd_size = c.u32(), cd_offset = c.u32();
  uint64_t cd_limit = eocd_pos;  // the central directory ends before this

  // ZIP64: a locator right before the EOCD points at the ZIP64 end-of-central-directory record.
  if (eocd_pos >= 20) {
    unsigned char loc[20];
    file_.read(eocd_pos - 20, loc, 20);
    ByteCursor l(loc, 20, context_, "zip64 locator");
    if (l.u32() == kZip64Locator) {
      const uint32_t rec_disk = l.u32();
      const uint64_t rec_offset = l.u64();
      const uint32_t disks = l.u32();
      if (rec_disk != 0 || disks > 1) fail("multi-disk zip archives are not supported");
      if (rec_offset > eocd_pos - 20 || eocd_pos - 20 - rec_offset < 56)
        fail("zip64 end-of-central-directory offset " + std::to_string(rec_offset) + " is out of range");
      unsigned char rec[56];
      file_.read(rec_offset, rec, 56);
      ByteCursor r(rec, 56, context_, "zip64 end-of-central-directory record");
      if (r.u32() != kZip64End) fail("bad zip64 end-of-central-directory signature");
      r.u64();  // record size
      r.u16();  // version made by
      r.u16();  // version needed
      disk = r.u32();
      cd_disk = r.u32();
      disk_entries = r.u64();
      total = r.u64();
      cd_size = r.u64();
      cd_offset = r.u64();
      cd_limit = rec_offset;
    }
  }
  if (disk != 0 || cd_disk != 0 || disk_entries != total) fail("multi-disk zip archives are not supported");
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail("central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) + ") is out of range");
  if (cd_size > kMaxCentralDirectory) fail("central directory of " + std::to_string(cd_size) + " bytes is too large");
  if (total > kMaxEntries || total * 46 > cd_size)
    fail("central directory of " + std::to_string(cd_size) + " bytes cannot hold " + std::to_string(total) +
         " entries");
  cd_offset_ = cd_offset;

  std::vector<unsigned char> cd(cd_size);
  if (cd_size) file_.read(cd_offset, cd.data(), cd_size);
  ByteCursor d(cd.data(), cd.size(), context_, "central directory");
  entries_.reserve(total);
  for (uint64_t i = 0; i < total; ++i) {
    if (d.u32() != kCentralHeader) fail("bad central directory signature for entry " + std::to_string(i));
    ZipEntry e;
    d.u16();  // version made by
    d.u16();  // version needed
    e.flags = d.u16();
    e.method = d.u16();
    d.u32();  // time, date
    e.crc = d.u32();
    e.csize = d.u32();
    e.usize = d.u32();
    const uint16_t name_len = d.u16(), extra_len = d.u16(), comment_len = d.u16();
    uint16_t disk_start = d.u16();
    d.u16();  // internal attributes
    d.u32();  // external attributes
    e.local_offset = d.u32();
    const unsigned char* name = d.take(name_len);
    e.name.assign(reinterpret_cast<const char*>(name), name_len);
    ByteCursor x(d.take(extra_len), extra_len, context_, "zip extra field");
    d.take(comment_len);
    while (x.left() >= 4) {
      const uint16_t id = x.u16(), len = x.u16();
      ByteCursor f(x.take(len), len, context_, "zip64 extra field");
      if (id != kZip64ExtraId) continue;
      // Only the fields saturated in the fixed part are present, in this order.
      if (e.usize == 0xFFFFFFFFu) e.usize = f.u64();
      if (e.csize == 0xFFFFFFFFu) e.csize = f.u64();
      if (e.local_offset == 0xFFFFFFFFu) e.local_offset = f.u64();
      if (disk_start == 0xFFFF) disk_start = static_cast<uint16_t>(f.u32() == 0 ? 0 : 1);
    }
    if (disk_start != 0) fail("entry '" + e.name + "' is on another disk");
    if (e.local_offset > cd_offset || cd_offset - e.local_offset < 30)
      fail("entry '" + e.name + "' has local header offset " + std::to_string(e.local_offset) +
           " outside the file data");
    if (!index_.emplace(e.name, entries_.size()).second) fail("duplicate zip entry '" + e.name + "'");
    entries_.push_back(std::move(e));
  }
}

uint64_t ZipReader::data_start(const ZipEntry& e) {
  if (e.flags & 1) fail("entry '" + e.name + "' is encrypted");
  if (e.method != 0)
    fail("entry '" + e.name + "' is compressed (method " + std::to_string(e.method) +
         "); only stored (uncompressed) entries are supported");
  if (e.csize != e.usize)
    fail("stored entry '" + e.name + "' has compressed size " + std::to_string(e.csize) + " != size " +
         std::to_string(e.usize));
  unsigned char h[30];
  file_.read(e.local_offset, h, 30);
  ByteCursor c(h, 30, context_, "local file header");
  if (c.u32() != kLocalHeader) fail("bad local header signature for entry '" + e.name + "'");
  c.take(22);  // version, flags, method, time, date, CRC and sizes: the central directory's are used
  const uint64_t name_len = c.u16(), extra_len = c.u16();
  const uint64_t start = e.local_offset + 30 + name_len + extra_len;
  if (start > cd_offset_ || e.usize > cd_offset_ - start)
    fail("entry '" + e.name + "' data [" + std::to_string(start) + ", +" + std::to_string(e.usize) +
         ") runs into the central directory");
  std::string local_name(name_len, '\0');
  if (name_len) file_.read(e.local_offset + 30, local_name.data(), name_len);
  if (local_name != e.name) fail("local header name '" + local_name + "' != central name '" + e.name + "'");
  return start;
}

}  // namespace flashvsr::io
