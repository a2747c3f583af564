// SPDX-License-Identifier: LGPL-2.1-or-later
// What the checkpoint readers return and the weight binding consumes: tensors by name.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

namespace flashvsr {

// Ordered by name.
using TensorMap = std::map<std::string, at::Tensor>;

}  // namespace flashvsr
