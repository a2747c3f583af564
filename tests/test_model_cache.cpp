// SPDX-License-Identifier: LGPL-2.1-or-later
// One loaded model per (directory, device, precision, file versions), shared and freed with its users.
#include "io/file_util.h"
#include "model_cache.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

std::string tiny_dir(const std::string& name, uint64_t seed) {
  c10::InferenceMode guard;
  const std::string dir = test::scratch_dir(name);
  write_model_dir(dir, make_random_model(ModelSpec::tiny(), seed));
  return dir;
}

const std::array<const char*, 4> kReleaseFiles{ReleaseLayout::kDit, ReleaseLayout::kLqProj, ReleaseLayout::kDecoder,
                                               ReleaseLayout::kPrompt};

// A load that can be held open: the model's decoder file has an unknown extra tensor, which Model::load
// reports through LoadOptions::log after binding; the first such call blocks until release().
struct HeldLoad {
  std::mutex m;
  std::condition_variable cv;
  int loads = 0;  // warnings about the planted unknown tensor = loads of the model
  bool released = false;

  LoadOptions options() {
    LoadOptions o;
    o.log = [this](LogLevel, const std::string& text) {
      if (text.find("unknown tensor") == std::string::npos) return;  // other lines of a load (Info)
      std::unique_lock<std::mutex> lock(m);
      if (++loads == 1) {
        cv.notify_all();
        cv.wait(lock, [this] { return released; });
      }
    };
    return o;
  }
  void wait_until_loading() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [this] { return loads > 0; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(m);
    released = true;
    cv.notify_all();
  }
};

}  // namespace

TEST(ModelCache, SameDirectoryDeviceAndPrecisionShareOneModel) {
  const std::string dir = tiny_dir("cache-share", 1);
  ModelCache cache;
  const CachedModel a = cache.get(dir, LoadOptions{});
  const CachedModel b = cache.get(dir + "/", LoadOptions{});  // same directory, other spelling
  EXPECT_EQ(a.model.get(), b.model.get());
  EXPECT_TRUE(a.loaded_now) << "the first request reads the weights";
  EXPECT_FALSE(b.loaded_now) << "the second shares them";
  LoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  const CachedModel c = cache.get(dir, bf16);
  EXPECT_NE(a.model.get(), c.model.get());
  EXPECT_TRUE(c.loaded_now) << "another precision is another model";
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ModelCache, ModelIsFreedWithItsLastUser) {
  const std::string dir = tiny_dir("cache-free", 2);
  ModelCache cache;
  std::weak_ptr<const Model> weak;
  {
    auto a = cache.get(dir, LoadOptions{}).model;
    weak = a;
    EXPECT_EQ(cache.size(), 1u);
  }
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_TRUE(cache.get(dir, LoadOptions{}).loaded_now) << "nothing held it: read again";
}

TEST(ModelCache, ReplacedFilesAreLoadedAgain) {
  const std::string dir = tiny_dir("cache-replaced", 3);
  ModelCache cache;
  auto a = cache.get(dir, LoadOptions{}).model;
  const std::string key_before = model_cache_key(dir, LoadOptions{});
  {
    c10::InferenceMode guard;
    // A different model written over the same directory (sizes equal, contents and times differ).
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 4));
  }
  EXPECT_NE(model_cache_key(dir, LoadOptions{}), key_before);
  const CachedModel again = cache.get(dir, LoadOptions{});
  EXPECT_TRUE(again.loaded_now);
  const auto& b = again.model;
  EXPECT_NE(a.get(), b.get());
  EXPECT_FALSE(at::equal(a->dit().blocks[0].q_w, b->dit().blocks[0].q_w));
}

// cp -p / rsync -a / image layers: the same sizes and the old modification times, other contents.
TEST(ModelCache, FilesReplacedWithTheirOldSizesAndTimesAreLoadedAgain) {
  const std::string dir = tiny_dir("cache-replaced-same-times", 6);
  const std::string other = tiny_dir("cache-replaced-same-times-source", 7);
  ModelCache cache;
  auto a = cache.get(dir, LoadOptions{}).model;
  const std::string key_before = model_cache_key(dir, LoadOptions{});
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the file system's timestamp granularity
  for (const char* name : kReleaseFiles) {
    const std::string path = join_path(dir, name);
    struct stat old_st {};
    ASSERT_EQ(::stat(path.c_str(), &old_st), 0) << path;
    const std::string bytes = test::read_file(join_path(other, name));
    ASSERT_EQ(static_cast<off_t>(bytes.size()), old_st.st_size) << name << ": the replacement must keep the size";
    test::write_file(path, bytes);  // in place, as cp does: same inode
    const struct timespec times[2] = {old_st.st_atim, old_st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
    struct stat new_st {};
    ASSERT_EQ(::stat(path.c_str(), &new_st), 0) << path;
    ASSERT_EQ(new_st.st_size, old_st.st_size);
    ASSERT_EQ(new_st.st_mtim.tv_sec, old_st.st_mtim.tv_sec);
    ASSERT_EQ(new_st.st_mtim.tv_nsec, old_st.st_mtim.tv_nsec);
  }
  EXPECT_NE(model_cache_key(dir, LoadOptions{}), key_before);
  const CachedModel again = cache.get(dir, LoadOptions{});
  EXPECT_TRUE(again.loaded_now);
  const auto& b = again.model;
  EXPECT_NE(a.get(), b.get());
  EXPECT_FALSE(at::equal(a->dit().blocks[0].q_w, b->dit().blocks[0].q_w));
  EXPECT_FALSE(at::equal(a->decoder().in_w, b->decoder().in_w));
}

// While A loads, a request for B must not forget A's entry: the next request for A gets the same model.
TEST(ModelCache, RequestForAnotherModelDuringALoadDoesNotLoadItTwice) {
  const std::string dir_a = test::scratch_dir("cache-held-a");
  {
    c10::InferenceMode guard;
    auto tensors = make_random_model(ModelSpec::tiny(), 8);
    tensors.decoder["decoder.99.weight"] = at::zeros({1});  // unknown: reported through the log callback
    write_model_dir(dir_a, tensors);
  }
  const std::string dir_b = tiny_dir("cache-held-b", 9);
  ModelCache cache;
  HeldLoad held;
  std::shared_ptr<const Model> a1;
  std::thread loader([&] { a1 = cache.get(dir_a, held.options()).model; });
  held.wait_until_loading();  // A's load is inside Model::load now
  auto b = cache.get(dir_b, LoadOptions{}).model;
  held.release();
  loader.join();
  ASSERT_TRUE(a1);
  auto a2 = cache.get(dir_a, held.options()).model;
  EXPECT_EQ(held.loads, 1) << "model A was loaded " << held.loads << " times, expected once";
  EXPECT_EQ(a1.get(), a2.get());
  EXPECT_NE(a1.get(), b.get());
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ModelCache, ConcurrentRequestsLoadOnce) {
  const std::string dir = tiny_dir("cache-concurrent", 5);
  ModelCache cache;
  std::vector<CachedModel> got(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = cache.get(dir, LoadOptions{}); });
  for (auto& t : threads) t.join();
  int loaded = 0;
  for (const auto& m : got) {
    EXPECT_EQ(m.model.get(), got[0].model.get());
    loaded += m.loaded_now ? 1 : 0;
  }
  EXPECT_EQ(loaded, 1) << "exactly one request read the weights";
}

TEST(ModelCache, FailedLoadCachesNothingAndNamesThePath) {
  ModelCache cache;
  EXPECT_THROW(cache.get("/nonexistent/model-dir", LoadOptions{}), Error);
  EXPECT_EQ(cache.size(), 0u);
}
