// SPDX-License-Identifier: LGPL-2.1-or-later
// Unbounded streams. The reference precomputes RoPE tables for 1024 latent frames (about 4096 video
// frames) and cannot go past them; the engine computes the angles from the positions in float64 (rope.h),
// so a stream has no end. Two properties make that safe:
//  - the DiT's outputs depend only on differences of temporal positions (RoPE rotates queries and keys by
//    their own positions; scores, window means and the top-k selection see the difference only), so a
//    chunk far into a stream computes what it would compute at the start;
//  - every piece of stream state has a bounded memory (LQ projection: two 2-frame conv caches; DiT: the
//    last kv-ratio slices of keys/values per block; decoder: each MemBlock's input of the previous frame),
//    so a chunk's output is a function of a bounded window of recent input frames and noise.
// Hence the output far past frame 4096 equals the output of a stream that started later on the same
// frames (with the same noise), up to float rounding of the rotation at other absolute positions.
#include "dit.h"
#include "engine.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <vector>

using namespace flashvsr;

namespace {

std::shared_ptr<const Model> tiny_model() {
  static std::shared_ptr<const Model> model = [] {
    c10::InferenceMode guard;
    at::set_num_threads(1);  // the same reduction order in every run: comparisons are exact where they can be
    return Model::from_tensors(make_random_model(ModelSpec::tiny(), 41), LoadOptions{});
  }();
  return model;
}

std::string sci(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", v);
  return text;
}

double relative_l2(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>() / b.to(at::kDouble).norm().item<double>();
}

// The DiT over a stream's chunk schedule (chunk 0: 6 latent frames, then 2 per chunk) with the temporal
// positions of every chunk moved by `offset` (and chunk `bump_chunk` alone moved one frame further when
// >= 0); returns each chunk's noise prediction. Same latents and LQ tokens for every call.
std::vector<at::Tensor> dit_chunks(const AttentionPlan& plan, int64_t height, int64_t width, int64_t chunks,
                                   int64_t offset, int64_t bump_chunk = -1) {
  c10::InferenceMode guard;
  const auto model = tiny_model();
  const int64_t h = height / 16, w = width / 16;
  Rope rope(model->config().dit.head_dim, h, w, at::kCPU);
  DitState state;
  std::vector<at::Tensor> preds;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c == 0 ? 0 : 4 + 2 * c, frames = c == 0 ? 6 : 2;
    const auto latents = test::seeded_randn({1, 16, frames, height / 8, width / 8}, 100 + c);
    const auto tokens = test::seeded_randn({1, frames * h * w, model->config().dit.dim}, 200 + c) * 0.5;
    const int64_t position = first + offset + (c == bump_chunk ? 1 : 0);
    preds.push_back(dit_forward(model->dit(), model->dit_constants(), state, latents, {tokens},
                                rope.table(position, frames), plan));
  }
  return preds;
}

}  // namespace

// (a) The DiT with its KV cache over a chunk sequence gives the same noise predictions whether the stream's
// positions start at 0, past the reference's table end (5000 latent frames = 20000 video frames), at 10^6
// (about 18 days of 25 fps video) or at 10^9 (about 5 years).
TEST(Unbounded, DitPredictionsDependOnlyOnPositionDifferences) {
  struct Layout {
    const char* name;
    int64_t height, width;
    SparseAttentionSettings settings;
  };
  SparseAttentionSettings dense;  // the released settings at this size select every window
  dense.topk_ratio = topk_ratio_for(2.0, 128, 128);
  SparseAttentionSettings sparse;  // 2 x 2 windows per slice, only the own window local: top-k decides
  sparse.topk_ratio = 0.4;
  sparse.local_range = 1;
  sparse.kv_slices = 2;
  for (const Layout& layout : {Layout{"dense 128x128", 128, 128, dense}, Layout{"sparse 256x256", 256, 256, sparse}}) {
    SCOPED_TRACE(layout.name);
    const auto plan = AttentionPlan::make(layout.settings, layout.height / 128, layout.width / 128, at::kCPU);
    const int64_t chunks = 6;  // past the point where the KV cache is full and drops slices
    const auto base = dit_chunks(plan, layout.height, layout.width, chunks, 0);
    for (int64_t offset : {int64_t{5000}, int64_t{1000000}, int64_t{1000000000}}) {
      const auto moved = dit_chunks(plan, layout.height, layout.width, chunks, offset);
      for (int64_t c = 0; c < chunks; ++c) {
        const double rel = relative_l2(moved[c], base[c]);
        EXPECT_LT(rel, 2e-5) << "offset " << offset << " chunk " << c;
        RecordProperty(std::string(layout.name) + " offset " + std::to_string(offset) + " chunk " + std::to_string(c),
                       sci(rel));
      }
    }
    // The comparison can see positions: moving one chunk alone (another position difference) changes it
    // and the chunks after it, which attend to its cached keys.
    const auto bumped = dit_chunks(plan, layout.height, layout.width, chunks, 0, 3);
    for (int64_t c = 0; c < 3; ++c) EXPECT_TRUE(at::equal(bumped[c], base[c])) << "chunk " << c;
    for (int64_t c = 3; c < chunks; ++c) {
      const double rel = relative_l2(bumped[c], base[c]);
      EXPECT_GT(rel, 1e-3) << "chunk " << c;
      RecordProperty(std::string(layout.name) + " chunk 3 moved, chunk " + std::to_string(c), sci(rel));
    }
  }
}

namespace {

// Per-latent-frame noise that depends only on the latent index (+ shift): two streams can be given the
// same noise for the same content at different positions.
NoiseSource noise_by_index(int64_t shift, int64_t hp, int64_t wp) {
  return [shift, hp, wp](int64_t first, int64_t count) {
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < count; ++i)
      parts.push_back(test::seeded_randn({1, 16, 1, hp / 8, wp / 8}, static_cast<uint64_t>(1000003 + first + shift + i)));
    return at::cat(parts, 2);
  };
}

// Deterministic, moving LR content: uint8 [n, h, w, 3] for frames first .. first + n - 1.
at::Tensor content(int64_t n, int64_t h, int64_t w) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(77);
  auto base = at::rand({1, h, w, 3}, gen, at::kFloat) * 160.0;
  auto t = at::arange(n, at::kFloat).view({n, 1, 1, 1});
  auto x = at::arange(w, at::kFloat).view({1, 1, w, 1});
  auto wave = 40.0 * at::sin(t * 0.37 + x * 0.9) + 30.0 * at::sin(t * 0.011);
  auto noise = at::rand({n, h, w, 3}, gen, at::kFloat) * 20.0;
  return (base + wave + noise + 30.0).clamp(0, 255).round().to(at::kByte);
}

}  // namespace

// (b) A stream pushed past the reference's table end (4096 frames) keeps producing exactly one frame per
// input with no error, and its frames far past that point equal those of a stream that started 4200
// frames later on the same content and noise, once the later stream's own start has left its bounded
// memory (about 100 frames here).
TEST(Unbounded, StreamPastTheTableEndMatchesAStreamStartedThere) {
  c10::InferenceMode guard;
  const auto model = tiny_model();
  const int64_t lr = 8;                  // 8x8 in, 32x32 out, padded to 128x128 inside the engine
  const int64_t skip = 4200;             // a multiple of 8 (one chunk) past 4096: latent position 1050
  const int64_t tail = 240;              // frames compared after the skip
  const int64_t settle = 120;            // the later stream's first frames differ: its start is its own
  const int64_t total = skip + tail;
  const at::Tensor frames = content(total, lr, lr);

  StreamOptions o;
  o.in_width = lr;
  o.in_height = lr;
  Stream along(model, o), later(model, o);
  along.set_noise_source(noise_by_index(0, along.padded_height(), along.padded_width()));
  later.set_noise_source(noise_by_index(skip / 4, later.padded_height(), later.padded_width()));  // 4 frames a latent

  // Noise predictions of the chunks that cover the compared frames, by the later stream's chunk index.
  std::map<int64_t, at::Tensor> along_pred, later_pred;
  const int64_t chunk_shift = skip / 8;
  along.set_observer([&](int64_t c, const std::string& name, const at::Tensor& v) {
    if (name == "noise_pred" && c >= chunk_shift + settle / 8) along_pred[c - chunk_shift] = v.clone();
  });
  later.set_observer([&](int64_t c, const std::string& name, const at::Tensor& v) {
    if (name == "noise_pred" && c >= settle / 8) later_pred[c] = v.clone();
  });

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<at::Tensor> out_along;
  int64_t emitted = 0;
  for (int64_t i = 0; i < total; i += 8) {
    auto out = along.push(frames.narrow(0, i, std::min<int64_t>(8, total - i))).frames;
    emitted += out.size(0);
    if (i + 8 > skip) out_along.push_back(out);
    else ASSERT_EQ(out.size(0), outputs_ready(i + 8) - outputs_ready(i)) << "frame " << i;
  }
  auto rest = along.finish().frames;
  emitted += rest.size(0);
  out_along.push_back(rest);
  EXPECT_EQ(emitted, total);
  EXPECT_EQ(along.stats().frames_out, total);
  EXPECT_GT(along.stats().chunks, 1024 / 2) << "the stream went past the reference's 1024 latent frames";
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("long_stream_seconds", sci(seconds));

  const at::Tensor along_tail = at::cat(out_along, 0);  // frames from skip - 3 on: take the last `tail`
  const at::Tensor a = along_tail.narrow(0, along_tail.size(0) - tail, tail);
  const at::Tensor b = at::cat({later.push(frames.narrow(0, skip, tail)).frames, later.finish().frames}, 0);
  ASSERT_EQ(a.sizes(), b.sizes());
  ASSERT_EQ(a.sizes().vec(), (std::vector<int64_t>{tail, 32, 32, 3}));

  // The later stream's own start (a 25-frame first chunk, empty caches) differs from the same frames deep
  // in the long stream: the comparison below is not comparing identical computations.
  const auto diff = (a.to(at::kInt) - b.to(at::kInt)).abs();
  EXPECT_GT(diff.narrow(0, 0, 21).max().item<int>(), 2);

  // After it has settled: equal up to rounding of the 8-bit output.
  const auto settled = diff.narrow(0, settle, tail - settle);
  const int max_diff = settled.max().item<int>();
  const double share_diff = settled.gt(0).to(at::kDouble).mean().item<double>();
  EXPECT_LE(max_diff, 1);
  EXPECT_LT(share_diff, 1e-3);
  RecordProperty("settled_max_u8_diff", max_diff);
  RecordProperty("settled_share_of_differing_bytes", sci(share_diff));

  int compared = 0;
  double worst = 0.0;
  for (const auto& [c, pred] : later_pred) {
    auto it = along_pred.find(c);
    if (it == along_pred.end()) continue;
    worst = std::max(worst, relative_l2(it->second, pred));
    ++compared;
  }
  EXPECT_GE(compared, (tail - settle) / 8 - 1);
  EXPECT_LT(worst, 1e-4) << "noise predictions of the same content at latent positions 1050 apart";
  RecordProperty("settled_noise_pred_rel_l2", sci(worst));
}
