#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Loader fuzzing and sanitizer runs (docs/reliability.md explains the targets and the results).
#
#   tools/fuzz.sh [run] [SECONDS]   build the libFuzzer targets with clang (ASan+UBSan) in build-fuzz, build
#                                   the seed corpus, run every target for SECONDS (default 60) one after the
#                                   other; exit 1 if any target found something (inputs kept under
#                                   build-fuzz/fuzz/crashes/<target>/)
#   tools/fuzz.sh build             only build the targets and the seed corpus
#   tools/fuzz.sh coverage          line coverage of the loaders reached by the corpus gathered so far
#                                   (clang source-based coverage, separate build dir build-fuzz-cov)
#   tools/fuzz.sh sanitize [ARGS]   g++ build with -Dsanitize_tests=address,undefined in build-asan, then every
#                                   CPU test suite (model, parity, leaks, gst, examples) under
#                                   ASan/UBSan/LeakSanitizer; ARGS go to meson test
#
# Environment: FLASHVSR_VENV (torch venv with meson, default ~/.cache/gst-flashvsr/venv),
# FLASHVSR_FUZZ_BUILD (default build-fuzz), FLASHVSR_FUZZ_COV_BUILD (default build-fuzz-cov),
# FLASHVSR_ASAN_BUILD (default build-asan), FLASHVSR_FIXTURES (default ../shared/fixtures),
# FUZZ_TARGETS (space separated subset of: safetensors torch_archive json model_load),
# FUZZ_RSS_LIMIT_MB (default 2048: a larger resident set, or a single allocation above it, is a finding),
# FUZZ_TIMEOUT_MULTIPLIER (sanitize mode: meson test timeouts x this, default 6: ASan is slow on 2 cores).
# Needs clang with the libFuzzer runtime; when missing and apt-get can be used (root), the script installs
# the Debian packages clang-14, libclang-rt-14-dev and llvm-14.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VENV=${FLASHVSR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-flashvsr/venv}
FUZZ_BUILD=${FLASHVSR_FUZZ_BUILD:-build-fuzz}
COV_BUILD=${FLASHVSR_FUZZ_COV_BUILD:-build-fuzz-cov}
ASAN_BUILD=${FLASHVSR_ASAN_BUILD:-build-asan}
FIXTURES=${FLASHVSR_FIXTURES:-$here/../shared/fixtures}
TARGETS=${FUZZ_TARGETS:-safetensors torch_archive json model_load}
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
export PATH="$VENV/bin:$PATH"
jobs=$(nproc)

log() { printf '[fuzz.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# ---------------------------------------------------------------------------------------------------------
# Toolchain
# ---------------------------------------------------------------------------------------------------------
find_clang() {
  for v in "" -14 -15 -16 -17 -18 -19; do
    if command -v "clang++$v" > /dev/null 2>&1; then
      CLANG=clang$v CLANGXX=clang++$v
      return 0
    fi
  done
  return 1
}

# True when clang can link a libFuzzer target with ASan and UBSan.
libfuzzer_works() {
  local tmp rc
  tmp=$(mktemp -d)
  printf '%s\n' 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$tmp/t.cpp"
  "$CLANGXX" -fsanitize=fuzzer,address,undefined "$tmp/t.cpp" -o "$tmp/t" > /dev/null 2>&1 && rc=0 || rc=1
  rm -rf "$tmp"
  return $rc
}

ensure_clang() {
  if find_clang && libfuzzer_works; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
    log "installing clang-14, libclang-rt-14-dev and llvm-14 (libFuzzer, sanitizer runtimes, llvm-cov)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang-14 libclang-rt-14-dev llvm-14 >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             clang-14 libclang-rt-14-dev llvm-14 >&2; }
  fi
  find_clang && libfuzzer_works \
    || die "clang with the libFuzzer runtime is needed (Debian: apt-get install clang-14 libclang-rt-14-dev)"
}

# The llvm tool matching the clang in use (llvm-cov-14 for clang-14, ...).
llvm_tool() {
  local name=$1 ver
  ver=$("$CLANGXX" -dumpversion | cut -d. -f1)
  for c in "$name-$ver" "$name"; do
    if command -v "$c" > /dev/null 2>&1; then echo "$c"; return 0; fi
  done
  die "$name (version $ver) not found (Debian: apt-get install llvm-$ver)"
}

check_meson() {
  command -v meson > /dev/null 2>&1 || die "meson not found; run tools/setup.sh (torch venv with meson at $VENV)"
}

# ---------------------------------------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------------------------------------
exe_of() { echo "$FUZZ_BUILD/tests/fuzz/fuzz-${1//_/-}"; }

# Options of each target: a dictionary, and for the model target the longest input (libFuzzer's default
# cap is 1 MB, or the largest seed if smaller; the model target's DiT seeds are a little larger). The
# fixtures' multi-megabyte files are loaded cut to 1 MB, their small variants are whole.
target_args() {
  local t=$1 seeds=$FUZZ_BUILD/fuzz/seeds/$1 max
  max=$(find "$seeds" -type f -printf '%s\n' | sort -n | tail -1)
  case "$t" in
    safetensors) echo "-dict=$here/tests/fuzz/safetensors.dict" ;;
    json) echo "-dict=$here/tests/fuzz/json.dict" ;;
    torch_archive) echo "-dict=$here/tests/fuzz/torch_archive.dict" ;;
    model_load) echo "-dict=$FUZZ_BUILD/fuzz/model_load.dict -max_len=$max" ;;
    *) die "unknown fuzz target '$t'" ;;
  esac
}

build_fuzz() {
  check_meson
  ensure_clang
  if [ ! -f "$FUZZ_BUILD/build.ninja" ]; then
    CC=$CLANG CXX=$CLANGXX meson setup "$FUZZ_BUILD" --buildtype=debugoptimized -Dfuzzing=enabled \
      -Dsanitize_tests=address,undefined -Dgst=disabled -Dgpu_kernels=disabled -Dexamples=disabled \
      -Dfixtures_dir="$FIXTURES" >&2
  fi
  local exes=(tests/fuzz/fuzz-make-seeds)
  for t in $TARGETS; do exes+=("tests/fuzz/fuzz-${t//_/-}"); done
  ninja -C "$FUZZ_BUILD" -j"$jobs" "${exes[@]}" >&2

  log "building the seed corpus in $FUZZ_BUILD/fuzz/seeds"
  ASAN_OPTIONS=detect_leaks=0 "$FUZZ_BUILD/tests/fuzz/fuzz-make-seeds" "$FIXTURES" "$FUZZ_BUILD/fuzz/seeds" >&2
  if python3 -c 'import torch' > /dev/null 2>&1; then
    python3 tests/fuzz/torch_seeds.py "$FUZZ_BUILD/fuzz/seeds/torch_archive" 2> "$FUZZ_BUILD/fuzz/torch_seeds.log" >&2 \
      || { cat "$FUZZ_BUILD/fuzz/torch_seeds.log" >&2; die "tests/fuzz/torch_seeds.py failed"; }
  else
    log "no Python with torch: skipping the PyTorch-written seeds"
  fi
  cat tests/fuzz/safetensors.dict "$FUZZ_BUILD/fuzz/seeds/model_keys.dict" > "$FUZZ_BUILD/fuzz/model_load.dict"
}

# Prints "execs exec/s cov ft corpus_units corpus_size peak_rss" from a libFuzzer log.
summarize_log() {
  local f=$1 done_line execs eps rss
  done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|pulse|NEW|REDUCE)' "$f" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$f" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$f" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$f" | tail -1)
  local cov ft corp
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$done_line")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<< "$done_line")
  echo "${execs:-?} ${eps:-?} ${cov:-?} ${ft:-?} ${corp:-?} ${rss:-?}"
}

run_fuzz() {
  local seconds=$1 failed=() t
  [[ "$seconds" =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, got '$seconds'"
  build_fuzz
  local root=$FUZZ_BUILD/fuzz summary=$FUZZ_BUILD/fuzz/summary.txt
  mkdir -p "$root/logs"
  printf '%-14s %10s %8s %6s %7s %14s %8s %12s  %s\n' target execs exec/s cov ft corpus rss_mb merged result > "$summary"
  for t in $TARGETS; do
    local exe corpus crashes logf rc=0 before after
    exe=$(exe_of "$t")
    corpus=$root/corpus/$t
    crashes=$root/crashes/$t
    logf=$root/logs/$t.log
    mkdir -p "$corpus" "$crashes"
    before=$(find "$crashes" -type f | wc -l)
    log "fuzzing $t for ${seconds}s (log: $logf)"
    # Leaks are the sanitize mode's business (LibTorch keeps caches that look like per-input leaks);
    # UBSan reports stop the run so that the input is kept.
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=0:handle_abort=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$exe" -max_total_time="$seconds" -timeout=60 -rss_limit_mb="$RSS_LIMIT_MB" -malloc_limit_mb="$RSS_LIMIT_MB" \
        -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$crashes/" $(target_args "$t") \
        "$corpus" "$root/seeds/$t" > "$logf" 2>&1 || rc=$?
    after=$(find "$crashes" -type f | wc -l)
    # Keep the working corpus minimal (libFuzzer's merge: the smallest set of inputs with the same
    # coverage), so that repeated runs do not pile up near-duplicate multi-megabyte inputs.
    if [ "$rc" = 0 ]; then
      rm -rf "$corpus.merged"
      mkdir -p "$corpus.merged"
      if ASAN_OPTIONS=detect_leaks=0 "$exe" -merge=1 -rss_limit_mb="$RSS_LIMIT_MB" $(target_args "$t") \
           "$corpus.merged" "$corpus" >> "$root/logs/$t.merge.log" 2>&1; then
        rm -rf "$corpus"
        mv "$corpus.merged" "$corpus"
      else
        log "merging the $t corpus failed (see $root/logs/$t.merge.log); keeping it as it is"
        rm -rf "$corpus.merged"
      fi
    fi
    local result=ok
    if [ "$rc" != 0 ] || [ "$after" -gt "$before" ]; then
      result="FAILED (exit $rc, $((after - before)) new input(s) in $crashes)"
      failed+=("$t")
      grep -E '==FINDING==|ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|libFuzzer)|runtime error|deadly signal|out-of-memory|Test unit written' "$logf" | head -20 >&2 || true
    fi
    local kept
    kept="$(find "$corpus" -type f | wc -l)/$(du -sk "$corpus" | cut -f1)K"
    # shellcheck disable=SC2046
    printf '%-14s %10s %8s %6s %7s %14s %8s %12s  %s\n' "$t" $(summarize_log "$logf") "$kept" "$result" >> "$summary"
  done
  cat "$summary"
  if [ ${#failed[@]} -gt 0 ]; then
    log "findings in: ${failed[*]} (reproduce: $FUZZ_BUILD/tests/fuzz/fuzz-<target> <input>)"
    exit 1
  fi
  log "no findings"
}

# ---------------------------------------------------------------------------------------------------------
# Coverage of the gathered corpus
# ---------------------------------------------------------------------------------------------------------
run_coverage() {
  check_meson
  ensure_clang
  local profdata llvmcov
  profdata=$(llvm_tool llvm-profdata)
  llvmcov=$(llvm_tool llvm-cov)
  [ -d "$FUZZ_BUILD/fuzz/seeds" ] || die "no corpus yet: run tools/fuzz.sh first"
  if [ ! -f "$COV_BUILD/build.ninja" ]; then
    CC=$CLANG CXX=$CLANGXX meson setup "$COV_BUILD" --buildtype=debug -Dfuzzing=enabled -Dgst=disabled \
      -Dgpu_kernels=disabled -Dexamples=disabled -Dfixtures_dir="$FIXTURES" \
      -Dcpp_args='-fprofile-instr-generate -fcoverage-mapping' -Dcpp_link_args='-fprofile-instr-generate' >&2
  fi
  local exes=() t
  for t in $TARGETS; do exes+=("tests/fuzz/fuzz-${t//_/-}"); done
  ninja -C "$COV_BUILD" -j"$jobs" "${exes[@]}" >&2
  local prof=$COV_BUILD/fuzz-profiles objects=()
  rm -rf "$prof"
  mkdir -p "$prof"
  for t in $TARGETS; do
    local exe=$COV_BUILD/tests/fuzz/fuzz-${t//_/-} dirs=("$FUZZ_BUILD/fuzz/seeds/$t")
    [ -d "$FUZZ_BUILD/fuzz/corpus/$t" ] && dirs+=("$FUZZ_BUILD/fuzz/corpus/$t")
    log "replaying the $t corpus"
    # -runs=0 executes every input once; inputs found earlier as crashes are not replayed.
    LLVM_PROFILE_FILE="$prof/$t-%p.profraw" "$exe" -runs=0 $(target_args "$t") "${dirs[@]}" > "$prof/$t.log" 2>&1 \
      || log "replaying $t exited non-zero (see $prof/$t.log)"
    objects+=(-object "$exe")
  done
  "$profdata" merge -sparse "$prof"/*.profraw -o "$prof/all.profdata"
  # The loaders and the binding code they reach; the first -object is positional for llvm-cov. The
  # engine's compute stages (colour, preprocess, attention, ...) are not run by the targets.
  "$llvmcov" report "${objects[@]:1}" -instr-profile="$prof/all.profdata" \
    -ignore-filename-regex='(tests/|tools/|\.h$|(colour|preprocess|rope|schedule|sparse_attention|frame_format|model_cache|error|file_util)\.cpp$)' \
    | tee "$prof/report.txt"
  log "line-by-line: $llvmcov show ${objects[*]:1} -instr-profile=$prof/all.profdata model/<file>.cpp"
}

# ---------------------------------------------------------------------------------------------------------
# Sanitizer test run
# ---------------------------------------------------------------------------------------------------------
run_sanitize() {
  check_meson
  if [ ! -f "$ASAN_BUILD/build.ninja" ]; then
    meson setup "$ASAN_BUILD" -Dsanitize_tests=address,undefined -Dgpu_kernels=disabled \
      -Dfuzzing=enabled -Dfixtures_dir="$FIXTURES" >&2
  fi
  ninja -C "$ASAN_BUILD" -j"$jobs" >&2
  # Leaks are checked (detect_leaks=1). The engine needs no LeakSanitizer suppressions; the element tests
  # name GStreamer's and GLib's process-lifetime allocations in tests/check/lsan.supp (docs/reliability.md).
  # UBSan reports fail tests. Every CPU suite: the engine, parity, leak cycles, the element, the examples.
  local suites=(--suite model --suite parity --suite leaks)
  if [ -f "$ASAN_BUILD/gst/libgstflashvsr.so" ]; then suites+=(--suite gst --suite examples); fi
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C "$ASAN_BUILD" --print-errorlogs --num-processes "$jobs" \
      --timeout-multiplier "${FUZZ_TIMEOUT_MULTIPLIER:-6}" "${suites[@]}" "$@"
}

cmd=${1:-run}
case "$cmd" in
  run) shift || true; run_fuzz "${1:-60}" ;;
  [0-9]*) run_fuzz "$cmd" ;;
  build) build_fuzz ;;
  coverage) run_coverage ;;
  sanitize) shift; run_sanitize "$@" ;;
  -h|--help|help) sed -n '3,22p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "usage: tools/fuzz.sh [run] [SECONDS] | build | coverage | sanitize" ;;
esac
