// SPDX-License-Identifier: LGPL-2.1-or-later
// Writes safetensors files (the format of model/io/safetensors.h): used by flashvsr-make-model, the
// tests and the fuzz seeds; the engine only reads.
#pragma once

#include "io/tensor_map.h"

#include <map>
#include <string>

namespace flashvsr::io {

// Tensors of any device and layout are written as contiguous CPU copies, in name order, with optional
// string metadata; the header is padded with spaces to a multiple of 8 bytes. Error(BadInput) for an
// undefined tensor, a dtype safetensors lacks or a tensor named __metadata__.
void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace flashvsr::io
