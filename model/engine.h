// SPDX-License-Identifier: LGPL-2.1-or-later
// The FlashVSR streaming engine, both variants: Tiny (stage 3 the tiny conditional decoder) and Full
// (stage 3 the Wan2.1 VAE decoder); stages 1-2 and the chunk schedule are the same.
//  - Model: the loaded weights of one model directory on one device and dtype, plus what derives from
//    them alone (prompt keys/values, timestep modulation). Immutable; share it between streams.
//  - Stream: one video. Push LR frames, get back every HR frame that is ready, in order; finish() pads
//    and flushes the tail so that exactly N frames come out for N in. All mutable state lives in its
//    StreamState; two streams never share any.
#pragma once

#include "colour.h"
#include "dit.h"
#include "error.h"
#include "lq_proj.h"
#include "preprocess.h"
#include "schedule.h"
#include "tc_decoder.h"
#include "vae_decoder.h"

#include <ATen/ATen.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace flashvsr {

// "cpu", "cuda", "cuda:N"; throws Error(BadSettings) for anything else.
at::Device parse_device(const std::string& text);
// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16".
at::ScalarType parse_dtype(const std::string& text);
const char* dtype_name(at::ScalarType dtype);
// Throws Error(Device) when the device cannot be used in this process (no CUDA, index out of range).
void check_device(at::Device device);
// The CUDA caching allocator's settings for FlashVSR's streams, which hold a few very large tensors of fixed
// shapes for hours: expandable segments (each pool grows one mapping instead of caching fixed blocks, so
// that a 4K stream's ~65 GiB do not fragment into ~80 GiB reserved), unless PYTORCH_CUDA_ALLOC_CONF is set,
// which is then left as the user wrote it. Process-wide (like cuDNN's benchmark flag); Model::load calls it
// for a CUDA device. Returns the settings in effect and where they came from, for the log.
std::string configure_cuda_allocator();

// Which stage 3 a model has: Tiny (TCDecoder.ckpt) or Full (Wan2.1_VAE.pth).
enum class Variant { Tiny, Full };
const char* variant_name(Variant variant);  // "tiny" | "full"
// "auto" -> nullopt (from the files), "tiny", "full"; throws Error(BadSettings) for anything else.
std::optional<Variant> parse_variant(const std::string& text);
// The variant of a release-layout directory: `requested` when given (its decoder file must be there), else
// Tiny when TCDecoder.ckpt is there, else Full when Wan2.1_VAE.pth is. Error(NotFound) names the file(s)
// missing and what was expected.
Variant detect_variant(const std::string& dir, std::optional<Variant> requested);

// The largest output frame side a Stream takes (and so the largest frame the element negotiates).
constexpr int64_t kMaxFrameSide = 16384;

struct ModelConfig {
  Variant variant = Variant::Tiny;
  LqProjConfig lq_proj;
  DitConfig dit;
  DecoderConfig decoder;         // Tiny only
  VaeDecoderConfig vae_decoder;  // Full only
  int64_t context_len = 0;  // prompt tokens
  std::string describe() const;
};

// The four files of a release-layout directory, in memory.
struct ModelTensors {
  Variant variant = Variant::Tiny;
  TensorMap dit;       // diffusion_pytorch_model_streaming_dmd.safetensors
  TensorMap lq_proj;   // LQ_proj_in.ckpt
  TensorMap decoder;   // Tiny: TCDecoder.ckpt; Full: Wan2.1_VAE.pth (conv2.*, decoder.*; the encoder is never read)
  at::Tensor prompt;   // posi_prompt.pth: [1, L, text_dim]
};

struct LoadOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  // Precision "fp8": the DiT's per-token linear layers in e4m3 (fp8_linear.h), bf16 elsewhere (dtype must be
  // bf16; the device must pass check_fp8_support).
  bool fp8_linears = false;
  std::optional<Variant> variant;  // empty: from the directory's files (detect_variant)
  LogFn log;  // warnings (e.g. unknown extra tensors); may be empty
};

// The device and precision of a user's settings, "auto" included (the one place that policy lives):
// device "auto" is cuda:0 when CUDA is available in this process, else the CPU; precision "auto" is bf16
// on CUDA and fp32 on the CPU; "fp8" is bf16 with fp8_linears. Other values as parse_device / parse_dtype
// (Error(BadSettings) naming the value). The device is not checked here: Model::load does (check_device,
// check_fp8_support).
LoadOptions resolve_load_options(const std::string& device, const std::string& precision);
// The precision as the settings spell it: "fp8" for fp8_linears, else dtype_name(dtype).
const char* precision_name(at::ScalarType dtype, bool fp8_linears);
inline const char* precision_name(const LoadOptions& o) { return precision_name(o.dtype, o.fp8_linears); }

class Model {
 public:
  // Reads a release-layout directory (ReleaseLayout file names). Every dimension is inferred from the
  // tensor shapes; every expected tensor must be present with the right shape.
  static std::shared_ptr<const Model> load(const std::string& dir, const LoadOptions& options);
  // The same from tensors in memory (benchmarks, generated models); `name` stands for the directory in
  // error messages.
  static std::shared_ptr<const Model> from_tensors(ModelTensors tensors, const LoadOptions& options,
                                                   const std::string& name = "<memory>");

  const std::string& dir() const { return dir_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  bool fp8_linears() const { return dit_.fp8_linears(); }
  const char* precision() const { return precision_name(dtype_, fp8_linears()); }  // "fp8", "bf16", ...
  const ModelConfig& config() const { return config_; }
  const LqProjWeights& lq_proj() const { return lq_proj_; }
  const DitWeights& dit() const { return dit_; }
  const DitConstants& dit_constants() const { return dit_constants_; }
  Variant variant() const { return config_.variant; }
  const DecoderWeights& decoder() const { return decoder_; }          // Tiny
  const VaeDecoderWeights& vae_decoder() const { return vae_decoder_; }  // Full

 private:
  Model() = default;
  static std::shared_ptr<const Model> build(const std::string& dir, Variant variant, WeightFile dit, WeightFile lq,
                                            WeightFile dec, const std::string& prompt_name, at::Tensor prompt,
                                            const LoadOptions& o);
  std::string dir_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  ModelConfig config_;
  LqProjWeights lq_proj_;
  DitWeights dit_;
  DitConstants dit_constants_;
  DecoderWeights decoder_;
  VaeDecoderWeights vae_decoder_;
};

struct StreamOptions {
  int64_t in_width = 0, in_height = 0;    // LR frame size
  int64_t out_width = 0, out_height = 0;  // 0: round(in * scale)
  double scale = 4.0;
  LqVersion lq_version = LqVersion::V1_1;
  double sparse_ratio = 2.0;
  double topk_ratio = 0.0;  // > 0 overrides sparse_ratio (what the attention uses directly)
  double kv_ratio = 3.0;
  int64_t local_range = 11;
  ColorFix color_fix = ColorFix::AdaIN;
  uint64_t seed = 0;
  AttentionBackend attention = AttentionBackend::Auto;
  int64_t decoder_group = 1;  // latent frames per decoder pass (memory vs. parallelism)
  // true: PushResult::frames are float32 in [0, 255], (x + 1) * 127.5 clamped and not rounded
  // (unit_to_rgb255), for deep output formats (FrameConverter::from_rgb_float); the uint8 frames are their
  // round. false: uint8 (unit_to_u8).
  bool float_output = false;
};

// Noise for latent frames [first, first + count): [1, 16, count, Hp/8, Wp/8] (any device/dtype).
using NoiseSource = std::function<at::Tensor(int64_t first_latent, int64_t count)>;
// Intermediates per chunk: "lq_latents", "latents_in", "noise_pred", "latents" (latents_in - noise_pred, the
// decoder's input), "decoded" (before colour correction).
using ChunkObserver = std::function<void(int64_t chunk, const std::string& name, const at::Tensor& value)>;

// Stages of the engine, for profiling hooks.
// LqProjAhead: the LQ projection of chunk 0's clips as their frames arrive, before the chunk can run.
enum class Stage { Preprocess, LqProj, LqProjAhead, Dit, Decoder, Colour };
const char* stage_name(Stage stage);
// Called at the start (begin = true) and end of each stage on the calling thread; work may still be
// queued on the device (record device events to time it).
using StageHook = std::function<void(Stage stage, bool begin)>;

// Everything that changes while a stream runs. reset() returns it to a fresh stream.
struct StreamState {
  LqProjState lq_proj;
  DitState dit;
  DecoderState decoder;         // Tiny
  VaeDecoderState vae_decoder;  // Full
  int64_t next_chunk = 0;
  int64_t frames_in = 0;        // real frames pushed
  int64_t frames_padded = 0;    // copies of the last frame appended by finish()
  int64_t frames_out = 0;
  int64_t lq_first = 0;         // index of lq_frames.front()
  std::deque<at::Tensor> lq_frames;  // pending LQ frames [3, Hp, Wp] in [-1, 1], compute dtype
  // The LQ tokens (per linear layer) of chunk 0's first clips, projected as their frames arrived: its 25
  // frames take ~0.8 s to arrive at 30 fps, and its output waits for its 7 clips' projection otherwise.
  std::vector<std::vector<at::Tensor>> lq_ahead;
  std::optional<at::Generator> noise_generator;
  // The running chunk's noise [1, 16, f, h, w] (compute dtype, on the device) and RoPE rows, rewritten in
  // place from one chunk to the next of the same size (fixed addresses, as a CUDA graph replays them).
  at::Tensor noise;
  RopeTable rope;
  bool finished = false;

  void reset();
};

struct StreamStats {
  int64_t frames_in = 0, frames_out = 0, chunks = 0;
  double chunk_seconds_total = 0.0;  // host wall time spent running chunks (enqueue time on CUDA)
};

// What one push(), push_float(), push_resized() or finish() did.
struct PushResult {
  // The HR frames that became ready: [m, out_height, out_width, 3] on the device, uint8 (float32 in [0, 255]
  // with StreamOptions::float_output).
  at::Tensor frames;
  int64_t chunks = 0;        // chunks run by this call
  bool first_chunk = false;  // chunk 0 (the stream's first and slowest: 25 frames in, 21 out) was among them
  double seconds = 0.0;      // host wall time of those chunks (enqueue time on CUDA: the device may still run)
};

class Stream {
 public:
  Stream(std::shared_ptr<const Model> model, const StreamOptions& options);

  // lr: uint8 [n, in_height, in_width, 3] RGB on any device. Returns the HR frames that became ready,
  // uint8 [m, out_height, out_width, 3] on the model's device (m may be 0), and the chunks that made them.
  PushResult push(const at::Tensor& lr);
  // lr: floating [n, in_height, in_width, 3] RGB in [0, 255] (FrameConverter::to_rgb_float: 10/16-bit
  // frames), any device. Resized with push()'s Pillow taps, unquantised and unrounded
  // (BicubicResize::resize_float), then x / 255 * 2 - 1 as u8_to_unit does: integral frames with no resize
  // give push()'s result bit for bit. Returns as push().
  PushResult push_float(const at::Tensor& lr);
  // Same, for frames already resized to the output size (uint8 [n, out_height, out_width, 3]).
  PushResult push_resized(const at::Tensor& hr);
  // Pads with copies of the last frame, runs the remaining chunks and returns every frame not yet
  // returned; afterwards frames out == frames in. The stream then accepts no more frames until reset().
  PushResult finish();
  void reset();

  void set_noise_source(NoiseSource source) { noise_source_ = std::move(source); }
  void set_observer(ChunkObserver observer) { observer_ = std::move(observer); }
  void set_stage_hook(StageHook hook) { stage_hook_ = std::move(hook); }

  const StreamOptions& options() const { return options_; }
  const Model& model() const { return *model_; }
  int64_t out_width() const { return out_w_; }
  int64_t out_height() const { return out_h_; }
  int64_t padded_width() const { return pad_w_; }
  int64_t padded_height() const { return pad_h_; }
  // The attention this stream runs (backend resolved from Auto, with the reason for a slow path).
  const AttentionPlan& attention() const { return attention_; }
  StreamStats stats() const;
  // LQ frames held for later chunks (bounded: at most ~33 in the steady state).
  int64_t held_frames() const { return static_cast<int64_t>(state_.lq_frames.size()); }

 private:
  PushResult append(const at::Tensor& hr);  // uint8, or float32 in [0, 255]: [n, out_h, out_w, 3]
  PushResult run_ready_chunks();
  void project_clips_ahead();
  at::Tensor run_chunk(const ChunkPlan& plan);
  at::Tensor frames(int64_t begin, int64_t end) const;  // [1, 3, n, Hp, Wp]
  at::Tensor noise(int64_t first, int64_t count);
  PushResult nothing_ready() const;
  void mark(Stage stage, bool begin) const {
    if (stage_hook_) stage_hook_(stage, begin);
  }

  std::shared_ptr<const Model> model_;
  StreamOptions options_;
  int64_t out_w_ = 0, out_h_ = 0, pad_w_ = 0, pad_h_ = 0;
  std::optional<BicubicResize> resize_;
  AttentionPlan attention_;
  std::optional<Rope> rope_;
  NoiseSource noise_source_;
  ChunkObserver observer_;
  StageHook stage_hook_;
  StreamState state_;
  double chunk_seconds_total_ = 0.0;  // the sum of every PushResult::seconds since the last reset
};

}  // namespace flashvsr
