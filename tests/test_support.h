// SPDX-License-Identifier: LGPL-2.1-or-later
// Shared helpers of the unit tests: where fixtures live, scratch directories, an optional Python with torch.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flashvsr::test {

// $FLASHVSR_FIXTURES (set by meson), else ../shared/fixtures beside the source tree.
std::string fixtures_dir();
// Every sub-directory of fixtures_dir() that holds a params.json, sorted; empty if none.
std::vector<std::string> fixture_dirs();
// A fresh, empty directory for this test (under the build tree or /tmp), removed before being returned.
std::string scratch_dir(const std::string& name);
// $FLASHVSR_PYTHON if it can `import torch`, else ~/.cache/gst-flashvsr/venv/bin/python if it can; "" otherwise.
std::string python_with_torch();
// Runs a shell command, returns its exit status (and stdout in *out when given).
int run_command(const std::string& command, std::string* out = nullptr);
// Standard-normal float32 values from a CPU generator seeded with `seed`: the same tensor on every run.
at::Tensor seeded_randn(std::vector<int64_t> shape, uint64_t seed);
// Writes/reads whole files.
void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace flashvsr::test
