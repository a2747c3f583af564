// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-parity: runs golden fixtures of the reference (see ../shared/fixtures/README.md) through the
// engine and checks (1) the output frames against the reference on 8-bit RGB (PSNR per frame), (2) the
// intermediates present in expected.safetensors (relative L2), (3) the bicubic pre-processing of
// lr_frames against lq_video_u8, and (4) the end-to-end path from lr_frames. Every setting is read from
// the fixture's params.json; nothing fixture-specific lives here.
#include "cli.h"
#include "engine.h"
#include "io/file_util.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

const char* kUsage =
    "usage: flashvsr-parity [--device cpu|cuda|cuda:N] [--dtype fp32|bf16|fp16|fp8] [--threshold DB]\n"
    "                       [--intermediate-tol REL] [--decoded-tol REL] [--attention auto|reference|cuda]\n"
    "                       [--skip-missing] [--exclude-from DIR] FIXTURE_DIR...\n"
    "A FIXTURE_DIR is a fixture (holding params.json) or a directory of fixtures, of either variant (params.json\n"
    "\"variant\": \"tiny\", the default, or \"full\"; the model is loaded as that variant). --exclude-from DIR: a\n"
    "fixture whose name is also a fixture under DIR is not run again when its files are identical to that\n"
    "one (it is run when they differ, and said so).\n"
    "Defaults: --threshold 45 (dB, every frame; end-to-end from lr_frames: threshold - 5), 30 in fp8,\n"
    "--intermediate-tol 1e-3 in fp32 (on the CPU and on CUDA), 3e-2 in bf16/fp16, 2e-1 in fp8; a Full fixture's\n"
    "decoded frames (chunkK.decoded) in bf16/fp16: --decoded-tol, default 1e-1 (the Wan VAE decoder's 30-odd\n"
    "layers in bf16: 5.7e-2 on the CPU, 6.1e-2 on CUDA against the fp32 golden; a wrong layer gives ~1).\n"
    "fp32 on CUDA runs with cuDNN's TF32 convolutions off (said so). fp8: the DiT's per-token linear layers in\n"
    "e4m3, bf16 elsewhere (CUDA, compute capability 8.9+). The last line says how many fixtures\n"
    "were checked, naming them.\n"
    "Exit status: 0 all checked fixtures passed (at least one), 1 a check failed, 2 bad usage or unreadable\n"
    "fixture or no fixture found, 77 (SKIP) with --skip-missing when none was found.\n";

struct Options {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  bool fp8 = false;  // --dtype fp8: bf16 with the DiT's per-token linear layers in e4m3
  double threshold = 45.0;
  double intermediate_tol = 1e-3;
  double decoded_tol = 1e-1;  // a Full fixture's chunkK.decoded in bf16/fp16
  AttentionBackend attention = AttentionBackend::Auto;
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(Error::Kind::NotFound, path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

at::Tensor need(const TensorMap& m, const std::string& file, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) throw Error(Error::Kind::BadFile, file + ": missing tensor '" + key + "'");
  return it->second;
}

StreamOptions stream_options(const Json& p, const std::string& params_path, const TensorMap& input,
                             const std::string& input_path) {
  const at::Tensor lr = need(input, input_path, "lr_frames");
  StreamOptions o;
  o.in_height = lr.size(1);
  o.in_width = lr.size(2);
  o.out_height = json_get<int64_t>(p, "height", params_path);
  o.out_width = json_get<int64_t>(p, "width", params_path);
  o.scale = json_get<double>(p, "scale", params_path);
  o.lq_version = parse_lq_version(json_get<std::string>(p, "model_version", params_path));
  if (p.contains("topk_ratio"))
    o.topk_ratio = json_get<double>(p, "topk_ratio", params_path);
  else
    o.sparse_ratio = json_get<double>(p, "sparse_ratio", params_path);
  o.kv_ratio = json_get<double>(p, "kv_ratio", params_path);
  o.local_range = json_get<int64_t>(p, "local_range", params_path);
  o.color_fix = parse_color_fix(json_get<std::string>(p, "color_fix", params_path));
  o.seed = static_cast<uint64_t>(p.contains("seed") ? json_get<int64_t>(p, "seed", params_path) : 0);
  return o;
}

struct Collected {
  std::map<std::string, at::Tensor> tensors;  // "chunkK.name" -> float32 CPU
};

// Streams `frames` through a fresh stream in uneven pieces (exercising the streaming path), then finishes.
at::Tensor run_stream(Stream& s, const at::Tensor& frames, bool resized) {
  std::vector<at::Tensor> outs;
  const int64_t pieces[] = {1, 7, 3, 16, 9};
  int64_t i = 0, k = 0;
  while (i < frames.size(0)) {
    const int64_t n = std::min(pieces[k++ % 5], frames.size(0) - i);
    auto chunk = frames.narrow(0, i, n);
    outs.push_back((resized ? s.push_resized(chunk) : s.push(chunk)).frames.cpu());
    i += n;
  }
  outs.push_back(s.finish().frames.cpu());
  return at::cat(outs, 0);
}

struct FrameStats {
  double min = 0, mean = 0;
  int64_t below = 0;
};

FrameStats frame_stats(const std::vector<double>& psnr, double threshold) {
  FrameStats st;
  st.min = std::numeric_limits<double>::infinity();
  double sum = 0;
  size_t finite = 0;
  for (double v : psnr) {
    st.min = std::min(st.min, v);
    if (!std::isinf(v)) {
      sum += v;
      ++finite;
    }
    if (!(v >= threshold)) ++st.below;
  }
  // Mean over the frames that differ at all (identical frames are infinitely good).
  st.mean = finite ? sum / static_cast<double>(finite) : std::numeric_limits<double>::infinity();
  return st;
}

bool run_fixture(const std::string& dir, const Options& opt) {
  c10::InferenceMode inference;
  const std::string name = base_name(dir);
  const std::string params_path = join_path(dir, "params.json");
  const std::string input_path = join_path(dir, "input.safetensors");
  const std::string expected_path = join_path(dir, "expected.safetensors");
  const Json params = read_json_file(params_path);
  const TensorMap input = read_safetensors(input_path);
  const TensorMap expected = read_safetensors(expected_path);
  const int64_t N = json_get<int64_t>(params, "num_frames", params_path);

  LoadOptions lo;
  lo.device = opt.device;
  lo.dtype = opt.dtype;
  lo.fp8_linears = opt.fp8;
  lo.variant = parse_variant(params.contains("variant") ? json_get<std::string>(params, "variant", params_path) : "tiny");
  lo.log = [&](LogLevel, const std::string& msg) { std::cerr << name << ": " << msg << "\n"; };
  auto model = Model::load(join_path(dir, "model"), lo);

  StreamOptions so = stream_options(params, params_path, input, input_path);
  so.attention = opt.attention;
  const at::Tensor lr = need(input, input_path, "lr_frames");
  const at::Tensor lq = need(input, input_path, "lq_video_u8");
  const at::Tensor noise = need(input, input_path, "noise");
  const at::Tensor want = cli::reference_frames_u8(expected, expected_path);
  if (lr.size(0) != N || want.size(0) != N || lq.size(0) < N)
    throw Error(Error::Kind::BadFile, dir + ": num_frames " + std::to_string(N) + " disagrees with lr_frames " +
                                          shape_string(lr.sizes().vec()) + " / expected " + shape_string(want.sizes().vec()));
  auto noise_source = [&](int64_t first, int64_t count) {
    if (first + count > noise.size(2))
      throw Error(Error::Kind::BadFile, input_path + ": noise has " + std::to_string(noise.size(2)) +
                                            " latent frames, the engine needs " + std::to_string(first + count));
    return noise.narrow(2, first, count);
  };

  bool ok = true;
  // (1) + (2): the reference's own LQ frames and noise.
  Collected got;
  Stream stream(model, so);
  stream.set_noise_source(noise_source);
  stream.set_observer([&](int64_t chunk, const std::string& what, const at::Tensor& t) {
    if (t.defined()) got.tensors["chunk" + std::to_string(chunk) + "." + what] = t.to(at::kCPU, at::kFloat);
  });
  at::Tensor out = run_stream(stream, lq.narrow(0, 0, N), /*resized=*/true);
  if (out.size(0) != N) {
    std::printf("%s frames=%lld (expected %lld) FAIL\n", name.c_str(), (long long)out.size(0), (long long)N);
    return false;
  }
  const auto psnr = cli::psnr_per_frame(out, want);
  const FrameStats fs_main = frame_stats(psnr, opt.threshold);
  const bool main_ok = fs_main.below == 0;
  ok &= main_ok;
  std::printf("%s frames=%lld psnr_min=%s psnr_mean=%s %s\n", name.c_str(), (long long)N,
              cli::format_db(fs_main.min).c_str(), cli::format_db(fs_main.mean).c_str(), main_ok ? "ok" : "FAIL");
  if (!main_ok) std::printf("  %lld frame(s) below %.1f dB\n", (long long)fs_main.below, opt.threshold);

  // A Full fixture's latents_all: every chunk's DiT output (the VAE decoder's input), concatenated in time.
  if (expected.count("latents_all")) {
    std::vector<at::Tensor> parts;
    for (int64_t k = 0; got.tensors.count("chunk" + std::to_string(k) + ".latents"); ++k)
      parts.push_back(got.tensors["chunk" + std::to_string(k) + ".latents"]);
    if (!parts.empty()) got.tensors["latents_all"] = at::cat(parts, 2);
  }
  for (const auto& [key, ref] : expected) {
    if (key.rfind("chunk", 0) != 0 && key != "latents_all") continue;
    auto it = got.tensors.find(key);
    if (it == got.tensors.end()) {
      std::printf("  %s: not produced by the engine FAIL\n", key.c_str());
      ok = false;
      continue;
    }
    auto r = ref.to(at::kFloat);
    if (it->second.sizes() != r.sizes()) {
      std::printf("  %s: shape %s, expected %s FAIL\n", key.c_str(), shape_string(it->second.sizes().vec()).c_str(),
                  shape_string(r.sizes().vec()).c_str());
      ok = false;
      continue;
    }
    const double rel = ((it->second - r).norm() / r.norm().clamp_min(1e-30)).item<double>();
    const bool reduced = opt.dtype != at::kFloat;
    const bool vae_decoded = lo.variant == Variant::Full && ends_with(key, ".decoded");
    const double tol = reduced && vae_decoded ? opt.decoded_tol : opt.intermediate_tol;
    const bool good = rel <= tol;
    ok &= good;
    std::printf("  %s: rel_l2=%.2e (tol %.0e) %s\n", key.c_str(), rel, tol, good ? "ok" : "FAIL");
  }

  // (3) Pre-processing: our bicubic of lr_frames vs the reference's lq_video_u8.
  {
    BicubicResize resize(lr.size(2), lr.size(1), lq.size(2), lq.size(1), at::kCPU);
    auto mine = resize(lr).to(at::kInt);
    auto ref = lq.narrow(0, 0, N).to(at::kInt);
    auto diff = (mine - ref).abs();
    const double exact = (diff == 0).to(at::kDouble).mean().item<double>() * 100.0;
    const int64_t max_diff = diff.max().item<int64_t>();
    const bool good = exact >= 99.9 && max_diff <= 1;
    ok &= good;
    std::printf("  preprocess: exact=%.3f%% max_diff=%lld %s\n", exact, (long long)max_diff, good ? "ok" : "FAIL");
  }

  // (4) End to end from lr_frames (our pre-processing, the reference's noise).
  {
    Stream e2e(model, so);
    e2e.set_noise_source(noise_source);
    at::Tensor out2 = run_stream(e2e, lr, /*resized=*/false);
    const double thr = opt.threshold - 5.0;
    if (out2.size(0) != N) {
      std::printf("  end-to-end: frames=%lld, expected %lld FAIL\n", (long long)out2.size(0), (long long)N);
      return false;
    }
    const FrameStats st = frame_stats(cli::psnr_per_frame(out2, want), thr);
    const bool good = st.below == 0;
    ok &= good;
    std::printf("  end-to-end: psnr_min=%s psnr_mean=%s (threshold %.1f) %s\n", cli::format_db(st.min).c_str(),
                cli::format_db(st.mean).c_str(), thr, good ? "ok" : "FAIL");
  }
  std::fflush(stdout);
  return ok;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// The regular files under dir, as paths relative to it, sorted.
void relative_files(const std::string& dir, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& name : list_directory(join_path(dir, prefix))) {
    const std::string rel = prefix.empty() ? name : join_path(prefix, name);
    if (is_directory(join_path(dir, rel)))
      relative_files(dir, rel, out);
    else if (is_regular_file(join_path(dir, rel)))
      out.push_back(rel);
  }
}

// "" when the two fixture directories hold the same files with the same bytes, else the first difference.
std::string fixture_difference(const std::string& a, const std::string& b) {
  std::vector<std::string> fa, fb;
  relative_files(a, "", fa);
  relative_files(b, "", fb);
  if (fa != fb) return "not the same files";
  for (const auto& f : fa)
    if (read_text(join_path(a, f)) != read_text(join_path(b, f))) return f + " differs";
  return "";
}

std::vector<std::string> collect_fixtures(const std::vector<std::string>& args) {
  std::vector<std::string> dirs;
  for (const auto& a : args) {
    if (is_regular_file(join_path(a, "params.json"))) {
      dirs.push_back(a);
      continue;
    }
    for (const auto& name : list_directory(a))
      if (is_regular_file(join_path(join_path(a, name), "params.json"))) dirs.push_back(join_path(a, name));
  }
  return dirs;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cli::Args args(argc, argv, {"device", "dtype", "threshold", "intermediate-tol", "decoded-tol", "attention", "exclude-from"},
                   {"skip-missing", "help"});
    if (args.has("help") || args.positional().empty()) {
      std::fputs(kUsage, args.has("help") ? stdout : stderr);
      return args.has("help") ? 0 : 2;
    }
    Options opt;
    const LoadOptions precision = resolve_load_options(args.str("device", "cpu"), args.str("dtype", "fp32"));
    opt.device = precision.device;
    opt.dtype = precision.dtype;
    opt.fp8 = precision.fp8_linears;
    opt.threshold = args.num("threshold", opt.fp8 ? 30.0 : 45.0);
    // fp32 on CUDA without TF32 measured at most 2e-4 (H200, both vendored fixtures), as on the CPU.
    const double default_tol = opt.fp8 ? 2e-1 : opt.dtype != at::kFloat ? 3e-2 : 1e-3;
    opt.intermediate_tol = args.num("intermediate-tol", default_tol);
    opt.decoded_tol = args.num("decoded-tol", opt.dtype != at::kFloat ? 1e-1 : opt.intermediate_tol);
    opt.attention = parse_attention_backend(args.str("attention", "auto"));
    check_device(opt.device);
    if (opt.device.is_cuda() && opt.dtype == at::kFloat) {
      // LibTorch lets cuDNN round fp32 convolution inputs to TF32 unless told not to: fp32 parity means fp32.
      at::globalContext().setAllowTF32CuDNN(false);
      std::printf("parity: fp32 on CUDA with cuDNN's TF32 convolutions off\n");
    }

    std::vector<std::string> fixtures;
    for (const auto& dir : collect_fixtures(args.positional())) {
      if (args.has("exclude-from")) {
        const std::string other = join_path(args.str("exclude-from", ""), base_name(dir));
        if (is_regular_file(join_path(other, "params.json"))) {
          const std::string diff = fixture_difference(dir, other);
          if (diff.empty()) {
            std::printf("%s: identical to %s, checked there: not run again\n", base_name(dir).c_str(), other.c_str());
            continue;
          }
          std::printf("%s: differs from %s (%s): run as well\n", base_name(dir).c_str(), other.c_str(), diff.c_str());
        }
      }
      fixtures.push_back(dir);
    }
    if (fixtures.empty()) {
      std::printf("parity: 0 fixtures checked: no fixture (a directory with params.json) left under %s%s\n",
                  join(args.positional(), " ").c_str(), args.has("skip-missing") ? " (SKIP)" : "");
      return args.has("skip-missing") ? 77 : 2;
    }
    std::vector<std::string> checked, failed;
    for (const auto& dir : fixtures) {
      const std::string name = base_name(dir);
      try {
        checked.push_back(name);
        if (!run_fixture(dir, opt)) failed.push_back(name);
      } catch (const Error& e) {
        std::printf("%s error: %s FAIL\n", name.c_str(), e.what());
        failed.push_back(name);
      } catch (const c10::Error& e) {
        std::printf("%s error: %s FAIL\n", name.c_str(), e.what_without_backtrace());
        failed.push_back(name);
      }
    }
    auto list = [](const std::vector<std::string>& v) { return v.empty() ? std::string() : " (" + join(v, ", ") + ")"; };
    std::printf("parity: %zu fixture(s) checked%s, %zu failed%s (device %s, %s)\n", checked.size(),
                list(checked).c_str(), failed.size(), list(failed).c_str(),
                opt.device.str().c_str(), precision_name(opt.dtype, opt.fp8));
    return failed.empty() ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "flashvsr-parity: %s\n", e.what());
    return 2;
  }
}
