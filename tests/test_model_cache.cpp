// SPDX-License-Identifier: LGPL-2.1-or-later
// One loaded model per (directory, device, precision, file versions), shared and freed with its users.
#include "file_util.h"
#include "model_cache.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <thread>

using namespace flashvsr;

namespace {

std::string tiny_dir(const std::string& name, uint64_t seed) {
  c10::InferenceMode guard;
  const std::string dir = test::scratch_dir(name);
  write_model_dir(dir, make_random_model(ModelSpec::tiny(), seed));
  return dir;
}

}  // namespace

TEST(ModelCache, SameDirectoryDeviceAndPrecisionShareOneModel) {
  const std::string dir = tiny_dir("cache-share", 1);
  ModelCache cache;
  auto a = cache.get(dir, LoadOptions{});
  auto b = cache.get(dir + "/", LoadOptions{});  // same directory, other spelling
  EXPECT_EQ(a.get(), b.get());
  LoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  auto c = cache.get(dir, bf16);
  EXPECT_NE(a.get(), c.get());
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ModelCache, ModelIsFreedWithItsLastUser) {
  const std::string dir = tiny_dir("cache-free", 2);
  ModelCache cache;
  std::weak_ptr<const Model> weak;
  {
    auto a = cache.get(dir, LoadOptions{});
    weak = a;
    EXPECT_EQ(cache.size(), 1u);
  }
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(cache.size(), 0u);
}

TEST(ModelCache, ReplacedFilesAreLoadedAgain) {
  const std::string dir = tiny_dir("cache-replaced", 3);
  ModelCache cache;
  auto a = cache.get(dir, LoadOptions{});
  const std::string key_before = model_cache_key(dir, LoadOptions{});
  {
    c10::InferenceMode guard;
    // A different model written over the same directory (sizes equal, contents and times differ).
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 4));
  }
  EXPECT_NE(model_cache_key(dir, LoadOptions{}), key_before);
  auto b = cache.get(dir, LoadOptions{});
  EXPECT_NE(a.get(), b.get());
  EXPECT_FALSE(at::equal(a->dit().blocks[0].q_w, b->dit().blocks[0].q_w));
}

TEST(ModelCache, ConcurrentRequestsLoadOnce) {
  const std::string dir = tiny_dir("cache-concurrent", 5);
  ModelCache cache;
  std::vector<std::shared_ptr<const Model>> got(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = cache.get(dir, LoadOptions{}); });
  for (auto& t : threads) t.join();
  for (const auto& m : got) EXPECT_EQ(m.get(), got[0].get());
}

TEST(ModelCache, FailedLoadCachesNothingAndNamesThePath) {
  ModelCache cache;
  EXPECT_THROW(cache.get("/nonexistent/model-dir", LoadOptions{}), Error);
  EXPECT_EQ(cache.size(), 0u);
}
