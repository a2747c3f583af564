// SPDX-License-Identifier: LGPL-2.1-or-later
#include "dit.h"

#include <cmath>

#if FLASHVSR_CUDA_KERNELS
#include "cuda/qkv_windows.h"
#include "cuda/residual_norm.h"
#endif

namespace flashvsr {

namespace {

constexpr double kEps = 1e-6;

// RMSNorm over the last dim: x * rsqrt(mean(x^2) + eps) * weight, statistics in float32 (one fused kernel
// on CUDA).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) {
  return at::rms_norm(x, {x.size(-1)}, weight, kEps);
}

at::Tensor layer_norm(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}, {}, {}, kEps); }

// x W^T + b of one of a block's per-token layers, in e4m3 when the model holds it so (precision fp8).
at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const Fp8Linear& w8) {
  return w8.defined() ? w8(x) : at::linear(x, w, b);
}

// LN(x) * mul + add projected by a block's per-token layer: in e4m3 (precision fp8) the norm and its affine
// map run inside the activations' quantisation, one pass over x; otherwise `normed` is that norm, computed
// with the residual update before it (update_then_norm).
at::Tensor normed_project(const at::Tensor& x, const at::Tensor& normed, const at::Tensor& mul, const at::Tensor& add,
                          const Fp8Linear& w8, const at::Tensor& w, const at::Tensor& b) {
  if (w8.defined()) return w8(quantize_rows_cuda(x, RowPrologue::layer_norm(mul, add, kEps)));
  return at::linear(normed, w, b);
}

// Linear, GELU(tanh), Linear of h = LN(x) * (1 + scale) + shift; on CUDA the GELU is fused into the first
// GEMM's epilogue (bf16), or into the second layer's input quantisation (fp8, which norms x itself).
at::Tensor ffn(const DitBlockWeights& b, const at::Tensor& x, const at::Tensor& h, const at::Tensor& shift,
               const at::Tensor& scale1p) {
  if (b.fp8.ffn1.defined())
    return b.fp8.ffn2(b.fp8.ffn1(quantize_rows_cuda(x, RowPrologue::layer_norm(scale1p, shift, kEps))), /*gelu_input=*/true);
  at::Tensor a = h.is_cuda() ? at::_addmm_activation(b.ffn1_b, h, b.ffn1_w.t(), 1, 1, /*use_gelu=*/true)
                             : at::gelu(at::linear(h, b.ffn1_w, b.ffn1_b), "tanh");
  return at::linear(a, b.ffn2_w, b.ffn2_b);
}

// The residual stream's update x <- x + gate * y (gate undefined: 1; y undefined: no update), then the next
// norm of x, LN(x) * mul + add — undefined when mul is (that norm runs inside an fp8 quantisation). With the
// CUDA kernels (`fused`) both are one pass over x, in place (model/cuda/residual_norm.h).
at::Tensor update_then_norm(at::Tensor& x, const at::Tensor& gate, const at::Tensor& y, const at::Tensor& mul,
                            const at::Tensor& add, bool fused) {
#if FLASHVSR_CUDA_KERNELS
  if (fused) return residual_norm_cuda(x, gate, y, mul, mul.defined() ? add : at::Tensor(), kEps);
#else
  if (fused) throw Error(Error::Kind::BadSettings, "the fused residual + norm kernel is not in this build");
#endif
  if (y.defined()) x = gate.defined() ? at::addcmul(x, gate, y) : x + y;
  return mul.defined() ? at::addcmul(add, layer_norm(x), mul) : at::Tensor();
}

// cat(cos(t * e), sin(t * e)), e_i = 10000^(-i / (d/2)), in float64 then the model dtype.
at::Tensor timestep_embedding(int64_t freq_dim, double timestep, at::ScalarType dtype, at::Device device) {
  const int64_t half = freq_dim / 2;
  auto e = at::pow(10000.0, -at::arange(half, at::kDouble) / static_cast<double>(half)) * timestep;
  return at::cat({e.cos(), e.sin()}).view({1, freq_dim}).to(device, dtype);
}

}  // namespace

DitConfig DitConfig::detect(const WeightFile& f) {
  DitConfig c;
  const auto patch = f.shape("patch_embedding.weight");
  if (patch.size() != 5 || patch[2] != 1 || patch[3] != 2 || patch[4] != 2)
    throw Error(Error::Kind::BadFile, f.path() + ": patch_embedding.weight has shape " + shape_string(patch) +
                                          ", expected [dim, 16, 1, 2, 2]");
  c.dim = patch[0];
  c.in_dim = patch[1];
  require_dim(f, "patch_embedding input channels (latent channels)", 16, c.in_dim);
  if (c.dim % c.head_dim != 0)
    throw Error(Error::Kind::BadFile, f.path() + ": model dim " + std::to_string(c.dim) +
                                          " is not a multiple of the head dim 128");
  c.heads = c.dim / c.head_dim;
  c.layers = f.count_indexed("blocks.", ".self_attn.q.weight");
  if (c.layers == 0) throw Error(Error::Kind::BadFile, f.path() + ": missing tensor 'blocks.0.self_attn.q.weight'");
  const auto ffn = f.shape("blocks.0.ffn.0.weight");
  if (ffn.size() != 2) throw Error(Error::Kind::BadFile, f.path() + ": blocks.0.ffn.0.weight has shape " + shape_string(ffn) + ", expected [ffn_dim, dim]");
  c.ffn_dim = ffn[0];
  const auto text = f.shape("text_embedding.0.weight");
  if (text.size() != 2) throw Error(Error::Kind::BadFile, f.path() + ": text_embedding.0.weight has shape " + shape_string(text) + ", expected [dim, text_dim]");
  c.text_dim = text[1];
  const auto time = f.shape("time_embedding.0.weight");
  if (time.size() != 2 || time[1] % 2 != 0)
    throw Error(Error::Kind::BadFile, f.path() + ": time_embedding.0.weight has shape " + shape_string(time) + ", expected [dim, freq_dim] with even freq_dim");
  c.freq_dim = time[1];
  const auto head = f.shape("head.head.weight");
  if (head.size() != 2 || head[0] % 4 != 0)
    throw Error(Error::Kind::BadFile, f.path() + ": head.head.weight has shape " + shape_string(head) + ", expected [out_dim * 4, dim]");
  c.out_dim = head[0] / 4;
  require_dim(f, "head output channels (latent channels)", 16, c.out_dim);
  return c;
}

DitWeights DitWeights::bind(WeightFile& f, const DitConfig& c, at::Device d, at::ScalarType t) {
  DitWeights w;
  w.config = c;
  const int64_t D = c.dim;
  auto lin = [&](const std::string& p, int64_t out, int64_t in, at::Tensor& W, at::Tensor& B) {
    W = f.take(p + ".weight", {out, in}, d, t);
    B = f.take(p + ".bias", {out}, d, t);
  };
  w.patch_w = f.take("patch_embedding.weight", {D, c.in_dim, 1, 2, 2}, d, t);
  w.patch_b = f.take("patch_embedding.bias", {D}, d, t);
  lin("text_embedding.0", D, c.text_dim, w.text1_w, w.text1_b);
  lin("text_embedding.2", D, D, w.text2_w, w.text2_b);
  lin("time_embedding.0", D, c.freq_dim, w.time1_w, w.time1_b);
  lin("time_embedding.2", D, D, w.time2_w, w.time2_b);
  lin("time_projection.1", 6 * D, D, w.time_proj_w, w.time_proj_b);
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = "blocks." + std::to_string(i);
    DitBlockWeights b;
    lin(p + ".self_attn.q", D, D, b.q_w, b.q_b);
    lin(p + ".self_attn.k", D, D, b.k_w, b.k_b);
    lin(p + ".self_attn.v", D, D, b.v_w, b.v_b);
    b.qkv_w = at::cat({b.q_w, b.k_w, b.v_w}, 0);
    b.qkv_b = at::cat({b.q_b, b.k_b, b.v_b}, 0);
    b.q_w = b.qkv_w.narrow(0, 0, D), b.k_w = b.qkv_w.narrow(0, D, D), b.v_w = b.qkv_w.narrow(0, 2 * D, D);
    b.q_b = b.qkv_b.narrow(0, 0, D), b.k_b = b.qkv_b.narrow(0, D, D), b.v_b = b.qkv_b.narrow(0, 2 * D, D);
    lin(p + ".self_attn.o", D, D, b.o_w, b.o_b);
    b.norm_q = f.take(p + ".self_attn.norm_q.weight", {D}, d, t);
    b.norm_k = f.take(p + ".self_attn.norm_k.weight", {D}, d, t);
    lin(p + ".cross_attn.q", D, D, b.cq_w, b.cq_b);
    lin(p + ".cross_attn.k", D, D, b.ck_w, b.ck_b);
    lin(p + ".cross_attn.v", D, D, b.cv_w, b.cv_b);
    lin(p + ".cross_attn.o", D, D, b.co_w, b.co_b);
    b.cnorm_q = f.take(p + ".cross_attn.norm_q.weight", {D}, d, t);
    b.cnorm_k = f.take(p + ".cross_attn.norm_k.weight", {D}, d, t);
    b.norm3_w = f.take(p + ".norm3.weight", {D}, d, t);
    b.norm3_b = f.take(p + ".norm3.bias", {D}, d, t);
    lin(p + ".ffn.0", c.ffn_dim, D, b.ffn1_w, b.ffn1_b);
    lin(p + ".ffn.2", D, c.ffn_dim, b.ffn2_w, b.ffn2_b);
    b.modulation = f.take(p + ".modulation", {1, 6, D}, d, t);
    w.blocks.push_back(std::move(b));
  }
  lin("head.head", c.out_dim * 4, D, w.head_w, w.head_b);
  w.head_modulation = f.take("head.modulation", {1, 2, D}, d, t);
  return w;
}

void DitWeights::quantize_linears_fp8() {
  for (auto& b : blocks) {
    b.fp8.qkv = Fp8Linear::quantize(b.qkv_w, b.qkv_b);
    b.fp8.o = Fp8Linear::quantize(b.o_w, b.o_b);
    b.fp8.cq = Fp8Linear::quantize(b.cq_w, b.cq_b);
    b.fp8.co = Fp8Linear::quantize(b.co_w, b.co_b);
    b.fp8.ffn1 = Fp8Linear::quantize(b.ffn1_w, b.ffn1_b);
    b.fp8.ffn2 = Fp8Linear::quantize(b.ffn2_w, b.ffn2_b);
    for (at::Tensor* t : {&b.qkv_w, &b.qkv_b, &b.q_w, &b.q_b, &b.k_w, &b.k_b, &b.v_w, &b.v_b, &b.o_w, &b.o_b, &b.cq_w,
                          &b.cq_b, &b.co_w, &b.co_b, &b.ffn1_w, &b.ffn1_b, &b.ffn2_w, &b.ffn2_b})
      *t = at::Tensor();
  }
}

DitConstants DitConstants::compute(const DitWeights& w, const at::Tensor& prompt) {
  const auto& c = w.config;
  const auto dtype = w.patch_w.scalar_type();
  const auto device = w.patch_w.device();
  DitConstants k;
  // t = time_embedding(sinusoid(1000)): [1, dim]; t_mod = time_projection(t): [6, dim]
  auto sin_emb = timestep_embedding(c.freq_dim, 1000.0, dtype, device);
  auto t = at::linear(at::silu(at::linear(sin_emb, w.time1_w, w.time1_b)), w.time2_w, w.time2_b);
  auto t_mod = at::linear(at::silu(t), w.time_proj_w, w.time_proj_b).view({6, c.dim});
  // context = text_embedding(prompt): [1, L, dim]
  auto p = prompt.to(device, dtype);
  auto ctx = at::linear(at::gelu(at::linear(p, w.text1_w, w.text1_b), "tanh"), w.text2_w, w.text2_b);
  const int64_t L = ctx.size(1);
  for (const auto& b : w.blocks) {
    auto mod = b.modulation.view({6, c.dim}) + t_mod;  // shift1, scale1, gate1, shift2, scale2, gate2
    Block kb;
    kb.shift1 = mod[0];
    kb.scale1 = mod[1] + 1;
    kb.gate1 = mod[2];
    kb.shift2 = mod[3];
    kb.scale2 = mod[4] + 1;
    kb.gate2 = mod[5];
    auto ck = rms_norm(at::linear(ctx, b.ck_w, b.ck_b), b.cnorm_k);
    auto cv = at::linear(ctx, b.cv_w, b.cv_b);
    kb.cross_k = ck.view({1, L, c.heads, c.head_dim}).transpose(1, 2).contiguous();
    kb.cross_v = cv.view({1, L, c.heads, c.head_dim}).transpose(1, 2).contiguous();
    k.blocks.push_back(std::move(kb));
  }
  auto head_mod = w.head_modulation.view({2, c.dim}) + t;  // shift, scale
  k.head_shift = head_mod[0];
  k.head_scale = head_mod[1] + 1;
  return k;
}

namespace {

// The key/value windows of one chunk: the held slices and the chunk's new ones (all in ring slots), and the
// new ones' slots, to be written.
struct ChunkKv {
  at::Tensor k, v;          // [(held + new) * ws, 128, dim], contiguous views of the ring
  at::Tensor k_mean;        // [(held + new) * ws, dim] float32, the same windows' key means
  at::Tensor k_new, v_new;  // [new * ws, 128, dim]
  at::Tensor k_mean_new;    // [new * ws, dim]
};

// The held slices copied to slots 0.. (oldest first) of a ring of `capacity` slices.
void rebuild_ring(KvCache& c, int64_t capacity, int64_t ws, int64_t dim, const at::TensorOptions& o) {
  const at::Tensor k = c.held_in_time_order(c.k), v = c.held_in_time_order(c.v), m = c.held_in_time_order(c.k_mean);
  c.k = at::empty({capacity * ws, kWindowTokens, dim}, o);
  c.v = at::empty({capacity * ws, kWindowTokens, dim}, o);
  c.k_mean = at::empty({capacity * ws, dim}, o.dtype(at::kFloat));
  c.slice_windows = ws;
  if (c.held) {
    c.k.narrow(0, 0, c.held * ws).copy_(k), c.v.narrow(0, 0, c.held * ws).copy_(v);
    c.k_mean.narrow(0, 0, c.held * ws).copy_(m);
  }
  c.first = 0;
}

// Room for `n` new slices after the held ones. Steady chunks (one new slice into a full ring of
// max_key_slices slots) take the slot of the slice dropped after the previous chunk; the ring is built again
// (the held slices copied, oldest first) only when it is missing, of another size, or when the held and
// new slices would not be one contiguous range or the whole ring.
ChunkKv chunk_kv(KvCache& c, int64_t n, int64_t ws, int64_t dim, int64_t capacity, const at::TensorOptions& o) {
  if (c.k.defined() && (c.slice_windows != ws || c.k.size(2) != dim)) c = KvCache{};  // another geometry: a new stream
  int64_t C = c.capacity();
  const int64_t start = C ? (c.first + c.held) % C : 0, total = c.held + n;
  const bool fits = C >= total && start + n <= C && (total == C || c.first + total <= C);
  if (!fits) {
    C = std::max(capacity, total);
    rebuild_ring(c, C, ws, dim, o);
  }
  const int64_t new_slot = (c.first + c.held) % C;
  ChunkKv kv;
  kv.k_new = c.k.narrow(0, new_slot * ws, n * ws);
  kv.v_new = c.v.narrow(0, new_slot * ws, n * ws);
  kv.k_mean_new = c.k_mean.narrow(0, new_slot * ws, n * ws);
  c.held = total;
  const int64_t from = total == C ? 0 : c.first;  // the whole ring, or the contiguous held range
  kv.k = c.k.narrow(0, from * ws, total * ws);
  kv.v = c.v.narrow(0, from * ws, total * ws);
  kv.k_mean = c.k_mean.narrow(0, from * ws, total * ws);
  return kv;
}

// tokens [L, dim] partitioned into windows, written into windows [n_windows, 128, dim] (a view).
void write_windows(const at::Tensor& windows, const at::Tensor& tokens, const WindowGrid& g) {
  const int64_t C = tokens.size(1);
  windows.view({g.slices(), g.rows(), g.cols(), kWindowFrames, kWindowRows, kWindowCols, C})
      .copy_(tokens.view({g.slices(), kWindowFrames, g.rows(), kWindowRows, g.cols(), kWindowCols, C})
                 .permute({0, 2, 4, 1, 3, 5, 6}));
}

// Self-attention of h = LN(x) * (1 + scale) + shift: x [L, dim] -> [L, dim]; updates the block's KV cache.
at::Tensor self_attention(const DitBlockWeights& b, const DitConstants::Block& kb, const DitConfig& c, KvCache& cache,
                          const at::Tensor& x, const at::Tensor& h, const WindowGrid& grid, const RopeTable& rope,
                          const AttentionPlan& s) {
  const int64_t L = x.size(0), D = c.dim;
  auto qkv = normed_project(x, h, kb.scale1, kb.shift1, b.fp8.qkv, b.qkv_w, b.qkv_b);  // [L, 3 dim]
  // Windows: [n, 128, dim]; keys/values = the held windows of earlier slices and this chunk's, in ring slots.
  const int64_t nw = grid.windows(), ws = grid.per_slice();
  const ChunkKv kv = chunk_kv(cache, grid.slices(), ws, D, max_key_slices(s.kv_slices), qkv.options());
  const at::Tensor &k_w = kv.k, &v_w = kv.v, &k_new = kv.k_new, &v_new = kv.v_new;
  at::Tensor q_w;
  if (s.backend == AttentionBackend::Cuda) {
#if FLASHVSR_CUDA_KERNELS
    // One pass over qkv: RMSNorm + RoPE of q and k, q/k/v written in window order (model/cuda/qkv_windows.h).
    q_w = at::empty({nw, kWindowTokens, D}, qkv.options());
    qkv_windows_cuda(qkv, b.norm_q, b.norm_k, rope, grid, c.head_dim, kEps, q_w, k_new, v_new);
#else
    throw Error(Error::Kind::BadSettings, "attention backend 'cuda' is not in this build");
#endif
  } else {
    auto q = rms_norm(qkv.narrow(1, 0, D), b.norm_q);
    auto k = rms_norm(qkv.narrow(1, D, D), b.norm_k);
    q = apply_rope(q.view({L, c.heads, c.head_dim}), rope).view({L, D});
    k = apply_rope(k.view({L, c.heads, c.head_dim}), rope).view({L, D});
    q_w = to_windows(q, grid);
    write_windows(k_new, k, grid);
    write_windows(v_new, qkv.narrow(1, 2 * D, D), grid);
  }
  // Key means: this chunk's windows only; the held ones' were kept with them.
  kv.k_mean_new.copy_(window_means(k_new));
  auto mask = select_key_windows_by_means(window_means(q_w), kv.k_mean, c.heads, ws, s.local_mask, s.topk);
  auto o_w = block_sparse_attention(q_w, k_w, v_w, mask, c.heads, s.backend);
  // Keep every key window, minus the oldest slice when more than kv_slices slices are held (its slot takes
  // the next chunk's slice).
  if (cache.held > s.kv_slices) {
    cache.first = (cache.first + 1) % cache.capacity();
    cache.held -= 1;
  }
  return project(from_windows(o_w, grid), b.o_w, b.o_b, b.fp8.o);
}

// Dense attention of the tokens h = LN(x) * norm3_w + norm3_b over the cached prompt keys/values:
// x [L, dim] -> [L, dim].
at::Tensor cross_attention(const DitBlockWeights& b, const DitConstants::Block& kb, const DitConfig& c,
                           const at::Tensor& x, const at::Tensor& h) {
  const int64_t L = x.size(0);
  auto q = normed_project(x, h, b.norm3_w, b.norm3_b, b.fp8.cq, b.cq_w, b.cq_b);
  q = rms_norm(q, b.cnorm_q);
  q = q.view({1, L, c.heads, c.head_dim}).transpose(1, 2);  // [1, heads, L, hd]
  auto o = at::scaled_dot_product_attention(q, kb.cross_k, kb.cross_v);
  return project(o.transpose(1, 2).reshape({L, c.dim}), b.co_w, b.co_b, b.fp8.co);
}

}  // namespace

at::Tensor KvCache::held_in_time_order(const at::Tensor& ring) const {
  if (!held) return {};
  const int64_t C = capacity(), to_end = std::min(held, C - first);
  auto part = [&](int64_t slot, int64_t n) { return ring.narrow(0, slot * slice_windows, n * slice_windows); };
  return to_end == held ? part(first, held).clone() : at::cat({part(first, to_end), part(0, held - to_end)});
}

at::Tensor dit_forward(const DitWeights& w, const DitConstants& k, DitState& state, const at::Tensor& latents,
                       const std::vector<at::Tensor>& lq_tokens, const RopeTable& rope,
                       const AttentionPlan& s) {
  const auto& c = w.config;
  if (latents.dim() != 5 || latents.size(0) != 1 || latents.size(1) != c.in_dim || latents.size(2) % 2 != 0 ||
      latents.size(3) % 16 != 0 || latents.size(4) % 16 != 0)
    throw Error(Error::Kind::Internal, "dit_forward: latents have shape " + shape_string(latents.sizes().vec()) +
                                          ", expected [1, 16, even f, H/8, W/8] with H, W multiples of 128");
  // Patch embedding: [1, 16, f, 2h, 2w] -> [1, dim, f, h, w] -> tokens [L, dim] in (f, h, w) order.
  auto x = at::conv3d(latents, w.patch_w, w.patch_b, {1, 2, 2});
  const WindowGrid grid{x.size(2), x.size(3), x.size(4)};
  const int64_t L = grid.f * grid.h * grid.w;
  x = x.flatten(2).squeeze(0).transpose(0, 1).contiguous();
  if (state.blocks.empty()) state.blocks.resize(static_cast<size_t>(c.layers));

  // Every norm runs with the residual update before it (update_then_norm), so `h` is the next norm's output:
  // norm1 (LN * (1 + scale1) + shift1), norm3 (affine), norm2 (LN * (1 + scale2) + shift2), then the next
  // block's norm1 or the head's. A norm whose layer is in fp8 is left to that layer's quantisation.
  const bool fused = s.backend == AttentionBackend::Cuda;
  auto norm_of = [](const Fp8Linear& consumer, const at::Tensor& v) { return consumer.defined() ? at::Tensor() : v; };
  const auto lq_of = [&](int64_t i) {
    return i < static_cast<int64_t>(lq_tokens.size()) ? lq_tokens[i].reshape({L, c.dim}) : at::Tensor();
  };
  at::Tensor h;  // norm1 of x for block i, when the update before it computed it
  for (int64_t i = 0; i < c.layers; ++i) {
    const auto& b = w.blocks[i];
    const auto& kb = k.blocks[i];
    // Blocks that receive LQ tokens add them first (x + lq, then norm1).
    if (const at::Tensor lq = lq_of(i); lq.defined() || i == 0)
      h = update_then_norm(x, {}, lq, norm_of(b.fp8.qkv, kb.scale1), kb.shift1, fused);
    const at::Tensor sa = self_attention(b, kb, c, state.blocks[i], x, h, grid, rope, s);
    h = update_then_norm(x, kb.gate1, sa, norm_of(b.fp8.cq, b.norm3_w), b.norm3_b, fused);
    const at::Tensor ca = cross_attention(b, kb, c, x, h);
    h = update_then_norm(x, {}, ca, norm_of(b.fp8.ffn1, kb.scale2), kb.shift2, fused);
    const at::Tensor f = ffn(b, x, h, kb.shift2, kb.scale2);
    if (i + 1 == c.layers)
      h = update_then_norm(x, kb.gate2, f, k.head_scale, k.head_shift, fused);
    else if (lq_of(i + 1).defined())
      update_then_norm(x, kb.gate2, f, {}, {}, fused);  // norm1 of the next block follows its LQ tokens
    else
      h = update_then_norm(x, kb.gate2, f, norm_of(w.blocks[i + 1].fp8.qkv, k.blocks[i + 1].scale1),
                           k.blocks[i + 1].shift1, fused);
  }
  // Head: [L, dim] -> [L, 64] -> unpatchify 'b (f h w) (x y z c) -> b c (f x) (h y) (w z)', (x,y,z) = (1,2,2)
  auto out = at::linear(h, w.head_w, w.head_b);
  out = out.view({grid.f, grid.h, grid.w, 1, 2, 2, c.out_dim}).permute({6, 0, 3, 1, 4, 2, 5});
  return out.reshape({1, c.out_dim, grid.f, grid.h * 2, grid.w * 2});
}

}  // namespace flashvsr
