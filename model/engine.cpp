// SPDX-License-Identifier: LGPL-2.1-or-later
#include "engine.h"

#include "io/file_util.h"
#include "io/torch_archive.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/AllocatorConfig.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace flashvsr {

at::Device parse_device(const std::string& text) {
  if (text == "cpu") return at::Device(at::kCPU);
  if (text == "cuda") return at::Device(at::kCUDA, 0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string idx = text.substr(5);
    if (!idx.empty() && idx.size() <= 3 && idx.find_first_not_of("0123456789") == std::string::npos)
      return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(std::stoi(idx)));
  }
  throw Error(Error::Kind::BadSettings, "device '" + text + "': expected cpu, cuda or cuda:N");
}

at::ScalarType parse_dtype(const std::string& text) {
  if (text == "fp32" || text == "float32" || text == "float") return at::kFloat;
  if (text == "bf16" || text == "bfloat16") return at::kBFloat16;
  if (text == "fp16" || text == "float16" || text == "half") return at::kHalf;
  throw Error(Error::Kind::BadSettings, "precision '" + text + "': expected fp32, bf16 or fp16");
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "fp32";
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "fp16";
    default: return "?";
  }
}

const char* variant_name(Variant variant) { return variant == Variant::Full ? "full" : "tiny"; }

std::optional<Variant> parse_variant(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "tiny") return Variant::Tiny;
  if (text == "full") return Variant::Full;
  throw Error(Error::Kind::BadSettings, "variant '" + text + "': expected auto, tiny or full");
}

Variant detect_variant(const std::string& dir, std::optional<Variant> requested) {
  const std::string tiny = io::join_path(dir, ReleaseLayout::kDecoder);
  const std::string full = io::join_path(dir, ReleaseLayout::kVaeDecoder);
  if (requested) {
    const std::string& need = *requested == Variant::Full ? full : tiny;
    if (!io::is_regular_file(need))
      throw Error(Error::Kind::NotFound, need + ": no such file (variant " + variant_name(*requested) +
                                             " was asked for; its stage-3 decoder lives in that file)");
    return *requested;
  }
  if (io::is_regular_file(tiny)) return Variant::Tiny;
  if (io::is_regular_file(full)) return Variant::Full;
  throw Error(Error::Kind::NotFound, "model directory '" + dir + "' has no stage-3 decoder: expected " +
                                         ReleaseLayout::kDecoder + " (FlashVSR-Tiny) or " + ReleaseLayout::kVaeDecoder +
                                         " (FlashVSR Full)");
}

void check_device(at::Device device) {
  if (device.is_cpu()) return;
  if (!device.is_cuda()) throw Error(Error::Kind::Device, "unsupported device " + device.str());
  if (!at::hasCUDA())
    throw Error(Error::Kind::Device, "device " + device.str() + " requested but CUDA is not available in this process " +
                                         "(no GPU, no driver, or a CPU-only LibTorch)");
  const auto count = at::getNumGPUs();
  if (device.index() >= static_cast<int64_t>(count))
    throw Error(Error::Kind::Device, "device " + device.str() + " requested but only " + std::to_string(count) +
                                         " CUDA device(s) are visible");
}

std::string configure_cuda_allocator() {
  if (const char* user = std::getenv("PYTORCH_CUDA_ALLOC_CONF"); user && *user)
    return std::string("CUDA allocator: PYTORCH_CUDA_ALLOC_CONF=") + user + " (the user's, left as set)";
  constexpr const char* kSettings = "expandable_segments:True";
  c10::CachingAllocator::setAllocatorSettings(kSettings);
  return std::string("CUDA allocator: ") + kSettings + " (FlashVSR's default; PYTORCH_CUDA_ALLOC_CONF overrides it)";
}

LoadOptions resolve_load_options(const std::string& device, const std::string& precision) {
  LoadOptions o;
  if (device == "auto")
    o.device = at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  else
    o.device = parse_device(device);
  if (precision == "fp8") {
    o.dtype = at::kBFloat16;
    o.fp8_linears = true;
  } else if (precision == "auto") {
    o.dtype = o.device.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else {
    try {
      o.dtype = parse_dtype(precision);
    } catch (const Error&) {
      throw Error(Error::Kind::BadSettings, "precision '" + precision + "': expected auto, fp32, bf16, fp16 or fp8");
    }
  }
  return o;
}

const char* precision_name(at::ScalarType dtype, bool fp8_linears) {
  return fp8_linears ? "fp8" : dtype_name(dtype);
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  s << "FlashVSR " << (variant == Variant::Full ? "Full" : "Tiny") << ": DiT dim " << dit.dim << " (" << dit.heads << " heads x " << dit.head_dim << "), ffn " << dit.ffn_dim << ", "
    << dit.layers << " layers, text dim " << dit.text_dim << ", prompt " << context_len << " tokens; LQ projection "
    << lq_proj.hidden1 << "/" << lq_proj.hidden2 << " x" << lq_proj.num_linear << "; ";
  if (variant == Variant::Full)
    s << "Wan2.1 VAE decoder, base width " << vae_decoder.dim << ", " << vae_decoder.z_dim << " latent channels";
  else
    s << "decoder channels " << decoder.channels[0] << "/" << decoder.channels[1] << "/" << decoder.channels[2] << "/"
      << decoder.channels[3];
  return s.str();
}

namespace {

void check_load_options(const LoadOptions& o) {
  check_device(o.device);
  if (o.device.is_cuda()) {
    const std::string allocator = configure_cuda_allocator();
    if (o.log) o.log(LogLevel::Info, allocator);
  }
  if (o.dtype != at::kFloat && o.dtype != at::kBFloat16 && o.dtype != at::kHalf)
    throw Error(Error::Kind::BadSettings, "unsupported compute dtype " + std::string(c10::toString(o.dtype)));
  if (o.fp8_linears) {
    if (o.dtype != at::kBFloat16)
      throw Error(Error::Kind::BadSettings, std::string("precision fp8 computes in bf16 outside its linear layers; "
                                                        "compute dtype ") + dtype_name(o.dtype) + " was asked for");
    check_fp8_support(o.device);
  }
}


}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& dir, const LoadOptions& o) {
  c10::InferenceMode inference;
  if (!io::is_directory(dir)) throw Error(Error::Kind::NotFound, "model directory '" + dir + "' does not exist");
  check_load_options(o);
  const std::string prompt_path = io::join_path(dir, ReleaseLayout::kPrompt);
  WeightFile dit = WeightFile::open(io::join_path(dir, ReleaseLayout::kDit));
  WeightFile lq = WeightFile::open(io::join_path(dir, ReleaseLayout::kLqProj));
  const Variant variant = detect_variant(dir, o.variant);
  WeightFile dec = variant == Variant::Full
                       ? open_vae_decoder_file(io::join_path(dir, ReleaseLayout::kVaeDecoder), o.log)
                       : WeightFile::open(io::join_path(dir, ReleaseLayout::kDecoder));
  if (!io::is_regular_file(prompt_path)) throw Error(Error::Kind::NotFound, prompt_path + ": no such file");
  at::Tensor prompt = io::read_torch_tensor(prompt_path);
  return build(dir, variant, std::move(dit), std::move(lq), std::move(dec), prompt_path, prompt, o);
}

std::shared_ptr<const Model> Model::from_tensors(ModelTensors t, const LoadOptions& o, const std::string& name) {
  c10::InferenceMode inference;
  check_load_options(o);
  if (o.variant && *o.variant != t.variant)
    throw Error(Error::Kind::BadSettings, name + ": variant " + variant_name(*o.variant) + " asked for, the tensors are " +
                                              variant_name(t.variant));
  const char* decoder_file = t.variant == Variant::Full ? ReleaseLayout::kVaeDecoder : ReleaseLayout::kDecoder;
  if (t.variant == Variant::Full)  // what open_vae_decoder_file keeps of a file
    for (auto it = t.decoder.begin(); it != t.decoder.end();) it = is_vae_encoder_key(it->first) ? t.decoder.erase(it) : std::next(it);
  return build(name, t.variant, WeightFile(io::join_path(name, ReleaseLayout::kDit), std::move(t.dit)),
               WeightFile(io::join_path(name, ReleaseLayout::kLqProj), std::move(t.lq_proj)),
               WeightFile(io::join_path(name, decoder_file), std::move(t.decoder)),
               io::join_path(name, ReleaseLayout::kPrompt), t.prompt, o);
}

std::shared_ptr<const Model> Model::build(const std::string& dir, Variant variant, WeightFile dit, WeightFile lq,
                                          WeightFile dec, const std::string& prompt_name, at::Tensor prompt,
                                          const LoadOptions& o) {
  auto warn_unused = [&](const WeightFile& f) {
    const auto extra = f.unused();
    if (extra.empty() || !o.log) return;
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 8; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 8) list += ", ...";
    o.log(LogLevel::Warning, f.path() + ": " + std::to_string(extra.size()) + " unknown tensor(s) ignored: " + list);
  };

  std::shared_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->device_ = o.device;
  m->dtype_ = o.dtype;
  m->config_.variant = variant;
  try {
    m->config_.dit = DitConfig::detect(dit);
    m->dit_ = DitWeights::bind(dit, m->config_.dit, o.device, o.dtype);
    warn_unused(dit);

    m->config_.lq_proj = LqProjConfig::detect(lq);
    require_dim(lq, "linear_layers output width (the DiT dim from " + std::string(ReleaseLayout::kDit) + ")",
                m->config_.dit.dim, m->config_.lq_proj.out_dim);
    if (m->config_.lq_proj.num_linear > m->config_.dit.layers)
      throw Error(Error::Kind::BadFile, lq.path() + ": " + std::to_string(m->config_.lq_proj.num_linear) +
                                            " linear layers but the DiT has only " +
                                            std::to_string(m->config_.dit.layers) + " blocks");
    m->lq_proj_ = LqProjWeights::bind(lq, m->config_.lq_proj, o.device, o.dtype);
    warn_unused(lq);

    if (variant == Variant::Full) {
      m->config_.vae_decoder = VaeDecoderConfig::detect(dec);
      m->vae_decoder_ = VaeDecoderWeights::bind(dec, m->config_.vae_decoder, o.device, o.dtype);
    } else {
      m->config_.decoder = DecoderConfig::detect(dec);
      m->decoder_ = DecoderWeights::bind(dec, m->config_.decoder, o.device, o.dtype);
      if (o.log) o.log(LogLevel::Info, dec.path() + ": decoder convolutions: " + m->decoder_.epilogue_path);
    }
    warn_unused(dec);

    if (!prompt.defined() || prompt.dim() != 3 || prompt.size(0) != 1 || prompt.size(2) != m->config_.dit.text_dim ||
        !at::isFloatingType(prompt.scalar_type()))
      throw Error(Error::Kind::BadFile,
                  prompt_name + ": prompt tensor has shape " +
                      (prompt.defined() ? shape_string(prompt.sizes().vec()) + " and dtype " +
                                              std::string(c10::toString(prompt.scalar_type()))
                                        : std::string("(none)")) +
                      ", expected a floating-point [1, L, " + std::to_string(m->config_.dit.text_dim) + "]");
    m->config_.context_len = prompt.size(1);
    m->dit_constants_ = DitConstants::compute(m->dit_, prompt);
    if (o.fp8_linears) {
      m->dit_.quantize_linears_fp8();
      if (o.log)
        o.log(LogLevel::Info, dit.path() + ": precision fp8: the DiT's QKV, output, cross-attention q/o and FFN layers "
                                           "in e4m3 (row-wise scales, fp32 accumulation), bf16 elsewhere");
    }
  } catch (const c10::Error& e) {
    // Allocation failures (e.g. CUDA out of memory) and other LibTorch errors while placing weights.
    throw Error(Error::Kind::Device, "loading " + dir + " onto " + o.device.str() + " failed: " + e.what_without_backtrace());
  }
  return m;
}

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::Preprocess: return "preprocess";
    case Stage::LqProj: return "lq_proj";
    case Stage::LqProjAhead: return "lq_proj_ahead";
    case Stage::Dit: return "dit";
    case Stage::Decoder: return "decoder";
    case Stage::Colour: return "colour";
  }
  return "?";
}

void StreamState::reset() {
  lq_proj.reset();
  dit.reset();
  decoder.reset();
  vae_decoder.reset();
  next_chunk = 0;
  frames_in = frames_padded = frames_out = 0;
  lq_first = 0;
  lq_frames.clear();
  lq_ahead.clear();
  noise_generator.reset();
  noise = at::Tensor();
  rope = RopeTable();
  finished = false;
}

Stream::Stream(std::shared_ptr<const Model> model, const StreamOptions& o) : model_(std::move(model)), options_(o) {
  if (!model_) throw Error(Error::Kind::BadSettings, "stream needs a loaded model");
  if (o.in_width < 1 || o.in_height < 1)
    throw Error(Error::Kind::BadSettings, "input size " + std::to_string(o.in_width) + "x" + std::to_string(o.in_height) +
                                              ": expected at least 1x1");
  if ((o.out_width == 0) != (o.out_height == 0))
    throw Error(Error::Kind::BadSettings, "output size: give both width and height, or neither");
  if (o.out_width == 0 && !(o.scale > 0.0 && std::isfinite(o.scale)))
    throw Error(Error::Kind::BadSettings, "scale " + std::to_string(o.scale) + ": expected > 0");
  out_w_ = o.out_width ? o.out_width : scaled_size(o.in_width, o.scale);
  out_h_ = o.out_height ? o.out_height : scaled_size(o.in_height, o.scale);
  if (out_w_ < 1 || out_h_ < 1 || out_w_ > kMaxFrameSide || out_h_ > kMaxFrameSide)
    throw Error(Error::Kind::BadSettings, "output size " + std::to_string(out_w_) + "x" + std::to_string(out_h_) +
                                              ": expected 1.." + std::to_string(kMaxFrameSide) + " per side");
  if (!(o.kv_ratio >= 1.0 && o.kv_ratio < 1e6))
    throw Error(Error::Kind::BadSettings, "kv ratio " + std::to_string(o.kv_ratio) + ": expected >= 1");
  if (o.topk_ratio <= 0.0 && !(o.sparse_ratio > 0.0 && std::isfinite(o.sparse_ratio)))
    throw Error(Error::Kind::BadSettings, "sparse ratio " + std::to_string(o.sparse_ratio) + ": expected > 0");
  pad_w_ = round_up(out_w_, 128);
  pad_h_ = round_up(out_h_, 128);
  const at::Device device = model_->device();
  if (out_w_ != o.in_width || out_h_ != o.in_height) resize_.emplace(o.in_width, o.in_height, out_w_, out_h_, device);
  SparseAttentionSettings s;
  s.topk_ratio = o.topk_ratio > 0.0 ? o.topk_ratio : topk_ratio_for(o.sparse_ratio, pad_h_, pad_w_);
  s.local_range = o.local_range;
  s.kv_slices = static_cast<int64_t>(o.kv_ratio);
  s.backend = o.attention;
  s.dtype = model_->dtype();
  attention_ = AttentionPlan::make(s, pad_h_ / 128, pad_w_ / 128, device);
  rope_.emplace(model_->config().dit.head_dim, pad_h_ / 16, pad_w_ / 16, device);
}

void Stream::reset() {
  state_.reset();
  chunk_seconds_total_ = 0.0;
}

StreamStats Stream::stats() const {
  StreamStats s;
  s.frames_in = state_.frames_in;
  s.frames_out = state_.frames_out;
  s.chunks = state_.next_chunk;
  s.chunk_seconds_total = chunk_seconds_total_;
  return s;
}

PushResult Stream::nothing_ready() const {
  PushResult r;
  r.frames = at::empty({0, out_h_, out_w_, 3}, at::TensorOptions()
                                                    .dtype(options_.float_output ? at::kFloat : at::kByte)
                                                    .device(model_->device()));
  return r;
}

PushResult Stream::push(const at::Tensor& lr) {
  c10::InferenceMode inference;
  if (lr.dim() != 4 || lr.size(1) != options_.in_height || lr.size(2) != options_.in_width || lr.size(3) != 3 ||
      lr.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput, "frames have shape " + shape_string(lr.sizes().vec()) + " and dtype " +
                                           std::string(c10::toString(lr.scalar_type())) + ", expected uint8 [n, " +
                                           std::to_string(options_.in_height) + ", " + std::to_string(options_.in_width) +
                                           ", 3]");
  mark(Stage::Preprocess, true);
  auto x = lr.to(model_->device(), /*non_blocking=*/true).contiguous();
  return append(resize_ ? (*resize_)(x) : x);
}

PushResult Stream::push_float(const at::Tensor& lr) {
  c10::InferenceMode inference;
  if (lr.dim() != 4 || lr.size(1) != options_.in_height || lr.size(2) != options_.in_width || lr.size(3) != 3 ||
      !at::isFloatingType(lr.scalar_type()))
    throw Error(Error::Kind::BadInput, "frames have shape " + shape_string(lr.sizes().vec()) + " and dtype " +
                                           std::string(c10::toString(lr.scalar_type())) + ", expected floating [n, " +
                                           std::to_string(options_.in_height) + ", " + std::to_string(options_.in_width) +
                                           ", 3] in [0, 255]");
  mark(Stage::Preprocess, true);
  // float32 [n, in_h, in_w, 3] -> [n, out_h, out_w, 3] in [0, 255]
  auto x = lr.to(model_->device(), at::kFloat, /*non_blocking=*/true).contiguous();
  return append(resize_ ? resize_->resize_float(x) : x.clamp(0.0, 255.0));
}

PushResult Stream::push_resized(const at::Tensor& hr) {
  c10::InferenceMode inference;
  if (hr.dim() != 4 || hr.size(1) != out_h_ || hr.size(2) != out_w_ || hr.size(3) != 3 || hr.scalar_type() != at::kByte)
    throw Error(Error::Kind::BadInput, "frames have shape " + shape_string(hr.sizes().vec()) + " and dtype " +
                                           std::string(c10::toString(hr.scalar_type())) + ", expected uint8 [n, " +
                                           std::to_string(out_h_) + ", " + std::to_string(out_w_) + ", 3]");
  mark(Stage::Preprocess, true);
  return append(hr.to(model_->device(), /*non_blocking=*/true).contiguous());
}

PushResult Stream::append(const at::Tensor& hr) {
  if (state_.finished) throw Error(Error::Kind::BadInput, "frames pushed after finish(): reset() the stream first");
  if (hr.size(0) == 0) {
    mark(Stage::Preprocess, false);
    return nothing_ready();
  }
  // [n, H, W, 3] u8 or float in [0, 255] -> [1, 3, n, Hp, Wp] in [-1, 1]
  const at::ScalarType dtype = model_->dtype();
  auto lq = pad_to_multiple(hr.scalar_type() == at::kByte ? u8_to_unit(hr, dtype) : rgb255_to_unit(hr, dtype), 128);
  for (int64_t i = 0; i < lq.size(2); ++i) state_.lq_frames.push_back(lq[0].select(1, i));
  state_.frames_in += lq.size(2);
  mark(Stage::Preprocess, false);
  project_clips_ahead();
  return run_ready_chunks();
}

void Stream::project_clips_ahead() {
  if (state_.next_chunk != 0) return;
  const ChunkPlan plan = plan_chunk(0);
  const int64_t available = state_.frames_in + state_.frames_padded;
  // Clips in order (the projection's caches run through them in order); none once the chunk can run.
  while (state_.lq_ahead.size() < plan.lq_clips.size() && available < plan.frames_needed) {
    const FrameRange& clip = plan.lq_clips[state_.lq_ahead.size()];
    if (clip.end > available) break;
    mark(Stage::LqProjAhead, true);
    state_.lq_ahead.push_back(lq_project(model_->lq_proj(), options_.lq_version, state_.lq_proj, frames(clip.begin, clip.end)));
    mark(Stage::LqProjAhead, false);
  }
}

PushResult Stream::finish() {
  c10::InferenceMode inference;
  if (state_.finished || state_.frames_in == 0) {
    state_.finished = true;
    return nothing_ready();
  }
  const int64_t total = padded_frame_count(state_.frames_in);
  const int64_t have = state_.frames_in + state_.frames_padded;
  at::Tensor last = state_.lq_frames.back();
  for (int64_t i = have; i < total; ++i) state_.lq_frames.push_back(last);
  state_.frames_padded += total - have;
  auto out = run_ready_chunks();
  state_.finished = true;
  state_.lq_frames.clear();
  return out;
}

PushResult Stream::run_ready_chunks() {
  PushResult result;
  std::vector<at::Tensor> outs;
  const int64_t available = state_.frames_in + state_.frames_padded;
  while (true) {
    const ChunkPlan plan = plan_chunk(state_.next_chunk);
    if (plan.frames_needed > available || plan.output.begin >= state_.frames_in) break;
    const auto t0 = std::chrono::steady_clock::now();
    outs.push_back(run_chunk(plan));
    result.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result.first_chunk = result.first_chunk || plan.index == 0;
    ++result.chunks;
    ++state_.next_chunk;
    // Release the frames no later chunk reads.
    while (state_.lq_first < plan.frames_released && state_.lq_frames.size() > 1) {
      state_.lq_frames.pop_front();
      ++state_.lq_first;
    }
  }
  if (outs.empty()) return nothing_ready();
  result.frames = outs.size() == 1 ? outs[0] : at::cat(outs, 0);
  state_.frames_out += result.frames.size(0);
  chunk_seconds_total_ += result.seconds;
  return result;
}

at::Tensor Stream::frames(int64_t begin, int64_t end) const {
  if (begin < state_.lq_first || end > state_.lq_first + static_cast<int64_t>(state_.lq_frames.size()))
    throw Error(Error::Kind::Internal, "stream: frames [" + std::to_string(begin) + ", " + std::to_string(end) +
                                           ") are not pending");
  std::vector<at::Tensor> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(state_.lq_frames[static_cast<size_t>(i - state_.lq_first)]);
  return at::stack(v, 1).unsqueeze(0);  // [1, 3, n, Hp, Wp]
}

at::Tensor Stream::noise(int64_t first, int64_t count) {
  const std::vector<int64_t> shape{1, 16, count, pad_h_ / 8, pad_w_ / 8};
  at::Tensor n;
  if (noise_source_) {
    n = noise_source_(first, count);
    if (n.sizes().vec() != shape)
      throw Error(Error::Kind::BadInput, "noise source returned shape " + shape_string(n.sizes().vec()) + ", expected " +
                                             shape_string(shape));
  } else {
    // Drawn on the CPU from the stream's own generator (the same numbers on every device), in order.
    if (!state_.noise_generator) state_.noise_generator = at::make_generator<at::CPUGeneratorImpl>(options_.seed);
    n = at::randn(shape, *state_.noise_generator, at::TensorOptions().dtype(at::kFloat));
    if (model_->device().is_cuda()) n = n.pin_memory();
  }
  at::Tensor& d = state_.noise;
  if (d.defined() && d.sizes() == n.sizes())
    d.copy_(n, /*non_blocking=*/true);  // pinned source: queued on the stream, no host wait
  else
    d = n.to(model_->device(), model_->dtype(), /*non_blocking=*/true, /*copy=*/true);  // never the source's storage
  return d;
}

at::Tensor Stream::run_chunk(const ChunkPlan& plan) {
  const Model& m = *model_;
  const int64_t c = plan.index;
  // Stage 1: LQ projection of this chunk's clips -> tokens per linear layer [1, latents*h*w, dim].
  mark(Stage::LqProj, true);
  // (Chunk 0's first clips may have been projected as they arrived: project_clips_ahead.)
  std::vector<std::vector<at::Tensor>> per_layer(m.lq_proj().linear_w.size());
  for (size_t i = 0; i < plan.lq_clips.size(); ++i) {
    const FrameRange& clip = plan.lq_clips[i];
    auto tokens = i < state_.lq_ahead.size()
                      ? std::move(state_.lq_ahead[i])
                      : lq_project(m.lq_proj(), options_.lq_version, state_.lq_proj, frames(clip.begin, clip.end));
    for (size_t l = 0; l < tokens.size(); ++l) per_layer[l].push_back(tokens[l]);
  }
  state_.lq_ahead.clear();
  std::vector<at::Tensor> lq_tokens;
  for (auto& parts : per_layer) lq_tokens.push_back(parts.size() == 1 ? parts[0] : at::cat(parts, 1));
  mark(Stage::LqProj, false);

  // Stage 2: one denoising step.
  mark(Stage::Dit, true);
  auto latents = noise(plan.latents.begin, plan.latents.size());
  rope_->write_table(plan.latents.begin, plan.latents.size(), state_.rope);
  auto pred = dit_forward(m.dit(), m.dit_constants(), state_.dit, latents, lq_tokens, state_.rope, attention_);
  auto denoised = latents - pred;
  mark(Stage::Dit, false);

  // Stage 3: decode (Tiny: with the LQ condition; Full: the VAE decoder, latents only), crop the padding
  // away, colour-correct against the LQ frames of the same indices.
  mark(Stage::Decoder, true);
  auto cond = frames(plan.output.begin, plan.output.end);
  auto decoded = m.variant() == Variant::Full
                     ? vae_decode_chunk(m.vae_decoder(), state_.vae_decoder, denoised, options_.decoder_group)
                     : decode_chunk(m.decoder(), state_.decoder, denoised, cond, options_.decoder_group);
  mark(Stage::Decoder, false);
  if (decoded.size(2) != plan.output.size())
    throw Error(Error::Kind::Internal, "decoder returned " + std::to_string(decoded.size(2)) + " frames, expected " +
                                           std::to_string(plan.output.size()));
  auto crop = [&](const at::Tensor& v) { return v.narrow(3, 0, out_h_).narrow(4, 0, out_w_); };
  auto hq = crop(decoded);
  if (observer_) {
    observer_(c, "lq_latents", lq_tokens.empty() ? at::Tensor() : lq_tokens[0]);
    observer_(c, "latents_in", latents.clone());  // the next chunk rewrites the noise buffer
    observer_(c, "noise_pred", pred);
    observer_(c, "latents", denoised);
    observer_(c, "decoded", hq);
  }
  mark(Stage::Colour, true);
  auto video = colour_correct(hq, crop(cond), options_.color_fix);
  auto out = options_.float_output ? unit_to_rgb255(video) : unit_to_u8(video);  // [n, H, W, 3]
  mark(Stage::Colour, false);
  // Frames past the real ones (padding of the last chunk) are not emitted.
  const int64_t keep = std::min(plan.output.size(), state_.frames_in - plan.output.begin);
  return keep == out.size(0) ? out : out.narrow(0, 0, keep);
}

}  // namespace flashvsr
