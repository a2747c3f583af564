// SPDX-License-Identifier: LGPL-2.1-or-later
// The streaming engine end to end on the CPU with a generated tiny model: frame accounting, streaming
// invariance, reset, stream isolation, settings and input validation.
#include "engine.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <c10/core/AllocatorConfig.h>
#include <c10/core/InferenceMode.h>

#include <cstdlib>
#include <map>
#include <tuple>
#include <vector>
#if FLASHVSR_CUDA_KERNELS
#include <c10/cuda/CUDAFunctions.h>
#endif

using namespace flashvsr;

namespace {

std::shared_ptr<const Model> tiny_model() {
  static std::shared_ptr<const Model> model = [] {
    c10::InferenceMode guard;
    const std::string dir = test::scratch_dir("engine-tiny-model");
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 7));
    return Model::load(dir, LoadOptions{});
  }();
  return model;
}

// Deterministic, non-constant LR frames: uint8 [n, h, w, 3].
at::Tensor frames(int64_t n, int64_t h, int64_t w, int64_t seed = 0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) + 100);
  auto base = at::randint(0, 256, {1, h, w, 3}, gen, at::kLong).to(at::kFloat);
  auto drift = at::arange(n, at::kFloat).view({n, 1, 1, 1}) * 3.0;
  return (base + drift).remainder(256.0).to(at::kByte);
}

StreamOptions small_options(int64_t w = 24, int64_t h = 16) {
  StreamOptions o;
  o.in_width = w;
  o.in_height = h;
  o.sparse_ratio = 2.0;
  o.local_range = 3;
  return o;
}

at::Tensor run(Stream& s, const at::Tensor& lr, int64_t piece) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < lr.size(0); i += piece) out.push_back(s.push(lr.narrow(0, i, std::min(piece, lr.size(0) - i))).frames);
  out.push_back(s.finish().frames);
  return at::cat(out, 0);
}

}  // namespace

TEST(Engine, EveryInputFrameComesOutOnceForAnyFrameCount) {
  c10::InferenceMode guard;
  for (int64_t n : {1, 5, 24, 25, 26, 29, 33, 42}) {  // 42: two steady chunks and a padded tail
    Stream s(tiny_model(), small_options());
    auto out = run(s, frames(n, 16, 24), 1);
    EXPECT_EQ(out.size(0), n);
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{n, 64, 96, 3}));
    EXPECT_EQ(s.stats().frames_in, n);
    EXPECT_EQ(s.stats().frames_out, n);
  }
}

TEST(Engine, FirstOutputAfterTwentyFiveFramesThenEightPerEight) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  auto lr = frames(49, 16, 24);
  int64_t out = 0;
  for (int64_t i = 0; i < 49; ++i) {
    out += s.push(lr.narrow(0, i, 1)).frames.size(0);
    EXPECT_EQ(out, outputs_ready(i + 1)) << "after " << i + 1 << " frames";
  }
  EXPECT_EQ(s.finish().frames.size(0), 49 - out);
}

// push() and finish() say what they did: the chunks they ran (chunk 0 flagged) and the frames those gave.
TEST(Engine, PushSaysWhichChunksItRan) {
  c10::InferenceMode guard;
  const at::Tensor lr = frames(35, 16, 24);
  Stream s(tiny_model(), small_options());
  std::vector<PushResult> results;  // one per frame pushed, then finish()'s
  for (int64_t i = 0; i < lr.size(0); ++i) results.push_back(s.push(lr.narrow(0, i, 1)));
  results.push_back(s.finish());  // 35 frames are padded to 41: chunk 2 gives the last 6
  // Frames 25 and 33 complete chunks 0 (21 frames) and 1 (8 frames); finish() runs chunk 2.
  const std::map<size_t, int64_t> frames_of_chunk{{24, 21}, {32, 8}, {35, 6}};
  int64_t chunks = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto it = frames_of_chunk.find(i);
    const bool ran = it != frames_of_chunk.end();
    EXPECT_EQ(results[i].chunks, ran ? 1 : 0) << "call " << i;
    EXPECT_EQ(results[i].first_chunk, i == 24) << "call " << i;
    EXPECT_EQ(results[i].frames.size(0), ran ? it->second : 0) << "call " << i;
    EXPECT_EQ(results[i].seconds > 0.0, ran) << "call " << i;
    chunks += results[i].chunks;
  }
  EXPECT_EQ(chunks, s.stats().chunks);
  // A short stream's finish() runs chunk 0 itself.
  Stream short_stream(tiny_model(), small_options());
  short_stream.push(frames(3, 16, 24));
  const PushResult all = short_stream.finish();
  EXPECT_EQ(all.chunks, 1);
  EXPECT_TRUE(all.first_chunk);
  EXPECT_EQ(all.frames.size(0), 3);
}

// "auto" device and precision: CUDA (device 0, bf16) when this process has it, else the CPU in fp32. ("fp8"
// resolves to bf16 with e4m3 linear layers; it is refused at load where it cannot run: test_fp8_linear.)
TEST(Engine, AutoDeviceAndPrecisionFollowWhatTheProcessHas) {
  const LoadOptions a = resolve_load_options("auto", "auto");
  if (at::hasCUDA()) {
    EXPECT_EQ(a.device, at::Device(at::kCUDA, 0));
    EXPECT_EQ(a.dtype, at::kBFloat16);
  } else {
    EXPECT_EQ(a.device, at::Device(at::kCPU));
    EXPECT_EQ(a.dtype, at::kFloat);
  }
  EXPECT_EQ(resolve_load_options("cpu", "auto").dtype, at::kFloat);
  const LoadOptions cuda = resolve_load_options("cuda:1", "auto");  // resolved, not checked
  EXPECT_EQ(cuda.device, at::Device(at::kCUDA, 1));
  EXPECT_EQ(cuda.dtype, at::kBFloat16);
  EXPECT_EQ(resolve_load_options("cuda", "fp16").dtype, at::kHalf);
  EXPECT_EQ(resolve_load_options("auto", "fp32").dtype, at::kFloat);
  for (const auto& [device, precision, needle] :
       {std::make_tuple("gpu7", "auto", "gpu7"), std::make_tuple("cpu", "int8", "int8")}) {
    try {
      resolve_load_options(device, precision);
      ADD_FAILURE() << device << " " << precision << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

// The allocator default is a process-wide LibTorch setting: checked through LibTorch's own accessors (not
// through what configure_cuda_allocator returns), and the user's PYTORCH_CUDA_ALLOC_CONF always wins.
TEST(Engine, AllocatorDefaultsToExpandableSegmentsUnlessTheUserConfiguredIt) {
  using c10::CachingAllocator::AcceleratorAllocatorConfig;
  const char* before = std::getenv("PYTORCH_CUDA_ALLOC_CONF");
  const std::string saved = before ? before : "";
  setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False", 1);
  c10::CachingAllocator::setAllocatorSettings("expandable_segments:False");
  const std::string user = flashvsr::configure_cuda_allocator();
  EXPECT_FALSE(AcceleratorAllocatorConfig::use_expandable_segments()) << user;
  EXPECT_NE(user.find("expandable_segments:False"), std::string::npos) << user;
  unsetenv("PYTORCH_CUDA_ALLOC_CONF");
  const std::string ours = flashvsr::configure_cuda_allocator();
  EXPECT_TRUE(AcceleratorAllocatorConfig::use_expandable_segments()) << ours;
  EXPECT_EQ(c10::CachingAllocator::getAllocatorSettings(), "expandable_segments:True");
  if (before) setenv("PYTORCH_CUDA_ALLOC_CONF", saved.c_str(), 1);
  c10::CachingAllocator::setAllocatorSettings(before ? saved : std::string("expandable_segments:False"));
}

TEST(Engine, OutputDoesNotDependOnHowFramesArePushed) {
  c10::InferenceMode guard;
  auto lr = frames(42, 16, 24);
  Stream a(tiny_model(), small_options()), b(tiny_model(), small_options());
  auto one_by_one = run(a, lr, 1);
  auto all_at_once = run(b, lr, 42);
  EXPECT_TRUE(at::equal(one_by_one, all_at_once));
}

// Frames arriving one by one: chunk 0's clips [0,1), [1,5) .. [17,21) are projected as they complete (six
// times, before the 25th frame), its last clip [21,25) with the chunk; all at once: nothing ahead. The
// output is the same either way (OutputDoesNotDependOnHowFramesArePushed).
TEST(Engine, ChunkZerosClipsAreProjectedAsTheirFramesArrive) {
  c10::InferenceMode guard;
  for (const int64_t piece : {1, 25}) {
    Stream s(tiny_model(), small_options());
    int64_t ahead = 0, with_chunk = 0, ahead_after_chunk0 = 0;
    s.set_stage_hook([&](Stage stage, bool begin) {
      if (!begin) return;
      if (stage == Stage::LqProjAhead) ++(s.stats().chunks ? ahead_after_chunk0 : ahead);
      if (stage == Stage::LqProj) ++with_chunk;
    });
    run(s, frames(41, 16, 24), piece);
    EXPECT_EQ(ahead, piece == 1 ? 6 : 0) << "frames pushed " << piece << " at a time";
    EXPECT_EQ(ahead_after_chunk0, 0) << "only chunk 0 projects ahead";
    EXPECT_EQ(with_chunk, 4) << "chunks 0-2, and chunk 3 after finish() pads, each mark their projection";
  }
}

TEST(Engine, ResetGivesTheSameOutputAsAFreshStream) {
  c10::InferenceMode guard;
  auto lr1 = frames(30, 16, 24, 1), lr2 = frames(27, 16, 24, 2);
  Stream s(tiny_model(), small_options());
  run(s, lr1, 5);
  s.reset();
  auto again = run(s, lr2, 3);
  Stream fresh(tiny_model(), small_options());
  EXPECT_TRUE(at::equal(again, run(fresh, lr2, 3)));
}

TEST(Engine, ResetMidWindowDropsPendingFrames) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  s.push(frames(30, 16, 24, 3));
  s.reset();
  EXPECT_EQ(s.held_frames(), 0);
  EXPECT_EQ(s.stats().frames_in, 0);
  auto out = run(s, frames(3, 16, 24), 1);
  EXPECT_EQ(out.size(0), 3);
}

// The stream keeps its noise in a buffer of its own: what a noise source hands it is read, never written.
TEST(Engine, NoiseSourceTensorsAreNeverWritten) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  std::vector<at::Tensor> handed, copies;
  s.set_noise_source([&](int64_t first, int64_t count) {
    auto n = test::seeded_randn({1, 16, count, s.padded_height() / 8, s.padded_width() / 8}, 100 + first);
    handed.push_back(n);
    copies.push_back(n.clone());
    return n;
  });
  run(s, frames(41, 16, 24, 6), 1);  // chunk 0 and two steady chunks
  ASSERT_GE(handed.size(), 3u);
  for (size_t i = 0; i < handed.size(); ++i) EXPECT_TRUE(at::equal(handed[i], copies[i])) << "noise of chunk " << i;
}

TEST(Engine, InterleavedStreamsOnOneModelDoNotShareState) {
  c10::InferenceMode guard;
  auto lr1 = frames(35, 16, 24, 4), lr2 = frames(35, 16, 24, 5);
  Stream solo1(tiny_model(), small_options()), solo2(tiny_model(), small_options());
  auto want1 = run(solo1, lr1, 35), want2 = run(solo2, lr2, 35);
  Stream a(tiny_model(), small_options()), b(tiny_model(), small_options());
  std::vector<at::Tensor> got1, got2;
  for (int64_t i = 0; i < 35; ++i) {
    got1.push_back(a.push(lr1.narrow(0, i, 1)).frames);
    got2.push_back(b.push(lr2.narrow(0, i, 1)).frames);
  }
  got1.push_back(a.finish().frames);
  got2.push_back(b.finish().frames);
  EXPECT_TRUE(at::equal(at::cat(got1, 0), want1));
  EXPECT_TRUE(at::equal(at::cat(got2, 0), want2));
}

TEST(Engine, SeedSelectsTheNoise) {
  c10::InferenceMode guard;
  auto lr = frames(25, 16, 24);
  auto o1 = small_options(), o2 = small_options();
  o2.seed = 1;
  Stream a(tiny_model(), o1), b(tiny_model(), o1), c(tiny_model(), o2);
  auto ra = run(a, lr, 25), rb = run(b, lr, 25), rc = run(c, lr, 25);
  EXPECT_TRUE(at::equal(ra, rb));
  EXPECT_FALSE(at::equal(ra, rc));
}

TEST(Engine, OddSizesAndExplicitOutputSizesAreCroppedExactly) {
  c10::InferenceMode guard;
  auto o = small_options(13, 7);
  Stream s(tiny_model(), o);
  EXPECT_EQ(s.out_width(), 52);
  EXPECT_EQ(s.out_height(), 28);
  EXPECT_EQ(s.padded_width(), 128);
  EXPECT_EQ(s.padded_height(), 128);
  EXPECT_EQ(run(s, frames(2, 7, 13), 1).sizes().vec(), (std::vector<int64_t>{2, 28, 52, 3}));

  auto o2 = small_options(70, 46);
  o2.out_width = 211;
  o2.out_height = 139;
  Stream t(tiny_model(), o2);
  EXPECT_EQ(t.padded_width(), 256);
  EXPECT_EQ(t.padded_height(), 256);
  EXPECT_EQ(run(t, frames(3, 46, 70), 2).sizes().vec(), (std::vector<int64_t>{3, 139, 211, 3}));
}

TEST(Engine, ScaleTwoAndNonIntegerScales) {
  c10::InferenceMode guard;
  auto o = small_options(30, 20);
  o.scale = 2.5;
  Stream s(tiny_model(), o);
  EXPECT_EQ(s.out_width(), 75);
  EXPECT_EQ(s.out_height(), 50);
  EXPECT_EQ(run(s, frames(1, 20, 30), 1).sizes().vec(), (std::vector<int64_t>{1, 50, 75, 3}));
}

TEST(Engine, HeldFramesStayBoundedOnLongStreams) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  auto lr = frames(1, 16, 24);
  int64_t most = 0;
  for (int i = 0; i < 150; ++i) {
    s.push(lr);
    most = std::max(most, s.held_frames());
  }
  EXPECT_LE(most, 33);
  EXPECT_EQ(s.stats().frames_out, outputs_ready(150));
}

TEST(Engine, BadInputIsAnErrorNotACrash) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  EXPECT_THROW(s.push(at::zeros({1, 16, 25, 3}, at::kByte)), Error);        // wrong width
  EXPECT_THROW(s.push(at::zeros({1, 16, 24, 4}, at::kByte)), Error);        // 4 channels
  EXPECT_THROW(s.push(at::zeros({1, 16, 24, 3}, at::kFloat)), Error);       // not uint8
  EXPECT_THROW(s.push(at::zeros({16, 24, 3}, at::kByte)), Error);           // no batch dim
  EXPECT_EQ(s.push(at::zeros({0, 16, 24, 3}, at::kByte)).frames.size(0), 0);        // empty batch is fine
  s.push(frames(2, 16, 24));
  EXPECT_EQ(s.finish().frames.size(0), 2);
  try {
    s.push(frames(1, 16, 24));
    FAIL() << "push after finish must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadInput);
  }
}

TEST(Engine, BadSettingsAreRejectedWithTheValue) {
  c10::InferenceMode guard;
  auto expect_bad = [](StreamOptions o, const std::string& needle) {
    try {
      Stream s(tiny_model(), o);
      FAIL() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto o = small_options();
  o.in_width = 0;
  expect_bad(o, "input size");
  o = small_options();
  o.scale = -1;
  expect_bad(o, "scale");
  o = small_options();
  o.kv_ratio = 0.5;
  expect_bad(o, "kv ratio");
  o = small_options();
  o.local_range = 0;
  expect_bad(o, "local range");
  o = small_options();
  o.sparse_ratio = 0;
  expect_bad(o, "sparse ratio");
  o = small_options();
  o.out_width = 100;
  expect_bad(o, "output size");
}

TEST(Engine, FinishOnAnEmptyStreamEmitsNothing) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  EXPECT_EQ(s.finish().frames.size(0), 0);
}

// The attention backend a stream runs is resolved when it is set up, with the reason for a slow path.
TEST(Engine, AttentionBackendIsResolvedUpFrontWithTheReasonForTheReferencePath) {
  const auto cpu = choose_attention_backend(AttentionBackend::Auto, at::kCPU, at::kFloat);
  EXPECT_EQ(cpu.backend, AttentionBackend::Reference);
  EXPECT_TRUE(cpu.reason.empty()) << "the reference path is the CPU's only one, not a slow path there";
  const auto fp32 = choose_attention_backend(AttentionBackend::Auto, at::Device("cuda:0"), at::kFloat);
  EXPECT_EQ(fp32.backend, AttentionBackend::Reference);
  EXPECT_FALSE(fp32.reason.empty()) << "fp32 on CUDA runs the reference path and must say why";
  const auto bf16 = choose_attention_backend(AttentionBackend::Auto, at::Device("cuda:0"), at::kBFloat16);
  if (cuda_attention_available()) {
    EXPECT_EQ(bf16.backend, AttentionBackend::Cuda);
    EXPECT_TRUE(bf16.reason.empty());
  } else {
    EXPECT_EQ(bf16.backend, AttentionBackend::Reference);
    EXPECT_NE(bf16.reason.find("no CUDA kernels"), std::string::npos) << bf16.reason;
  }
  EXPECT_THROW(choose_attention_backend(AttentionBackend::Cuda, at::kCPU, at::kBFloat16), Error);
  EXPECT_THROW(choose_attention_backend(AttentionBackend::Cuda, at::Device("cuda:0"), at::kFloat), Error);
  Stream s(tiny_model(), small_options());
  EXPECT_EQ(s.attention().backend, AttentionBackend::Reference);
}

// FlashVSR Full: the same chunk schedule with the Wan2.1 VAE decoder as stage 3 (a generated model of
// the tiny preset's sizes, VAE base width 8).
namespace {
std::shared_ptr<const Model> full_model() {
  static std::shared_ptr<const Model> model = [] {
    c10::InferenceMode guard;
    const std::string dir = test::scratch_dir("engine-full-model");
    write_model_dir(dir, make_random_model(ModelSpec::tiny().with_variant(Variant::Full), 7));
    return Model::load(dir, LoadOptions{});
  }();
  return model;
}
}  // namespace

TEST(FullVariant, EveryInputFrameComesOutOnceForAnyFrameCount) {
  c10::InferenceMode guard;
  ASSERT_EQ(full_model()->variant(), Variant::Full);
  for (int64_t n : {1, 25, 29, 42}) {
    Stream s(full_model(), small_options());
    auto out = run(s, frames(n, 16, 24), 1);
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{n, 64, 96, 3})) << n;
    EXPECT_EQ(s.stats().frames_out, n);
  }
}

TEST(FullVariant, FirstOutputAfterTwentyFiveFramesThenEightPerEight) {
  c10::InferenceMode guard;
  Stream s(full_model(), small_options());
  auto lr = frames(41, 16, 24);
  int64_t out = 0;
  for (int64_t i = 0; i < 41; ++i) {
    out += s.push(lr.narrow(0, i, 1)).frames.size(0);
    EXPECT_EQ(out, outputs_ready(i + 1)) << "after " << i + 1 << " frames";
  }
}

// The decoder's temporal caches carry across chunks: how frames are pushed changes nothing.
TEST(FullVariant, OutputDoesNotDependOnHowFramesArePushed) {
  c10::InferenceMode guard;
  auto lr = frames(42, 16, 24);
  Stream a(full_model(), small_options()), b(full_model(), small_options());
  EXPECT_TRUE(at::equal(run(a, lr, 1), run(b, lr, 42)));
}

TEST(FullVariant, ResetMidStreamGivesTheSameOutputAsAFreshStream) {
  c10::InferenceMode guard;
  auto lr1 = frames(37, 16, 24, 1), lr2 = frames(33, 16, 24, 2);
  Stream s(full_model(), small_options());
  s.push(lr1);  // chunks 0 and 1 ran: the VAE caches hold chunk 1's frames
  s.reset();
  auto again = run(s, lr2, 4);
  Stream fresh(full_model(), small_options());
  EXPECT_TRUE(at::equal(again, run(fresh, lr2, 4)));
}

TEST(FullVariant, ModelsOfBothVariantsServeStreamsSideBySide) {
  c10::InferenceMode guard;
  auto lr = frames(29, 16, 24);
  Stream tiny(tiny_model(), small_options()), full(full_model(), small_options());
  auto a = run(tiny, lr, 8), b = run(full, lr, 8);
  EXPECT_EQ(a.sizes(), b.sizes());
  EXPECT_FALSE(at::equal(a, b));  // different stage 3, different pictures
}

#if FLASHVSR_CUDA_KERNELS
// Steady chunks on CUDA enqueue their work without waiting for the device: LibTorch's sync-debug mode set
// to error turns any synchronising call (a blocking copy, .item(), a stream synchronisation) into an
// exception. The frames are already on the device and the outputs stay there (an element's download of
// its output buffers is the one synchronisation a chunk needs, outside this check).
// Runs chunks 0 and 1 of a CUDA bf16 stream of the variant, then chunks 2 and 3 in sync-debug mode; returns
// the error of the first synchronising call ("" when none) and counts the frames of chunks 2 and 3.
namespace {
std::string steady_chunk_sync_error(Variant variant, int64_t& out, bool fp8 = false) {
  c10::InferenceMode guard;
  LoadOptions lo;
  lo.device = at::Device("cuda:0");
  lo.dtype = at::kBFloat16;
  lo.fp8_linears = fp8;
  auto cuda_model =
      Model::from_tensors(make_random_model(ModelSpec::tiny().with_variant(variant), 11, at::kBFloat16), lo);
  StreamOptions o;
  o.in_width = 64;
  o.in_height = 48;
  Stream s(cuda_model, o);
  EXPECT_EQ(s.attention().backend, AttentionBackend::Cuda) << s.attention().backend_reason;
  const at::Tensor frames = test::seeded_randn({49, 48, 64, 3}, 12).mul(60).add(128).clamp(0, 255).to(at::kByte).to(lo.device);
  EXPECT_EQ(s.push(frames.narrow(0, 0, 33)).frames.size(0), 29);  // chunks 0 and 1, eager set-up
  c10::cuda::device_synchronize();
  auto& sync_debug = c10::cuda::warning_state();
  sync_debug.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  std::string error;
  out = 0;
  try {
    for (int64_t i = 33; i < 49; ++i) out += s.push(frames.narrow(0, i, 1)).frames.size(0);  // chunks 2 and 3
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  sync_debug.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  c10::cuda::device_synchronize();
  return error;
}
}  // namespace

TEST(CudaSteadyChunk, RunsWithoutHostSynchronisation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  int64_t out = 0;
  EXPECT_EQ(steady_chunk_sync_error(Variant::Tiny, out), "") << "a steady chunk synchronised with the host";
  EXPECT_EQ(out, 16);
}

TEST(CudaSteadyChunk, FullVariantRunsWithoutHostSynchronisation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  int64_t out = 0;
  EXPECT_EQ(steady_chunk_sync_error(Variant::Full, out), "") << "a steady Full chunk synchronised with the host";
  EXPECT_EQ(out, 16);
}

// Precision fp8: the activations' scales are computed on the device, so the chunk still never waits.
TEST(CudaSteadyChunk, Fp8RunsWithoutHostSynchronisation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  try {
    check_fp8_support(at::Device("cuda:0"));
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  int64_t out = 0;
  EXPECT_EQ(steady_chunk_sync_error(Variant::Tiny, out, /*fp8=*/true), "") << "a steady fp8 chunk synchronised with the host";
  EXPECT_EQ(out, 16);
}
#else
TEST(CudaSteadyChunk, RunsWithoutHostSynchronisation) {
  GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)";
}
TEST(CudaSteadyChunk, FullVariantRunsWithoutHostSynchronisation) {
  GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)";
}
TEST(CudaSteadyChunk, Fp8RunsWithoutHostSynchronisation) {
  GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)";
}
#endif

// ------------------------------------------------------------------------------------------------
// Float frames in and out (10/16-bit video: docs/element.md)
// ------------------------------------------------------------------------------------------------

// Without a resize, push_float of integral frames is push() bit for bit: the same [-1, 1] mapping.
TEST(EngineFloat, PushFloatOfIntegralFramesWithoutResizeEqualsPush) {
  c10::InferenceMode guard;
  StreamOptions o = small_options(96, 64);
  o.out_width = 96;
  o.out_height = 64;
  const at::Tensor lr = frames(9, 64, 96, 3);
  Stream a(tiny_model(), o), b(tiny_model(), o);
  const at::Tensor u8 = run(a, lr, 9);
  const at::Tensor f = at::cat({b.push_float(lr.to(at::kFloat)).frames, b.finish().frames}, 0);
  ASSERT_EQ(u8.size(0), 9);
  EXPECT_TRUE(at::equal(u8, f));
}

// With a resize, the stream's pre-processing is BicubicResize::resize_float (not Pillow's rounded uint8
// passes, so not push() bit for bit): a 4x stream given 10-bit frames equals a stream at the output size
// given the resize_float'ed frames, and differs from push() of the same frames rounded to 8 bits.
TEST(EngineFloat, PushFloatResizesWithTheUnroundedTaps) {
  c10::InferenceMode guard;
  const at::Tensor lr = frames(9, 16, 24, 4).to(at::kFloat).add_(at::rand({9, 16, 24, 3})).clamp_(0.0, 255.0);
  Stream scaled(tiny_model(), small_options());
  StreamOptions full = small_options(96, 64);
  full.out_width = 96;
  full.out_height = 64;
  Stream at_size(tiny_model(), full), eight_bit(tiny_model(), small_options());
  const at::Tensor got = at::cat({scaled.push_float(lr).frames, scaled.finish().frames}, 0);
  const at::Tensor hr = BicubicResize(24, 16, 96, 64, at::kCPU).resize_float(lr);
  const at::Tensor expect = at::cat({at_size.push_float(hr).frames, at_size.finish().frames}, 0);
  ASSERT_EQ(got.size(0), 9);
  EXPECT_TRUE(at::equal(got, expect));
  EXPECT_FALSE(at::equal(got, run(eight_bit, lr.round().to(at::kByte), 9))) << "the sub-8-bit input must matter";
}

// float_output: float32 frames in [0, 255] whose round is the uint8 output of the same stream.
TEST(EngineFloat, FloatOutputRoundsToTheUint8Output) {
  c10::InferenceMode guard;
  StreamOptions fo = small_options();
  fo.float_output = true;
  Stream u8_stream(tiny_model(), small_options()), float_stream(tiny_model(), fo);
  const at::Tensor lr = frames(9, 16, 24, 5);
  const at::Tensor early = float_stream.push(lr.narrow(0, 0, 4)).frames;  // nothing ready yet
  EXPECT_EQ(early.size(0), 0);
  EXPECT_EQ(early.scalar_type(), at::kFloat);
  const at::Tensor f = at::cat({early, float_stream.push(lr.narrow(0, 4, 5)).frames, float_stream.finish().frames}, 0);
  const at::Tensor u8 = run(u8_stream, lr, 9);
  ASSERT_EQ(f.scalar_type(), at::kFloat);
  ASSERT_EQ(f.sizes(), u8.sizes());
  EXPECT_GE(f.min().item<float>(), 0.0f);
  EXPECT_LE(f.max().item<float>(), 255.0f);
  EXPECT_LE((f - u8.to(at::kFloat)).abs().max().item<float>(), 0.5f);
  EXPECT_TRUE(at::equal(f.round().to(at::kByte), u8));
  EXPECT_FALSE(at::equal(f, u8.to(at::kFloat))) << "the float output must not be rounded";
}

TEST(EngineFloat, PushFloatRejectsUint8AndWrongShapes) {
  c10::InferenceMode guard;
  Stream s(tiny_model(), small_options());
  EXPECT_THROW(s.push_float(frames(1, 16, 24)), Error);
  EXPECT_THROW(s.push_float(at::zeros({1, 16, 23, 3})), Error);
  EXPECT_THROW(s.push_float(at::zeros({1, 16, 24, 4})), Error);
}
