// SPDX-License-Identifier: LGPL-2.1-or-later
// Precision fp8 (fp8_linear.h): the row-wise e4m3 quantisation (on the CPU, against values worked out by
// hand from the e4m3 format: 1 sign, 4 exponent bits of bias 7, 3 mantissa bits, largest finite 448), the
// refusal where there are no fp8 tensor cores, and on CUDA the quantisation kernel and the scaled product
// against the definition. Quality against bf16 at full size is a benchmark (flashvsr-bench --quality-vs).
#include "engine.h"
#include "fp8_linear.h"
#include "model_maker.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <vector>

using namespace flashvsr;

namespace {

std::vector<float> floats(const at::Tensor& t) {
  auto f = t.to(at::kFloat).contiguous().cpu();
  return {f.data_ptr<float>(), f.data_ptr<float>() + f.numel()};
}

bool has_fp8_gpu() {
  if (!at::hasCUDA()) return false;
  try {
    check_fp8_support(at::Device(at::kCUDA, 0));
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

// Row [448, 1, -3.5, 0.3] has max 448, so its scale is 1 and the values are e4m3 roundings of themselves:
// 448 = 1.75 * 2^8 and 3.5 = 1.75 * 2 are exact; 0.3 = 1.2 * 2^-2 lies between 1.125 and 1.25 (steps of 1/8)
// and rounds to 1.25 * 2^-2 = 0.3125. Row [2, 0.5, ...] has max 2: scale 2/448, 2 -> 448, 0.5 -> 112.
TEST(Fp8Quantise, RowsScaleToTheLargestFiniteE4m3) {
  auto x = at::tensor({448.0f, 1.0f, -3.5f, 0.3f, 2.0f, 0.5f, -1.0f, 0.0f}).view({2, 4});
  auto q = quantize_rows(x);
  ASSERT_EQ(q.values.scalar_type(), at::kFloat8_e4m3fn);
  ASSERT_EQ(q.scales.sizes().vec(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(floats(q.scales), (std::vector<float>{1.0f, 2.0f / 448.0f}));
  EXPECT_EQ(floats(q.values), (std::vector<float>{448.0f, 1.0f, -3.5f, 0.3125f, 448.0f, 112.0f, -224.0f, 0.0f}));
}

// A row of zeros keeps a positive scale (no division by zero) and quantises to zeros, not NaN.
TEST(Fp8Quantise, ZeroRowsStayFinite) {
  auto q = quantize_rows(at::zeros({3, 32}, at::kBFloat16));
  EXPECT_TRUE((q.scales > 0).all().item<bool>());
  EXPECT_TRUE(at::equal(q.values.to(at::kFloat), at::zeros({3, 32})));
}

// Every element comes back within half an e4m3 step: relative 2^-4 for normal values, absolute 2^-10 of the
// scale below the smallest normal (2^-6 of the scale), whatever the row's magnitude.
TEST(Fp8Quantise, DequantisedRowsAreWithinHalfAnE4m3Step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = at::randn({64, 256}, gen, at::kFloat) * at::pow(10.0, at::arange(-4, 4, 0.125, at::kFloat)).view({64, 1});
  auto q = quantize_rows(x);
  auto back = q.values.to(at::kFloat) * q.scales;
  auto bound = at::maximum(x.abs() * (1.0 / 16), q.scales.expand_as(x) * (1.0 / 1024)) * (1 + 1e-6);
  EXPECT_TRUE(((back - x).abs() <= bound).all().item<bool>());
  EXPECT_TRUE(at::equal(q.values.to(at::kFloat).abs().amax({1}), at::full({64}, 448.0f))) << "each row uses the full range";
}

TEST(Fp8Linear, WeightsGetOneScalePerOutputChannel) {
  auto w = at::ones({32, 16}) * at::arange(1, 33, at::kFloat).view({32, 1});
  auto l = Fp8Linear::quantize(w.to(at::kBFloat16), at::zeros({32}, at::kBFloat16));
  ASSERT_EQ(l.weight_scale().sizes().vec(), (std::vector<int64_t>{1, 32}));
  EXPECT_TRUE(at::allclose(l.weight_scale().view({32}), at::arange(1, 33, at::kFloat) / 448.0));
  EXPECT_TRUE(at::equal(l.weight().to(at::kFloat), at::full({32, 16}, 448.0f)));
  EXPECT_THROW(Fp8Linear::quantize(at::ones({24, 16}), at::zeros({24})), Error) << "out not a multiple of 16";
}

// The CPU has no fp8 matrix product: precision fp8 there is refused with the reason, not run in bf16.
TEST(Fp8Precision, IsRefusedOnTheCpuWithTheReason) {
  const LoadOptions lo = resolve_load_options("cpu", "fp8");
  EXPECT_TRUE(lo.fp8_linears);
  EXPECT_EQ(lo.dtype, at::kBFloat16);
  EXPECT_STREQ(precision_name(lo), "fp8");
  try {
    Model::from_tensors(make_random_model(ModelSpec::tiny(), 3, at::kBFloat16), lo);
    ADD_FAILURE() << "fp8 on the CPU accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadSettings);
    EXPECT_NE(std::string(e.what()).find("compute capability 8.9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  LoadOptions fp32 = lo;
  fp32.dtype = at::kFloat;
  EXPECT_THROW(Model::from_tensors(make_random_model(ModelSpec::tiny(), 3), fp32), Error) << "fp8 is bf16 elsewhere";
}

#if FLASHVSR_CUDA_KERNELS
namespace {

// The kernel's quantisation `got` of the same rows as the definition's `want` up to last-bit differences of
// the prologue: scales within `scale_rtol`, at least `same_fraction` of the bytes equal, and every
// dequantised value within one e4m3 step (relative 2^-3 of a normal value, plus a subnormal step).
void expect_within_one_e4m3_step(const RowQuantized& got, const RowQuantized& want, double scale_rtol,
                                 double same_fraction) {
  EXPECT_TRUE(at::allclose(got.scales, want.scales, scale_rtol, 0));
  const auto a = got.values.to(at::kFloat) * got.scales, b = want.values.to(at::kFloat) * want.scales;
  const double same = (got.values.view(at::kByte) == want.values.view(at::kByte)).to(at::kDouble).mean().item<double>();
  EXPECT_GT(same, same_fraction);
  EXPECT_TRUE(((a - b).abs() <= b.abs() * 0.13 + want.scales * (1.0 / 512)).all().item<bool>());
}

}  // namespace

// The kernel computes the definition (quantize_rows on the same device): the same bytes and scales.
TEST(Fp8Quantise, CudaKernelMatchesTheDefinition) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  for (const int64_t k : {1536, 8960, 200}) {
    auto x = (at::randn({301, k}, gen, at::kFloat) * 3).to(at::Device(at::kCUDA, 0), at::kBFloat16);
    const auto got = quantize_rows_cuda(x);
    const auto want = quantize_rows(x);
    EXPECT_TRUE(at::equal(got.scales, want.scales)) << "k " << k;
    EXPECT_TRUE(at::equal(got.values.view(at::kByte), want.values.view(at::kByte))) << "k " << k;
  }
}

// With GELU(tanh) fused in, the values are those of the definition applied to GELU's float output, up to
// tanh's last-bit differences (at most one e4m3 step, rarely).
TEST(Fp8Quantise, CudaKernelAppliesGeluBeforeQuantising) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  auto x = (at::randn({257, 8960}, gen, at::kFloat) * 2).to(at::Device(at::kCUDA, 0), at::kBFloat16);
  const auto got = quantize_rows_cuda(x, RowPrologue::gelu());
  expect_within_one_e4m3_step(got, quantize_rows(at::gelu(x.to(at::kFloat), "tanh")), 1e-6, 0.999);
}

// With the LayerNorm prologue, the values are those of the definition applied to ATen's float32 LayerNorm
// with the same weight and bias (rows offset far from zero mean: the variance must not cancel), up to the
// last bits of the statistics (at most one e4m3 step, rarely).
TEST(Fp8Quantise, CudaKernelAppliesTheLayerNormBeforeQuantising) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  const at::Device dev(at::kCUDA, 0);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(10);
  auto x = (at::randn({300, 1536}, gen, at::kFloat) * 2 + at::linspace(-40, 40, 300).view({300, 1})).to(dev, at::kBFloat16);
  auto mul = (at::rand({1536}, gen, at::kFloat) + 0.5).to(dev, at::kBFloat16);
  auto add = at::randn({1536}, gen, at::kFloat).to(dev, at::kBFloat16);
  const auto got = quantize_rows_cuda(x, RowPrologue::layer_norm(mul, add, 1e-6));
  const auto want = quantize_rows(at::layer_norm(x.to(at::kFloat), {1536}, mul.to(at::kFloat), add.to(at::kFloat), 1e-6));
  expect_within_one_e4m3_step(got, want, 1e-5, 0.99);
}

// The scaled product is the exact product of the dequantised operands (float64 here) up to bf16 output
// rounding and float accumulation; and within e4m3's error of the bf16 layer it replaces.
TEST(Fp8Linear, CudaProductEqualsTheDequantisedOperandsProduct) {
  if (!has_fp8_gpu()) GTEST_SKIP() << "no CUDA device with fp8 tensor cores (compute capability 8.9+)";
  c10::InferenceMode guard;
  const at::Device dev(at::kCUDA, 0);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto x = (at::randn({384, 1536}, gen, at::kFloat) * at::linspace(0.1, 4, 384).view({384, 1})).to(dev, at::kBFloat16);
  auto w = (at::randn({4608, 1536}, gen, at::kFloat) * 0.03).to(dev, at::kBFloat16);
  auto b = (at::randn({4608}, gen, at::kFloat) * 0.1).to(dev, at::kBFloat16);
  const Fp8Linear l = Fp8Linear::quantize(w, b);
  const auto y = l(x);
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{384, 4608}));
  const auto xq = quantize_rows(x);
  const auto exact = at::matmul(xq.values.to(at::kDouble) * xq.scales.to(at::kDouble),
                                (l.weight().to(at::kDouble) * l.weight_scale().to(at::kDouble).t()).t()) +
                     b.to(at::kDouble);
  const auto rel = [](const at::Tensor& a, const at::Tensor& r) {
    return ((a.to(at::kDouble) - r).norm() / r.norm()).item<double>();
  };
  EXPECT_LT(rel(y, exact), 5e-3) << "scales or layout wrong";
  const auto bf16 = at::linear(x, w, b).to(at::kDouble);
  EXPECT_LT(rel(y, bf16), 6e-2) << "e4m3 error of a 1536-term product";
  EXPECT_GT(rel(y, bf16), 1e-3) << "the product did not run in e4m3";
}

// A whole model in fp8 (random weights, small sizes) stays close to the same model in bf16.
TEST(Fp8Precision, CudaStreamStaysCloseToBf16) {
  if (!has_fp8_gpu()) GTEST_SKIP() << "no CUDA device with fp8 tensor cores (compute capability 8.9+)";
  c10::InferenceMode guard;
  auto load = [](const char* precision) {
    return Model::from_tensors(make_random_model(ModelSpec::tiny(), 13, at::kBFloat16), resolve_load_options("cuda:0", precision));
  };
  const auto fp8 = load("fp8"), bf16 = load("bf16");
  EXPECT_TRUE(fp8->fp8_linears());
  EXPECT_STREQ(fp8->precision(), "fp8");
  EXPECT_FALSE(bf16->fp8_linears());
  StreamOptions o;
  o.in_width = 64;
  o.in_height = 48;
  const at::Tensor lr = test::seeded_randn({17, 48, 64, 3}, 14).mul(60).add(128).clamp(0, 255).to(at::kByte);
  auto run = [&](const std::shared_ptr<const Model>& m) {
    Stream s(m, o);
    auto a = s.push(lr).frames;
    return at::cat({a, s.finish().frames}).to(at::kFloat).cpu();
  };
  const auto a = run(fp8), b = run(bf16);
  ASSERT_EQ(a.sizes(), b.sizes());
  const double mse = (a - b).pow(2).mean().item<double>();
  const double psnr = 10 * std::log10(255.0 * 255.0 / std::max(mse, 1e-12));
  EXPECT_GT(psnr, 30.0);
  EXPECT_FALSE(at::equal(a, b)) << "fp8 ran the same arithmetic as bf16";
}
#else
TEST(Fp8Quantise, CudaKernelMatchesTheDefinition) { GTEST_SKIP() << "built without the CUDA kernels (gpu_kernels / nvcc / CUDA LibTorch)"; }
#endif
