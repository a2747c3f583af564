// SPDX-License-Identifier: LGPL-2.1-or-later
// Files written by Python's torch.save (the zip layout, PyTorch >= 1.6):
//   <archive>/data.pkl      pickle (protocol 2) of the object; tensors are persistent ids
//                           ('storage', torch.<T>Storage, key, location, numel) rebuilt by
//                           torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
//   <archive>/data/<key>    raw little-endian storage bytes (stored, not compressed)
//   <archive>/byteorder, version, .data/serialization_id   (optional)
// We read exactly this subset: a plain dict or collections.OrderedDict (with or without the `_metadata`
// attribute that state_dict() attaches) of tensors, or a single tensor. The zip layer is io/zip_reader,
// the pickle io/unpickler; this file checks the storages against their records and makes the tensors.
// Anything else (other globals, compressed entries, out-of-range offsets) is a clear error, never a
// crash or an unbounded allocation.
#pragma once

#include "io/tensor_map.h"

#include <string>

namespace flashvsr::io {

// A state dict: name -> tensor (contiguous CPU tensors owning their memory, strides honoured).
TensorMap read_torch_state_dict(const std::string& path);
// A single saved tensor (e.g. posi_prompt.pth).
at::Tensor read_torch_tensor(const std::string& path);

}  // namespace flashvsr::io
