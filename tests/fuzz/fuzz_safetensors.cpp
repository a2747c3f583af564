// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: the safetensors reader (model/safetensors.h).
// Input: the bytes of a .safetensors file. Properties checked beyond "no crash":
//  - read_safetensors_header and read_safetensors agree: a file whose tensors load has a valid header with
//    the same names, dtypes and shapes; a valid header whose data does not load must hold a BOOL tensor
//    (the only check made on tensor bytes);
//  - loaded tensors are contiguous CPU tensors, and writing them with write_safetensors and reading that
//    back gives bit-identical tensors.
// Half of the mutations change the JSON header alone and fix up its 8-byte length (fuzz::mutate_safetensors).
#include "fuzz_support.h"
#include "io/safetensors.h"
#include "writers/safetensors_writer.h"

#include <c10/core/InferenceMode.h>

using namespace flashvsr;
using namespace flashvsr::io;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  return fuzz::mutate_safetensors(data, size, max_size, seed, 5);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile input("safetensors-in"), output("safetensors-out");
  c10::InferenceMode guard;
  input.write(data, size);

  std::map<std::string, TensorInfo> header;
  const bool header_ok = fuzz::accepts("read_safetensors_header", [&] { header = read_safetensors_header(input.path()); });
  TensorMap tensors;
  const bool tensors_ok = fuzz::accepts("read_safetensors", [&] { tensors = read_safetensors(input.path()); });

  if (tensors_ok && !header_ok) fuzz::finding("read_safetensors accepted a file whose header read_safetensors_header rejects");
  if (header_ok && !tensors_ok) {
    bool has_bool = false;
    for (const auto& [name, info] : header) has_bool = has_bool || info.dtype == at::kBool;
    if (!has_bool) fuzz::finding("a valid header without BOOL tensors, but read_safetensors rejected the data");
  }
  if (!tensors_ok) return 0;

  if (tensors.size() != header.size()) fuzz::finding("header and tensors differ in count");
  for (const auto& [name, t] : tensors) {
    auto it = header.find(name);
    if (it == header.end()) fuzz::finding("tensor '" + name + "' is missing from the header");
    if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous())
      fuzz::finding("tensor '" + name + "' is not a defined contiguous CPU tensor");
    if (t.scalar_type() != it->second.dtype || t.sizes().vec() != it->second.shape)
      fuzz::finding("tensor '" + name + "' disagrees with its header entry");
  }

  // Round trip through the writer. The reader accepted every name, dtype and shape, so the writer must too.
  if (!fuzz::accepts("write_safetensors", [&] { write_safetensors(output.path(), tensors); }))
    fuzz::finding("write_safetensors rejected tensors that read_safetensors produced");
  TensorMap again;
  if (!fuzz::accepts("read_safetensors (round trip)", [&] { again = read_safetensors(output.path()); }))
    fuzz::finding("read_safetensors rejected what write_safetensors wrote");
  if (again.size() != tensors.size()) fuzz::finding("round trip changed the number of tensors");
  for (const auto& [name, t] : tensors) {
    auto it = again.find(name);
    if (it == again.end() || !fuzz::same_tensor(t, it->second))
      fuzz::finding("round trip changed tensor '" + name + "'");
  }
  return 0;
}
