// SPDX-License-Identifier: LGPL-2.1-or-later
// Repeated stream state cycles must not leak. Loads a generated tiny model (ModelSpec::tiny()) from a
// model directory, then runs N cycles (default 50) of: create a stream, push 30 frames one at a time,
// finish, reset -- on a fresh stream and on one long-lived stream that is reset every cycle. Checks:
//  - every cycle returns exactly 30 frames from each stream;
//  - the peak resident memory (/proc/self/statm) over the second half of the cycles exceeds the peak over
//    the first half, and the live heap (allocator statistics) after the last cycle exceeds the one at the
//    half-way mark, by less than --max-growth-mb (default 4) each;
//  - when built with AddressSanitizer: LeakSanitizer finds no leak at the end (no suppressions: LibTorch
//    reports none of its own, see docs/reliability.md).
// --plant-leak leaks a small block from this program on purpose, to show that the leak check can fail.
//   leak-cycles [--cycles N] [--frames N] [--max-growth-mb X] [--plant-leak]
#include "engine.h"
#include "io/file_util.h"
#include "model_maker.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#define FLASHVSR_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLASHVSR_LEAK_CHECK 1
#endif
#endif
#ifdef FLASHVSR_LEAK_CHECK
#include <sanitizer/lsan_interface.h>
// From the sanitizer runtime (GCC does not ship sanitizer/allocator_interface.h).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#else
#include <malloc.h>
#endif

using namespace flashvsr;
using namespace flashvsr::io;

#ifdef FLASHVSR_LEAK_CHECK
// AddressSanitizer keeps freed blocks in a quarantine (256 MB by default) to catch use after free; while it
// fills, the resident set grows by whatever the program frees, which would drown the RSS comparison. A
// 16 MB quarantine is full before cycle 10 and still catches recent use after free. ASAN_OPTIONS in the
// environment overrides this.
extern "C" const char* __asan_default_options() { return "quarantine_size_mb=16"; }
#endif

namespace {

double resident_mib() {
#ifndef FLASHVSR_LEAK_CHECK
  // glibc keeps freed memory mapped at will (heap top, arena holes), which moves RSS by several MB from one
  // moment to the next; hand it back first so that RSS follows what is in use.
  ::malloc_trim(0);
#endif
  std::ifstream statm("/proc/self/statm");
  long long size = 0, resident = 0;
  if (!(statm >> size >> resident)) {
    std::cerr << "leak-cycles: cannot read /proc/self/statm\n";
    std::exit(2);
  }
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// Bytes handed out by malloc/new and not yet freed: the sanitizer allocator's count under ASan (freed
// blocks waiting in its quarantine are not included), glibc's arena and mmap statistics otherwise.
double live_heap_mib() {
#ifdef FLASHVSR_LEAK_CHECK
  const double bytes = static_cast<double>(__sanitizer_get_current_allocated_bytes());
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 mi = ::mallinfo2();
  const double bytes = static_cast<double>(mi.uordblks) + static_cast<double>(mi.hblkhd);
#else
  const double bytes = 0.0;
#endif
  return bytes / (1024.0 * 1024.0);
}

// Deterministic LR frames: uint8 [n, h, w, 3].
at::Tensor make_frames(int64_t n, int64_t h, int64_t w) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  auto base = at::randint(0, 256, {1, h, w, 3}, gen, at::kLong);
  auto drift = at::arange(n, at::kLong).view({n, 1, 1, 1}) * 7;
  return (base + drift).remainder(256).to(at::kByte);
}

// Pushes `lr` one frame at a time, finishes and resets; returns the number of frames that came out.
int64_t cycle(Stream& s, const at::Tensor& lr) {
  int64_t out = 0;
  for (int64_t i = 0; i < lr.size(0); ++i) out += s.push(lr.narrow(0, i, 1)).frames.size(0);
  out += s.finish().frames.size(0);
  s.reset();
  return out;
}

#if defined(__GNUC__)
__attribute__((noinline))
#endif
void plant_leak() {
  // Lost on purpose: the only pointer to the block goes out of scope.
  auto* block = new std::vector<int>(4096, 7);
  std::cout << "planted a leak of " << block->size() * sizeof(int) << " bytes\n";
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = 50;
  int64_t frames = 30;
  double max_growth_mb = 4.0;
  bool leak = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cycles" && i + 1 < argc) cycles = std::atoi(argv[++i]);
    else if (a == "--frames" && i + 1 < argc) frames = std::atoll(argv[++i]);
    else if (a == "--max-growth-mb" && i + 1 < argc) max_growth_mb = std::atof(argv[++i]);
    else if (a == "--plant-leak") leak = true;
    else {
      std::cerr << "usage: leak-cycles [--cycles N] [--frames N] [--max-growth-mb X] [--plant-leak]\n";
      return 2;
    }
  }
  if (cycles < 1 || frames < 1) {
    std::cerr << "leak-cycles: --cycles and --frames must be positive\n";
    return 2;
  }
  at::set_num_threads(1);

  int failures = 0;
  {
    c10::InferenceMode guard;
    const char* root = std::getenv("FLASHVSR_BUILD_ROOT");
    const std::string dir = std::string(root && *root ? root : "/tmp") + "/test-scratch/leak-cycles-" +
                            std::to_string(::getpid());
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 3));
    std::shared_ptr<const Model> model = Model::load(dir, LoadOptions{});
    remove_tree(dir);

    StreamOptions o;
    o.in_width = 24;
    o.in_height = 16;
    o.sparse_ratio = 2.0;
    o.local_range = 3;
    const at::Tensor lr = make_frames(frames, o.in_height, o.in_width);
    Stream kept(model, o);

    // Resident memory moves by several MB from one sample to the next (where in the allocator's cycle
    // a sample falls, ASan's quarantine), so the check compares high-water marks: the peak over the
    // second half of the cycles against the peak over the first half (cycle 1, the warm-up, left out).
    // The live heap is exact: its value after the last cycle against the value at the half-way mark.
    const int mid = std::max(1, cycles / 2);
    double rss_early = 0.0, rss_late = 0.0, heap_mid = 0.0;
    for (int c = 1; c <= cycles; ++c) {
      Stream fresh(model, o);
      const int64_t a = cycle(fresh, lr), b = cycle(kept, lr);
      if (a != frames || b != frames) {
        std::cerr << "cycle " << c << ": " << a << " and " << b << " frames out for " << frames << " in\n";
        ++failures;
      }
      const double rss = resident_mib(), heap = live_heap_mib();
      if (c <= mid) {
        if (c > 1 || mid == 1) rss_early = std::max(rss_early, rss);
      } else {
        rss_late = std::max(rss_late, rss);
      }
      if (c == mid) heap_mid = heap;
      if (c == 1 || c % 10 == 0 || c == cycles) std::printf("cycle %3d: RSS %.1f MiB, live heap %.2f MiB\n", c, rss, heap);
    }
    // Peaks need several samples on each side: with fewer than 10 cycles only the live heap is compared.
    const double growth = cycles >= 10 ? rss_late - rss_early : 0.0, heap_growth = live_heap_mib() - heap_mid;
    std::printf("peak RSS over cycles %d-%d %.1f MiB, over %d-%d %.1f MiB: growth %.2f MiB; live heap growth from "
                "cycle %d to %d %.3f MiB (limit %.2f MiB each)\n",
                mid == 1 ? 1 : 2, mid, rss_early, mid + 1, cycles, rss_late, growth, mid, cycles, heap_growth,
                max_growth_mb);
    if (growth >= max_growth_mb || heap_growth >= max_growth_mb) {
      std::cerr << "leak-cycles: memory grew over " << cycles - mid << " cycles: peak RSS by " << growth
                << " MiB, live heap by " << heap_growth << " MiB\n";
      ++failures;
    }
  }
  if (leak) plant_leak();

#ifdef FLASHVSR_LEAK_CHECK
  // The final leak check, now instead of at exit: on a leak it prints the report and exits with
  // LeakSanitizer's exit code (23). It does nothing when LeakSanitizer is off (detect_leaks=0).
  std::fflush(stdout);
  if (const char* opts = std::getenv("ASAN_OPTIONS"); opts && std::strstr(opts, "detect_leaks=0")) {
    std::printf("LeakSanitizer is off (ASAN_OPTIONS has detect_leaks=0): no leak check\n");
  } else {
    __lsan_do_leak_check();
    std::printf("LeakSanitizer: no leaks\n");
  }
#else
  std::printf("built without AddressSanitizer: RSS and heap checks only\n");
#endif
  return failures == 0 ? 0 : 1;
}
