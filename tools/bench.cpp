// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-bench: streams synthetic, non-constant frames through the engine and prints one JSON object:
// steady-state fps (median over chunks after the first), overall fps, latency from the 25th input frame
// to the first output frame, peak device memory, milliseconds per stage (device events), and the
// roofline: FLOPs per steady chunk from the model's sizes, divided by the measured time.
#include "cli.h"
#include "engine.h"
#include "io/json.h"
#include "tiling.h"
#include "model_maker.h"

#include <c10/core/AllocatorConfig.h>
#include <c10/core/CachingDeviceAllocator.h>
#if FLASHVSR_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>

using namespace flashvsr;
using namespace flashvsr::io;
using Clock = std::chrono::steady_clock;

namespace {

const char* kUsage =
    "usage: flashvsr-bench [--model DIR | --preset full|tiny] [--variant tiny,full] [--device cuda|cpu|cuda:N]\n"
    "       [--precision bf16,fp8 (bf16|fp16|fp32|fp8, a list runs them side by side)] [--quality-vs bf16]\n"
    "       [--sizes 1408x768,1920x1080 (output sizes)] [--scale 4] [--frames 101] [--sparse-ratio 2.0]\n"
    "       [--local-range 11] [--kv-ratio 3.0] [--color-fix adain] [--attention auto,reference,cuda]\n"
    "       [--decoder-group 1] [--model-version 1.1] [--seed 0] [--compare BASELINE.jsonl]\n"
    "       [--tile-width 0 --tile-height 0 (output px, multiples of 128; 0: not split) --tile-overlap 128]\n"
    "       [--tile-colour per-tile|blended (where the colour fix runs when tiled)]\n"
    "       [--max-memory GIB (choose the tiling from the memory model, docs/element.md \"Tiling\")]\n"
    "       [--memory-fraction F (0 < F <= 1: caps LibTorch's CUDA allocator at F of the card, e.g. to run as on\n"
    "        a smaller card; an allocation beyond it fails as out of memory)]\n"
    "One JSON line per (variant, size, attention backend); each model is built or loaded once. --variant: the\n"
    "stage 3 of the random --preset model (tiny: TCDecoder, full: the Wan2.1 VAE decoder; a list runs them\n"
    "side by side), or how --model DIR is loaded (default auto: from its files). With --compare, each run is\n"
    "followed by a line {\"compare\": size, figure: {now, base, ratio}} against the saved run of the same\n"
    "variant, output, attention, precision, frames, decoder group, cuDNN setting and tiling in BASELINE.jsonl.\n"
    "Tiled runs report \"tiles\"; their stage_ms are per tile stream and chunk_tflop sums the tiles.\n"
    "With a list of precisions, each size is followed by {\"precisions\": size, \"steady_fps\": {...}, \"ratio_vs_first\"}\n"
    "from this run. --quality-vs P (P in the list): per size, the same frames through every other precision and\n"
    "through P (same weights, same noise), then {\"quality\": size, \"psnr_db\": [per frame]} of each against P on\n"
    "8-bit RGB, with mean and min (identical frames count as 999 dB).\n";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Smooth moving gradients plus a little noise: uint8 [n, h, w, 3].
at::Tensor synthetic_frames(int64_t n, int64_t h, int64_t w) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto y = at::arange(h, at::kFloat).view({1, h, 1, 1}) / h;
  auto x = at::arange(w, at::kFloat).view({1, 1, w, 1}) / w;
  auto t = at::arange(n, at::kFloat).view({n, 1, 1, 1}) / 30.0;
  auto c = at::arange(3, at::kFloat).view({1, 1, 1, 3});
  auto v = 127.5 + 100.0 * at::sin(6.0 * x + 4.0 * y + 2.0 * t + c) + 20.0 * at::randn({n, h, w, 3}, gen);
  return v.clamp(0, 255).to(at::kByte);
}

struct Flops {
  double linear = 0, attention = 0, cross = 0, lq = 0, decoder = 0;
  double total() const { return linear + attention + cross + lq + decoder; }
};

double conv_flops(double cin, double cout, double k, double px) { return 2.0 * cin * cout * k * px; }

// FLOPs of the Wan2.1 VAE decoder (spec "Full variant") over `latents` steady latent frames (4 output frames
// each) at P = Hp/8 x Wp/8 latent pixels: 3x3x3 convs (k = 27) and the per-frame attention of the middle.
double vae_decoder_flops(int64_t dim, double P, double latents) {
  const double d = static_cast<double>(dim);
  auto res = [&](double i, double o, double px, double frames) {
    return frames * (conv_flops(i, o, 27, px) + conv_flops(o, o, 27, px) + (i != o ? conv_flops(i, o, 1, px) : 0.0));
  };
  double f = 0, t = latents, px = P;
  f += t * (conv_flops(16, 16, 1, px) + conv_flops(16, 4 * d, 27, px));         // conv2, decoder.conv1
  f += 2 * res(4 * d, 4 * d, px, t);                                           // middle.0, middle.2
  f += t * (conv_flops(4 * d, 12 * d, 1, px) + 2.0 * 2.0 * px * px * 4 * d + conv_flops(4 * d, 4 * d, 1, px));  // middle.1
  f += 3 * res(4 * d, 4 * d, px, t);                                           // upsamples.0-2
  f += t * conv_flops(4 * d, 8 * d, 3, px);                                    // .3 time_conv
  t *= 2, px *= 4;
  f += t * conv_flops(4 * d, 2 * d, 9, px);                                    // .3 resample (2-D, at 2x)
  f += res(2 * d, 4 * d, px, t) + 2 * res(4 * d, 4 * d, px, t);                // .4-6
  f += t * conv_flops(4 * d, 8 * d, 3, px);                                    // .7 time_conv
  t *= 2, px *= 4;
  f += t * conv_flops(4 * d, 2 * d, 9, px);                                    // .7 resample
  f += 3 * res(2 * d, 2 * d, px, t);                                           // .8-10
  px *= 4;
  f += t * conv_flops(2 * d, d, 9, px);                                        // .11 resample (Up2d)
  f += 3 * res(d, d, px, t);                                                   // .12-14
  f += t * conv_flops(d, 3, 27, px);                                           // head.2
  return f;
}

// FLOPs of one steady chunk (2 latent frames, 8 output frames) of a Hp x Wp (padded) stream.
Flops steady_chunk_flops(const ModelConfig& c, int64_t Hp, int64_t Wp, const AttentionPlan& plan) {
  Flops f;
  const double d = static_cast<double>(c.dit.dim), ffn = static_cast<double>(c.dit.ffn_dim);
  const double layers = static_cast<double>(c.dit.layers);
  const double h = static_cast<double>(Hp / 16), w = static_cast<double>(Wp / 16);
  const double tokens = 2 * h * w;
  f.linear = layers * tokens * 2.0 * (6.0 * d * d + 2.0 * d * ffn);
  f.cross = layers * tokens * 4.0 * static_cast<double>(c.context_len) * d;
  // Selected key windows: at most top-k per (head, query slice); upper bound for the estimate.
  const double ws = static_cast<double>((Hp / 128) * (Wp / 128));
  const double selected = std::min<double>(static_cast<double>(plan.topk + 1), ws * ws * 4.0);
  f.attention = layers * static_cast<double>(c.dit.heads) * selected * 4.0 * 128.0 * 128.0 * 128.0;
  const double h1 = static_cast<double>(c.lq_proj.hidden1), h2 = static_cast<double>(c.lq_proj.hidden2);
  f.lq = 2 /*clips*/ * h * w * (2 * 2.0 * 768 * 36 * h1 + 2.0 * h1 * 36 * h2 + 2.0 * h2 * d);
  if (c.variant == Variant::Full) {
    f.decoder = vae_decoder_flops(c.vae_decoder.dim, (Hp / 8.0) * (Wp / 8.0), 2);
    return f;
  }
  const auto& ch = c.decoder.channels;
  const auto conv = conv_flops;
  double dec = 0;
  double px = (Hp / 8.0) * (Wp / 8.0), frames = 2;
  dec += frames * (conv(784, ch[0], 9, px) + conv(ch[0], ch[0], 9, px) + 3 * (conv(2 * ch[0], ch[0], 9, px) + 2 * conv(ch[0], ch[0], 9, px)));
  px *= 4;
  dec += frames * (conv(ch[0], ch[0], 1, px) + conv(ch[0], ch[1], 9, px) + 3 * (conv(2 * ch[1], ch[1], 9, px) + 2 * conv(ch[1], ch[1], 9, px)));
  px *= 4;
  dec += frames * conv(ch[1], 2 * ch[1], 1, px);
  frames *= 2;
  dec += frames * (conv(ch[1], ch[2], 9, px) + 3 * (conv(2 * ch[2], ch[2], 9, px) + 2 * conv(ch[2], ch[2], 9, px)));
  px *= 4;
  dec += frames * conv(ch[2], 2 * ch[2], 1, px);
  frames *= 2;
  dec += frames * (conv(ch[2], ch[3], 9, px) + conv(ch[3], ch[3], 9, px) + conv(ch[3], 3, 9, px));
  f.decoder = dec;
  return f;
}

// The runs of a saved benchmark (--compare FILE: JSON lines as this tool prints them; others are skipped).
std::vector<Json> read_baseline(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(Error::Kind::NotFound, path + ": cannot open the baseline");
  std::vector<Json> runs;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    if (line.empty() || line[0] != '{') continue;
    Json v = parse_json(line, path + " line " + std::to_string(n));
    if (v.contains("steady_fps") && v.contains("output")) runs.push_back(std::move(v));
  }
  if (runs.empty()) throw Error(Error::Kind::BadFile, path + ": no benchmark run (a JSON line with steady_fps)");
  return runs;
}

// Prints one JSON line {"compare": output, figure: {"now", "base", "ratio"}...} against the baseline run of
// the same output size, attention, decoder group and cuDNN setting; says so when there is none.
void compare_with(const std::vector<Json>& baseline, const Json& now) {
  // A run of the same configuration: these members present and equal (JSON equality: type and value).
  auto same = [&](const Json& b) {
    for (const char* key : {"output", "attention", "precision", "decoder_group", "frames", "cudnn_benchmark"})
      if (!b.contains(key) || b.at(key) != now.at(key)) return false;
    // Runs saved before the Full variant existed are Tiny runs, and before tiling existed untiled.
    if (b.value("variant", std::string("tiny")) != now.at("variant").get<std::string>()) return false;
    auto tiles = [](const Json& r) {
      return r.contains("tiles") ? r.at("tiles").get<std::string>()
                                 : "1 tile (untiled) of " + r.at("output").get<std::string>();
    };
    return tiles(b) == tiles(now);
  };
  const Json* base = nullptr;
  for (const auto& b : baseline)
    if (same(b)) base = &b;
  std::ostringstream c;
  c.precision(4);
  c << "{\"compare\":\"" << now.at("output").get<std::string>() << "\"";
  if (!base) {
    c << ",\"error\":\"no baseline run with the same variant, output, attention, precision, frames, decoder group "
         "and cuDNN setting\"}";
    std::printf("%s\n", c.str().c_str());
    return;
  }
  auto figure = [&](const std::string& name, double a, double b) {
    c << ",\"" << name << "\":{\"now\":" << a << ",\"base\":" << b << ",\"ratio\":" << (b != 0 ? a / b : NAN) << "}";
  };
  for (const char* key : {"steady_fps", "steady_chunk_ms", "host_enqueue_chunk_ms", "latency_first_output_s",
                          "overall_fps", "peak_alloc_gib", "achieved_tflops"})
    if (base->contains(key) && base->at(key).is_number() && now.at(key).is_number())
      figure(key, now.at(key).get<double>(), base->at(key).get<double>());
  if (base->contains("stage_ms") && base->at("stage_ms").is_object())
    for (const auto& [stage, v] : now.at("stage_ms").items())
      if (base->at("stage_ms").contains(stage) && base->at("stage_ms").at(stage).is_number())
        figure("stage_ms." + stage, v.get<double>(), base->at("stage_ms").at(stage).get<double>());
  c << "}";
  std::printf("%s\n", c.str().c_str());
}

// The stream options of the command line for one output size.
StreamOptions stream_options(const cli::Args& args, int64_t out_w, int64_t out_h, AttentionBackend attention) {
  StreamOptions so = cli::stream_settings(args);
  so.in_width = std::max<int64_t>(1, static_cast<int64_t>(std::llround(out_w / so.scale)));
  so.in_height = std::max<int64_t>(1, static_cast<int64_t>(std::llround(out_h / so.scale)));
  so.out_width = out_w;
  so.out_height = out_h;
  so.attention = attention;
  return so;
}

struct RunResult {
  bool complete = false;  // every input frame came out
  double steady_fps = NAN;
};

RunResult run_config(const std::shared_ptr<const Model>& model, const cli::Args& args, int64_t out_w, int64_t out_h,
                     AttentionBackend attention, double load_s, const std::vector<Json>* baseline) {
  const at::Device device = model->device();
  const StreamOptions so = stream_options(args, out_w, out_h, attention);
  const int64_t n = std::max<int64_t>(1, args.integer("frames", 101));
  const int64_t memory_every = args.integer("memory-every", 0);
  // At most 240 distinct frames, cycled for longer runs.
  const auto frames = synthetic_frames(std::min<int64_t>(n, 240), so.in_height, so.in_width);
  auto frame = [&](int64_t i) { return frames.narrow(0, i % frames.size(0), 1); };

  TileOptions tiling = cli::tile_settings(args);
  if (args.has("max-memory"))
    tiling = tiles_for_memory(so, tiling.overlap, args.num("max-memory", 0.0),
                              MemoryModel::measured(model->config(), so, model->dtype()));
  TiledStream stream(model, so, tiling);
  const double estimate_gib = MemoryModel::measured(model->config(), so, model->dtype()).estimate_gib(stream.plan());
  // Device events per stage (CUDA), or host wall clock (CPU).
  const bool on_cuda = device.is_cuda();
  c10::Stream dstream = on_cuda ? c10::impl::getDeviceGuardImpl(device.type())->getStream(device)
                                : c10::Stream(c10::Stream::DEFAULT, device);
  struct Mark {
    std::unique_ptr<c10::Event> begin, end;
    Clock::time_point b, e;
  };
  std::map<Stage, std::vector<Mark>> marks;
  stream.set_stage_hook([&](Stage s, bool begin) {
    auto& v = marks[s];
    if (begin) v.emplace_back();
    Mark& m = v.back();
    if (on_cuda) {
      auto& ev = begin ? m.begin : m.end;
      ev = std::make_unique<c10::Event>(device.type(), c10::EventFlag::BACKEND_DEFAULT);
      ev->record(dstream);
    }
    (begin ? m.b : m.e) = Clock::now();
  });

  auto sync = [&] {
    if (on_cuda) dstream.synchronize();
  };
  // Warm-up: one stream of 41 frames (chunk 0 and two steady chunks), then a fresh one.
  for (int64_t i = 0; i < std::min<int64_t>(41, n); ++i) stream.push(frame(i)).frames.cpu();
  stream.finish().frames.cpu();
  sync();
  stream.reset();
  marks.clear();
  if (on_cuda) c10::getDeviceAllocator(device.type())->resetPeakStats(device.index());

  std::vector<double> chunk_s;  // wall time between consecutive output batches (steady chunks)
  double latency_s = NAN;
  int64_t produced = 0;
  const auto t0 = Clock::now();
  auto last = t0;
  for (int64_t i = 0; i < n; ++i) {
    const auto tp = Clock::now();
    auto out = stream.push(frame(i)).frames.cpu();  // the download synchronises, as an element must
    const auto te = Clock::now();
    if (memory_every > 0 && (i + 1) % memory_every == 0 && on_cuda) {
      sync();
      auto st = c10::getDeviceAllocator(device.type())->getDeviceStats(device.index());
      std::printf("{\"frames_in\":%lld,\"allocated_gib\":%.4f,\"reserved_gib\":%.4f}\n", (long long)(i + 1),
                  static_cast<double>(st.allocated_bytes[0].current) / (1 << 30),
                  static_cast<double>(st.reserved_bytes[0].current) / (1 << 30));
      std::fflush(stdout);
    }
    if (out.size(0) > 0) {
      if (produced == 0) latency_s = std::chrono::duration<double>(te - tp).count();
      else chunk_s.push_back(std::chrono::duration<double>(te - last).count());
      produced += out.size(0);
      last = te;
    }
  }
  produced += stream.finish().frames.cpu().size(0);
  sync();
  const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();

  std::map<std::string, double> stage_ms;
  for (auto& [stage, v] : marks) {
    std::vector<double> ms;
    for (auto& m : v) {
      if (on_cuda && m.begin && m.end) ms.push_back(m.begin->elapsedTime(*m.end));
      else ms.push_back(std::chrono::duration<double, std::milli>(m.e - m.b).count());
    }
    // Preprocess runs per pushed frame: report per chunk of 8 frames; the rest once per chunk.
    double med = median(std::vector<double>(ms.begin() + (ms.size() > 2 ? 1 : 0), ms.end()));
    stage_ms[stage_name(stage)] = stage == Stage::Preprocess ? med * 8 : med;
  }
  double peak_alloc = NAN, peak_reserved = NAN;
  if (on_cuda) {
    auto st = c10::getDeviceAllocator(device.type())->getDeviceStats(device.index());
    peak_alloc = static_cast<double>(st.allocated_bytes[0].peak) / (1 << 30);
    peak_reserved = static_cast<double>(st.reserved_bytes[0].peak) / (1 << 30);
  }
  const double steady = median(chunk_s);
  const Stream& tile0 = stream.tile_stream(0);
  Flops fl = steady_chunk_flops(model->config(), tile0.padded_height(), tile0.padded_width(), stream.attention());
  for (double* v : {&fl.linear, &fl.attention, &fl.cross, &fl.lq, &fl.decoder}) *v *= stream.plan().tiles.size();
  std::ostringstream j;
  j.precision(4);
  j << "{\"variant\":\"" << variant_name(model->variant()) << "\",\"device\":\"" << device.str() << "\",\"precision\":\"" << model->precision() << "\",\"model\":\""
    << model->dir() << "\",\"output\":\"" << out_w << "x" << out_h << "\",\"input\":\"" << so.in_width << "x"
    << so.in_height << "\",\"padded\":\"" << tile0.padded_width() << "x" << tile0.padded_height() << "\",\"tiles\":\""
    << stream.plan().describe() << "\",\"tile_options\":\"" << tiling.width << "x" << tiling.height << "+" << tiling.overlap
    << "\",\"tile_colour\":\"" << tile_colour_name(tiling.colour)
    << "\",\"memory_model_gib\":" << estimate_gib
    << ",\"sparse_ratio\":" << so.sparse_ratio << ",\"local_range\":" << so.local_range << ",\"kv_ratio\":"
    << so.kv_ratio << ",\"color_fix\":\"" << color_fix_name(so.color_fix) << "\",\"attention\":\""
    << attention_backend_name(so.attention) << "\",\"attention_backend\":\""
    << attention_backend_name(stream.attention().backend) << "\",\"attention_slow_path\":\""
    << stream.attention().backend_reason << "\",\"decoder_fused_epilogues\":"
    << (model->decoder().fused_epilogues ? "true" : "false") << ",\"decoder_group\":" << so.decoder_group
    << ",\"cudnn_benchmark\":" << (at::globalContext().benchmarkCuDNN() ? "true" : "false")
    << ",\"memory_fraction\":" << args.num("memory-fraction", 1.0) << ",\"cuda_allocator\":" << Json(device.is_cuda() ? c10::CachingAllocator::getAllocatorSettings() : std::string()).dump()
    << ",\"frames\":" << n
    << ",\"frames_out\":" << produced
    << ",\"load_s\":" << load_s << ",\"steady_fps\":" << 8.0 / steady << ",\"steady_chunk_ms\":" << steady * 1e3
    << ",\"host_enqueue_chunk_ms\":" << 1e3 * stream.stats().chunk_seconds_total / std::max<int64_t>(1, stream.stats().chunks)
    << ",\"overall_fps\":" << n / total_s << ",\"latency_first_output_s\":" << latency_s
    << ",\"peak_alloc_gib\":" << peak_alloc << ",\"peak_reserved_gib\":" << peak_reserved << ",\"stage_ms\":{";
  bool first = true;
  for (auto& [k, v] : stage_ms) {
    j << (first ? "" : ",") << "\"" << k << "\":" << v;
    first = false;
  }
  j << "},\"chunk_tflop\":{\"dit_linear\":" << fl.linear / 1e12 << ",\"self_attention_max\":" << fl.attention / 1e12
    << ",\"cross_attention\":" << fl.cross / 1e12 << ",\"lq_proj\":" << fl.lq / 1e12 << ",\"decoder\":" << fl.decoder / 1e12
    << ",\"total\":" << fl.total() / 1e12 << "},\"achieved_tflops\":" << fl.total() / 1e12 / steady << "}";
  // JSON has no NaN or infinity (e.g. device memory on the CPU): null instead.
  const std::string line = std::regex_replace(j.str(), std::regex(":(-?nan|-?inf)"), ":null");
  std::printf("%s\n", line.c_str());
  if (baseline) {
    try {
      compare_with(*baseline, parse_json(line, "this run"));
    } catch (const Error& e) {  // e.g. a run too short for a steady figure (NaN is no JSON)
      std::printf("{\"compare\":\"%lldx%lld\",\"error\":\"%s\"}\n", (long long)out_w, (long long)out_h, e.what());
    }
  }
  std::fflush(stdout);
  return {produced == n, 8.0 / steady};
}

// The same frames through `model` and `reference` (untiled streams, same options and noise): per-frame PSNR
// of the model's uint8 output against the reference's.
std::vector<double> quality_against(const std::shared_ptr<const Model>& model, const std::shared_ptr<const Model>& reference,
                                    const StreamOptions& so, int64_t n) {
  const auto frames = synthetic_frames(n, so.in_height, so.in_width);
  auto run = [&](const std::shared_ptr<const Model>& m) {
    Stream stream(m, so);
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(stream.push(frames.narrow(0, i, 1)).frames.cpu());
    out.push_back(stream.finish().frames.cpu());
    return at::cat(out);
  };
  const auto a = run(model);
  const auto b = run(reference);
  if (a.size(0) != n || b.size(0) != n)
    throw Error(Error::Kind::Internal, "quality: " + std::to_string(a.size(0)) + " and " + std::to_string(b.size(0)) +
                                           " frames out for " + std::to_string(n) + " in");
  return cli::psnr_per_frame(a, b);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cli::Args args(argc, argv,
                   {"model", "preset", "variant", "device", "precision", "sizes", "scale", "frames", "sparse-ratio",
                    "local-range", "kv-ratio", "color-fix", "attention", "decoder-group", "model-version", "seed", "memory-every", "cudnn-benchmark", "compare",
                    "tile-width", "tile-height", "tile-overlap", "tile-colour", "max-memory", "quality-vs", "memory-fraction"},
                   {"help"});
    if (args.has("help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    c10::InferenceMode inference;
    std::optional<std::vector<Json>> baseline;
    if (args.has("compare")) baseline = read_baseline(args.str("compare", ""));
    // cuDNN autotuning for the fixed shapes of a stream (a process-wide LibTorch setting).
    const bool cudnn_benchmark = args.integer("cudnn-benchmark", 0) != 0;
    at::globalContext().setBenchmarkCuDNN(cudnn_benchmark);
    const at::Device device = parse_device(args.str("device", "cuda"));
    check_device(device);
    if (args.has("memory-fraction")) {
      const double f = args.num("memory-fraction", 1.0);
      if (!device.is_cuda() || !(f > 0.0 && f <= 1.0))
        throw Error(Error::Kind::BadSettings, "--memory-fraction " + args.str("memory-fraction", "") +
                                                  ": expected 0 < F <= 1 on a CUDA device");
#if FLASHVSR_CUDA_KERNELS
      at::empty({1}, at::TensorOptions().device(device));  // the allocator is set up at the first allocation
      c10::cuda::CUDACachingAllocator::setMemoryFraction(f, device.index() < 0 ? 0 : device.index());
#else
      throw Error(Error::Kind::BadSettings, "--memory-fraction needs a build with the CUDA kernels (CUDA headers)");
#endif
    }
    const auto precisions = split(args.str("precision", device.is_cuda() ? "bf16" : "fp32"), ',');
    const std::string quality_vs = args.str("quality-vs", "");
    if (!quality_vs.empty() && std::find(precisions.begin(), precisions.end(), quality_vs) == precisions.end())
      throw Error(Error::Kind::BadSettings, "--quality-vs " + quality_vs + ": not among --precision " +
                                                args.str("precision", ""));
    bool all_ok = true;
    for (const auto& variant_text : split(args.str("variant", args.has("model") ? "auto" : "tiny"), ',')) {
      // One model per precision, all from the same weights (the random ones: the same seed).
      std::vector<std::shared_ptr<const Model>> models;
      std::vector<double> load_s;
      for (const auto& precision : precisions) {
        LoadOptions lo = resolve_load_options(device.str(), precision);
        lo.variant = parse_variant(variant_text);
        const auto t_load = Clock::now();
        if (args.has("model")) {
          models.push_back(Model::load(args.str("model", ""), lo));
        } else {
          const ModelSpec spec = ModelSpec::preset(args.str("preset", "full")).with_variant(lo.variant.value_or(Variant::Tiny));
          models.push_back(Model::from_tensors(make_random_model(spec, 0, lo.dtype), lo,
                                               "<random " + args.str("preset", "full") + " " + variant_name(spec.variant) + ">"));
        }
        load_s.push_back(std::chrono::duration<double>(Clock::now() - t_load).count());
      }
      const auto& first = models.front();

      for (const auto& size : split(args.str("sizes", "1408x768"), ',')) {
        const auto wh = split(size, 'x');
        if (wh.size() != 2) throw Error(Error::Kind::BadSettings, "size '" + size + "': expected WIDTHxHEIGHT");
        const int64_t out_w = std::stoll(wh[0]), out_h = std::stoll(wh[1]);
        for (const auto& backend : split(args.str("attention", "auto"), ',')) {
          const AttentionBackend attention = parse_attention_backend(backend);
          std::vector<double> fps;
          for (size_t p = 0; p < models.size(); ++p) {
            const auto& model = models[p];
            auto failed = [&](const char* what) {
              std::printf("{\"variant\":\"%s\",\"precision\":\"%s\",\"output\":\"%lldx%lld\",\"attention\":\"%s\",\"error\":\"%s\"}\n",
                          variant_name(model->variant()), model->precision(), (long long)out_w, (long long)out_h,
                          backend.c_str(), what);
              all_ok = false;
              fps.push_back(NAN);
            };
            try {
              const RunResult r = run_config(model, args, out_w, out_h, attention, load_s[p], baseline ? &*baseline : nullptr);
              all_ok &= r.complete;
              fps.push_back(r.steady_fps);
            } catch (const Error& e) {
              failed(e.what());
            } catch (const c10::Error& e) {
              failed(e.what_without_backtrace());
            }
            std::fflush(stdout);
            if (model->device().is_cuda()) c10::getDeviceAllocator(model->device().type())->emptyCache();
          }
          if (models.size() > 1) {
            std::ostringstream c;
            c.precision(4);
            c << "{\"precisions\":\"" << size << "\",\"attention\":\"" << backend << "\",\"steady_fps\":{";
            for (size_t p = 0; p < models.size(); ++p) c << (p ? "," : "") << "\"" << models[p]->precision() << "\":" << fps[p];
            c << "},\"ratio_vs_" << first->precision() << "\":{";
            for (size_t p = 1; p < models.size(); ++p)
              c << (p > 1 ? "," : "") << "\"" << models[p]->precision() << "\":" << fps[p] / fps[0];
            c << "}}";
            std::printf("%s\n", std::regex_replace(c.str(), std::regex(":(-?nan|-?inf)"), ":null").c_str());
          }
          if (!quality_vs.empty()) {
            const size_t ref = static_cast<size_t>(std::find(precisions.begin(), precisions.end(), quality_vs) - precisions.begin());
            const StreamOptions so = stream_options(args, out_w, out_h, attention);
            const int64_t n = std::max<int64_t>(1, args.integer("frames", 101));
            for (size_t p = 0; p < models.size(); ++p) {
              if (p == ref) continue;
              const auto psnr = quality_against(models[p], models[ref], so, n);
              double sum = 0, lo = INFINITY;
              std::ostringstream q;
              q.precision(4);
              q << "{\"quality\":\"" << size << "\",\"precision\":\"" << models[p]->precision() << "\",\"against\":\""
                << models[ref]->precision() << "\",\"frames\":" << n << ",\"psnr_db\":[";
              for (size_t i = 0; i < psnr.size(); ++i) {
                const double db = std::min(psnr[i], 999.0);  // identical frames (infinite PSNR): 999, JSON has no infinity
                q << (i ? "," : "") << db;
                sum += db;
                lo = std::min(lo, db);
              }
              q << "],\"psnr_mean_db\":" << sum / static_cast<double>(psnr.size()) << ",\"psnr_min_db\":" << lo << "}";
              std::printf("%s\n", q.str().c_str());
              std::fflush(stdout);
              if (device.is_cuda()) c10::getDeviceAllocator(device.type())->emptyCache();
            }
          }
        }
      }
      models.clear();  // the next variant's weights replace these
      if (device.is_cuda()) c10::getDeviceAllocator(device.type())->emptyCache();
    }
    return all_ok ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "flashvsr-bench: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "flashvsr-bench: %s\n", e.what_without_backtrace());
    return 1;
  }
}
