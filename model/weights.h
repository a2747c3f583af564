// SPDX-License-Identifier: LGPL-2.1-or-later
// Strict binding of checkpoint tensors to the engine's stages. A WeightFile wraps the tensors of one file
// of the release layout; stages `take` every tensor they need by its checkpoint key with the expected
// shape (derived from shapes only, see each stage's `detect`), and whatever was never taken is reported.
// Every error names the file, the key, and the expected vs found shape or dtype.
#pragma once

#include "error.h"
#include "io/tensor_map.h"

#include <ATen/ATen.h>

#include <set>
#include <string>
#include <vector>

namespace flashvsr {

// File names of a released model directory (FlashVSR v1 / v1.1 on Hugging Face).
struct ReleaseLayout {
  static constexpr const char* kDit = "diffusion_pytorch_model_streaming_dmd.safetensors";
  static constexpr const char* kLqProj = "LQ_proj_in.ckpt";
  static constexpr const char* kDecoder = "TCDecoder.ckpt";     // FlashVSR-Tiny's stage 3
  static constexpr const char* kVaeDecoder = "Wan2.1_VAE.pth";   // FlashVSR (Full)'s stage 3
  static constexpr const char* kPrompt = "posi_prompt.pth";
};

class WeightFile {
 public:
  WeightFile(std::string path, TensorMap tensors);
  // Reads a .safetensors file or a torch.save archive (anything else), mapping I/O and format errors to
  // flashvsr::Error naming the path.
  static WeightFile open(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& key) const { return tensors_.count(key) != 0; }
  // Shape of a present tensor; throws Error(BadFile) naming the key when absent.
  std::vector<int64_t> shape(const std::string& key) const;
  // Number of consecutive indices N = 0, 1, ... for which `prefix + N + suffix` exists.
  int64_t count_indexed(const std::string& prefix, const std::string& suffix) const;

  // Takes a floating-point tensor with exactly `expected` shape, converted to `dtype` on `device`.
  at::Tensor take(const std::string& key, const std::vector<int64_t>& expected, at::Device device,
                  at::ScalarType dtype);
  // Keys that no stage took (a warning for the caller: the file may be of another model).
  std::vector<std::string> unused() const;

 private:
  std::string path_;
  TensorMap tensors_;
  std::set<std::string> taken_;
};

// Requires a condition on a detected dimension: throws Error(BadFile) "<file>: <what>: expected E, found F".
void require_dim(const WeightFile& file, const std::string& what, int64_t expected, int64_t found);

}  // namespace flashvsr
