// SPDX-License-Identifier: LGPL-2.1-or-later
// Pre- and post-processing of frames (spec section 1): PIL-compatible bicubic resampling with torch ops,
// (and its unquantised float variant), uint8 / float <-> [-1, 1] mapping and edge-replication padding.
#include "preprocess.h"

#include "error.h"

#if FLASHVSR_CUDA_KERNELS
#include "cuda/bicubic_kernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace flashvsr {

namespace {

// Fixed-point precision of the resampling weights: 32 - 8 (pixel) - 2 (headroom for overshoot).
constexpr int kPrecisionBits = 22;

std::string sizes_string(const at::Tensor& t) { return shape_string(t.sizes().vec()); }

// Keys cubic convolution kernel with a = -0.5 (Catmull-Rom), support [-2, 2].
double keys_cubic(double x) {
  constexpr double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Quantises a normalised weight to 22-bit fixed point, rounding half away from zero.
int32_t quantise(double w) {
  const double scaled = w * static_cast<double>(1 << kPrecisionBits);
  return static_cast<int32_t>(w < 0 ? scaled - 0.5 : scaled + 0.5);
}

// Host-side coefficients of one axis: in -> out samples, `ksize` taps per output sample.
//   index  int64 [out, ksize]: source sample of each tap (taps past the window repeat a valid index);
//   weight int32 [out, ksize]: fixed-point weight of each tap (0 past the window);
//   weight_float [out, ksize]: the same normalised weights before quantisation.
void precompute_axis(int64_t in, int64_t out, std::vector<int64_t>& index, std::vector<int32_t>& weight,
                     std::vector<float>& weight_float, int64_t& ksize) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // widen the kernel when down-scaling
  const double support = 2.0 * filterscale;
  const double inv_filterscale = 1.0 / filterscale;
  ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  index.assign(static_cast<size_t>(out * ksize), 0);
  weight.assign(static_cast<size_t>(out * ksize), 0);
  weight_float.assign(static_cast<size_t>(out * ksize), 0.0f);
  std::vector<double> w(static_cast<size_t>(ksize));
  for (int64_t xx = 0; xx < out; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    // C casts truncate toward zero, which matters for the negative left edge before the clamp.
    int64_t xmin = static_cast<int64_t>(static_cast<int>(center - support + 0.5));
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(static_cast<int>(center + support + 0.5));
    if (xmax > in) xmax = in;
    xmax -= xmin;  // number of taps in the window
    if (xmax > ksize) xmax = ksize;  // cannot happen (window width <= 2*support+1), kept as a guard
    double sum = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = keys_cubic((static_cast<double>(x + xmin) - center + 0.5) * inv_filterscale);
      w[static_cast<size_t>(x)] = v;
      sum += v;
    }
    for (int64_t x = 0; x < ksize; ++x) {
      const size_t at = static_cast<size_t>(xx * ksize + x);
      if (x < xmax) {
        const double nw = sum != 0.0 ? w[static_cast<size_t>(x)] / sum : w[static_cast<size_t>(x)];
        weight[at] = quantise(nw);
        weight_float[at] = static_cast<float>(nw);
        index[at] = xmin + x;
      } else {
        weight[at] = 0;
        weight_float[at] = 0.0f;
        index[at] = xmax > 0 ? xmin + xmax - 1 : (xmin < in ? xmin : in - 1);  // any valid index
      }
    }
  }
}

// One separable pass along `dim` of uint8 frames [n, H, W, C] (dim 1 = rows, dim 2 = columns).
// index int64 [out, ksize], weight int32 [out, ksize], both on the frames' device.
//
// Why int32 suffices: each output is 2^21 + sum_k u8 * w_k with the weights normalised to sum 1.0 in
// 22-bit fixed point. The Keys kernel's positive taps sum to at most ~1.13 (negative lobes are small:
// at most -0.0625 per tap on up-scaling, integral -1/24 per lobe when down-scaling), so every partial
// sum lies within (-0.2 * 255 * 2^22, 1.2 * 255 * 2^22 + 2^21) ~ (-2.2e8, 1.3e9), inside int32 range
// (+-2.1e9) - exactly the int arithmetic Pillow uses.
#if FLASHVSR_CUDA_KERNELS
// The pass as one CUDA kernel (model/cuda/bicubic_kernel.h): the same integer (or float32) arithmetic in the
// same tap order, one read of each source value per tap instead of a gathered copy per tap.
at::Tensor resample_pass_cuda(const at::Tensor& frames, int64_t dim, const at::Tensor& index, const at::Tensor& weight) {
  const at::Tensor in = frames.contiguous();
  std::vector<int64_t> shape = in.sizes().vec();
  shape[static_cast<size_t>(dim)] = index.size(0);
  at::Tensor out = at::empty(shape, in.options());
  const c10::cuda::CUDAGuard guard(in.device());
  cuda::ResamplePassLaunch a;
  a.in = in.data_ptr();
  a.out = out.data_ptr();
  a.index = index.data_ptr<int64_t>();
  a.weight = weight.data_ptr();
  a.n = in.size(0), a.h = in.size(1), a.w = in.size(2), a.channels = in.size(3);
  a.out_len = index.size(0), a.ksize = index.size(1), a.axis = static_cast<int>(dim);
  a.floating = in.scalar_type() == at::kFloat;
  const std::string err = cuda::launch_resample_pass(a, c10::cuda::getCurrentCUDAStream().stream());
  if (!err.empty()) throw Error(Error::Kind::Device, "bicubic resampling pass: " + err);
  return out;
}
#endif

at::Tensor resample_pass(const at::Tensor& frames, int64_t dim, const at::Tensor& index, const at::Tensor& weight) {
#if FLASHVSR_CUDA_KERNELS
  if (frames.is_cuda()) return resample_pass_cuda(frames, dim, index, weight);
#endif
  const int64_t out = index.size(0);
  const int64_t ksize = index.size(1);
  // Weight broadcast shape: [out, 1] for columns (dim 2, then C), [out, 1, 1] for rows (dim 1).
  std::vector<int64_t> wshape{out, 1};
  if (dim == 1) wshape.push_back(1);
  // acc: int32 [n, H', W', C] with the resampled axis of length `out`; starts at the rounding offset.
  std::vector<int64_t> acc_shape = frames.sizes().vec();
  acc_shape[static_cast<size_t>(dim)] = out;
  at::Tensor acc = at::full(acc_shape, static_cast<int64_t>(1) << (kPrecisionBits - 1),
                            frames.options().dtype(at::kInt));
  // Host loop over the (few) taps only; each step is one gather + multiply-add over all pixels.
  for (int64_t k = 0; k < ksize; ++k) {
    const at::Tensor idx = index.select(1, k);                 // int64 [out]
    const at::Tensor wk = weight.select(1, k).view(wshape);    // int32 [out, 1(, 1)]
    acc.add_(frames.index_select(dim, idx).to(at::kInt).mul_(wk));
  }
  // clip8: v <= 0 -> 0, v >= 256 << 22 -> 255, else v >> 22; equal to clamp(v >> 22, 0, 255) since >> floors.
  return at::bitwise_right_shift(acc, kPrecisionBits).clamp_(0, 255).to(at::kByte);
}

// The same pass on float32 frames [n, H, W, C] with float32 weights [out, ksize]: no rounding, no clipping.
at::Tensor resample_pass_float(const at::Tensor& frames, int64_t dim, const at::Tensor& index,
                               const at::Tensor& weight) {
#if FLASHVSR_CUDA_KERNELS
  if (frames.is_cuda()) return resample_pass_cuda(frames, dim, index, weight);
#endif
  const int64_t out = index.size(0);
  std::vector<int64_t> wshape{out, 1};
  if (dim == 1) wshape.push_back(1);
  std::vector<int64_t> acc_shape = frames.sizes().vec();
  acc_shape[static_cast<size_t>(dim)] = out;
  at::Tensor acc = at::zeros(acc_shape, frames.options());  // float32 [n, H', W', C]
  for (int64_t k = 0; k < index.size(1); ++k)
    acc.add_(frames.index_select(dim, index.select(1, k)).mul_(weight.select(1, k).view(wshape)));
  return acc;
}

}  // namespace

BicubicResize::BicubicResize(int64_t in_width, int64_t in_height, int64_t out_width, int64_t out_height,
                             at::Device device)
    : in_w_(in_width), in_h_(in_height), out_w_(out_width), out_h_(out_height) {
  const int64_t kMax = int64_t{1} << 20;  // sizes beyond this are surely a mistake (and overflow-prone)
  auto check = [&](const char* what, int64_t v) {
    if (v < 1 || v > kMax) {
      std::ostringstream msg;
      msg << "bicubic resize: " << what << " must be in [1, " << kMax << "], found " << v;
      throw Error(Error::Kind::BadSettings, msg.str());
    }
  };
  check("input width", in_width);
  check("input height", in_height);
  check("output width", out_width);
  check("output height", out_height);

  auto make = [&](int64_t in, int64_t out, Pass& pass) {
    pass.needed = in != out;  // Pillow skips a pass whose size is unchanged
    if (!pass.needed) return;
    std::vector<int64_t> index;
    std::vector<int32_t> weight;
    std::vector<float> weight_float;
    int64_t ksize = 0;
    precompute_axis(in, out, index, weight, weight_float, ksize);
    pass.index = at::tensor(index, at::TensorOptions().dtype(at::kLong)).view({out, ksize}).to(device);
    pass.weight = at::tensor(weight, at::TensorOptions().dtype(at::kInt)).view({out, ksize}).to(device);
    pass.weight_float = at::tensor(weight_float, at::TensorOptions().dtype(at::kFloat)).view({out, ksize}).to(device);
  };
  make(in_width, out_width, horizontal_);
  make(in_height, out_height, vertical_);
}

void BicubicResize::check_frames(const at::Tensor& frames, bool floating) const {
  if (!frames.defined()) throw Error(Error::Kind::BadInput, "bicubic resize: frames tensor is undefined");
  if (floating ? !at::isFloatingType(frames.scalar_type()) : frames.scalar_type() != at::kByte) {
    throw Error(Error::Kind::BadInput, std::string("bicubic resize: expected ") +
                                           (floating ? "floating" : "uint8") + " frames, found " +
                                           c10::toString(frames.scalar_type()));
  }
  if (frames.dim() != 4 || frames.size(1) != in_h_ || frames.size(2) != in_w_ || frames.size(3) < 1) {
    std::ostringstream msg;
    msg << "bicubic resize: expected frames [n, " << in_h_ << ", " << in_w_ << ", C], found "
        << sizes_string(frames);
    throw Error(Error::Kind::BadInput, msg.str());
  }
  const at::Tensor& probe = horizontal_.needed ? horizontal_.index : vertical_.index;
  if (probe.defined() && frames.device() != probe.device()) {
    std::ostringstream msg;
    msg << "bicubic resize: expected frames on " << probe.device() << ", found " << frames.device();
    throw Error(Error::Kind::BadInput, msg.str());
  }
}

at::Tensor BicubicResize::operator()(const at::Tensor& frames) const {
  check_frames(frames, false);
  at::Tensor x = frames;  // uint8 [n, in_h, in_w, C]
  if (horizontal_.needed) x = resample_pass(x, 2, horizontal_.index, horizontal_.weight);  // [n, in_h, out_w, C]
  if (vertical_.needed) x = resample_pass(x, 1, vertical_.index, vertical_.weight);        // [n, out_h, out_w, C]
  return x.contiguous();
}

at::Tensor BicubicResize::resize_float(const at::Tensor& frames) const {
  check_frames(frames, true);
  at::Tensor x = frames.to(at::kFloat);  // float32 [n, in_h, in_w, C]
  if (horizontal_.needed) x = resample_pass_float(x, 2, horizontal_.index, horizontal_.weight_float);
  if (vertical_.needed) x = resample_pass_float(x, 1, vertical_.index, vertical_.weight_float);
  return x.clamp(0.0, 255.0).contiguous();  // float32 [n, out_h, out_w, C]
}

int64_t scaled_size(int64_t size, double scale) {
  if (!(std::isfinite(scale) && scale > 0.0)) {
    std::ostringstream msg;
    msg << "scale must be a finite positive number, found " << scale;
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  if (size < 1) {
    std::ostringstream msg;
    msg << "size to scale must be >= 1, found " << size;
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  const double p = static_cast<double>(size) * scale;  // the exact (double) product, as Python forms it
  if (!(p < 9.0e15)) {
    std::ostringstream msg;
    msg << "scaled size " << size << " * " << scale << " is too large";
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  // Round half to even.
  const double fl = std::floor(p);
  const double frac = p - fl;  // exact for p < 2^53
  int64_t r = static_cast<int64_t>(fl);
  if (frac > 0.5 || (frac == 0.5 && (r % 2) != 0)) ++r;
  if (r < 1) {
    std::ostringstream msg;
    msg << "scaled size round(" << size << " * " << scale << ") must be >= 1, found " << r;
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  return r;
}

namespace {

// float32 [n, H, W, 3] in [0, 255] (a fresh tensor, changed in place) -> [1, 3, n, H, W] of `dtype`.
at::Tensor unit_of_rgb255(at::Tensor x, at::ScalarType dtype) {
  // x / 255 * 2 - 1, in this order of operations. The divisor is a 0-dim tensor on the frames' device: a
  // host scalar divisor lets CUDA multiply by the reciprocal instead (1 ulp off).
  x.div_(at::scalar_tensor(255.0, x.options())).mul_(2.0).sub_(1.0);
  return x.permute({3, 0, 1, 2}).unsqueeze(0).to(dtype).contiguous();
}

void check_unit_dtype(const char* what, at::ScalarType dtype) {
  if (!at::isFloatingType(dtype))
    throw Error(Error::Kind::BadSettings,
                std::string(what) + ": expected a floating dtype, found " + c10::toString(dtype));
}

// [1, 3, n, H, W] in [-1, 1] -> float32 [3, n, H, W] = (x + 1) * 127.5, NaN as 0 (not clamped).
at::Tensor rgb255_of_unit(const char* what, const at::Tensor& video_NCFHW) {
  if (!video_NCFHW.defined()) throw Error(Error::Kind::BadInput, std::string(what) + ": video tensor is undefined");
  if (!at::isFloatingType(video_NCFHW.scalar_type())) {
    throw Error(Error::Kind::BadInput, std::string(what) + ": expected a floating video, found " +
                                           c10::toString(video_NCFHW.scalar_type()));
  }
  if (video_NCFHW.dim() != 5 || video_NCFHW.size(0) != 1 || video_NCFHW.size(1) != 3) {
    throw Error(Error::Kind::BadInput,
                std::string(what) + ": expected video [1, 3, n, H, W], found " + sizes_string(video_NCFHW));
  }
  at::Tensor x = video_NCFHW.select(0, 0).to(at::kFloat).add(1.0).mul_(127.5);
  return at::nan_to_num(x, 0.0);
}

}  // namespace

at::Tensor u8_to_unit(const at::Tensor& frames_NHWC, at::ScalarType dtype) {
  if (!frames_NHWC.defined()) throw Error(Error::Kind::BadInput, "u8_to_unit: frames tensor is undefined");
  if (frames_NHWC.scalar_type() != at::kByte) {
    throw Error(Error::Kind::BadInput, std::string("u8_to_unit: expected uint8 frames, found ") +
                                           c10::toString(frames_NHWC.scalar_type()));
  }
  if (frames_NHWC.dim() != 4 || frames_NHWC.size(3) != 3) {
    throw Error(Error::Kind::BadInput,
                "u8_to_unit: expected frames [n, H, W, 3], found " + sizes_string(frames_NHWC));
  }
  check_unit_dtype("u8_to_unit", dtype);
  return unit_of_rgb255(frames_NHWC.to(at::kFloat), dtype);  // [1, 3, n, H, W]
}

at::Tensor rgb255_to_unit(const at::Tensor& frames_NHWC, at::ScalarType dtype) {
  if (!frames_NHWC.defined()) throw Error(Error::Kind::BadInput, "rgb255_to_unit: frames tensor is undefined");
  if (!at::isFloatingType(frames_NHWC.scalar_type())) {
    throw Error(Error::Kind::BadInput, std::string("rgb255_to_unit: expected floating frames, found ") +
                                           c10::toString(frames_NHWC.scalar_type()));
  }
  if (frames_NHWC.dim() != 4 || frames_NHWC.size(3) != 3) {
    throw Error(Error::Kind::BadInput,
                "rgb255_to_unit: expected frames [n, H, W, 3], found " + sizes_string(frames_NHWC));
  }
  check_unit_dtype("rgb255_to_unit", dtype);
  // A copy in float32 (never the caller's tensor, which the in-place mapping would change).
  return unit_of_rgb255(frames_NHWC.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true), dtype);
}

at::Tensor unit_to_u8(const at::Tensor& video_NCFHW) {
  // float32 [3, n, H, W]: round((x + 1) * 127.5) (half to even), clamped; NaN maps to 0.
  at::Tensor x = rgb255_of_unit("unit_to_u8", video_NCFHW).round_().clamp_(0.0, 255.0);
  // -> uint8 [n, H, W, 3]
  return x.to(at::kByte).permute({1, 2, 3, 0}).contiguous();
}

at::Tensor unit_to_rgb255(const at::Tensor& video_NCFHW) {
  // float32 [3, n, H, W] -> [n, H, W, 3]; clamping after the (skipped) rounding, as unit_to_u8 rounds first:
  // round and clamp to integral bounds commute, so unit_to_u8 == round(unit_to_rgb255).
  return rgb255_of_unit("unit_to_rgb255", video_NCFHW).clamp_(0.0, 255.0).permute({1, 2, 3, 0}).contiguous();
}

at::Tensor pad_to_multiple(const at::Tensor& x, int64_t multiple) {
  if (multiple < 1) {
    std::ostringstream msg;
    msg << "pad_to_multiple: multiple must be >= 1, found " << multiple;
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  if (!x.defined()) throw Error(Error::Kind::BadInput, "pad_to_multiple: tensor is undefined");
  if (x.dim() < 2 || x.size(-1) < 1 || x.size(-2) < 1) {
    throw Error(Error::Kind::BadInput,
                "pad_to_multiple: expected a tensor [..., H >= 1, W >= 1], found " + sizes_string(x));
  }
  const int64_t h = x.size(-2), w = x.size(-1);
  const int64_t ph = round_up(h, multiple), pw = round_up(w, multiple);
  if (ph == h && pw == w) return x;
  // Edge replication by gathering with indices clamped to the last row/column.
  const auto opts = at::TensorOptions().dtype(at::kLong).device(x.device());
  at::Tensor y = x;
  if (ph != h) y = y.index_select(x.dim() - 2, at::arange(ph, opts).clamp_max_(h - 1));  // [..., ph, w]
  if (pw != w) y = y.index_select(x.dim() - 1, at::arange(pw, opts).clamp_max_(w - 1));  // [..., ph, pw]
  return y;
}

}  // namespace flashvsr
