// SPDX-License-Identifier: LGPL-2.1-or-later
// Colour correction of decoded frames against the LQ frames of the same indices (spec section 8).
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace flashvsr {

enum class ColorFix { None, AdaIN, Wavelet };

// "none" | "adain" | "wavelet"; throws Error(BadSettings) otherwise.
ColorFix parse_color_fix(const std::string& name);
const char* color_fix_name(ColorFix fix);

// hq, lq: [1, 3, n, H, W] of the same shape, values in [-1, 1].
//  AdaIN:   per frame and channel (x - mean) / std * std_lq + mean_lq, std = sqrt(biased var + 1e-5);
//  Wavelet: 5 levels of dilated 3x3 [1 2 1]^2/16 blurs with replicate padding; high(hq) + low(lq);
//  both clamp to [-1, 1]. None returns hq unchanged.
// Statistics and blurs are computed in float32 whatever the input dtype; the result has hq's dtype.
at::Tensor colour_correct(const at::Tensor& hq, const at::Tensor& lq, ColorFix method);

}  // namespace flashvsr
