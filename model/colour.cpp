// SPDX-License-Identifier: LGPL-2.1-or-later
// Colour correction of decoded frames against the LQ frames (spec section 8): AdaIN and wavelet.
#include "colour.h"

#include "error.h"

#include <cmath>
#include <sstream>

namespace flashvsr {

namespace {

constexpr double kAdainEps = 1e-5;
constexpr int kWaveletLevels = 5;

// x: float32 [1, 3, n, H, W] -> float32 [1, 3, n, H, W]; statistics per frame and channel over (H, W).
at::Tensor adain(const at::Tensor& hq, const at::Tensor& lq) {
  const at::Tensor mean_hq = hq.mean({3, 4}, /*keepdim=*/true);                     // [1, 3, n, 1, 1]
  const at::Tensor mean_lq = lq.mean({3, 4}, /*keepdim=*/true);                     // [1, 3, n, 1, 1]
  const at::Tensor var_hq = at::var(hq, {3, 4}, /*unbiased=*/false, /*keepdim=*/true);  // biased
  const at::Tensor var_lq = at::var(lq, {3, 4}, /*unbiased=*/false, /*keepdim=*/true);
  const at::Tensor std_hq = var_hq.add(kAdainEps).sqrt_();
  const at::Tensor std_lq = var_lq.add(kAdainEps).sqrt_();
  return hq.sub(mean_hq).div_(std_hq).mul_(std_lq).add_(mean_lq).clamp_(-1.0, 1.0);
}

// Replicate-padded [1 2 1]/4 blur at dilation r along `dim` of x [m, H, W]:
//   y[i] = (x[clamp(i - r)] + 2 x[i] + x[clamp(i + r)]) / 4.
// Gathering with clamped indices is replicate padding that also works when r >= the dimension's size.
at::Tensor blur_axis(const at::Tensor& x, int64_t dim, int64_t r) {
  const int64_t len = x.size(dim);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(x.device());
  const at::Tensor pos = at::arange(len, opts);
  const at::Tensor prev = x.index_select(dim, (pos - r).clamp_min_(0));
  const at::Tensor next = x.index_select(dim, (pos + r).clamp_max_(len - 1));
  return (prev + next).add_(x, 2.0).mul_(0.25);
}

// The 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16 is the outer product of [1,2,1]/4 with itself, and replicate
// padding is a per-axis index clamp, so the dilated 2-D blur is the two 1-D blurs in sequence.
at::Tensor blur(const at::Tensor& x, int64_t r) { return blur_axis(blur_axis(x, 2, r), 1, r); }

// x: float32 [m, H, W] -> (high, low), both [m, H, W], high + low == x up to rounding.
std::pair<at::Tensor, at::Tensor> wavelet_decompose(at::Tensor low) {
  at::Tensor high = at::zeros_like(low);
  for (int i = 0; i < kWaveletLevels; ++i) {
    const at::Tensor blurred = blur(low, int64_t{1} << i);
    high.add_(low - blurred);
    low = blurred;
  }
  return {high, low};
}

// hq, lq: float32 [1, 3, n, H, W] -> float32 [1, 3, n, H, W].
at::Tensor wavelet(const at::Tensor& hq, const at::Tensor& lq) {
  const auto sizes = hq.sizes().vec();
  const int64_t h = sizes[3], w = sizes[4];
  // Every (channel, frame) plane is blurred independently: view as [3 * n, H, W].
  const at::Tensor high = wavelet_decompose(hq.reshape({-1, h, w})).first;
  const at::Tensor low = wavelet_decompose(lq.reshape({-1, h, w})).second;
  return (high + low).clamp_(-1.0, 1.0).view(sizes);
}

void check_video(const char* name, const at::Tensor& t) {
  if (!t.defined()) throw Error(Error::Kind::BadInput, std::string("colour correction: ") + name + " is undefined");
  if (!at::isFloatingType(t.scalar_type())) {
    throw Error(Error::Kind::BadInput, std::string("colour correction: expected a floating ") + name +
                                           ", found " + c10::toString(t.scalar_type()));
  }
  if (t.dim() != 5 || t.size(0) != 1 || t.size(1) != 3) {
    throw Error(Error::Kind::BadInput, std::string("colour correction: expected ") + name +
                                           " [1, 3, n, H, W], found " + shape_string(t.sizes().vec()));
  }
}

}  // namespace

ColorFix parse_color_fix(const std::string& name) {
  if (name == "none") return ColorFix::None;
  if (name == "adain") return ColorFix::AdaIN;
  if (name == "wavelet") return ColorFix::Wavelet;
  throw Error(Error::Kind::BadSettings,
              "colour fix: expected \"none\", \"adain\" or \"wavelet\", found \"" + name + "\"");
}

const char* color_fix_name(ColorFix fix) {
  switch (fix) {
    case ColorFix::None: return "none";
    case ColorFix::AdaIN: return "adain";
    case ColorFix::Wavelet: return "wavelet";
  }
  return "unknown";
}

at::Tensor colour_correct(const at::Tensor& hq, const at::Tensor& lq, ColorFix method) {
  if (method == ColorFix::None) {
    // lq is not needed and not looked at; hq is handed back as it is.
    if (!hq.defined()) throw Error(Error::Kind::BadInput, "colour correction: hq is undefined");
    return hq;
  }
  if (method != ColorFix::AdaIN && method != ColorFix::Wavelet) {
    std::ostringstream msg;
    msg << "colour correction: unknown method " << static_cast<int>(method);
    throw Error(Error::Kind::BadSettings, msg.str());
  }
  check_video("hq", hq);
  check_video("lq", lq);
  if (hq.sizes() != lq.sizes()) {
    throw Error(Error::Kind::BadInput, "colour correction: expected lq of hq's shape " +
                                           shape_string(hq.sizes().vec()) + ", found " +
                                           shape_string(lq.sizes().vec()));
  }
  if (hq.device() != lq.device()) {
    std::ostringstream msg;
    msg << "colour correction: expected lq on hq's device " << hq.device() << ", found " << lq.device();
    throw Error(Error::Kind::BadInput, msg.str());
  }
  if (hq.numel() == 0) return hq;
  const at::Tensor h = hq.to(at::kFloat);  // [1, 3, n, H, W]
  const at::Tensor l = lq.to(at::kFloat);  // [1, 3, n, H, W]
  const at::Tensor out = method == ColorFix::AdaIN ? adain(h, l) : wavelet(h, l);
  return out.to(hq.scalar_type());
}

}  // namespace flashvsr
