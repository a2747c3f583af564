// SPDX-License-Identifier: LGPL-2.1-or-later
// Small helpers shared by the command-line tools: argument parsing with clear errors, PSNR.
#pragma once

#include "engine.h"
#include "tiling.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace flashvsr::cli {

// "--name value" and "--flag" options plus positional arguments. Unknown options are an error.
class Args {
 public:
  // `with_value`: options that take a value; `flags`: options that don't.
  Args(int argc, char** argv, const std::vector<std::string>& with_value, const std::vector<std::string>& flags);
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string str(const std::string& name, const std::string& fallback) const;
  double num(const std::string& name, double fallback) const;
  int64_t integer(const std::string& name, int64_t fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// The stream settings every tool spells alike, defaults the engine's (StreamOptions): --scale,
// --model-version, --sparse-ratio, --kv-ratio, --local-range, --color-fix, --seed, --attention,
// --decoder-group. Frame sizes are the caller's.
StreamOptions stream_settings(const Args& args);
// --tile-width, --tile-height (0: not split), --tile-overlap (default 128), --tile-colour (per-tile).
TileOptions tile_settings(const Args& args);

// A golden fixture's output frames (fixtures README) as uint8 [N, H, W, 3]: `frames_u8` as is, or
// `frames` [3, N, H, W] in [-1, 1] rounded as the reference does. `expected` is the fixture's
// expected.safetensors read from `path` (named in the error when neither tensor is there).
at::Tensor reference_frames_u8(const std::map<std::string, at::Tensor>& expected, const std::string& path);

// Per-frame PSNR in dB of two uint8 [N, H, W, C] tensors (infinity where equal).
std::vector<double> psnr_per_frame(const at::Tensor& a, const at::Tensor& b);
std::string format_db(double db);

}  // namespace flashvsr::cli
