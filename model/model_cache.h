// SPDX-License-Identifier: LGPL-2.1-or-later
// Sharing loaded models between streams: elements (or any other users) that ask for the same model
// directory on the same device and precision get the same immutable Model, loaded once. Entries are held
// weakly: a model is freed when its last user lets go. The key includes each file's identity (device,
// inode), size, modification and status-change times, so a directory whose files were replaced is loaded
// again (never a stale model), even by a copy that keeps the old sizes and times (cp -p, rsync -a).
#pragma once

#include "engine.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace flashvsr {

// A model from the cache, and whether this request read its weights (no other user held that model).
struct CachedModel {
  std::shared_ptr<const Model> model;
  bool loaded_now = false;
};

class ModelCache {
 public:
  // Loads (or returns the already loaded) model. Thread-safe; concurrent requests for one key load once:
  // exactly one of them says loaded_now.
  CachedModel get(const std::string& dir, const LoadOptions& options);
  // Number of models currently alive in the cache.
  size_t size();

 private:
  struct Entry {
    std::mutex loading;                 // held while this key's model is being loaded
    std::weak_ptr<const Model> model;   // guarded by mutex_; empty until the first load has finished
    int requests = 0;                   // guarded by mutex_: get() calls using this entry (never erased while > 0)
  };
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
};

// The key of a model directory as the cache sees it: canonical path, device, dtype, variant asked for, and for each release
// file its device and inode, size, mtime and ctime (which no user-space copy can set). Exposed for tests.
std::string model_cache_key(const std::string& dir, const LoadOptions& options);

}  // namespace flashvsr
