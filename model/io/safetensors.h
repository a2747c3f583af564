// SPDX-License-Identifier: LGPL-2.1-or-later
// safetensors files (https://github.com/huggingface/safetensors, format as documented there):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__},
// then the data buffer. The reader validates the whole header before allocating anything: dtypes,
// shapes (non-negative, product fits), offsets (in range, matching dtype x shape, non-overlapping, and the
// buffer fully covered) — every error names the file and the tensor.
#pragma once

#include "io/tensor_map.h"

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace flashvsr::io {

// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
// The safetensors name of a dtype ("BF16"), or nullptr for one the format (as we support it) lacks.
const char* safetensors_dtype_name(at::ScalarType dtype);
bool safetensors_dtype(const std::string& name, at::ScalarType* dtype);

// Tensors are contiguous CPU tensors viewing the file, mapped copy-on-write (io/mapped_file.h): loading
// copies nothing (a tensor whose bytes start off its element size excepted), a tensor converted to
// another dtype or device and then dropped gives its pages back, and a write to a tensor stays private.
// The file must not be rewritten in place while its tensors live (replace it by renaming a new file).
TensorMap read_safetensors(const std::string& path);
// Only the header: name -> (dtype, shape) without reading data.
struct TensorInfo {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};
std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path);

}  // namespace flashvsr::io
