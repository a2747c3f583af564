// SPDX-License-Identifier: LGPL-2.1-or-later
#include "model_cache.h"

#include "io/file_util.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>

namespace flashvsr {

std::string model_cache_key(const std::string& dir, const LoadOptions& o) {
  char resolved[PATH_MAX];
  std::string key = ::realpath(dir.c_str(), resolved) ? std::string(resolved) : dir;
  key += "|" + o.device.str() + "|" + precision_name(o) + "|" + (o.variant ? variant_name(*o.variant) : "auto");
  auto time = [](const struct timespec& t) { return std::to_string(t.tv_sec) + "." + std::to_string(t.tv_nsec); };
  for (const char* name : {ReleaseLayout::kDit, ReleaseLayout::kLqProj, ReleaseLayout::kDecoder,
                           ReleaseLayout::kVaeDecoder, ReleaseLayout::kPrompt}) {
    struct stat st {};
    // Size and mtime can be carried over by a copy (cp -p, rsync -a, image layers); the file's identity
    // (device, inode) and its status-change time cannot: a rename puts another inode at the path, and
    // writing the file or setting its times (utimensat) sets its ctime to the current time.
    if (::stat(io::join_path(dir, name).c_str(), &st) == 0)
      key += "|" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) +
             ":" + time(st.st_mtim) + ":" + time(st.st_ctim);
    else
      key += "|-";
  }
  return key;
}

CachedModel ModelCache::get(const std::string& dir, const LoadOptions& options) {
  const std::string key = model_cache_key(dir, options);
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Forget entries whose model is gone and that no request is using (one being loaded has no model yet).
    for (auto it = entries_.begin(); it != entries_.end();)
      it = it->second->requests == 0 && it->second->model.expired() ? entries_.erase(it) : std::next(it);
    auto& slot = entries_[key];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
    ++entry->requests;
  }
  // Whatever happens below (a load that throws included), this request stops using the entry.
  struct Release {
    ModelCache& cache;
    Entry& entry;
    ~Release() {
      std::lock_guard<std::mutex> lock(cache.mutex_);
      --entry.requests;
    }
  } release{*this, *entry};
  std::lock_guard<std::mutex> loading(entry->loading);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto model = entry->model.lock()) return {model, false};
  }
  auto model = Model::load(dir, options);  // throws: nothing is cached
  std::lock_guard<std::mutex> lock(mutex_);
  entry->model = model;
  return {model, true};
}

size_t ModelCache::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto& [key, entry] : entries_) n += entry->model.expired() ? 0 : 1;
  return n;
}

}  // namespace flashvsr
