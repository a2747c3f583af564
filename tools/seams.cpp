// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-seams: runs raw RGB24 frames through an untiled stream and a tiled one of the same model and
// settings, side by side, and prints one JSON object comparing them: PSNR of the tiled output against the
// untiled one over everything, over the overlap bands (pixels two or more tiles cover: where the blend
// runs and where each tile's crop edge is) and over the rest (one tile covers), and the ratio of the bands'
// mean squared error to the rest's (the seam criterion of issue 16: <= 2).
//   ffmpeg -i clip.mp4 -vf scale=480:270 -f rawvideo -pix_fmt rgb24 lr.rgb
//   flashvsr-seams --preset full --device cuda --width 480 --height 270 --input lr.rgb --tile-width 1024 ...
#include "cli.h"
#include "engine.h"
#include "model_maker.h"
#include "tiling.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdio>
#include <vector>

using namespace flashvsr;

namespace {

const char* kUsage =
    "usage: flashvsr-seams (--model DIR | --preset full|tiny) --width W --height H --input FILE\n"
    "       [--frames N (default: all)] [--tile-width 0] [--tile-height 0] [--tile-overlap 128] [--scale 4]\n"
    "       [--device cuda|cpu|cuda:N|auto] [--precision auto|bf16|fp16|fp32|fp8] [--model-version 1.1]\n"
    "       [--sparse-ratio 2.0] [--kv-ratio 3.0] [--local-range 11] [--color-fix adain] [--seed 0]\n"
    "       [--attention auto] [--tile-colour per-tile|blended (where the colour fix runs when tiled)]\n"
    "Reads raw RGB24 frames of W x H and prints one JSON line: PSNR of the tiled output against the untiled\n"
    "one overall, in the overlap bands and elsewhere, and the bands' MSE over the rest's.\n";

bool read_exact(FILE* f, uint8_t* dst, size_t n) {
  size_t got = 0;
  while (got < n) {
    const size_t r = std::fread(dst + got, 1, n - got, f);
    if (r == 0) return false;
    got += r;
  }
  return true;
}

double psnr(double sq, double count) {
  if (count == 0) return NAN;
  const double mse = sq / count;
  return mse == 0 ? INFINITY : 10.0 * std::log10(255.0 * 255.0 / mse);
}

std::string num(double v) {
  if (std::isnan(v)) return "null";
  if (std::isinf(v)) return "\"inf\"";
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cli::Args args(argc, argv,
                   {"model", "preset", "width", "height", "input", "frames", "tile-width", "tile-height",
                    "tile-overlap", "scale", "device", "precision", "model-version", "sparse-ratio", "kv-ratio",
                    "local-range", "color-fix", "seed", "attention", "tile-colour"},
                   {"help"});
    if (args.has("help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if ((!args.has("model") && !args.has("preset")) || !args.has("width") || !args.has("height") ||
        !args.has("input")) {
      std::fputs(kUsage, stderr);
      return 2;
    }
    c10::InferenceMode inference;
    const LoadOptions lo = resolve_load_options(args.str("device", "auto"), args.str("precision", "auto"));
    std::shared_ptr<const Model> model =
        args.has("model") ? Model::load(args.str("model", ""), lo)
                          : Model::from_tensors(make_random_model(ModelSpec::preset(args.str("preset", "full")), 0,
                                                                  lo.dtype),
                                                lo, "<random " + args.str("preset", "full") + ">");
    StreamOptions so = cli::stream_settings(args);
    so.in_width = args.integer("width", 0);
    so.in_height = args.integer("height", 0);
    const TileOptions tiling = cli::tile_settings(args);
    Stream untiled(model, so);
    TiledStream tiled(model, so, tiling);
    const TilePlan& plan = tiled.plan();
    if (plan.single()) throw Error(Error::Kind::BadSettings, "the tiling " + plan.describe() + " is one tile: nothing to compare");

    // The bands: pixels covered by two or more tiles; [H, W, 1] bool on the device.
    at::Tensor count = at::zeros({plan.out_height, plan.out_width}, at::kInt);
    for (const Tile& t : plan.tiles) count.narrow(0, t.y, t.h).narrow(1, t.x, t.w).add_(1);
    const at::Tensor band = count.ge(2).unsqueeze(2).to(model->device());
    const double band_px = band.sum().item<double>() * 3, all_px = static_cast<double>(plan.out_width * plan.out_height * 3);

    const std::string path = args.str("input", "");
    FILE* in = std::fopen(path.c_str(), "rb");
    if (!in) throw Error(Error::Kind::NotFound, path + ": cannot open");
    const int64_t max_frames = args.integer("frames", -1);
    const size_t frame_bytes = static_cast<size_t>(so.in_width * so.in_height * 3);
    std::vector<uint8_t> buf(frame_bytes);
    // Squared errors (sums over channels and pixels), accumulated on the device in float64.
    at::Tensor sq_all = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(model->device()));
    at::Tensor sq_band = sq_all.clone();
    double worst_frame_db = INFINITY;
    int64_t n_in = 0, n_out = 0;
    std::vector<at::Tensor> a_pending, b_pending;  // frames of one side waiting for the other's
    auto compare = [&](const at::Tensor& a, const at::Tensor& b) {
      a_pending.push_back(a);
      b_pending.push_back(b);
      const at::Tensor A = at::cat(a_pending, 0), B = at::cat(b_pending, 0);
      const int64_t m = std::min(A.size(0), B.size(0));
      for (int64_t i = 0; i < m; ++i) {
        const at::Tensor d2 = (A[i].to(at::kDouble) - B[i].to(at::kDouble)).pow(2);  // [H, W, 3]
        const at::Tensor s = d2.sum();
        sq_all += s;
        sq_band += (d2 * band).sum();
        worst_frame_db = std::min(worst_frame_db, psnr(s.item<double>(), all_px));
      }
      n_out += m;
      a_pending = {A.narrow(0, m, A.size(0) - m)};
      b_pending = {B.narrow(0, m, B.size(0) - m)};
    };
    while ((max_frames < 0 || n_in < max_frames) && read_exact(in, buf.data(), frame_bytes)) {
      ++n_in;
      const at::Tensor lr = at::from_blob(buf.data(), {1, so.in_height, so.in_width, 3}, at::kByte).clone();
      compare(untiled.push(lr).frames, tiled.push(lr).frames);
    }
    std::fclose(in);
    if (n_in == 0) throw Error(Error::Kind::BadInput, path + ": no complete frame of " + std::to_string(frame_bytes) + " bytes");
    compare(untiled.finish().frames, tiled.finish().frames);

    const double all = sq_all.item<double>(), bands = sq_band.item<double>();
    const double n = static_cast<double>(n_out);
    const double mse_band = band_px > 0 ? bands / (band_px * n) : NAN;
    const double mse_rest = (all - bands) / ((all_px - band_px) * n);
    std::printf(
        "{\"model\":\"%s\",\"device\":\"%s\",\"precision\":\"%s\",\"input\":\"%lldx%lld\",\"tiles\":\"%s\","
        "\"tile_colour\":\"%s\",\"color_fix\":\"%s\",\"frames_in\":%lld,\"frames_compared\":%lld,\"psnr_db\":%s,\"worst_frame_psnr_db\":%s,"
        "\"band_psnr_db\":%s,\"rest_psnr_db\":%s,\"band_share\":%s,\"band_mse\":%s,\"rest_mse\":%s,"
        "\"band_over_rest_mse\":%s}\n",
        model->dir().c_str(), model->device().str().c_str(), dtype_name(model->dtype()), (long long)so.in_width,
        (long long)so.in_height, plan.describe().c_str(), tile_colour_name(tiling.colour), color_fix_name(so.color_fix), (long long)n_in, (long long)n_out,
        num(psnr(all, all_px * n)).c_str(), num(worst_frame_db).c_str(), num(psnr(bands, band_px * n)).c_str(),
        num(psnr(all - bands, (all_px - band_px) * n)).c_str(), num(band_px / all_px).c_str(), num(mse_band).c_str(),
        num(mse_rest).c_str(), num(mse_rest > 0 ? mse_band / mse_rest : NAN).c_str());
    return n_in == n_out ? 0 : 1;
  } catch (const Error& e) {
    std::fprintf(stderr, "flashvsr-seams: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "flashvsr-seams: %s\n", e.what_without_backtrace());
    return 1;
  }
}
