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

#include <cstdint>
#include <functional>
#include <string>

namespace flashvsr::io {

// A state dict: name -> tensor (contiguous CPU tensors owning their memory, strides honoured).
TensorMap read_torch_state_dict(const std::string& path);
// Only the entries whose key `keep` accepts are read: the others are checked like every entry (a tensor, its
// storage record present and of the right size) but their bytes are never read nor memory allocated for
// them (a storage shared with a kept entry is read once, for that entry). `skipped` (optional) receives the
// number of entries left out and `skipped_values` their element count. E.g. the Wan2.1 VAE file without
// its encoder half (vae_decoder.h).
using KeyFilter = std::function<bool(const std::string& key)>;
struct SkippedEntries {
  int64_t count = 0;
  int64_t values = 0;
};
TensorMap read_torch_state_dict(const std::string& path, const KeyFilter& keep, SkippedEntries* skipped = nullptr);
// A single saved tensor (e.g. posi_prompt.pth).
at::Tensor read_torch_tensor(const std::string& path);

}  // namespace flashvsr::io
