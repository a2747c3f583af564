// SPDX-License-Identifier: LGPL-2.1-or-later
// Spatial tiling: one video through several engine Streams, each over a crop of the LR frame, their
// outputs blended into the output frame.
//  - TileOptions / plan_tiles: where the tiles lie (output and LR rectangles, LR at integer pixels).
//  - blend_weights: one float32 weight map per tile, a raised-cosine ramp across each overlap,
//    normalised so that the maps sum to one at every output pixel.
//  - TiledStream: the Stream API over the tiles. Each tile is a Stream of its own (its own LQ caches, KV
//    cache, decoder memory and noise generator, seeded with the same options.seed); they get the same
//    frames at the same times, so they share the chunk schedule and return the same frames per push.
//    Colour correction is the engine's, per tile against that tile's own LQ crop, before blending.
//    One tile covering the frame is a plain pass-through to one Stream of the unchanged options.
//  - The memory model (estimate_memory_gib, tiles_for_memory): the device memory of a tiling, from the
//    measured figures of untiled streams and the size of each stream's resident state.
#pragma once

#include "engine.h"

#include <ATen/ATen.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace flashvsr {

// Where a tiled stream's colour correction (StreamOptions::color_fix) runs: in each tile's stream
// against its own LQ crop, before blending (the engine's own path); or once on the blended frame against
// the whole frame's LQ (the tiles' streams run without colour correction; the blended frame is corrected
// from their 8-bit outputs, so it is rounded twice).
enum class TileColour { PerTile, Blended };
const char* tile_colour_name(TileColour colour);
TileColour parse_tile_colour(const std::string& name);  // "per-tile" | "blended"; Error(BadSettings) else

// The tiling asked for, in output pixels. A side of 0 is not split (0 x 0: no tiling). Tile sides are
// multiples of 128 (the engine's padding unit, so a tile's stream pads nothing).
struct TileOptions {
  int64_t width = 0, height = 0;
  int64_t overlap = 0;  // output pixels shared by neighbouring tiles (at least; rounded up to whole LR pixels)
  TileColour colour = TileColour::PerTile;
  bool enabled() const { return width > 0 || height > 0; }
  bool operator==(const TileOptions& o) const {
    return width == o.width && height == o.height && overlap == o.overlap && colour == o.colour;
  }
};

// One tile: its LR crop [lr_x, lr_x + lr_w) x [lr_y, lr_y + lr_h) and the output rectangle its stream
// produces, [x, x + w) x [y, y + h) = the LR crop times the scale.
struct Tile {
  int64_t lr_x = 0, lr_y = 0, lr_w = 0, lr_h = 0;
  int64_t x = 0, y = 0, w = 0, h = 0;
};

struct TilePlan {
  int64_t in_width = 0, in_height = 0, out_width = 0, out_height = 0;
  int64_t scale_x = 1, scale_y = 1;  // output pixels per LR pixel
  int64_t cols = 1, rows = 1;
  std::vector<Tile> tiles;  // row by row
  // One tile covering the whole frame: the untiled path.
  bool single() const { return tiles.size() == 1; }
  std::string describe() const;  // "2x2 tiles of 1024x640 (overlap >= 128x96 px) over 1920x1080"
};

// The tiles of `options` (the stream's LR and output sizes) for `tiling`. Along each split side the
// tiles have the same size (the tile side, or the frame side when smaller), are spread evenly with LR
// offsets at whole pixels and overlap by at least `overlap` output pixels; the first starts at 0 and
// the last ends at the frame's edge. Tiling needs an integer scale (output = LR x k per side). Throws
// Error(BadSettings): a tile side not a multiple of 128, a non-integer scale, an overlap that leaves no
// progress between tiles.
TilePlan plan_tiles(const StreamOptions& options, const TileOptions& tiling);

// One weight map per tile, float32 [tile h, tile w] on `device`: the product of a 1-D weight per side,
// which ramps up (raised cosine, sampled at pixel centres, never 0 inside the tile) across the overlap
// with the previous tile and down across the overlap with the next, and is 1 elsewhere; then divided by
// the sum of every tile's weight at the pixel, so that the maps sum to one everywhere.
std::vector<at::Tensor> blend_weights(const TilePlan& plan, at::Device device = at::kCPU);

// The Stream API (push / finish / reset) over the tiles of a plan.
class TiledStream {
 public:
  TiledStream(std::shared_ptr<const Model> model, const StreamOptions& options, const TileOptions& tiling);

  // lr: uint8 [n, in_height, in_width, 3] on any device; returns uint8 [m, out_height, out_width, 3] on
  // the model's device. chunks / first_chunk are the shared schedule's (the same for every tile);
  // seconds is the time of every tile's chunks and of the blending.
  PushResult push(const at::Tensor& lr);
  // Stream::push_float, untiled only (Error(BadSettings) naming the tiling otherwise; so is float_output).
  PushResult push_float(const at::Tensor& lr);
  PushResult finish();
  void reset();

  // Every tile's stream calls `hook` (a tiled chunk marks each stage once per tile).
  void set_stage_hook(StageHook hook);
  // Only untiled (a noise source gives noise for the whole frame); throws Error(BadSettings) when tiled.
  void set_noise_source(NoiseSource source);

  const StreamOptions& options() const { return options_; }  // of the whole frame
  const TileOptions& tiling() const { return tiling_; }
  const TilePlan& plan() const { return plan_; }
  const Model& model() const { return streams_.front()->model(); }
  int64_t out_width() const { return plan_.out_width; }
  int64_t out_height() const { return plan_.out_height; }
  // The attention of the first tile (every tile has the same size, so every tile has this plan).
  const AttentionPlan& attention() const { return streams_.front()->attention(); }
  // frames and chunks of the schedule; chunk_seconds_total summed over the tiles.
  StreamStats stats() const;
  const Stream& tile_stream(size_t i) const { return *streams_.at(i); }

 private:
  // Blends one push's tile outputs (each [m, h, w, 3] u8) into [m, H, W, 3] u8 (colour-corrected against
  // the oldest pending LR frames with TileColour::Blended, which it then drops).
  at::Tensor blend(const std::vector<at::Tensor>& outs);
  // Checks that every tile returned the same frames, blends them, adds up the times.
  PushResult gather(std::vector<PushResult> results);

  std::shared_ptr<const Model> model_;
  StreamOptions options_;
  TileOptions tiling_;
  TilePlan plan_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<at::Tensor> weights_;  // per tile, float32 [h, w, 1] on the model's device
  // TileColour::Blended: the correction, the LR -> output resize of the whole frame, and the LR frames
  // [h, w, 3] u8 (on the device) whose outputs are not out yet.
  ColorFix blended_fix_ = ColorFix::None;
  std::optional<BicubicResize> resize_;
  std::deque<at::Tensor> pending_lr_;
  double blend_seconds_total_ = 0.0;
};

// Runs the first chunk of a scratch stream with these options and tiling (untiled: one plain Stream) over
// mid-grey frames and returns its wall time in seconds, every tile and the blending, with its frames
// brought to the host (so the device work is included). A stream's first chunk is its slowest (25 frames
// in, 21 out, and the device's kernels loaded on first use), so this is the processing estimate a live
// pipeline needs before the stream's own first chunk has run.
double time_first_chunk(std::shared_ptr<const Model> model, const StreamOptions& options, const TileOptions& tiling);

// Device memory of streams, in GiB: base + per_mp x (padded output megapixels), fitted by least squares
// to the peaks allocated by untiled streams of the released model in bf16 on an H200
// (docs/performance.md: 11.1 GiB at 1408x768, 19.1 at 1920x1080 (padded 1920x1152), 62.7 at 3840x2160
// (padded 3840x2176); flashvsr-bench). Of per_mp, the part that a stream keeps between chunks (its
// state: KV cache, decoder memory, LQ caches, pending frames) is resident for every tile at once; the
// rest (the activations of a chunk) is needed by one tile at a time.
struct MemoryModel {
  double base_gib = 0.0;     // weights, prompt constants, allocator overhead
  double per_mp_gib = 0.0;   // per padded output megapixel of one stream, state included
  double state_per_mp_gib = 0.0;  // of per_mp, the resident state (computed from the model's shapes)

  // The fit above, with the state of `config` at `options` (kv_ratio) in `dtype`.
  static MemoryModel measured(const ModelConfig& config, const StreamOptions& options, at::ScalarType dtype);
  // The peak of a plan: base + state x (sum of the tiles' padded MP) + (per_mp - state) x (largest tile).
  double estimate_gib(const TilePlan& plan) const;
};

// The resident state of one stream per padded output megapixel, in GiB, from the shapes: the KV cache
// (layers x {k, v} x kv slices x 2 latent frames x (H/16)(W/16) tokens x dim) and the decoder's
// per-MemBlock memory, in `dtype`.
double state_gib_per_mp(const ModelConfig& config, const StreamOptions& options, at::ScalarType dtype);

// The tiling with the fewest tiles (then the largest tiles) whose estimate fits `max_gib`, with
// `overlap`; {0, 0, overlap} when the untiled stream fits. Throws Error(BadSettings) naming the smallest
// estimate when nothing fits (the resident state of the tiles grows with the frame, not the tile).
TileOptions tiles_for_memory(const StreamOptions& options, int64_t overlap, double max_gib, const MemoryModel& memory);

}  // namespace flashvsr
