// SPDX-License-Identifier: LGPL-2.1-or-later
// Writes zip archives the way torch.save does: stored (uncompressed) entries whose data starts 64-byte
// aligned (padding in a local "FB" extra field), ZIP64 fields where sizes or offsets need them, and a
// ZIP64 end-of-central-directory record always. Test and tool code: the engine only reads.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace flashvsr::io {

class ZipWriter {
 public:
  // Creates (truncates) the file; Error(NotFound) naming `label` and the path when it cannot.
  ZipWriter(const std::string& path, const std::string& label);

  // Appends one stored entry.
  void add(const std::string& name, const void* data, uint64_t size);
  // Writes the central directory and the end records, and flushes; Error(BadFile) on any write failure.
  void finish();

 private:
  struct Record {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
  };
  std::string path_, label_;
  std::ofstream f_;
  uint64_t offset_ = 0;
  std::vector<Record> records_;

  void write(const void* p, uint64_t n);
};

}  // namespace flashvsr::io
