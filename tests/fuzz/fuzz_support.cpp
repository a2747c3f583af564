// SPDX-License-Identifier: LGPL-2.1-or-later
#include "fuzz_support.h"

#include "io/file_util.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <typeinfo>
#include <vector>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

using namespace flashvsr::io;

namespace flashvsr::fuzz {

namespace {

[[noreturn]] void harness_failure(const std::string& message) {
  std::fprintf(stderr, "fuzz harness failure (not a finding): %s: %s\n", message.c_str(), std::strerror(errno));
  std::abort();
}

void write_all(int fd, const uint8_t* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) harness_failure("pwrite");
    done += static_cast<size_t>(n);
  }
}

// Never destroyed: the exit handler that removes the directories runs after static destructors.
std::vector<std::string>& temp_dirs() {
  static auto* dirs = new std::vector<std::string>;
  return *dirs;
}

void remove_temp_dirs() {
  for (const auto& d : temp_dirs()) remove_tree(d);
}

}  // namespace

MemFile::MemFile(const char* name) {
  fd_ = ::memfd_create(name, MFD_CLOEXEC);
  if (fd_ < 0) harness_failure("memfd_create");
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemFile::~MemFile() { ::close(fd_); }

void MemFile::write(const uint8_t* data, size_t size) {
  if (::ftruncate(fd_, 0) != 0) harness_failure("ftruncate");
  write_all(fd_, data, size);
}

void write_file_or_die(const std::string& path, const uint8_t* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) harness_failure("open " + path);
  write_all(fd, data, size);
  ::close(fd);
}

std::string make_temp_dir(const char* tag) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/flashvsr-fuzz-" + tag + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) harness_failure("mkdtemp " + pattern);
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(remove_temp_dirs); });
  temp_dirs().emplace_back(buf.data());
  return temp_dirs().back();
}

void finding(const std::string& message) {
  std::fprintf(stderr, "\n==FINDING== %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
  return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
}

size_t mutate_safetensors(uint8_t* data, size_t size, size_t max_size, unsigned int seed, unsigned header_tenths) {
  std::minstd_rand rng(seed);
  if (size >= 8 && rng() % 10 < header_tenths) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
    const size_t rest = n > 0 && n <= size - 8 ? size - 8 - static_cast<size_t>(n) : 0;
    if (n > 0 && n <= size - 8 && max_size > 8 + rest) {
      // Room for the header to grow by up to 4 KiB, within max_size.
      const size_t cap = std::min<size_t>(max_size - 8 - rest, static_cast<size_t>(n) + 4096);
      std::vector<uint8_t> header(data + 8, data + 8 + n);
      header.resize(cap);
      const std::vector<uint8_t> tail(data + 8 + n, data + size);
      const size_t m = LLVMFuzzerMutate(header.data(), static_cast<size_t>(n), cap);
      for (int i = 0; i < 8; ++i) data[i] = static_cast<uint8_t>((uint64_t(m) >> (8 * i)) & 0xFF);
      std::memcpy(data + 8, header.data(), m);
      if (!tail.empty()) std::memcpy(data + 8 + m, tail.data(), tail.size());
      return 8 + m + tail.size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

bool strict_mode() {
  static const bool strict = [] {
    const char* v = std::getenv("FLASHVSR_FUZZ_STRICT");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return strict;
}

bool verbose() {
  static const bool on = [] {
    const char* v = std::getenv("FLASHVSR_FUZZ_VERBOSE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

void note_outcome(const char* what, const char* error) {
  if (error)
    std::fprintf(stderr, "%s: rejected: %.300s\n", what, error);
  else
    std::fprintf(stderr, "%s: accepted\n", what);
}

void note_c10_error(const char* what, const char* message) {
  if (strict_mode())
    finding(std::string(what) + ": c10::Error escaped the reader (strict mode): " + message);
}

void unexpected_exception(const char* what, const std::exception* e) {
  std::string type = "unknown (not a std::exception)";
  if (e) {
    const char* mangled = typeid(*e).name();
    int status = 0;
    char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    type = status == 0 && demangled ? demangled : mangled;
    std::free(demangled);
  }
  finding(std::string(what) + ": unexpected exception of type " + type + (e ? std::string(": ") + e->what() : ""));
}

}  // namespace flashvsr::fuzz
