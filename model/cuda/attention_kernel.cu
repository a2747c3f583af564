// SPDX-License-Identifier: LGPL-2.1-or-later
// Block-sparse window attention: FlashAttention-style forward over the selected key windows only.
//
// What is computed
//   For head h and query window i (128 query tokens), over the key windows j with mask[h, i, j] (each 128
//   tokens): O = softmax(scale * Q K^T) V with head_dim 128, exact softmax (online, fp32), fp32
//   accumulation; a query window with no selected key window gets zeros.
//
// Work and FLOPs
//   One CTA per (head, query window), heads-major (blockIdx.x = h * nq + i), so the CTAs resident at a
//   time share one head's key windows in L2. Each CTA first turns its mask row into an ascending list of
//   selected key windows in shared memory (a block-wide prefix sum; no host synchronisation, no extra
//   kernel), then loops over that list. Per selected (head, query window, key window) triple the two
//   products cost 2 * (2 * 128 * 128 * 128) = 4 * 128^3 = 8.39 MFLOP, moving 64 KiB of K and V into
//   shared memory: 128 FLOP per byte, so an H100 (989 TFLOP/s dense bf16 datasheet, ~800 measured on
//   large GEMMs) needs ~6-7 TB/s of L2->SM bandwidth at full rate; L2 hits are what make that possible,
//   hence the heads-major order (a head's K+V of one chunk at 768x1408 is 17 MB, L2 is 50 MB).
//
// Hopper kernel (sm_90a; 384 threads, 1 CTA per SM, 161 KiB + 2*nk bytes of shared memory)
//   * Warpgroup 0 produces: one thread issues TMA tile loads (cp.async.bulk.tensor, 128-byte swizzle,
//     two 64-channel x 128-row boxes per tile) for Q once and for K and V of each selected window into a
//     2-stage ring, completing on mbarriers (full/empty pairs per stage, separate for K and V so K(n+1)
//     can land while V(n) is still being read). setmaxnreg gives it 24 registers and the consumers 240
//     (ptxas budgets registers per 128 threads: a lone producer warp would cost as much anyway).
//   * Warpgroups 1 and 2 consume 64 query rows each. S = Q K^T is one chain of 8 wgmma m64n128k16
//     (A = Q, B = K, both K-major from shared memory); O += P V is 8 wgmma m64n128k16 with P from
//     registers (the fp32 S accumulator re-packed to bf16/fp16 A fragments, no shared-memory round trip)
//     and V as an MN-major (transposed) B operand from shared memory.
//   * Intra-warpgroup pipelining: iteration n issues S(n+1) = Q K(n+1)^T and then O += P(n) V(n), waits
//     for S(n+1) only, computes the max/exp2 of the softmax while P(n) V(n) still runs on the tensor
//     cores, then waits for it, rescales O and re-packs P(n+1). The two warpgroups run independently
//     (they only meet on the "empty" barriers), so one's softmax also overlaps the other's products.
//   * Registers per consumer thread: S 64 + O 64 fp32, P 32 b32, plus addressing and softmax state;
//     ptxas: 168 at entry (the 384-thread cap) raised to 240 by setmaxnreg, 0 bytes spilled, no wgmma
//     serialisation warning (each S tile is a fresh local array, see hopper_consumer).
//   * Epilogue: O / l packed to 16 bit, staged through the warpgroup's own (now dead) Q rows in shared
//     memory with an XOR swizzle, then written with coalesced 16-byte stores into [nq, 128, dim] at the
//     head's channel offset.
// Ampere kernel (sm_80+; 256 threads = 8 warps x 16 query rows, 64 KiB + 2*nk bytes of shared memory)
//   * Key windows are processed as 64-key halves; cp.async (16 B, L2 only) double-buffers K and V tiles
//     in shared memory with rows of 256 B whose 16-byte chunks are XOR-swizzled by (row & 7), so both the
//     cp.async stores and the ldmatrix reads are bank-conflict free.
//   * Q fragments live in registers (ldmatrix once); S = Q K^T by mma.sync m16n8k16 with K fragments by
//     ldmatrix; online softmax in registers; O += P V with P re-packed from the S accumulators and V
//     fragments by ldmatrix.trans. Same epilogue as above through shared memory.
//   * ptxas: 198 registers (sm_90a) / 194 (sm_80), 0 bytes spilled.
// Which kernel runs: Hopper on compute capability 9.x when the loaded image holds its sm_90a body (a
// build without sm_90a compiles an empty body with a 32-thread launch bound, which the host detects through
// cudaFuncGetAttributes), else Ampere. FLASHVSR_ATTENTION_KERNEL=hopper|ampere forces one (wrapper).
//
// Expected limits on H100 SXM (132 SMs)
//   * Tensor cores: wgmma ~800 TFLOP/s sustained on GEMMs; attention also pays the exp2 on the MUFU unit
//     (128x128 exps per tile = 16384 / (16/clk/SM) = 1024 clk vs ~2100 clk of MMA at 800 TFLOP/s), which
//     the intra-warpgroup pipelining and the second warpgroup hide only partly: the realistic ceiling is
//     ~600-700 TFLOP/s, about what dense cuDNN SDPA reaches at head_dim 128.
//   * Per-CTA work is short (nq*heads CTAs of 1-500 tiles): 1 CTA/SM, waves of 132 CTAs, so the tail wave
//     and the per-CTA prologue (list, Q load, first S before any overlap) cost a few percent, most at the
//     smallest shape (792 CTAs = 6 waves).
//   * The Ampere kernel (mma.sync) tops out near half of the wgmma rate on H100.
// Measured (H100 80GB HBM3, bf16, 12 heads, masks from select_key_windows with the released settings,
// median of 20-30 runs; sparse TFLOP/s; dense SDPA 615-700 TFLOP/s on the same card):
//   768x1408 one slice (66 x 264 windows, 45% selected)  Hopper 1.26-1.28 ms  620-630 TFLOP/s  2.0x SDPA
//   768x1408 first chunk (198 x 198, 61%)                Hopper 3.68-3.86 ms  620-650 TFLOP/s  1.7x SDPA
//   1920x1080 (135 x 540, 22%)                           Hopper 2.67-2.90 ms  560-610 TFLOP/s  4.1-4.5x SDPA
//   3840x2160 (510 x 2040, 5.9%)                         Hopper 10.1-11.1 ms  555-610 TFLOP/s  15-17x SDPA
//   The Ampere kernel on the same card: 250-307 TFLOP/s.
#include "attention_kernel.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>

namespace flashvsr::cuda {
namespace {

constexpr int kWindow = 128;             // tokens per window: query rows per CTA, keys per key window
constexpr int kHeadDim = 128;            // channels per head
constexpr int kRowBytes = kHeadDim * 2;  // one token of one head in 16-bit

// ------------------------------------------------------------------------------------------------------
// Small device helpers
// ------------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Two floats -> one 32-bit register of two 16-bit values, `lo` in the low half (the lower column).
template <bool kHalf>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (kHalf) {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

// The block's mask row (nk bytes) -> ascending list of the selected key windows in shared memory.
// Thread t owns entries [t*per, (t+1)*per) (per <= 64, kept as a bit mask); a block-wide exclusive scan of
// the per-thread counts gives each thread its output position. Returns the count; ends with a barrier.
// scratch: kThreads/32 + 1 ints.
template <int kThreads>
__device__ __forceinline__ int build_key_list(const uint8_t* __restrict__ row, int nk, uint16_t* __restrict__ list,
                                              int* __restrict__ scratch) {
  constexpr int kWarps = kThreads / 32;
  static_assert(kThreads % 32 == 0 && kWarps <= 31, "one warp scans the warp totals");
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int per = (nk + kThreads - 1) / kThreads;
  const int beg = min(tid * per, nk);
  const int end = min(beg + per, nk);
  unsigned long long bits = 0;
  for (int j = beg; j < end; ++j) bits |= static_cast<unsigned long long>(row[j] != 0) << (j - beg);
  const int c = __popcll(bits);
  int incl = c;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int x = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += x;
  }
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int w = lane < kWarps ? scratch[lane] : 0;
    int wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int x = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += x;
    }
    if (lane < kWarps) scratch[lane] = wi - w;  // exclusive offset of each warp
    if (lane == 31) scratch[kWarps] = wi;       // total
  }
  __syncthreads();
  int pos = scratch[warp] + incl - c;
  while (bits) {
    const int b = __ffsll(static_cast<long long>(bits)) - 1;
    bits &= bits - 1;
    list[pos++] = static_cast<uint16_t>(beg + b);
  }
  const int total = scratch[kWarps];
  __syncthreads();
  return total;
}

// ------------------------------------------------------------------------------------------------------
// Ampere kernel: cp.async + ldmatrix + mma.sync m16n8k16 (sm_80 and newer)
// ------------------------------------------------------------------------------------------------------

constexpr int kAmpThreads = 256;                          // 8 warps x 16 query rows
constexpr int kAmpKeys = 64;                              // keys per pipeline unit (half a key window)
constexpr int kAmpTileBytes = kAmpKeys * kRowBytes;       // 16 KiB: one K or V unit
constexpr int kAmpStageBytes = 2 * kAmpTileBytes;         // K + V
constexpr int kAmpListOffset = 2 * kAmpStageBytes;        // 64 KiB of tiles, then the list

// Byte offset of 16-byte chunk `chunk` (0..15) of row `row` in a tile of 256-byte rows.
__device__ __forceinline__ uint32_t amp_swz(int row, int chunk) {
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}

// d (16x8 fp32) += a (16x16, row) * b (16x8, col)
template <bool kHalf>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kHalf) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Writes zeros into the rows [row_begin, row_begin + rows) of the block's output tile; `threads` threads
// with index `t` take part.
__device__ __forceinline__ void zero_rows(uint16_t* __restrict__ out, long long os, size_t q_row0, int col0,
                                          int row_begin, int rows, int t, int threads) {
  for (int idx = t; idx < rows * 16; idx += threads) {
    const int r = row_begin + (idx >> 4), c = idx & 15;
    *reinterpret_cast<uint4*>(out + (q_row0 + r) * os + col0 + c * 8) = make_uint4(0, 0, 0, 0);
  }
}

template <bool kHalf>
__global__ void __launch_bounds__(kAmpThreads, 1)
    attn_ampere_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
                       const uint8_t* __restrict__ mask, uint16_t* __restrict__ out, int nq, int nk, long long qs,
                       long long ks, long long vs, long long os, float scale_log2) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int h = blockIdx.x / nq, qi = blockIdx.x - h * nq;
  uint16_t* list = reinterpret_cast<uint16_t*>(smem + kAmpListOffset);
  int* scratch = reinterpret_cast<int*>(smem + kAmpListOffset + ((2 * nk + 15) & ~15));
  const int cnt = build_key_list<kAmpThreads>(mask + (static_cast<size_t>(h) * nq + qi) * nk, nk, list, scratch);

  const size_t q_row0 = static_cast<size_t>(qi) * kWindow;
  const int col0 = h * kHeadDim;
  if (cnt == 0) {
    zero_rows(out, os, q_row0, col0, 0, kWindow, tid, kAmpThreads);
    return;
  }
  const uint32_t sbase = smem_u32(smem);
  const int units = 2 * cnt;

  // Q (128 rows) goes into the stage-1 area first; it moves to registers before unit 1 is loaded there.
  {
    const uint32_t qsm = sbase + kAmpStageBytes;
#pragma unroll
    for (int it = 0; it < 8; ++it) {
      const int idx = tid + it * kAmpThreads, r = idx >> 4, c = idx & 15;
      cp_async16(qsm + amp_swz(r, c), q + (q_row0 + r) * qs + col0 + c * 8);
    }
    cp_async_commit();
  }
  auto load_unit = [&](int u) {
    const int stage = u & 1;
    const size_t key0 = static_cast<size_t>(list[u >> 1]) * kWindow + (u & 1) * kAmpKeys;
    const uint32_t ksm = sbase + stage * kAmpStageBytes, vsm = ksm + kAmpTileBytes;
#pragma unroll
    for (int it = 0; it < 4; ++it) {
      const int idx = tid + it * kAmpThreads, r = idx >> 4, c = idx & 15;
      cp_async16(ksm + amp_swz(r, c), k + (key0 + r) * ks + col0 + c * 8);
      cp_async16(vsm + amp_swz(r, c), v + (key0 + r) * vs + col0 + c * 8);
    }
    cp_async_commit();
  };
  load_unit(0);

  const int g = lane >> 2, t = lane & 3;  // accumulator rows g and g+8, columns 2t, 2t+1
  const int l7 = lane & 7, mi = lane >> 3;  // ldmatrix: row within an 8x8 matrix, matrix index

  // Q fragments of this warp's 16 rows: A operands for the 8 k-steps over the head dimension.
  uint32_t qf[8][4];
  cp_async_wait<1>();
  __syncthreads();
  {
    const uint32_t qsm = sbase + kAmpStageBytes;
    const int r = warp * 16 + (mi & 1) * 8 + l7;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) ldsm_x4(qsm + amp_swz(r, 2 * kk + (mi >> 1)), qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
  }

  float o[16][4];
#pragma unroll
  for (int d = 0; d < 16; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int u = 0; u < units; ++u) {
    cp_async_wait<0>();
    __syncthreads();  // unit u landed for everyone; everyone is done with unit u-1 (and with Q)
    if (u + 1 < units) load_unit(u + 1);
    const uint32_t ksm = sbase + (u & 1) * kAmpStageBytes, vsm = ksm + kAmpTileBytes;

    // S = Q K^T: 16 rows x 64 keys per warp
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
#pragma unroll
      for (int jp = 0; jp < 4; ++jp) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(ksm + amp_swz(16 * jp + (mi >> 1) * 8 + l7, 2 * kk + (mi & 1)), b0, b1, b2, b3);
        mma16816<kHalf>(s[2 * jp], qf[kk], b0, b1);
        mma16816<kHalf>(s[2 * jp + 1], qf[kk], b2, b3);
      }
    }

    // Online softmax (rows g and g+8 of the warp's 16; a row is spread over the 4 threads of a quad).
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = quad_max(mx0);
    mx1 = quad_max(mx1);
    const float alpha0 = ex2((m0 - mx0) * scale_log2), alpha1 = ex2((m1 - mx1) * scale_log2);
    m0 = mx0;
    m1 = mx1;
    const float b0s = mx0 * scale_log2, b1s = mx1 * scale_log2;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = ex2(fmaf(s[j][0], scale_log2, -b0s));
      s[j][1] = ex2(fmaf(s[j][1], scale_log2, -b0s));
      s[j][2] = ex2(fmaf(s[j][2], scale_log2, -b1s));
      s[j][3] = ex2(fmaf(s[j][3], scale_log2, -b1s));
      rs0 += s[j][0] + s[j][1];
      rs1 += s[j][2] + s[j][3];
    }
    l0 = l0 * alpha0 + rs0;
    l1 = l1 * alpha1 + rs1;
#pragma unroll
    for (int d = 0; d < 16; ++d) {
      o[d][0] *= alpha0;
      o[d][1] *= alpha0;
      o[d][2] *= alpha1;
      o[d][3] *= alpha1;
    }

    // O += P V: P (16 x 64 keys) re-packed from the S accumulators as A fragments; V by ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {pack2<kHalf>(s[2 * kk][0], s[2 * kk][1]), pack2<kHalf>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<kHalf>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<kHalf>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < 8; ++dp) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(vsm + amp_swz(16 * kk + (mi & 1) * 8 + l7, 2 * dp + (mi >> 1)), b0, b1, b2, b3);
        mma16816<kHalf>(o[2 * dp], pa, b0, b1);
        mma16816<kHalf>(o[2 * dp + 1], pa, b2, b3);
      }
    }
  }

  // Epilogue: normalise, stage the 128 x 128 tile in shared memory (stage 0), write 16-byte chunks.
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  __syncthreads();  // every warp is done reading the K/V tiles
  {
    const int r0 = warp * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int d = 0; d < 16; ++d) {
      st_shared_u32(sbase + amp_swz(r0, d) + 4 * t, pack2<kHalf>(o[d][0] * inv0, o[d][1] * inv0));
      st_shared_u32(sbase + amp_swz(r1, d) + 4 * t, pack2<kHalf>(o[d][2] * inv1, o[d][3] * inv1));
    }
  }
  __syncthreads();
#pragma unroll
  for (int it = 0; it < 8; ++it) {
    const int idx = tid + it * kAmpThreads, r = idx >> 4, c = idx & 15;
    *reinterpret_cast<uint4*>(out + (q_row0 + r) * os + col0 + c * 8) = ld_shared_v4(sbase + amp_swz(r, c));
  }
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// ------------------------------------------------------------------------------------------------------
// Hopper kernel: TMA + mbarrier pipeline, wgmma (sm_90a)
// ------------------------------------------------------------------------------------------------------

// Warpgroup 0 produces (one thread issues the TMA loads), warpgroups 1 and 2 consume 64 query rows each.
// ptxas budgets registers per 128 threads, so a lone producer warp would cost a warpgroup's worth anyway;
// setmaxnreg moves them to the consumers instead (168 at entry -> 24 producer / 240 consumer).
constexpr int kHopConsumerThreads = 256;
constexpr int kHopThreads = kHopConsumerThreads + 128;
constexpr int kHopProducerRegs = 24, kHopConsumerRegs = 240;
static_assert(128 * (kHopProducerRegs + 2 * kHopConsumerRegs) <= 65536, "register file");
constexpr int kHopStages = 2;
constexpr int kTileBytes = kWindow * kRowBytes;              // 32 KiB: 128 rows x 128 channels
// (used by the sm_90a body only; [[maybe_unused]] keeps the other device passes quiet)
[[maybe_unused]] constexpr int kHalfTileBytes = kTileBytes / 2;  // 16 KiB: 128 rows x 64 channels, one TMA box
[[maybe_unused]] constexpr int kHopQOffset = 0;
[[maybe_unused]] constexpr int kHopKOffset = kTileBytes;         // stage s: K at +s*2*kTileBytes, V after it
constexpr int kHopBarOffset = kTileBytes + kHopStages * 2 * kTileBytes;
constexpr int kHopBarBytes = 128;
constexpr int kHopListOffset = kHopBarOffset + kHopBarBytes;
// barriers (8 bytes each): q_full, k_full[S], v_full[S], k_empty[S], v_empty[S]
static_assert(8 * (1 + 4 * kHopStages) <= kHopBarBytes, "barrier area");

// Devices without sm_90a code get an empty body; its launch bound marks it, so the host can tell
// (cudaFuncGetAttributes().maxThreadsPerBlock) whether the loaded image holds the real kernel.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLASHVSR_HOPPER_BOUND 32
#else
#define FLASHVSR_HOPPER_BOUND kHopThreads
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// One 64-channel x 128-row box of a 2-D tensor map into shared memory, completing on `bar`.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of in-flight accumulators across the wgmma waits.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// Shared-memory matrix descriptor: start address, leading/stride byte offsets, 128-byte swizzle.
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

#define FV_ACC8(b) \
  "+f"(d[b + 0]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), \
      "+f"(d[b + 7])
#define FV_ACC64 \
  FV_ACC8(0), FV_ACC8(8), FV_ACC8(16), FV_ACC8(24), FV_ACC8(32), FV_ACC8(40), FV_ACC8(48), FV_ACC8(56)
#define FV_DREGS                                                                                               \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "   \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (64x128 fp32 per warpgroup) (+)= A (64x16, K-major in shared memory) * B (16x128, K-major in shared memory)
template <bool kHalf>
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t da, uint64_t db, int accumulate) {
  if constexpr (kHalf) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FV_DREGS ", %64, %65, p, 1, 1, 0, 0;\n}"
                 : FV_ACC64
                 : "l"(da), "l"(db), "r"(accumulate));
  } else {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FV_DREGS ", %64, %65, p, 1, 1, 0, 0;\n}"
                 : FV_ACC64
                 : "l"(da), "l"(db), "r"(accumulate));
  }
}
// d (64x128 fp32) += A (64x16 from registers) * B (16x128, MN-major in shared memory: transposed)
template <bool kHalf>
__device__ __forceinline__ void wgmma_rs(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint64_t db) {
  if constexpr (kHalf) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FV_DREGS
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}"
                 : FV_ACC64
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(1));
  } else {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FV_DREGS
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}"
                 : FV_ACC64
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(db), "r"(1));
  }
}

// Online-softmax step on a fresh S tile (in place: S becomes exp2 of the scaled, max-shifted scores).
// Thread rows: r0 (accumulator elements 4j, 4j+1) and r1 = r0 + 8 (4j+2, 4j+3).
__device__ __forceinline__ void softmax_step(float (&s)[64], float& m0, float& m1, float& l0, float& l1,
                                             float& alpha0, float& alpha1, float scale_log2) {
  float mx0 = m0, mx1 = m1;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
    mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
  }
  mx0 = quad_max(mx0);
  mx1 = quad_max(mx1);
  alpha0 = ex2((m0 - mx0) * scale_log2);
  alpha1 = ex2((m1 - mx1) * scale_log2);
  m0 = mx0;
  m1 = mx1;
  const float b0 = mx0 * scale_log2, b1 = mx1 * scale_log2;
  float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    s[4 * j] = ex2(fmaf(s[4 * j], scale_log2, -b0));
    s[4 * j + 1] = ex2(fmaf(s[4 * j + 1], scale_log2, -b0));
    s[4 * j + 2] = ex2(fmaf(s[4 * j + 2], scale_log2, -b1));
    s[4 * j + 3] = ex2(fmaf(s[4 * j + 3], scale_log2, -b1));
    rs0 += s[4 * j] + s[4 * j + 1];
    rs1 += s[4 * j + 2] + s[4 * j + 3];
  }
  l0 = l0 * alpha0 + rs0;
  l1 = l1 * alpha1 + rs1;
}

// S accumulators (keys as columns) -> A fragments of P for the 8 k-steps of O += P V.
template <bool kHalf>
__device__ __forceinline__ void pack_p(const float (&s)[64], uint32_t (&p)[32]) {
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    p[4 * kk + 0] = pack2<kHalf>(s[8 * kk + 0], s[8 * kk + 1]);
    p[4 * kk + 1] = pack2<kHalf>(s[8 * kk + 2], s[8 * kk + 3]);
    p[4 * kk + 2] = pack2<kHalf>(s[8 * kk + 4], s[8 * kk + 5]);
    p[4 * kk + 3] = pack2<kHalf>(s[8 * kk + 6], s[8 * kk + 7]);
  }
}


// Shared-memory map of the Hopper kernel (offsets from the 1024-byte aligned base).
struct HopperSmem {
  uint32_t base;
  __device__ uint32_t q() const { return base + kHopQOffset; }
  __device__ uint32_t k(int s) const { return base + kHopKOffset + static_cast<uint32_t>(s) * 2u * kTileBytes; }
  __device__ uint32_t v(int s) const { return k(s) + kTileBytes; }
  __device__ uint32_t q_full() const { return base + kHopBarOffset; }
  __device__ uint32_t k_full(int s) const { return q_full() + 8u * (1 + s); }
  __device__ uint32_t v_full(int s) const { return q_full() + 8u * (1 + kHopStages + s); }
  __device__ uint32_t k_empty(int s) const { return q_full() + 8u * (1 + 2 * kHopStages + s); }
  __device__ uint32_t v_empty(int s) const { return q_full() + 8u * (1 + 3 * kHopStages + s); }
};

// One consumer warpgroup: 64 query rows (row0 = 64 * cg) of the block's query window against its `cnt`
// selected key windows; writes the normalised output rows.
template <bool kHalf>
__device__ __forceinline__ void hopper_consumer(const HopperSmem sm, int cnt, int cg, int wt, int wl, int lane,
                                                uint16_t* __restrict__ out, long long os, size_t q_row0, int col0,
                                                float scale_log2) {
  if (cnt == 0) {
    zero_rows(out, os, q_row0, col0, cg * 64, 64, wt, 128);
    return;
  }
  // Descriptors. Q and K tiles: K-major, 128-byte rows of 64 channels, 8-row groups 1024 B apart (SBO),
  // channel halves 16 KiB apart; k-step kk starts at half kk/4, byte (kk%4)*32. V tiles as the B operand
  // of P V are MN-major: 64 channels per 128-byte row, the other channel half 16 KiB away (LBO), 8-key
  // groups 1024 B apart (SBO); k-step kk (16 keys) starts at byte kk*2048.
  const uint64_t desc_q = make_desc(sm.q() + cg * 64 * 128, 16, 1024);
  auto kstep = [](int kk) { return static_cast<uint64_t>(((kk >> 2) * kHalfTileBytes + (kk & 3) * 32) >> 4); };

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  uint32_t p[32];
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f, alpha0, alpha1;

  // S tiles are consumed in the iteration that issues them, so each is a fresh local array: the exp2
  // results written over it are never inputs of a later wgmma (ptxas would serialise the wgmmas).
  auto issue_qk = [&](float (&sacc)[64], int s) {
    const uint64_t desc_k = make_desc(sm.k(s), 16, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_ss<kHalf>(sacc, desc_q + kstep(kk), desc_k + kstep(kk), kk > 0);
    wgmma_commit();
  };
  auto issue_pv = [&](int s) {
    const uint64_t desc_v = make_desc(sm.v(s), kHalfTileBytes, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_rs<kHalf>(o, p[4 * kk], p[4 * kk + 1], p[4 * kk + 2], p[4 * kk + 3],
                      desc_v + static_cast<uint64_t>((kk * 2048) >> 4));
    wgmma_commit();
  };

  mbar_wait(sm.q_full(), 0);
  {
    float sacc[64];
    mbar_wait(sm.k_full(0), 0);
    issue_qk(sacc, 0);
    wgmma_wait<0>();
    pin(sacc);
    if (lane == 0) mbar_arrive(sm.k_empty(0));
    softmax_step(sacc, m0, m1, l0, l1, alpha0, alpha1, scale_log2);  // O is still zero: no rescale
    pack_p<kHalf>(sacc, p);
  }

  for (int n = 0; n < cnt; ++n) {
    const int s = n % kHopStages;
    const uint32_t parity = static_cast<uint32_t>(n / kHopStages) & 1u;
    if (n + 1 < cnt) {
      const int s1 = (n + 1) % kHopStages;
      float sacc[64];
      mbar_wait(sm.k_full(s1), static_cast<uint32_t>((n + 1) / kHopStages) & 1u);
      issue_qk(sacc, s1);  // S(n+1) = Q K(n+1)^T
      mbar_wait(sm.v_full(s), parity);
      issue_pv(s);      // O += P(n) V(n)
      wgmma_wait<1>();  // S(n+1) is done, P(n) V(n) may still run
      pin(sacc);
      if (lane == 0) mbar_arrive(sm.k_empty(s1));
      softmax_step(sacc, m0, m1, l0, l1, alpha0, alpha1, scale_log2);
      wgmma_wait<0>();
      pin(o);
      if (lane == 0) mbar_arrive(sm.v_empty(s));
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        o[4 * j] *= alpha0;
        o[4 * j + 1] *= alpha0;
        o[4 * j + 2] *= alpha1;
        o[4 * j + 3] *= alpha1;
      }
      pack_p<kHalf>(sacc, p);
    } else {
      mbar_wait(sm.v_full(s), parity);
      issue_pv(s);
      wgmma_wait<0>();
      pin(o);
      if (lane == 0) mbar_arrive(sm.v_empty(s));
    }
  }

  // Epilogue: O / l -> 16 bit, staged in this warpgroup's own Q rows (128-byte rows, 16-byte chunks XOR
  // swizzled by row & 7), then coalesced 16-byte stores.
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  asm volatile("bar.sync %0, 128;" ::"r"(1 + cg) : "memory");  // the whole warpgroup is past its last wgmma
  {
    const int g = lane >> 2, t = lane & 3;
    const int r0 = cg * 64 + wl * 16 + g;  // r0 & 7 == g, and (r0 + 8) & 7 == g
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t chunk = static_cast<uint32_t>(((j & 7) ^ g) << 4) + 4 * t;
      const uint32_t half = sm.q() + (j >> 3) * kHalfTileBytes;
      st_shared_u32(half + r0 * 128 + chunk, pack2<kHalf>(o[4 * j] * inv0, o[4 * j + 1] * inv0));
      st_shared_u32(half + (r0 + 8) * 128 + chunk, pack2<kHalf>(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1));
    }
  }
  asm volatile("bar.sync %0, 128;" ::"r"(1 + cg) : "memory");
#pragma unroll
  for (int it = 0; it < 8; ++it) {
    const int idx = wt + it * 128, r = cg * 64 + (idx >> 4), cc = idx & 15;
    const uint32_t addr = sm.q() + (cc >> 3) * kHalfTileBytes + r * 128 + (((cc & 7) ^ (r & 7)) << 4);
    *reinterpret_cast<uint4*>(out + (q_row0 + r) * os + col0 + cc * 8) = ld_shared_v4(addr);
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <bool kHalf>
__global__ void __launch_bounds__(FLASHVSR_HOPPER_BOUND, 1)
    attn_hopper_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                       const __grid_constant__ CUtensorMap tm_v, const uint8_t* __restrict__ mask,
                       uint16_t* __restrict__ out, int nq, int nk, long long os, float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // 128-byte swizzled TMA boxes and wgmma descriptors want 1024-byte aligned tiles.
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t pad = (1024u - (raw & 1023u)) & 1023u;
  uint8_t* smem = smem_raw + pad;
  const HopperSmem sm{raw + pad};

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int h = blockIdx.x / nq, qi = blockIdx.x - h * nq;
  if (tid == 0) {
    mbar_init(sm.q_full(), 1);
    for (int s = 0; s < kHopStages; ++s) {
      mbar_init(sm.k_full(s), 1);
      mbar_init(sm.v_full(s), 1);
      mbar_init(sm.k_empty(s), kHopConsumerThreads / 32);  // one arrival per consumer warp
      mbar_init(sm.v_empty(s), kHopConsumerThreads / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  uint16_t* list = reinterpret_cast<uint16_t*>(smem + kHopListOffset);
  int* scratch = reinterpret_cast<int*>(smem + kHopListOffset + ((2 * nk + 15) & ~15));
  // (ends with __syncthreads, after which the barrier inits above are visible to every thread)
  const int cnt = build_key_list<kHopThreads>(mask + (static_cast<size_t>(h) * nq + qi) * nk, nk, list, scratch);
  const size_t q_row0 = static_cast<size_t>(qi) * kWindow;
  const int col0 = h * kHeadDim;

  const int wg = warp >> 2;  // 0: producer; 1: query rows 0..63; 2: rows 64..127
  if (wg == 0) {
    // ---------------- producer warpgroup: one thread issues every TMA load ----------------
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kHopProducerRegs));
    if (tid == 0 && cnt > 0) {
      mbar_expect_tx(sm.q_full(), kTileBytes);
      tma_load(sm.q(), &tm_q, col0, static_cast<int>(q_row0), sm.q_full());
      tma_load(sm.q() + kHalfTileBytes, &tm_q, col0 + 64, static_cast<int>(q_row0), sm.q_full());
      for (int n = 0; n < cnt; ++n) {
        const int s = n % kHopStages;
        const uint32_t parity = static_cast<uint32_t>((n / kHopStages) - 1) & 1u;  // previous use of stage s
        const int key_row = static_cast<int>(list[n]) * kWindow;
        if (n >= kHopStages) mbar_wait(sm.k_empty(s), parity);
        mbar_expect_tx(sm.k_full(s), kTileBytes);
        tma_load(sm.k(s), &tm_k, col0, key_row, sm.k_full(s));
        tma_load(sm.k(s) + kHalfTileBytes, &tm_k, col0 + 64, key_row, sm.k_full(s));
        if (n >= kHopStages) mbar_wait(sm.v_empty(s), parity);
        mbar_expect_tx(sm.v_full(s), kTileBytes);
        tma_load(sm.v(s), &tm_v, col0, key_row, sm.v_full(s));
        tma_load(sm.v(s) + kHalfTileBytes, &tm_v, col0 + 64, key_row, sm.v_full(s));
      }
    }
  } else {
    // ---------------- consumer warpgroups ----------------
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kHopConsumerRegs));
    hopper_consumer<kHalf>(sm, cnt, wg - 1, tid & 127, warp & 3, lane, out, os, q_row0, col0, scale_log2);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// ------------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------------

std::string cuda_msg(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

struct DeviceKernels {
  bool probed = false;
  int major = 0, minor = 0, max_smem = 0;
  bool ampere = false, hopper = false;
  std::string ampere_error, hopper_error;
};

constexpr int kMaxDevices = 64;
std::mutex g_probe_mutex;
DeviceKernels g_devices[kMaxDevices];

template <typename Kernel>
bool probe_kernel(Kernel kernel, int need_threads, int max_smem, std::string* err) {
  cudaFuncAttributes attr{};
  cudaError_t e = cudaFuncGetAttributes(&attr, kernel);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky; don't leave it for the next caller
    *err = cuda_msg("no kernel image for this device", e);
    return false;
  }
  if (attr.maxThreadsPerBlock < need_threads) {
    *err = "this build holds no code of this kernel for the device (build with -Dgpu_arch=90a for Hopper)";
    return false;
  }
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    *err = cuda_msg("cudaFuncSetAttribute(MaxDynamicSharedMemorySize)", e);
    return false;
  }
  return true;
}

const DeviceKernels* device_kernels(std::string* error) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) {
    *error = cuda_msg("cudaGetDevice", e);
    return nullptr;
  }
  if (dev < 0 || dev >= kMaxDevices) {
    *error = "CUDA device index " + std::to_string(dev) + " out of range";
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(g_probe_mutex);
  DeviceKernels& d = g_devices[dev];
  if (!d.probed) {
    if ((e = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&d.max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess) {
      *error = cuda_msg("cudaDeviceGetAttribute", e);
      return nullptr;
    }
    const std::string cc = std::to_string(d.major) + "." + std::to_string(d.minor);
    if (d.major < 8) {
      d.ampere_error = d.hopper_error = "compute capability " + cc + ": the attention kernels need 8.0 or newer";
    } else {
      d.ampere = probe_kernel(attn_ampere_kernel<false>, kAmpThreads, d.max_smem, &d.ampere_error) &&
                 probe_kernel(attn_ampere_kernel<true>, kAmpThreads, d.max_smem, &d.ampere_error);
      if (d.major != 9) {
        d.hopper_error = "compute capability " + cc + ": the Hopper kernel needs 9.0 (sm_90a)";
      } else {
        d.hopper = probe_kernel(attn_hopper_kernel<false>, kHopThreads, d.max_smem, &d.hopper_error) &&
                   probe_kernel(attn_hopper_kernel<true>, kHopThreads, d.max_smem, &d.hopper_error);
      }
    }
    d.probed = true;
  }
  return &d;
}

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder(std::string* error) {
  static std::once_flag once;
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || p == nullptr) {
      (void)cudaGetLastError();
      failure = "cuTensorMapEncodeTiled is not available from the driver";
      return;
    }
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  if (!fn) *error = failure;
  return fn;
}

// [rows, channels] 16-bit matrix with `row_stride` elements between rows; boxes of 64 channels x 128 rows.
bool encode_map(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap* map, const void* ptr, int64_t rows,
                int64_t channels, int64_t row_stride, AttentionDType dtype, const char* name, std::string* error) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(channels), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(row_stride) * 2};
  const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(kWindow)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(map, dtype == AttentionDType::Float16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            2, const_cast<void*>(ptr), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    *error = std::string("cuTensorMapEncodeTiled(") + name + ") failed with CUresult " + std::to_string(static_cast<int>(r));
    return false;
  }
  return true;
}

size_t ampere_smem_bytes(int64_t nk) {
  return kAmpListOffset + ((2 * nk + 15) & ~int64_t{15}) + 4 * (kAmpThreads / 32 + 1);
}
size_t hopper_smem_bytes(int64_t nk) {
  return 1024 + kHopListOffset + ((2 * nk + 15) & ~int64_t{15}) + 4 * (kHopThreads / 32 + 1);
}

}  // namespace

const char* attention_kernel_name(AttentionKernel k) {
  switch (k) {
    case AttentionKernel::Auto: return "auto";
    case AttentionKernel::Hopper: return "hopper-wgmma";
    case AttentionKernel::Ampere: return "ampere-mma";
  }
  return "?";
}

AttentionKernel resolve_attention_kernel(AttentionKernel requested, std::string* error) {
  std::string err;
  const DeviceKernels* d = device_kernels(&err);
  if (!d) {
    if (error) *error = err;
    return requested;
  }
  AttentionKernel k = requested;
  if (k == AttentionKernel::Auto) k = d->hopper ? AttentionKernel::Hopper : AttentionKernel::Ampere;
  if (k == AttentionKernel::Hopper && !d->hopper) err = "Hopper attention kernel: " + d->hopper_error;
  if (k == AttentionKernel::Ampere && !d->ampere) err = "Ampere attention kernel: " + d->ampere_error;
  if (error) *error = err;
  return k;
}

std::string launch_block_sparse_attention(const AttentionLaunch& a, cudaStream_t stream, AttentionKernel* used) {
  if (a.nq < 0 || a.nk < 0 || a.heads < 1)
    return "bad sizes: nq " + std::to_string(a.nq) + ", nk " + std::to_string(a.nk) + ", heads " + std::to_string(a.heads);
  if (a.nk > kMaxAttentionKeyWindows)
    return "nk " + std::to_string(a.nk) + " key windows: at most " + std::to_string(kMaxAttentionKeyWindows) + " supported";
  if (a.heads * a.nq > 0x7fffffffLL) return "heads * nq " + std::to_string(a.heads * a.nq) + " exceeds the grid limit";
  const int64_t dim = a.heads * kHeadDim;
  for (const auto& [name, ptr, stride] : {std::tuple<const char*, const void*, int64_t>{"q", a.q, a.q_row_stride},
                                          {"k", a.k, a.k_row_stride},
                                          {"v", a.v, a.v_row_stride},
                                          {"out", a.out, a.out_row_stride}}) {
    if ((reinterpret_cast<uintptr_t>(ptr) & 15) != 0)
      return std::string(name) + ": base pointer not 16-byte aligned";
    if (stride < dim || stride % 8 != 0)
      return std::string(name) + ": row stride " + std::to_string(stride) + " (expected a multiple of 8, >= " +
             std::to_string(dim) + ")";
  }
  if (!(a.scale > 0.0f) || !std::isfinite(a.scale)) return "scale " + std::to_string(a.scale) + ": expected > 0";
  if (a.nq == 0) {
    if (used) *used = a.kernel;
    return "";
  }

  std::string err;
  AttentionKernel k = resolve_attention_kernel(a.kernel, &err);
  if (!err.empty()) return err;
  // With no key windows at all every output is zero; the Ampere kernel writes them without touching K/V
  // (a tensor map cannot describe an empty matrix).
  if (a.nk == 0) {
    k = AttentionKernel::Ampere;
    (void)resolve_attention_kernel(k, &err);
    if (!err.empty()) return err;
  }
  const DeviceKernels* d = device_kernels(&err);
  if (!d) return err;

  const float scale_log2 = a.scale * 1.4426950408889634f;
  const int nq = static_cast<int>(a.nq), nk = static_cast<int>(a.nk);
  const dim3 grid(static_cast<unsigned>(a.heads * a.nq));
  const bool half = a.dtype == AttentionDType::Float16;

  if (k == AttentionKernel::Hopper) {
    const size_t smem = hopper_smem_bytes(a.nk);
    if (smem > static_cast<size_t>(d->max_smem))
      return "Hopper attention kernel needs " + std::to_string(smem) + " bytes of shared memory, the device has " +
             std::to_string(d->max_smem);
    PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder(&err);
    if (!encode) return err;
    CUtensorMap tq, tk, tv;
    if (!encode_map(encode, &tq, a.q, a.nq * kWindow, dim, a.q_row_stride, a.dtype, "q", &err) ||
        !encode_map(encode, &tk, a.k, a.nk * kWindow, dim, a.k_row_stride, a.dtype, "k", &err) ||
        !encode_map(encode, &tv, a.v, a.nk * kWindow, dim, a.v_row_stride, a.dtype, "v", &err))
      return err;
    auto* out = static_cast<uint16_t*>(a.out);
    if (half)
      attn_hopper_kernel<true><<<grid, kHopThreads, smem, stream>>>(tq, tk, tv, a.mask, out, nq, nk, a.out_row_stride,
                                                                    scale_log2);
    else
      attn_hopper_kernel<false><<<grid, kHopThreads, smem, stream>>>(tq, tk, tv, a.mask, out, nq, nk,
                                                                     a.out_row_stride, scale_log2);
  } else {
    const size_t smem = ampere_smem_bytes(a.nk);
    if (smem > static_cast<size_t>(d->max_smem))
      return "Ampere attention kernel needs " + std::to_string(smem) + " bytes of shared memory, the device has " +
             std::to_string(d->max_smem);
    const auto* q = static_cast<const uint16_t*>(a.q);
    const auto* kp = static_cast<const uint16_t*>(a.k);
    const auto* v = static_cast<const uint16_t*>(a.v);
    auto* out = static_cast<uint16_t*>(a.out);
    if (half)
      attn_ampere_kernel<true><<<grid, kAmpThreads, smem, stream>>>(q, kp, v, a.mask, out, nq, nk, a.q_row_stride,
                                                                    a.k_row_stride, a.v_row_stride, a.out_row_stride,
                                                                    scale_log2);
    else
      attn_ampere_kernel<false><<<grid, kAmpThreads, smem, stream>>>(q, kp, v, a.mask, out, nq, nk, a.q_row_stride,
                                                                     a.k_row_stride, a.v_row_stride,
                                                                     a.out_row_stride, scale_log2);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_msg(k == AttentionKernel::Hopper ? "Hopper attention kernel launch" : "Ampere attention kernel launch", e);
  if (used) *used = k;
  return "";
}

}  // namespace flashvsr::cuda
