// SPDX-License-Identifier: LGPL-2.1-or-later
// A regular file mapped into memory whole, and tensors that are views of its bytes. The mapping is
// private and copy-on-write (the file is opened read-only and never changes; a write through a view stays
// in this process and copies only that page), and it lives as long as the longest-lived view: every view
// holds a reference through its deleter. When a view dies, the whole pages that only it covers are given
// back to the kernel (MADV_DONTNEED), so a checkpoint whose tensors are converted one by one (to another
// dtype or device) never holds the whole file in memory alongside its converted copy.
//
// The views read the file through the page cache: replacing a model file that a CPU model still uses
// must be done by writing a new file and renaming it over the old one. Rewriting it in place (truncating)
// changes what the views read, or makes them fault (SIGBUS) where the file became shorter.
#pragma once

#include "io/file_util.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace flashvsr::io {

class MappedFile {
 public:
  // Maps all of `file` (opened with the given label); Error(NotFound) naming it when the mapping fails.
  // An empty file maps to no memory (data() is null).
  static std::shared_ptr<MappedFile> map(const ReadOnlyFile& file);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // The whole pages within [offset, offset + n) leave this process's memory; touched again, they are
  // read again from the file (a private write to them is lost: only for bytes no one will read again).
  void release(uint64_t offset, uint64_t n) const;

 private:
  MappedFile(unsigned char* data, uint64_t size) : data_(data), size_(size) {}
  unsigned char* data_;
  uint64_t size_;
};

// A contiguous CPU tensor viewing bytes [offset, offset + numel x element size) of the mapping, which the
// caller has checked lie inside it, start aligned to the element size, and are not empty. When the last
// reference to the tensor's storage goes, those bytes are released (MappedFile::release).
at::Tensor tensor_view(const std::shared_ptr<MappedFile>& file, uint64_t offset, const std::vector<int64_t>& shape,
                       at::ScalarType dtype);

}  // namespace flashvsr::io
