// SPDX-License-Identifier: LGPL-2.1-or-later
#include "test_support.h"

#include "file_util.h"

#include <ATen/CPUGeneratorImpl.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace flashvsr::test {

std::string fixtures_dir() {
  if (const char* env = std::getenv("FLASHVSR_FIXTURES"); env && *env) return env;
  if (const char* src = std::getenv("FLASHVSR_SOURCE_ROOT"); src && *src)
    return join_path(src, "../shared/fixtures");
  return "../shared/fixtures";
}

std::vector<std::string> fixture_dirs() {
  std::vector<std::string> dirs;
  for (const auto& name : list_directory(fixtures_dir())) {
    const std::string dir = join_path(fixtures_dir(), name);
    if (is_directory(dir) && is_regular_file(join_path(dir, "params.json"))) dirs.push_back(dir);
  }
  return dirs;
}

std::string scratch_dir(const std::string& name) {
  std::string base;
  if (const char* b = std::getenv("FLASHVSR_BUILD_ROOT"); b && *b)
    base = join_path(b, "test-scratch");
  else
    base = "/tmp/flashvsr-test-scratch-" + std::to_string(::getuid());
  const std::string dir = join_path(base, name);
  std::string error;
  if (!remove_tree(dir) || !make_directories(dir, &error))
    throw std::runtime_error("cannot make scratch directory " + dir + ": " + error);
  return dir;
}

int run_command(const std::string& command, std::string* out) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string text;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) text.append(buf.data(), n);
  int status = pclose(pipe);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string python_with_torch() {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("FLASHVSR_PYTHON"); p && *p) candidates.emplace_back(p);
  if (const char* home = std::getenv("HOME"); home && *home)
    candidates.push_back(std::string(home) + "/.cache/gst-flashvsr/venv/bin/python");
  for (const auto& py : candidates) {
    if (!path_exists(py)) continue;
    if (run_command("'" + py + "' -c 'import torch' >/dev/null 2>&1") == 0) return py;
  }
  return "";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

at::Tensor seeded_randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::kFloat);
}

}  // namespace flashvsr::test
