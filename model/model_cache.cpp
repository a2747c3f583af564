// SPDX-License-Identifier: LGPL-2.1-or-later
#include "model_cache.h"

#include "file_util.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>

namespace flashvsr {

std::string model_cache_key(const std::string& dir, const LoadOptions& o) {
  char resolved[PATH_MAX];
  std::string key = ::realpath(dir.c_str(), resolved) ? std::string(resolved) : dir;
  key += "|" + o.device.str() + "|" + dtype_name(o.dtype);
  for (const char* name : {ReleaseLayout::kDit, ReleaseLayout::kLqProj, ReleaseLayout::kDecoder, ReleaseLayout::kPrompt}) {
    struct stat st {};
    if (::stat(join_path(dir, name).c_str(), &st) == 0)
      key += "|" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec);
    else
      key += "|-";
  }
  return key;
}

std::shared_ptr<const Model> ModelCache::get(const std::string& dir, const LoadOptions& options) {
  const std::string key = model_cache_key(dir, options);
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Forget entries whose model is gone.
    for (auto it = entries_.begin(); it != entries_.end();)
      it = it->second->model.expired() && it->first != key ? entries_.erase(it) : std::next(it);
    auto& slot = entries_[key];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
  }
  std::lock_guard<std::mutex> loading(entry->loading);
  if (auto model = entry->model.lock()) return model;
  auto model = Model::load(dir, options);  // throws: nothing is cached
  entry->model = model;
  return model;
}

size_t ModelCache::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto& [key, entry] : entries_) n += entry->model.expired() ? 0 : 1;
  return n;
}

}  // namespace flashvsr
