// SPDX-License-Identifier: LGPL-2.1-or-later
#include "sparse_attention.h"

#include "error.h"
#if FLASHVSR_CUDA_KERNELS
#include "cuda/block_sparse_attention.h"
#endif

#include <algorithm>
#include <cmath>
#include <limits>

namespace flashvsr {

at::Tensor to_windows(const at::Tensor& tokens, const WindowGrid& g) {
  const auto C = tokens.size(-1);
  return tokens.view({g.slices(), kWindowFrames, g.rows(), kWindowRows, g.cols(), kWindowCols, C})
      .permute({0, 2, 4, 1, 3, 5, 6})
      .reshape({g.windows(), kWindowTokens, C});
}

at::Tensor from_windows(const at::Tensor& windows, const WindowGrid& g) {
  const auto C = windows.size(-1);
  return windows.view({g.slices(), g.rows(), g.cols(), kWindowFrames, kWindowRows, kWindowCols, C})
      .permute({0, 3, 1, 4, 2, 5, 6})
      .reshape({g.f * g.h * g.w, C});
}

at::Tensor local_window_mask(int64_t rows, int64_t cols, int64_t range) {
  auto r = at::arange(rows, at::kLong).repeat_interleave(cols);  // row of window i
  auto c = at::arange(cols, at::kLong).repeat({rows});           // column of window i
  const int64_t half = range / 2;
  auto start_r = (r - half).unsqueeze(1), start_c = (c - half).unsqueeze(1);
  auto in_row = (r.unsqueeze(0) >= start_r) & (r.unsqueeze(0) <= start_r + range - 1);
  auto in_col = (c.unsqueeze(0) >= start_c) & (c.unsqueeze(0) <= start_c + range - 1);
  return in_row & in_col;
}

int64_t topk_for(int64_t per_slice, double topk_ratio) {
  return static_cast<int64_t>(static_cast<double>(per_slice * per_slice) * topk_ratio) - 1;
}

double topk_ratio_for(double sparse_ratio, int64_t height, int64_t width) {
  return sparse_ratio * 768.0 * 1280.0 / (static_cast<double>(height) * static_cast<double>(width));
}

at::Tensor window_means(const at::Tensor& windows) { return at::mean(windows, {1}, false, at::kFloat); }

at::Tensor select_key_windows(const at::Tensor& q_w, const at::Tensor& k_w, int64_t heads, int64_t per_slice,
                              const at::Tensor& local, int64_t topk) {
  return select_key_windows_by_means(window_means(q_w), window_means(k_w), heads, per_slice, local, topk);
}

at::Tensor select_key_windows_by_means(const at::Tensor& q_mean, const at::Tensor& k_mean, int64_t heads,
                                       int64_t per_slice, const at::Tensor& local, int64_t topk) {
  const auto nq = q_mean.size(0), nk = k_mean.size(0), dim = q_mean.size(1), hd = dim / heads;
  // Window means per head: [heads, n, hd]
  auto qm = q_mean.view({nq, heads, hd}).transpose(0, 1);
  auto km = k_mean.view({nk, heads, hd}).transpose(0, 1);
  auto scores = at::matmul(qm, km.transpose(1, 2)) / std::sqrt(static_cast<double>(hd));  // [heads, nq, nk]
  auto allowed = local.repeat({nq / per_slice, nk / per_slice});       // [nq, nk]
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = at::softmax(scores, -1);
  // Per head and query slice, keep entries strictly above the (k+1)-th largest of the flattened block.
  const int64_t slices = nq / per_slice, n = per_slice * nk;
  auto flat = probs.view({heads, slices, n});
  const int64_t k = std::max<int64_t>(1, std::min<int64_t>(n - 1, topk) + 1);
  // The (k+1)-th largest value, i.e. the smallest of the top k+1 (no need to sort them).
  auto threshold = std::get<0>(at::topk(flat, k, -1, /*largest=*/true, /*sorted=*/false)).amin(-1, /*keepdim=*/true);
  return (flat > threshold).view({heads, nq, nk});
}

int64_t max_key_slices(int64_t kv_slices) {
  // Chunk 0 attends over its own 3 slices; a later chunk over the cache plus its 1 new slice.
  constexpr int64_t first_chunk_slices = 3, chunk_slices = 1;
  return std::max(first_chunk_slices, std::max<int64_t>(kv_slices, 2) + chunk_slices);
}

AttentionPlan AttentionPlan::make(const SparseAttentionSettings& s, int64_t rows, int64_t cols, at::Device device) {
  if (s.local_range < 1) throw Error(Error::Kind::BadSettings, "local range " + std::to_string(s.local_range) + ": expected >= 1");
  if (s.kv_slices < 1) throw Error(Error::Kind::BadSettings, "kv ratio gives " + std::to_string(s.kv_slices) + " cached slices: expected >= 1");
  if (!(s.topk_ratio > 0.0)) throw Error(Error::Kind::BadSettings, "top-k ratio " + std::to_string(s.topk_ratio) + ": expected > 0");
  const int64_t per_slice = rows * cols, slices = max_key_slices(s.kv_slices);
  if (per_slice * slices > kMaxKeyWindows) {
    const int64_t fitting_slices = kMaxKeyWindows / per_slice;  // kv ratio fitting_slices - 1 would fit
    throw Error(Error::Kind::BadSettings,
                "attention over " + std::to_string(per_slice * slices) + " key windows (" + std::to_string(rows) + "x" +
                    std::to_string(cols) + " = " + std::to_string(per_slice) + " windows of 128x128 pixels per latent slice x " +
                    std::to_string(slices) + " slices for kv ratio " + std::to_string(s.kv_slices) + "), at most " +
                    std::to_string(kMaxKeyWindows) + " supported: " +
                    (fitting_slices >= 3 ? "use a kv ratio of at most " + std::to_string(fitting_slices - 1)
                                         : std::string("the frames are too large for any kv ratio")));
  }
  AttentionPlan p;
  p.local_mask = local_window_mask(rows, cols, s.local_range).to(device);
  p.topk = topk_for(rows * cols, s.topk_ratio);
  p.kv_slices = s.kv_slices;
  const AttentionChoice choice = choose_attention_backend(s.backend, device, s.dtype);
  p.backend = choice.backend;
  p.backend_reason = choice.reason;
  return p;
}

AttentionChoice choose_attention_backend(AttentionBackend requested, at::Device device, at::ScalarType dtype) {
  const bool half = dtype == at::kBFloat16 || dtype == at::kHalf;
  if (requested == AttentionBackend::Cuda) {
    if (!cuda_attention_available())
      throw Error(Error::Kind::BadSettings,
                  "attention backend 'cuda' is not in this build (configure with -Dgpu_kernels=enabled and nvcc)");
    if (!device.is_cuda())
      throw Error(Error::Kind::BadSettings, "attention backend 'cuda' needs a CUDA device, not " + device.str());
    if (!half)
      throw Error(Error::Kind::BadSettings, std::string("attention backend 'cuda' computes in bf16 or fp16, not ") +
                                                c10::toString(dtype));
    return {AttentionBackend::Cuda, ""};
  }
  if (requested == AttentionBackend::Reference)
    return {AttentionBackend::Reference, device.is_cuda() ? "attention=reference was asked for" : ""};
  if (!device.is_cuda()) return {AttentionBackend::Reference, ""};
  if (!cuda_attention_available())
    return {AttentionBackend::Reference, "this build has no CUDA kernels (configure with -Dgpu_kernels=enabled and nvcc)"};
  if (!half)
    return {AttentionBackend::Reference,
            std::string("the CUDA kernel computes in bf16 or fp16, the stream in ") + c10::toString(dtype)};
  return {AttentionBackend::Cuda, ""};
}

AttentionBackend parse_attention_backend(const std::string& name) {
  if (name == "auto") return AttentionBackend::Auto;
  if (name == "reference") return AttentionBackend::Reference;
  if (name == "cuda") return AttentionBackend::Cuda;
  throw Error(Error::Kind::BadSettings, "attention backend '" + name + "': expected auto, reference or cuda");
}

const char* attention_backend_name(AttentionBackend b) {
  switch (b) {
    case AttentionBackend::Auto: return "auto";
    case AttentionBackend::Reference: return "reference";
    case AttentionBackend::Cuda: return "cuda";
  }
  return "?";
}

bool cuda_attention_available() {
#if FLASHVSR_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

namespace {

// Per head: each query window attends to its selected key windows, gathered and padded to the largest
// selection of that head; padding and empty selections are masked, empty rows give zeros.
at::Tensor reference_attention(const at::Tensor& q_w, const at::Tensor& k_w, const at::Tensor& v_w,
                               const at::Tensor& mask, int64_t heads) {
  const auto nq = q_w.size(0), nk = k_w.size(0), T = q_w.size(1), dim = q_w.size(2), hd = dim / heads;
  auto q = q_w.view({nq, T, heads, hd});
  auto k = k_w.view({nk, T, heads, hd});
  auto v = v_w.view({nk, T, heads, hd});
  auto out = at::zeros_like(q);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t h = 0; h < heads; ++h) {
    auto m = mask[h];                              // [nq, nk]
    auto counts = m.sum(1);                        // [nq]
    const int64_t kmax = counts.max().item<int64_t>();
    if (kmax == 0) continue;
    // Selected key windows first (stable), padded with arbitrary windows that the mask hides.
    auto order = std::get<1>(at::sort(m.to(at::kByte), /*stable=*/true, /*dim=*/1, /*descending=*/true));
    auto idx = order.narrow(1, 0, kmax);                                   // [nq, kmax]
    auto valid = at::arange(kmax, counts.options()).unsqueeze(0) < counts.unsqueeze(1);  // [nq, kmax]
    auto kh = k.select(2, h).index_select(0, idx.reshape(-1)).view({nq, kmax * T, hd});
    auto vh = v.select(2, h).index_select(0, idx.reshape(-1)).view({nq, kmax * T, hd});
    auto qh = q.select(2, h);                                              // [nq, T, hd]
    auto token_valid = valid.repeat_interleave(T, 1).unsqueeze(1);        // [nq, 1, kmax*T]
    // Keep empty query windows finite; their output is zeroed below.
    auto empty = (counts == 0).view({nq, 1, 1});
    auto attend = token_valid | empty;
    auto scores = at::matmul(qh.to(at::kFloat), kh.to(at::kFloat).transpose(1, 2)) * scale;
    scores = scores.masked_fill(attend.logical_not(), -std::numeric_limits<float>::infinity());
    auto o = at::matmul(at::softmax(scores, -1), vh.to(at::kFloat));    // [nq, T, hd]
    o = o.masked_fill(empty, 0.0);
    out.select(2, h).copy_(o);
  }
  return out.view({nq, T, dim});
}

}  // namespace

at::Tensor block_sparse_attention(const at::Tensor& q_w, const at::Tensor& k_w, const at::Tensor& v_w,
                                  const at::Tensor& mask, int64_t heads, AttentionBackend backend) {
  // The kernel computes in bf16/fp16 tensor cores; fp32 streams (parity, tests) use the exact reference.
  if (backend == AttentionBackend::Auto)
    backend = choose_attention_backend(backend, q_w.device(), q_w.scalar_type()).backend;
  if (backend == AttentionBackend::Cuda) {
#if FLASHVSR_CUDA_KERNELS
    if (!q_w.is_cuda()) throw Error(Error::Kind::BadSettings, "attention backend 'cuda' needs a CUDA device");
    return block_sparse_attention_cuda(q_w, k_w, v_w, mask, heads);
#else
    throw Error(Error::Kind::BadSettings,
                "attention backend 'cuda' is not in this build (configure with -Dgpu_kernels=enabled and nvcc)");
#endif
  }
  return reference_attention(q_w, k_w, v_w, mask, heads);
}

}  // namespace flashvsr
