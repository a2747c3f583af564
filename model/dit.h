// SPDX-License-Identifier: LGPL-2.1-or-later
// Stage 2: the Wan2.1 DiT, one denoising step at timestep 1000 over a chunk of latent frames (spec 4-6).
// Keys (diffusion_pytorch_model_streaming_dmd.safetensors): patch_embedding.*, text_embedding.{0,2}.*,
// time_embedding.{0,2}.*, time_projection.1.*, blocks.N.{self_attn,cross_attn}.{q,k,v,o}.*,
// blocks.N.{self_attn,cross_attn}.norm_{q,k}.weight, blocks.N.norm3.*, blocks.N.ffn.{0,2}.*,
// blocks.N.modulation, head.head.*, head.modulation.
#pragma once

#include "fp8_linear.h"
#include "rope.h"
#include "sparse_attention.h"
#include "weights.h"

#include <ATen/ATen.h>

#include <array>
#include <vector>

namespace flashvsr {

struct DitConfig {
  int64_t dim = 0;        // 1536 released
  int64_t heads = 0;      // dim / 128
  int64_t head_dim = 128;
  int64_t ffn_dim = 0;    // 8960
  int64_t layers = 0;     // 30
  int64_t text_dim = 0;   // 4096
  int64_t freq_dim = 0;   // 256: sinusoidal timestep embedding width
  int64_t in_dim = 16;    // latent channels
  int64_t out_dim = 16;

  static DitConfig detect(const WeightFile& file);
};

struct DitBlockWeights {
  at::Tensor qkv_w, qkv_b;  // q, k, v projections stacked [3 dim, dim] for one GEMM; q_w.. are views of it
  at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, norm_q, norm_k;             // self-attention
  at::Tensor cq_w, cq_b, ck_w, ck_b, cv_w, cv_b, co_w, co_b, cnorm_q, cnorm_k;   // cross-attention
  at::Tensor norm3_w, norm3_b;                                                   // affine LayerNorm
  at::Tensor ffn1_w, ffn1_b, ffn2_w, ffn2_b;
  at::Tensor modulation;  // [1, 6, dim]
  // Precision fp8: e4m3 forms of the layers that run on every token (the bf16 weights of these are then
  // released, undefined); undefined in the other precisions.
  struct Fp8 {
    Fp8Linear qkv, o, cq, co, ffn1, ffn2;
  } fp8;
};

struct DitWeights {
  DitConfig config;
  at::Tensor patch_w, patch_b;  // [dim, 16, 1, 2, 2], [dim]
  at::Tensor text1_w, text1_b, text2_w, text2_b;
  at::Tensor time1_w, time1_b, time2_w, time2_b, time_proj_w, time_proj_b;
  std::vector<DitBlockWeights> blocks;
  at::Tensor head_w, head_b, head_modulation;  // [64, dim], [64], [1, 2, dim]

  static DitWeights bind(WeightFile& file, const DitConfig& config, at::Device device, at::ScalarType dtype);
  // Precision fp8 (bf16 weights on a device that passes check_fp8_support): each block's QKV, output,
  // cross-attention q/o and FFN layers become Fp8Linear, their bf16 weights released. Everything else
  // (embeddings, cross-attention k/v of the prompt, norms, modulation, head) stays bf16.
  void quantize_linears_fp8();
  bool fp8_linears() const { return !blocks.empty() && blocks.front().fp8.qkv.defined(); }
};

// Everything that depends only on the weights and the prompt (the timestep is always 1000): computed
// once per loaded model, shared read-only by all streams.
struct DitConstants {
  struct Block {
    at::Tensor shift1, scale1, gate1, shift2, scale2, gate2;  // [dim]; scale* already hold (1 + scale)
    at::Tensor cross_k, cross_v;                              // [1, heads, context, head_dim]
  };
  std::vector<Block> blocks;
  at::Tensor head_shift, head_scale;  // [dim]; head_scale holds (1 + scale)

  // prompt: [1, context, text_dim]
  static DitConstants compute(const DitWeights& weights, const at::Tensor& prompt);
};

// One block's self-attention KV cache: post-RoPE keys and values of the most recent slices, held in a ring of
// slice slots allocated once per stream, so that a chunk writes only its own windows (nothing is copied per
// chunk). The held slices are the `held` slots from `first` on, oldest first, wrapping around the ring;
// their slot order need not be time order (attention and the window selection do not depend on the order
// of the key windows).
struct KvCache {
  at::Tensor k, v;            // ring [capacity * slice_windows, 128, dim]; undefined before the first chunk
  at::Tensor k_mean;          // ring [capacity * slice_windows, dim] float32: each key window's mean (window_means)
  int64_t slice_windows = 0;  // windows per slice
  int64_t first = 0;          // slot of the oldest held slice
  int64_t held = 0;           // slices held
  int64_t capacity() const { return k.defined() ? k.size(0) / slice_windows : 0; }
  // The held slices of one of the rings (k, v or k_mean) in time order, oldest first: a copy of
  // [held * slice_windows, ...]; undefined when nothing is held.
  at::Tensor held_in_time_order(const at::Tensor& ring) const;
};

struct DitState {
  std::vector<KvCache> blocks;
  void reset() { blocks.clear(); }
};

// latents: [1, 16, f, H/8, W/8] (f even, H and W multiples of 128); lq_tokens: one [1, f*h*w, dim] per LQ
// linear layer, added before blocks 0, 1, ...; rope: table for this chunk's positions (h = H/16, w = W/16).
// Returns the predicted noise [1, 16, f, H/8, W/8]; updates the KV caches in `state`.
at::Tensor dit_forward(const DitWeights& weights, const DitConstants& constants, DitState& state,
                       const at::Tensor& latents, const std::vector<at::Tensor>& lq_tokens, const RopeTable& rope,
                       const AttentionPlan& plan);

}  // namespace flashvsr
