// SPDX-License-Identifier: LGPL-2.1-or-later
// Shared pieces of the libFuzzer targets. The loaders under test take file paths, so each target writes
// its input into an in-memory file (memfd) and hands the reader /proc/self/fd/N. A reader may reject an
// input by throwing flashvsr::Error (its contract) or c10::Error (LibTorch underneath); anything else
// (another exception type, an abort, a sanitizer report, running out of the RSS/malloc limits) is a
// finding. With FLASHVSR_FUZZ_STRICT=1 in the environment an escaping c10::Error is a finding too; with
// FLASHVSR_FUZZ_VERBOSE=1 every rejection and acceptance is printed (to look at what a corpus reaches).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace flashvsr::fuzz {

// An anonymous in-memory file whose contents are replaced on every `write`.
class MemFile {
 public:
  explicit MemFile(const char* name);
  ~MemFile();
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the contents; aborts on I/O failure (a harness problem, not a finding of the code under test).
  void write(const uint8_t* data, size_t size);
  // "/proc/self/fd/N": open()-able like a regular file by the readers.
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Writes bytes to a named file (truncating it); aborts on failure.
void write_file_or_die(const std::string& path, const uint8_t* data, size_t size);

// A fresh private directory under $TMPDIR (default /tmp), removed when the process exits normally.
std::string make_temp_dir(const char* tag);

// Runs `fn`, accepting flashvsr::Error (and c10::Error unless strict mode is on) as the normal way of
// rejecting an input. Returns true when `fn` returned normally. Any other exception is reported with its
// type and message, then the process aborts so that libFuzzer records the input.
template <class Fn>
bool accepts(const char* what, Fn&& fn);

// Reports a broken invariant of the code under test and aborts (libFuzzer saves the input).
[[noreturn]] void finding(const std::string& message);

// Bitwise equality of two CPU tensors: dtype, shape and the bytes of their contiguous data.
bool same_tensor(const at::Tensor& a, const at::Tensor& b);

// A libFuzzer custom mutation for safetensors-shaped inputs: `header_tenths` times in ten (when the
// input starts with a plausible header length) only the JSON header is mutated, the tensor bytes are kept
// and the length prefix is rewritten; otherwise, or when the input has no such shape, a plain mutation.
size_t mutate_safetensors(uint8_t* data, size_t size, size_t max_size, unsigned int seed, unsigned header_tenths);

// Implementation details of `accepts`.
bool strict_mode();
bool verbose();
void note_outcome(const char* what, const char* error);
[[noreturn]] void unexpected_exception(const char* what, const std::exception* e);
void note_c10_error(const char* what, const char* message);

}  // namespace flashvsr::fuzz

#include "error.h"

#include <c10/util/Exception.h>

template <class Fn>
bool flashvsr::fuzz::accepts(const char* what, Fn&& fn) {
  try {
    fn();
    if (verbose()) note_outcome(what, nullptr);
    return true;
  } catch (const flashvsr::Error& e) {
    if (verbose()) note_outcome(what, e.what());
    return false;
  } catch (const c10::Error& e) {
    if (verbose()) note_outcome(what, e.what_without_backtrace());
    note_c10_error(what, e.what_without_backtrace());
    return false;
  } catch (const std::exception& e) {
    unexpected_exception(what, &e);
  } catch (...) {
    unexpected_exception(what, nullptr);
  }
}
