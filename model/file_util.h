// SPDX-License-Identifier: LGPL-2.1-or-later
// Small POSIX file-system helpers. The project does not use std::filesystem: the LibTorch wheel exports
// its own copies of those symbols, and depending on link and load order (e.g. a dlopen'ed GStreamer
// plugin) calls bind to them and crash (seen with remove_all on an existing directory).
#pragma once

#include <string>
#include <vector>

namespace flashvsr {

bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
bool path_exists(const std::string& path);
// "dir/name" (no separator doubled).
std::string join_path(const std::string& dir, const std::string& name);
// The last path component ("a/b/c" -> "c").
std::string base_name(const std::string& path);
// Sorted names of the entries of a directory (without "." and ".."); empty when it cannot be read.
std::vector<std::string> list_directory(const std::string& dir);
// mkdir -p; returns false (and sets *error) on failure.
bool make_directories(const std::string& path, std::string* error = nullptr);
// rm -rf; returns false when something could not be removed.
bool remove_tree(const std::string& path);

}  // namespace flashvsr
