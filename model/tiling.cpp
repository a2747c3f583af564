// SPDX-License-Identifier: LGPL-2.1-or-later
#include "tiling.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

namespace flashvsr {

namespace {

constexpr int64_t kTileUnit = 128;  // the engine pads frames to multiples of this

// One side's tiles, in LR pixels: offsets of `n` tiles of `tile` pixels over `frame`, spread evenly.
struct Span {
  int64_t begin = 0, size = 0;
};

// The tiles along one side: frame and tile in output pixels, `scale` output pixels per LR pixel.
std::vector<Span> plan_side(const char* side, int64_t frame_lr, int64_t scale, int64_t tile, int64_t overlap) {
  const int64_t frame = frame_lr * scale;
  if (tile == 0 || tile >= frame) return {Span{0, frame_lr}};
  // LR pixels: the tile rounds down to whole LR pixels, the overlap up.
  const int64_t tile_lr = tile / scale;
  const int64_t overlap_lr = (overlap + scale - 1) / scale;
  if (tile_lr < 1 || overlap_lr >= tile_lr)
    throw Error(Error::Kind::BadSettings, "tile overlap " + std::to_string(overlap) + " px: expected less than the tile " +
                                              side + " (" + std::to_string(tile) + " px) at scale " +
                                              std::to_string(scale));
  const int64_t stride = tile_lr - overlap_lr;
  const int64_t n = 1 + (frame_lr - tile_lr + stride - 1) / stride;
  std::vector<Span> spans;
  const int64_t range = frame_lr - tile_lr;  // of the offsets
  for (int64_t k = 0; k < n; ++k) {
    // Rounded k * range / (n - 1); consecutive offsets differ by at most ceil(range / (n - 1)) <= stride.
    const int64_t offset = (2 * k * range + (n - 1)) / (2 * (n - 1));
    spans.push_back(Span{offset, tile_lr});
  }
  return spans;
}

// Raised cosine over t in [0, 1]: 0 -> 0, 1 -> 1, ramp(t) + ramp(1 - t) = 1.
double ramp(double t) { return 0.5 - 0.5 * std::cos(M_PI * t); }

// The 1-D weight of tile k among `tiles` along one side (output pixels), length tiles[k].size.
std::vector<double> side_weight(const std::vector<Span>& tiles, size_t k) {
  const Span& t = tiles[k];
  std::vector<double> w(static_cast<size_t>(t.size), 1.0);
  if (k > 0) {
    // Ramp up over [t.begin, previous end).
    const int64_t len = tiles[k - 1].begin + tiles[k - 1].size - t.begin;
    for (int64_t i = 0; i < len && i < t.size; ++i) w[static_cast<size_t>(i)] *= ramp((i + 0.5) / len);
  }
  if (k + 1 < tiles.size()) {
    // Ramp down over [next begin, t end).
    const int64_t len = t.begin + t.size - tiles[k + 1].begin;
    for (int64_t i = 0; i < len && i < t.size; ++i) w[static_cast<size_t>(t.size - 1 - i)] *= ramp((i + 0.5) / len);
  }
  return w;
}

int64_t integer_scale(const char* side, int64_t in, int64_t out) {
  if (in < 1 || out % in != 0)
    throw Error(Error::Kind::BadSettings, std::string("tiling needs an integer scale: output ") + side + " " +
                                              std::to_string(out) + " is not a multiple of the input " + side + " " +
                                              std::to_string(in));
  return out / in;
}

}  // namespace

const char* tile_colour_name(TileColour colour) {
  return colour == TileColour::Blended ? "blended" : "per-tile";
}

TileColour parse_tile_colour(const std::string& name) {
  if (name == "per-tile") return TileColour::PerTile;
  if (name == "blended") return TileColour::Blended;
  throw Error(Error::Kind::BadSettings, "tile colour '" + name + "': expected per-tile or blended");
}

std::string TilePlan::describe() const {
  std::ostringstream s;
  if (single()) {
    s << "1 tile (untiled) of " << out_width << "x" << out_height;
    return s.str();
  }
  // The smallest overlap between neighbours, per side.
  int64_t ox = -1, oy = -1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c + 1 < cols; ++c) {
      const Tile &a = tiles[static_cast<size_t>(r * cols + c)], &b = tiles[static_cast<size_t>(r * cols + c + 1)];
      const int64_t o = a.x + a.w - b.x;
      ox = ox < 0 ? o : std::min(ox, o);
    }
  for (int64_t r = 0; r + 1 < rows; ++r) {
    const Tile &a = tiles[static_cast<size_t>(r * cols)], &b = tiles[static_cast<size_t>((r + 1) * cols)];
    const int64_t o = a.y + a.h - b.y;
    oy = oy < 0 ? o : std::min(oy, o);
  }
  s << cols << "x" << rows << " tiles of " << tiles[0].w << "x" << tiles[0].h << " (overlap >= " << std::max<int64_t>(ox, 0)
    << "x" << std::max<int64_t>(oy, 0) << " px) over " << out_width << "x" << out_height;
  return s.str();
}

TilePlan plan_tiles(const StreamOptions& o, const TileOptions& t) {
  if (t.width < 0 || t.height < 0 || t.overlap < 0)
    throw Error(Error::Kind::BadSettings, "tile size " + std::to_string(t.width) + "x" + std::to_string(t.height) +
                                              ", overlap " + std::to_string(t.overlap) + ": expected >= 0");
  TilePlan plan;
  plan.in_width = o.in_width;
  plan.in_height = o.in_height;
  plan.out_width = o.out_width ? o.out_width : scaled_size(o.in_width, o.scale);
  plan.out_height = o.out_height ? o.out_height : scaled_size(o.in_height, o.scale);
  for (int64_t side : {t.width, t.height})
    if (side % kTileUnit != 0)
      throw Error(Error::Kind::BadSettings, "tile size " + std::to_string(t.width) + "x" + std::to_string(t.height) +
                                                ": expected multiples of 128 output pixels (0: that side not split)");
  const bool split_x = t.width > 0 && t.width < plan.out_width, split_y = t.height > 0 && t.height < plan.out_height;
  if (!split_x && !split_y) {
    // Nothing to split (no tiling, or tiles as large as the frame): the untiled stream.
    plan.tiles.push_back(Tile{0, 0, o.in_width, o.in_height, 0, 0, plan.out_width, plan.out_height});
    return plan;
  }
  plan.scale_x = integer_scale("width", o.in_width, plan.out_width);
  plan.scale_y = integer_scale("height", o.in_height, plan.out_height);
  const auto xs = plan_side("width", o.in_width, plan.scale_x, t.width, t.overlap);
  const auto ys = plan_side("height", o.in_height, plan.scale_y, t.height, t.overlap);
  plan.cols = static_cast<int64_t>(xs.size());
  plan.rows = static_cast<int64_t>(ys.size());
  for (const Span& y : ys)
    for (const Span& x : xs)
      plan.tiles.push_back(Tile{x.begin, y.begin, x.size, y.size, x.begin * plan.scale_x, y.begin * plan.scale_y,
                                x.size * plan.scale_x, y.size * plan.scale_y});
  return plan;
}

std::vector<at::Tensor> blend_weights(const TilePlan& plan, at::Device device) {
  // The sides' spans in output pixels, from the first row and column of the plan.
  std::vector<Span> xs, ys;
  for (int64_t c = 0; c < plan.cols; ++c) {
    const Tile& t = plan.tiles[static_cast<size_t>(c)];
    xs.push_back(Span{t.x, t.w});
  }
  for (int64_t r = 0; r < plan.rows; ++r) {
    const Tile& t = plan.tiles[static_cast<size_t>(r * plan.cols)];
    ys.push_back(Span{t.y, t.h});
  }
  // Per tile wy x wx (float64), and their sum over the frame.
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor total = at::zeros({plan.out_height, plan.out_width}, f64);
  std::vector<at::Tensor> raw;
  for (int64_t r = 0; r < plan.rows; ++r) {
    auto wy = side_weight(ys, static_cast<size_t>(r));
    at::Tensor ty = at::tensor(wy, f64).view({-1, 1});
    for (int64_t c = 0; c < plan.cols; ++c) {
      auto wx = side_weight(xs, static_cast<size_t>(c));
      at::Tensor w = ty * at::tensor(wx, f64).view({1, -1});  // [h, w]
      const Tile& t = plan.tiles[static_cast<size_t>(r * plan.cols + c)];
      total.narrow(0, t.y, t.h).narrow(1, t.x, t.w).add_(w);
      raw.push_back(w);
    }
  }
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < raw.size(); ++i) {
    const Tile& t = plan.tiles[i];
    out.push_back((raw[i] / total.narrow(0, t.y, t.h).narrow(1, t.x, t.w)).to(device, at::kFloat).contiguous());
  }
  return out;
}

TiledStream::TiledStream(std::shared_ptr<const Model> model, const StreamOptions& options, const TileOptions& tiling)
    : model_(std::move(model)), options_(options), tiling_(tiling) {
  if (!model_) throw Error(Error::Kind::BadSettings, "stream needs a loaded model");
  plan_ = plan_tiles(options, tiling);
  if (plan_.single()) {
    // The untiled path: one Stream of exactly these options.
    streams_.push_back(std::make_unique<Stream>(model_, options));
    return;
  }
  if (options.float_output)
    throw Error(Error::Kind::BadSettings, "tiling (" + plan_.describe() + ") blends 8-bit tile outputs: float output "
                                          "(10/16-bit video) is untiled only; set tile-width=0 tile-height=0");
  const bool blended = tiling.colour == TileColour::Blended && options.color_fix != ColorFix::None;
  if (blended) {
    blended_fix_ = options.color_fix;
    if (plan_.out_width != options.in_width || plan_.out_height != options.in_height)
      resize_.emplace(options.in_width, options.in_height, plan_.out_width, plan_.out_height, model_->device());
  }
  for (const Tile& t : plan_.tiles) {
    StreamOptions o = options;
    if (blended) o.color_fix = ColorFix::None;
    o.in_width = t.lr_w;
    o.in_height = t.lr_h;
    o.out_width = t.w;
    o.out_height = t.h;
    streams_.push_back(std::make_unique<Stream>(model_, o));
  }
  c10::InferenceMode inference;
  for (at::Tensor& w : blend_weights(plan_, model_->device())) weights_.push_back(w.unsqueeze(2));  // [h, w, 1]
}

void TiledStream::set_stage_hook(StageHook hook) {
  for (auto& s : streams_) s->set_stage_hook(hook);
}

void TiledStream::set_noise_source(NoiseSource source) {
  if (!plan_.single())
    throw Error(Error::Kind::BadSettings, "a noise source (noise file) gives noise for the whole frame; it cannot be "
                                          "used with tiling (" + plan_.describe() + ")");
  streams_.front()->set_noise_source(std::move(source));
}

PushResult TiledStream::push(const at::Tensor& lr) {
  if (plan_.single()) return streams_.front()->push(lr);
  c10::InferenceMode inference;
  if (lr.dim() != 4 || lr.size(1) != options_.in_height || lr.size(2) != options_.in_width || lr.size(3) != 3 ||
      lr.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput, "frames have shape " + shape_string(lr.sizes().vec()) + " and dtype " +
                                           std::string(c10::toString(lr.scalar_type())) + ", expected uint8 [n, " +
                                           std::to_string(options_.in_height) + ", " +
                                           std::to_string(options_.in_width) + ", 3]");
  // One upload of the whole frame; each tile's stream takes its crop (a view) from it.
  const at::Tensor x = lr.to(model_->device(), /*non_blocking=*/true);
  if (blended_fix_ != ColorFix::None)
    for (int64_t i = 0; i < x.size(0); ++i) pending_lr_.push_back(x[i]);
  std::vector<PushResult> results;
  for (size_t i = 0; i < streams_.size(); ++i) {
    const Tile& t = plan_.tiles[i];
    results.push_back(streams_[i]->push(x.narrow(1, t.lr_y, t.lr_h).narrow(2, t.lr_x, t.lr_w)));
  }
  return gather(std::move(results));
}

PushResult TiledStream::push_float(const at::Tensor& lr) {
  if (!plan_.single())
    throw Error(Error::Kind::BadSettings, "tiling (" + plan_.describe() + ") takes 8-bit frames: 10/16-bit input is "
                                          "untiled only; set tile-width=0 tile-height=0");
  return streams_.front()->push_float(lr);
}

PushResult TiledStream::finish() {
  if (plan_.single()) return streams_.front()->finish();
  c10::InferenceMode inference;
  std::vector<PushResult> results;
  for (auto& s : streams_) results.push_back(s->finish());
  return gather(std::move(results));
}

void TiledStream::reset() {
  for (auto& s : streams_) s->reset();
  pending_lr_.clear();
  blend_seconds_total_ = 0.0;
}

StreamStats TiledStream::stats() const {
  StreamStats s = streams_.front()->stats();
  for (size_t i = 1; i < streams_.size(); ++i) s.chunk_seconds_total += streams_[i]->stats().chunk_seconds_total;
  s.chunk_seconds_total += blend_seconds_total_;
  return s;
}

PushResult TiledStream::gather(std::vector<PushResult> results) {
  PushResult out;
  out.chunks = results.front().chunks;
  out.first_chunk = results.front().first_chunk;
  std::vector<at::Tensor> frames;
  for (size_t i = 0; i < results.size(); ++i) {
    const PushResult& r = results[i];
    // Same frames at the same times: every tile runs the same chunks and returns the same frames.
    if (r.chunks != out.chunks || r.frames.size(0) != results.front().frames.size(0))
      throw Error(Error::Kind::Internal, "tile " + std::to_string(i) + " ran " + std::to_string(r.chunks) +
                                             " chunk(s) and returned " + std::to_string(r.frames.size(0)) +
                                             " frame(s), tile 0 " + std::to_string(out.chunks) + " and " +
                                             std::to_string(results.front().frames.size(0)));
    out.seconds += r.seconds;
    frames.push_back(r.frames);
  }
  const auto t0 = std::chrono::steady_clock::now();
  out.frames = blend(frames);
  const double blend_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.seconds += blend_s;
  blend_seconds_total_ += blend_s;
  return out;
}

at::Tensor TiledStream::blend(const std::vector<at::Tensor>& outs) {
  const int64_t m = outs.front().size(0);
  const auto u8 = at::TensorOptions().dtype(at::kByte).device(model_->device());
  at::Tensor frames = at::empty({m, plan_.out_height, plan_.out_width, 3}, u8);
  if (m == 0) return frames;
  // One frame at a time in float32 (bounded memory at 8K): [H, W, 3] = sum of weight x tile.
  at::Tensor acc = at::empty({plan_.out_height, plan_.out_width, 3}, u8.dtype(at::kFloat));
  for (int64_t f = 0; f < m; ++f) {
    acc.zero_();
    for (size_t i = 0; i < outs.size(); ++i) {
      const Tile& t = plan_.tiles[i];
      acc.narrow(0, t.y, t.h).narrow(1, t.x, t.w).addcmul_(outs[i][f].to(at::kFloat), weights_[i]);
    }
    if (blended_fix_ == ColorFix::None) {
      frames[f].copy_(acc.round_().clamp_(0.0, 255.0));
      continue;
    }
    // Colour of the blended frame against the whole frame's LQ: [H, W, 3] in [0, 255] -> [1, 3, 1, H, W].
    if (pending_lr_.empty())
      throw Error(Error::Kind::Internal, "tiled stream: an output frame without its pending input frame");
    const at::Tensor lr = pending_lr_.front().unsqueeze(0);  // [1, h, w, 3]
    pending_lr_.pop_front();
    const at::Tensor lq = u8_to_unit(resize_ ? (*resize_)(lr.contiguous()) : lr, at::kFloat);
    const at::Tensor hq = (acc / 127.5 - 1.0).permute({2, 0, 1}).unsqueeze(0).unsqueeze(2);
    frames[f].copy_(unit_to_u8(colour_correct(hq, lq, blended_fix_))[0]);
  }
  return frames;
}

double time_first_chunk(std::shared_ptr<const Model> model, const StreamOptions& options, const TileOptions& tiling) {
  c10::InferenceMode inference;
  TiledStream scratch(std::move(model), options, tiling);
  // [25, h, w, 3] u8: enough frames for the first chunk, and no more.
  const at::Tensor grey = at::full({kFirstChunkFrames, options.in_height, options.in_width, 3}, 128,
                                   at::TensorOptions().dtype(at::kByte));
  const auto t0 = std::chrono::steady_clock::now();
  const at::Tensor out = scratch.push(grey).frames.cpu();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (out.size(0) != outputs_ready(kFirstChunkFrames))
    throw Error(Error::Kind::Internal, "first chunk gave " + std::to_string(out.size(0)) + " frames, expected " +
                                           std::to_string(outputs_ready(kFirstChunkFrames)));
  return seconds;
}

double state_gib_per_mp(const ModelConfig& c, const StreamOptions& o, at::ScalarType dtype) {
  const double bytes = static_cast<double>(c10::elementSize(dtype));
  const double px = 1e6;  // one padded output megapixel
  // KV cache: per block, keys and values of kv slices of 2 latent frames of (H/16)(W/16) tokens.
  const double kv = static_cast<double>(c.dit.layers) * 2.0 * std::floor(o.kv_ratio) * 2.0 * (px / 256.0) *
                    static_cast<double>(c.dit.dim);
  // Decoder memory: 3 MemBlocks per stage s (channels[s]) at 1/8, 1/4, 1/2 of the output side.
  const double dec = 3.0 * (static_cast<double>(c.decoder.channels[0]) * px / 64.0 +
                            static_cast<double>(c.decoder.channels[1]) * px / 16.0 +
                            static_cast<double>(c.decoder.channels[2]) * px / 4.0);
  // Pending LQ frames: at most ~33 of [3, Hp, Wp].
  const double lq = 33.0 * 3.0 * px;
  return (kv + dec + lq) * bytes / (1024.0 * 1024.0 * 1024.0);
}

MemoryModel MemoryModel::measured(const ModelConfig& config, const StreamOptions& options, at::ScalarType dtype) {
  // Least squares over (padded MP, GiB allocated): (1.0813, 11.1), (2.2118, 19.1), (8.3558, 62.7).
  const double mp[3] = {1408.0 * 768.0 / 1e6, 1920.0 * 1152.0 / 1e6, 3840.0 * 2176.0 / 1e6};
  const double gib[3] = {11.1, 19.1, 62.7};
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (int i = 0; i < 3; ++i) {
    sx += mp[i];
    sy += gib[i];
    sxx += mp[i] * mp[i];
    sxy += mp[i] * gib[i];
  }
  MemoryModel m;
  m.per_mp_gib = (3 * sxy - sx * sy) / (3 * sxx - sx * sx);
  m.base_gib = (sy - m.per_mp_gib * sx) / 3;
  m.state_per_mp_gib = std::min(state_gib_per_mp(config, options, dtype), m.per_mp_gib);
  return m;
}

double MemoryModel::estimate_gib(const TilePlan& plan) const {
  double sum = 0.0, largest = 0.0;
  for (const Tile& t : plan.tiles) {
    const double mp = static_cast<double>(round_up(t.w, 128) * round_up(t.h, 128)) / 1e6;
    sum += mp;
    largest = std::max(largest, mp);
  }
  return base_gib + state_per_mp_gib * sum + (per_mp_gib - state_per_mp_gib) * largest;
}

TileOptions tiles_for_memory(const StreamOptions& options, int64_t overlap, double max_gib, const MemoryModel& memory) {
  const TilePlan untiled = plan_tiles(options, TileOptions{});
  double best = memory.estimate_gib(untiled);
  if (best <= max_gib) return TileOptions{0, 0, overlap};
  // Candidates: every tile size (multiples of 128, up to the frame) per side; the fewest tiles first,
  // then the largest tile area (the least overlap work), then the widest.
  struct Candidate {
    TileOptions tiling;
    size_t tiles;
    int64_t area;
  };
  std::vector<Candidate> fits;
  const int64_t W = untiled.out_width, H = untiled.out_height;
  for (int64_t tw = kTileUnit; tw < W + kTileUnit; tw += kTileUnit)
    for (int64_t th = kTileUnit; th < H + kTileUnit; th += kTileUnit) {
      const TileOptions t{tw >= W ? 0 : tw, th >= H ? 0 : th, overlap};
      if (!t.enabled()) continue;
      TilePlan p;
      try {
        p = plan_tiles(options, t);
      } catch (const Error&) {
        continue;  // e.g. an overlap too large for this tile
      }
      const double gib = memory.estimate_gib(p);
      best = std::min(best, gib);
      if (gib <= max_gib) fits.push_back(Candidate{t, p.tiles.size(), p.tiles[0].w * p.tiles[0].h});
    }
  if (fits.empty()) {
    std::ostringstream s;
    s.precision(3);
    s << "max-memory " << max_gib << " GiB: no tiling of " << W << "x" << H << " fits; the smallest estimate is "
      << best << " GiB (every tile's stream keeps its state, " << memory.state_per_mp_gib
      << " GiB per output megapixel, resident: it grows with the frame, not the tile)";
    throw Error(Error::Kind::BadSettings, s.str());
  }
  std::stable_sort(fits.begin(), fits.end(), [](const Candidate& a, const Candidate& b) {
    if (a.tiles != b.tiles) return a.tiles < b.tiles;
    return a.area > b.area;
  });
  return fits.front().tiling;
}

}  // namespace flashvsr
