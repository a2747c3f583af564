// SPDX-License-Identifier: LGPL-2.1-or-later
// Small POSIX file-system helpers. The project does not use std::filesystem: the LibTorch wheel exports
// its own copies of those symbols, and depending on link and load order (e.g. a dlopen'ed GStreamer
// plugin) calls bind to them and crash (seen with remove_all on an existing directory).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flashvsr::io {

bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
bool path_exists(const std::string& path);
// "dir/name" (no separator doubled).
std::string join_path(const std::string& dir, const std::string& name);
// The last path component ("a/b/c" -> "c").
std::string base_name(const std::string& path);
// Whether `text` ends with `suffix` (C++17 has no std::string::ends_with).
bool ends_with(const std::string& text, const std::string& suffix);
// Sorted names of the entries of a directory (without "." and ".."); empty when it cannot be read.
std::vector<std::string> list_directory(const std::string& dir);
// mkdir -p; returns false (and sets *error) on failure.
bool make_directories(const std::string& path, std::string* error = nullptr);
// rm -rf; returns false when something could not be removed.
bool remove_tree(const std::string& path);

// A regular file opened read-only, read at absolute offsets (pread), closed on destruction. `label` names
// the kind of file in errors ("safetensors file", "torch archive"): opening failures throw
// Error(NotFound), reads past the end or I/O failures Error(BadFile), each naming the path.
class ReadOnlyFile {
 public:
  ReadOnlyFile(const std::string& path, const std::string& label);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  const std::string& label() const { return label_; }
  int fd() const { return fd_; }
  void read(uint64_t offset, void* dst, uint64_t n);

 private:
  std::string path_, label_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// The file formats we read are little-endian; throws Error(Internal) naming `what` on a big-endian host.
void require_little_endian(const std::string& what);

}  // namespace flashvsr::io
