// SPDX-License-Identifier: LGPL-2.1-or-later
// Shared helpers of the unit and element tests: where fixtures live, one test case per fixture, scratch
// directories, an optional Python with torch; and the exit status that makes skips visible (below).
#pragma once

#include <ATen/ATen.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flashvsr::test {

// Golden fixtures of the reference (format: tests/data/README.md, ../shared/fixtures/README.md) come from
// two places: the vendored ones, part of the repository, always there (a missing one is a failure), and the
// extra ones of ../shared/fixtures (or -Dfixtures_dir), optional (missing: their tests SKIP, visibly).
//
// $FLASHVSR_VENDORED_FIXTURES (set by meson), else tests/data in $FLASHVSR_SOURCE_ROOT, else ./tests/data.
std::string vendored_fixtures_dir();
// The extra fixtures: $FLASHVSR_FIXTURES (set by meson), else ../shared/fixtures beside the source tree.
std::string fixtures_dir();
// The sub-directories holding a params.json, sorted by name: of vendored_fixtures_dir(); of fixtures_dir()
// without the names already vendored (the same fixture is not run twice); and both, vendored first.
std::vector<std::string> vendored_fixture_dirs();
std::vector<std::string> extra_fixture_dirs();
std::vector<std::string> fixture_dirs();
// The fixture's params.json "variant" ("tiny" when absent).
std::string fixture_variant(const std::string& dir);
// "" when the engine implements the fixture's variant (tiny, full), else why not: "variant X: not
// implemented yet". A test that runs the engine on a fixture skips it with this reason, visibly
// (GTEST_SKIP), never passing over it silently.
std::string unsupported_fixture_reason(const std::string& dir);

// For a test that loops over fixture_dirs() itself: prints "[ SKIPPED  ] <name>: <why>" (tools/test-summary.py
// lists these lines under the test's skips) and returns true when the fixture is to be skipped, i.e. when
// unsupported_fixture_reason(dir) is not empty. A loop that skipped every fixture should GTEST_SKIP().
bool skip_unsupported_fixture(const std::string& dir);

// One test case per fixture: derive a suite from FixtureTest (cases that need the engine to implement the
// fixture's variant: SetUp skips the others, naming the reason) or from AnyVariantFixtureTest (checks that
// hold for every variant: file formats, pre-processing, colour correction), write TEST_P(Suite, Name) using
// fixture() (the fixture's directory), and instantiate with FLASHVSR_FIXTURE_TESTS(Suite). Cases are named
// Vendored/Suite.Name/compact_v11_adain and Shared/Suite.Name/tiny_v11_adain: meson runs Shared/* as its
// own test (<name>-shared), which SKIPs where ../shared is absent.
class AnyVariantFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& fixture() const { return GetParam(); }
};
class FixtureTest : public AnyVariantFixtureTest {
 protected:
  void SetUp() override;
};
// Names the cases after the fixture ("compact-v11-adain" -> "compact_v11_adain").
std::string fixture_case_name(const ::testing::TestParamInfo<std::string>& info);
#define FLASHVSR_FIXTURE_TESTS(Suite)                                                                 \
  INSTANTIATE_TEST_SUITE_P(Vendored, Suite, ::testing::ValuesIn(::flashvsr::test::vendored_fixture_dirs()), \
                           ::flashvsr::test::fixture_case_name);                                     \
  INSTANTIATE_TEST_SUITE_P(Shared, Suite, ::testing::ValuesIn(::flashvsr::test::extra_fixture_dirs()),      \
                           ::flashvsr::test::fixture_case_name)
// The first vendored fixture (for tests that need one real model file, e.g. to corrupt it); throws
// std::runtime_error (the calling test fails) when there is none.
std::string vendored_fixture();

// Visible skips. Every test program linking test_support.cpp exits with status 77 (meson: SKIP) when no
// test passed, none failed, and at least one was skipped or none was selected; so a meson test whose
// cases all skip (no GPU, no ../shared) reads SKIP, never OK. Installed before main() runs; nothing to call.

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
