// SPDX-License-Identifier: LGPL-2.1-or-later
// A bounded reader of the zip archives that torch.save writes: stored (uncompressed) entries, ZIP64
// records, one disk. It reads the end-of-central-directory record and the central directory, then only
// the entries asked for, each whole and CRC-32 checked. Every size and offset taken from the file is
// checked against the file (and against the central directory, which the data must precede) before it is
// used; compressed, encrypted and multi-disk archives are clear errors.
#pragma once

#include "io/file_util.h"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace flashvsr::io {

struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local_offset = 0;
};

class ZipReader {
 public:
  // `label` names the kind of file in errors: Error(BadFile) "<label> '<path>': ...".
  ZipReader(const std::string& path, const std::string& label);

  const std::string& path() const { return path_; }
  // "<label> '<path>'", the prefix of every error about this archive.
  const std::string& context() const { return context_; }
  uint64_t file_size() const { return file_.size(); }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // The entry of that name, or nullptr.
  const ZipEntry* find(const std::string& name) const;

  // The whole entry as bytes, CRC-checked; an entry larger than `limit` bytes is an error.
  std::string read_small(const ZipEntry& e, uint64_t limit);
  // The whole entry into `dst`, which holds exactly e.usize bytes, CRC-checked.
  void read_into(const ZipEntry& e, void* dst);

  // Throws Error(BadFile) "<context>: <message>".
  [[noreturn]] void fail(const std::string& message) const;

 private:
  std::string path_, context_;
  ReadOnlyFile file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  uint64_t cd_offset_ = 0;

  void parse_directory();
  // Offset of the entry's data, from its local header; checks that the entry is readable.
  uint64_t data_start(const ZipEntry& e);
  void check_crc(const ZipEntry& e, uint32_t crc) const;
};

}  // namespace flashvsr::io
