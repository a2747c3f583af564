// SPDX-License-Identifier: LGPL-2.1-or-later
#include "weights.h"

#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/torch_archive.h"


namespace flashvsr {

WeightFile::WeightFile(std::string path, TensorMap tensors) : path_(std::move(path)), tensors_(std::move(tensors)) {}

WeightFile WeightFile::open(const std::string& path) {
  if (!io::is_regular_file(path))
    throw Error(Error::Kind::NotFound, path + ": no such file");
  const bool is_safetensors = io::ends_with(path, ".safetensors");
  return WeightFile(path, is_safetensors ? io::read_safetensors(path) : io::read_torch_state_dict(path));
}

std::vector<int64_t> WeightFile::shape(const std::string& key) const {
  auto it = tensors_.find(key);
  if (it == tensors_.end()) throw Error(Error::Kind::BadFile, path_ + ": missing tensor '" + key + "'");
  return it->second.sizes().vec();
}

int64_t WeightFile::count_indexed(const std::string& prefix, const std::string& suffix) const {
  int64_t n = 0;
  while (has(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

at::Tensor WeightFile::take(const std::string& key, const std::vector<int64_t>& expected, at::Device device,
                            at::ScalarType dtype) {
  auto it = tensors_.find(key);
  if (it == tensors_.end())
    throw Error(Error::Kind::BadFile,
                path_ + ": missing tensor '" + key + "' (expected shape " + shape_string(expected) + ")");
  const at::Tensor& t = it->second;
  if (t.sizes().vec() != expected)
    throw Error(Error::Kind::BadFile, path_ + ": tensor '" + key + "' has shape " + shape_string(t.sizes().vec()) +
                                          ", expected " + shape_string(expected));
  if (!at::isFloatingType(t.scalar_type()))
    throw Error(Error::Kind::BadFile, path_ + ": tensor '" + key + "' has dtype " +
                                          std::string(c10::toString(t.scalar_type())) +
                                          ", expected a floating-point dtype (F32, BF16, F16)");
  if (t.is_meta())
    throw Error(Error::Kind::Internal, path_ + ": tensor '" + key + "' was taken before (and converted): take each tensor once");
  taken_.insert(key);
  // Always a copy, also where device and dtype already match (.to() would return the view itself): a model
  // lives for days, and the reader's views must not outlive the load (io/safetensors.h) — a model file
  // rewritten or truncated in place under a mapping makes its pages read other bytes or raise SIGBUS.
  at::Tensor out = t.to(device, dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  // The file's tensor is no longer needed: keep only its shape and dtype (a meta tensor), so that its
  // memory (pages of a mapped file, io/mapped_file.h) goes now, not when the whole file is closed.
  it->second = at::empty(it->second.sizes(), it->second.options().device(at::kMeta));
  return out;
}

std::vector<std::string> WeightFile::unused() const {
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : tensors_)
    if (!taken_.count(key)) keys.push_back(key);
  return keys;
}

void require_dim(const WeightFile& file, const std::string& what, int64_t expected, int64_t found) {
  if (expected != found)
    throw Error(Error::Kind::BadFile, file.path() + ": " + what + ": expected " + std::to_string(expected) +
                                          ", found " + std::to_string(found));
}

}  // namespace flashvsr
