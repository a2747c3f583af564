// SPDX-License-Identifier: LGPL-2.1-or-later
#include "writers/torch_archive_writer.h"

#include "error.h"
#include "io/file_util.h"
#include "io/unpickler.h"
#include "writers/pickle_writer.h"
#include "writers/zip_writer.h"

#include <vector>

namespace flashvsr::io {

namespace {

at::Tensor prepare(const at::Tensor& tensor, const std::string& name) {
  if (!tensor.defined()) throw Error(Error::Kind::BadInput, "tensor '" + name + "' is undefined");
  if (!torch_storage_name(tensor.scalar_type()))
    throw Error(Error::Kind::BadInput, "tensor '" + name + "' has dtype " +
                                           std::string(c10::toString(tensor.scalar_type())) +
                                           ", which the torch archive writer does not support");
  return tensor.detach().to(at::kCPU).contiguous();
}

// data.pkl, byteorder, the storages as data/0, data/1, ..., version: the record order of torch.save.
void write_archive(const std::string& path, const std::string& pickle, const std::vector<at::Tensor>& storages) {
  ZipWriter zip(path, "torch archive");
  zip.add("archive/data.pkl", pickle.data(), pickle.size());
  zip.add("archive/byteorder", "little", 6);
  for (size_t i = 0; i < storages.size(); ++i)
    zip.add("archive/data/" + std::to_string(i), storages[i].data_ptr(), storages[i].numel() * storages[i].element_size());
  zip.add("archive/version", "3\n", 2);
  zip.finish();
}

}  // namespace

void write_torch_state_dict(const std::string& path, const TensorMap& tensors, bool as_state_dict) {
  require_little_endian("torch archive");
  std::vector<at::Tensor> storages;
  PickleWriter p;
  p.op(0x80);  // PROTO 2
  p.op(2);
  if (as_state_dict) p.empty_ordered_dict();
  else p.op('}');
  if (!tensors.empty()) {
    p.op('(');
    for (const auto& [name, tensor] : tensors) {
      at::Tensor t = prepare(tensor, name);
      p.str(name);
      p.tensor(t, std::to_string(storages.size()));
      storages.push_back(std::move(t));
    }
    p.op('u');  // SETITEMS
  }
  if (as_state_dict) {
    // state = {'_metadata': OrderedDict({'': {'version': 1}})}, applied by BUILD
    p.op('}');
    p.str("_metadata");
    p.empty_ordered_dict();
    p.str("");
    p.op('}');
    p.str("version");
    p.integer(1);
    p.op('s');
    p.op('s');
    p.op('s');
    p.op('b');
  }
  p.op('.');  // STOP
  write_archive(path, p.bytes(), storages);
}

void write_torch_tensor(const std::string& path, const at::Tensor& tensor) {
  require_little_endian("torch archive");
  const at::Tensor t = prepare(tensor, "tensor");
  PickleWriter p;
  p.op(0x80);
  p.op(2);
  p.tensor(t, "0");
  p.op('.');
  write_archive(path, p.bytes(), {t});
}

}  // namespace flashvsr::io
