// SPDX-License-Identifier: LGPL-2.1-or-later
// Writers of torch.save archives that Python's torch.load reads (the layout of model/io/torch_archive.h):
// used by flashvsr-make-model, the tests and the fuzz seeds; the engine only reads.
#pragma once

#include "io/tensor_map.h"

#include <string>

namespace flashvsr::io {

// `as_state_dict`: an OrderedDict with a `_metadata` attribute, like module.state_dict(); else a dict.
// Tensors of any device and layout are written as contiguous CPU copies; Error(BadInput) for an undefined
// tensor or a dtype without a torch storage class.
void write_torch_state_dict(const std::string& path, const TensorMap& tensors, bool as_state_dict = true);
void write_torch_tensor(const std::string& path, const at::Tensor& tensor);

}  // namespace flashvsr::io
