// SPDX-License-Identifier: LGPL-2.1-or-later
// safetensors files (https://github.com/huggingface/safetensors, format as documented there):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__},
// then the data buffer. The reader validates the whole header before allocating anything: dtypes,
// shapes (non-negative, product fits), offsets (in range, matching dtype x shape, non-overlapping, and the
// buffer fully covered) — every error names the file and the tensor.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

namespace flashvsr {

// Ordered by name; tensors are contiguous CPU tensors that own their memory.
using TensorMap = std::map<std::string, at::Tensor>;

// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
TensorMap read_safetensors(const std::string& path);
// Only the header: name -> (dtype, shape) without reading data.
struct TensorInfo {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};
std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path);

// Writes tensors (any device, made contiguous on CPU) with optional string metadata.
void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace flashvsr
