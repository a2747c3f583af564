// SPDX-License-Identifier: LGPL-2.1-or-later
#include "test_support.h"

#include "io/file_util.h"
#include "io/json.h"

#include <ATen/CPUGeneratorImpl.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

using namespace flashvsr::io;

namespace flashvsr::test {

std::string vendored_fixtures_dir() {
  if (const char* env = std::getenv("FLASHVSR_VENDORED_FIXTURES"); env && *env) return env;
  if (const char* src = std::getenv("FLASHVSR_SOURCE_ROOT"); src && *src) return join_path(src, "tests/data");
  return "tests/data";
}

std::string fixtures_dir() {
  if (const char* env = std::getenv("FLASHVSR_FIXTURES"); env && *env) return env;
  if (const char* src = std::getenv("FLASHVSR_SOURCE_ROOT"); src && *src)
    return join_path(src, "../shared/fixtures");
  return "../shared/fixtures";
}

namespace {

std::vector<std::string> fixtures_in(const std::string& root) {
  std::vector<std::string> dirs;
  for (const auto& name : list_directory(root)) {
    const std::string dir = join_path(root, name);
    if (is_directory(dir) && is_regular_file(join_path(dir, "params.json"))) dirs.push_back(dir);
  }
  return dirs;
}

}  // namespace

std::vector<std::string> vendored_fixture_dirs() { return fixtures_in(vendored_fixtures_dir()); }

std::vector<std::string> extra_fixture_dirs() {
  std::vector<std::string> vendored_names;
  for (const auto& dir : vendored_fixture_dirs()) vendored_names.push_back(base_name(dir));
  std::vector<std::string> dirs;
  for (const auto& dir : fixtures_in(fixtures_dir()))
    if (std::find(vendored_names.begin(), vendored_names.end(), base_name(dir)) == vendored_names.end())
      dirs.push_back(dir);
  return dirs;
}

std::vector<std::string> fixture_dirs() {
  std::vector<std::string> dirs = vendored_fixture_dirs();
  for (auto& dir : extra_fixture_dirs()) dirs.push_back(std::move(dir));
  return dirs;
}

std::string fixture_variant(const std::string& dir) {
  const Json params = read_json_file(join_path(dir, "params.json"));
  return params.contains("variant") ? json_get<std::string>(params, "variant", dir + "/params.json") : "tiny";
}

std::string unsupported_fixture_reason(const std::string& dir) {
  const std::string variant = fixture_variant(dir);
  if (variant == "tiny" || variant == "full") return "";
  return "variant " + variant + ": not implemented yet";
}

bool skip_unsupported_fixture(const std::string& dir) {
  const std::string why = unsupported_fixture_reason(dir);
  if (why.empty()) return false;
  std::printf("[ SKIPPED  ] %s: %s\n", base_name(dir).c_str(), why.c_str());
  std::fflush(stdout);
  return true;
}

void FixtureTest::SetUp() {
  const std::string why = unsupported_fixture_reason(fixture());
  if (!why.empty()) GTEST_SKIP() << base_name(fixture()) << ": " << why;
}

std::string fixture_case_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = base_name(info.param);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

std::string vendored_fixture() {
  const auto dirs = vendored_fixture_dirs();
  if (dirs.empty()) throw std::runtime_error("no vendored fixture under " + vendored_fixtures_dir());
  return dirs.front();
}

namespace {

// See test_support.h: exit status 77 when nothing passed but something was skipped (or nothing selected).
// OnTestProgramEnd comes after the XML report (written at the end of the iteration) and the summary.
class SkipStatus : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest& u) override {
    if (u.Failed() || u.failed_test_count() > 0 || u.successful_test_count() > 0) return;
    if (u.skipped_test_count() > 0)
      std::printf("[  SKIP    ] no test passed, %d skipped: exit status 77 (SKIP)\n", u.skipped_test_count());
    else
      std::printf("[  SKIP    ] no test selected: exit status 77 (SKIP)\n");
    std::fflush(stdout);
    std::fflush(stderr);
    std::exit(77);
  }
};

const bool skip_status_installed = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SkipStatus);
  return true;
}();

}  // namespace

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
