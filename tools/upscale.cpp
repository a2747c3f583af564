// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-upscale: raw RGB24 frames in, upscaled raw RGB24 frames out, through the streaming engine.
//   gst-launch-1.0 ... ! video/x-raw,format=RGB ! fdsink | flashvsr-upscale --model M --width W --height H | ...
#include "cli.h"
#include "engine.h"
#include "tiling.h"

#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <vector>

using namespace flashvsr;

namespace {

const char* kUsage =
    "usage: flashvsr-upscale --model DIR --width W --height H [--input FILE|-] [--output FILE|-]\n"
    "       [--scale 4] [--out-width W2 --out-height H2] [--device cpu|cuda|cuda:N|auto]\n"
    "       [--precision auto|fp32|bf16|fp16|fp8] [--variant auto|tiny|full]\n"
    "       [--model-version 1.0|1.1] [--sparse-ratio 2.0] [--kv-ratio 3.0] [--local-range 11]\n"
    "       [--color-fix none|adain|wavelet] [--seed 0] [--attention auto|reference|cuda] [--quiet]\n"
    "       [--tile-width 0 --tile-height 0 (output px, multiples of 128; 0: not split) --tile-overlap 128]\n"
    "       [--tile-colour per-tile|blended (where the colour fix runs when tiled)]\n"
    "       [--max-memory GIB (choose the tiling from the memory model, docs/element.md \"Tiling\")]\n"
    "Reads raw RGB24 frames of W x H, writes RGB24 frames of the output size, exactly one per input frame.\n"
    "The device defaults to cpu; auto is cuda when available, else cpu. Precision auto (the default) is bf16\n"
    "on CUDA and fp32 on the CPU. Variant auto (the default): Tiny when the model directory has TCDecoder.ckpt,\n"
    "else Full (Wan2.1_VAE.pth).\n";

bool read_exact(FILE* f, uint8_t* dst, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t r = std::fread(dst + got, 1, n - got, f);
    if (r == 0) return false;
    got += r;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cli::Args args(argc, argv,
                   {"model", "width", "height", "input", "output", "scale", "out-width", "out-height", "device",
                    "precision", "variant", "model-version", "sparse-ratio", "kv-ratio", "local-range", "color-fix", "seed",
                    "attention", "tile-width", "tile-height", "tile-overlap", "tile-colour", "max-memory"},
                   {"quiet", "help"});
    if (args.has("help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (!args.has("model") || !args.has("width") || !args.has("height")) {
      std::fputs(kUsage, stderr);
      return 2;
    }
    c10::InferenceMode inference;
    const bool quiet = args.has("quiet");
    LoadOptions lo = resolve_load_options(args.str("device", "cpu"), args.str("precision", "auto"));
    lo.variant = parse_variant(args.str("variant", "auto"));
    lo.log = [&](LogLevel, const std::string& m) { std::fprintf(stderr, "flashvsr-upscale: %s\n", m.c_str()); };
    auto model = Model::load(args.str("model", ""), lo);

    StreamOptions so = cli::stream_settings(args);
    so.in_width = args.integer("width", 0);
    so.in_height = args.integer("height", 0);
    so.out_width = args.integer("out-width", 0);
    so.out_height = args.integer("out-height", 0);
    TileOptions tiling = cli::tile_settings(args);
    if (args.has("max-memory"))
      tiling = tiles_for_memory(so, tiling.overlap, args.num("max-memory", 0.0),
                                MemoryModel::measured(model->config(), so, model->dtype()));
    TiledStream stream(model, so, tiling);
    if (!quiet) std::fprintf(stderr, "flashvsr-upscale: %s\n", stream.plan().describe().c_str());

    const std::string in_path = args.str("input", "-"), out_path = args.str("output", "-");
    FILE* in = in_path == "-" ? stdin : std::fopen(in_path.c_str(), "rb");
    if (!in) throw Error(Error::Kind::NotFound, in_path + ": cannot open");
    FILE* out = out_path == "-" ? stdout : std::fopen(out_path.c_str(), "wb");
    if (!out) throw Error(Error::Kind::NotFound, out_path + ": cannot create");

    const size_t frame_bytes = static_cast<size_t>(so.in_width * so.in_height * 3);
    std::vector<uint8_t> buf(frame_bytes);
    int64_t n_in = 0, n_out = 0;
    const auto t0 = std::chrono::steady_clock::now();
    auto emit = [&](const at::Tensor& frames) {
      auto host = frames.cpu().contiguous();
      if (host.numel() && std::fwrite(host.data_ptr<uint8_t>(), 1, host.numel(), out) != static_cast<size_t>(host.numel()))
        throw Error(Error::Kind::NotFound, out_path + ": write failed");
      n_out += host.size(0);
      if (!quiet && host.size(0)) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "flashvsr-upscale: %lld in, %lld out (%dx%d), %.2f fps\n", (long long)n_in,
                     (long long)n_out, (int)stream.out_width(), (int)stream.out_height(), n_out / s);
      }
    };
    while (read_exact(in, buf.data(), frame_bytes)) {
      ++n_in;
      emit(stream.push(at::from_blob(buf.data(), {1, so.in_height, so.in_width, 3}, at::kByte)).frames);
    }
    emit(stream.finish().frames);
    std::fflush(out);
    if (in != stdin) std::fclose(in);
    if (out != stdout) std::fclose(out);
    if (!quiet) std::fprintf(stderr, "flashvsr-upscale: done, %lld frames in, %lld out\n", (long long)n_in, (long long)n_out);
    return n_in == n_out ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "flashvsr-upscale: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "flashvsr-upscale: %s\n", e.what_without_backtrace());
    return 1;
  }
}
