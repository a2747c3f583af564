// SPDX-License-Identifier: LGPL-2.1-or-later
// Locality-constrained block-sparse self-attention (spec section 5).
// Tokens are grouped into windows of (2, 8, 8) = 128 tokens; a slice is the windows of 2 latent frames.
// For each head and query window, a block mask selects key windows (local window + top-k of the softmaxed
// window-mean scores); attention is exact softmax over the tokens of the selected windows only.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace flashvsr {

constexpr int64_t kWindowFrames = 2, kWindowRows = 8, kWindowCols = 8;
constexpr int64_t kWindowTokens = kWindowFrames * kWindowRows * kWindowCols;  // 128

// Geometry of a token grid of f latent frames x h rows x w columns (f % 2 == 0, h % 8 == 0, w % 8 == 0).
struct WindowGrid {
  int64_t f = 0, h = 0, w = 0;
  int64_t slices() const { return f / kWindowFrames; }
  int64_t rows() const { return h / kWindowRows; }
  int64_t cols() const { return w / kWindowCols; }
  int64_t per_slice() const { return rows() * cols(); }
  int64_t windows() const { return slices() * per_slice(); }
};

// tokens [f*h*w, C] in (f, h, w) order -> windows [n_windows, 128, C]; windows in (f/2, h/8, w/8) order,
// tokens inside a window in (2, 8, 8) order. from_windows is the inverse.
at::Tensor to_windows(const at::Tensor& tokens, const WindowGrid& grid);
at::Tensor from_windows(const at::Tensor& windows, const WindowGrid& grid);

// Which key windows of one slice each query window of a slice may see: bool [rows*cols, rows*cols];
// (r, c) sees (r', c') iff r - R/2 <= r' <= r - R/2 + R - 1 and the same for columns (no clamping).
at::Tensor local_window_mask(int64_t rows, int64_t cols, int64_t local_range);

// Top-k size of the reference: int(per_slice^2 * topk_ratio) - 1 (entries strictly above the (k+1)-th
// largest are kept).
int64_t topk_for(int64_t per_slice, double topk_ratio);
// topk_ratio from the user-facing sparse ratio: sparse_ratio * 768 * 1280 / (H * W) (H, W: DiT input
// size in pixels, i.e. the padded output size).
double topk_ratio_for(double sparse_ratio, int64_t height, int64_t width);

// q_w: [nq, 128, dim], k_w: [nk, 128, dim] (nq, nk multiples of per_slice); local: [per_slice, per_slice].
// Returns bool [heads, nq, nk]: the key windows each query window attends to. Window means, scores and
// softmax in float32; no host synchronisation.
at::Tensor select_key_windows(const at::Tensor& q_w, const at::Tensor& k_w, int64_t heads, int64_t per_slice,
                              const at::Tensor& local, int64_t topk);
// The same selection from the windows' means over their 128 tokens (window_means: [n, dim] float32), e.g.
// key means kept with the KV cache instead of computed again from every held window.
at::Tensor window_means(const at::Tensor& windows);
at::Tensor select_key_windows_by_means(const at::Tensor& q_mean, const at::Tensor& k_mean, int64_t heads,
                                       int64_t per_slice, const at::Tensor& local, int64_t topk);

enum class AttentionBackend {
  Auto,       // the CUDA kernel on CUDA devices when built, else Reference
  Reference,  // exact on any device: per head, each query window attends to its gathered key windows
  Cuda,       // block-sparse CUDA kernel (needs a build with CUDA kernels)
};
AttentionBackend parse_attention_backend(const std::string& name);  // auto | reference | cuda
const char* attention_backend_name(AttentionBackend b);
// Whether this build has the CUDA kernel.
bool cuda_attention_available();

// The most key windows one attention call takes: the CUDA kernel keeps each query block's list of selected
// key windows in shared memory (model/cuda/attention_kernel.h checks it is the same number). Refused for
// every backend, so a setting that runs on the CPU also runs on CUDA.
constexpr int64_t kMaxKeyWindows = 16384;

// Key slices an attention call sees at most for a KV cache of kv_slices slices: the cache grows by one
// slice per chunk and drops at most one (the oldest) when it holds more than kv_slices, starting from the
// 3 slices of chunk 0, so kv_slices 1 and 2 both end up keeping 2 (spec section 5).
int64_t max_key_slices(int64_t kv_slices);

// User-facing settings of the attention (released defaults: sparse ratio 2.0, kv ratio 3.0, range 11).
struct SparseAttentionSettings {
  double topk_ratio = 0.0;  // per-slice top-k fraction (see topk_ratio_for)
  int64_t local_range = 11;
  int64_t kv_slices = 3;    // int(kv_ratio): slices kept in the KV cache after each chunk
  AttentionBackend backend = AttentionBackend::Auto;
  at::ScalarType dtype = at::kFloat;  // the stream's compute dtype (the kernel takes bf16/fp16)
};

// The backend a stream runs and why: Auto picks the CUDA kernel on a CUDA device in bf16/fp16 when this
// build has it, else the reference path; `reason` says why the reference path runs on a CUDA device
// (empty otherwise). Throws Error(BadSettings) for an explicit 'cuda' the device, dtype or build cannot run.
struct AttentionChoice {
  AttentionBackend backend = AttentionBackend::Reference;  // never Auto
  std::string reason;
};
AttentionChoice choose_attention_backend(AttentionBackend requested, at::Device device, at::ScalarType dtype);

// What a stream's attention needs, fixed for its frame size: built once per stream.
struct AttentionPlan {
  at::Tensor local_mask;  // bool [per_slice, per_slice] on the stream's device
  int64_t topk = 0;
  int64_t kv_slices = 3;
  AttentionBackend backend = AttentionBackend::Reference;  // resolved (choose_attention_backend): never Auto
  std::string backend_reason;  // why the reference path runs on a CUDA device; empty otherwise

  // Throws Error(BadSettings) when a stream with these settings would exceed kMaxKeyWindows, with the numbers.
  static AttentionPlan make(const SparseAttentionSettings& settings, int64_t rows, int64_t cols, at::Device device);
};

// q_w: [nq, 128, dim], k_w, v_w: [nk, 128, dim]; mask: bool [heads, nq, nk].
// Returns [nq, 128, dim]: per head softmax(q k^T / sqrt(head_dim)) v over the selected windows' tokens;
// a query window with no selected window gives zeros.
at::Tensor block_sparse_attention(const at::Tensor& q_w, const at::Tensor& k_w, const at::Tensor& v_w,
                                  const at::Tensor& mask, int64_t heads, AttentionBackend backend);

}  // namespace flashvsr
