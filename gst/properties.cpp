// SPDX-License-Identifier: LGPL-2.1-or-later
#include "properties.h"

namespace {

// The values of the enum properties, with the nicks gst-launch-1.0 takes.
const GEnumValue kModelVersions[] = {
    {GST_FLASHVSR_MODEL_VERSION_1_0, "FlashVSR v1.0 (LQ projection caches the current clip)", "1.0"},
    {GST_FLASHVSR_MODEL_VERSION_1_1, "FlashVSR v1.1 (causal LQ projection)", "1.1"},
    {0, nullptr, nullptr}};
const GEnumValue kVariants[] = {
    {GST_FLASHVSR_VARIANT_AUTO, "From the model directory: TCDecoder.ckpt is Tiny (also when Wan2.1_VAE.pth is there), "
                                "Wan2.1_VAE.pth alone is Full", "auto"},
    {GST_FLASHVSR_VARIANT_TINY, "FlashVSR-Tiny: the tiny conditional decoder (TCDecoder.ckpt)", "tiny"},
    {GST_FLASHVSR_VARIANT_FULL, "FlashVSR (Full): the Wan2.1 VAE decoder (Wan2.1_VAE.pth), higher quality, "
                                "much more compute", "full"},
    {0, nullptr, nullptr}};
const GEnumValue kPrecisions[] = {{GST_FLASHVSR_PRECISION_AUTO, "bfloat16 on CUDA devices, float32 on the CPU", "auto"},
                                  {GST_FLASHVSR_PRECISION_BF16, "bfloat16", "bf16"},
                                  {GST_FLASHVSR_PRECISION_FP16, "float16", "fp16"},
                                  {GST_FLASHVSR_PRECISION_FP32, "float32", "fp32"},
                                  {GST_FLASHVSR_PRECISION_FP8,
                                   "e4m3 DiT linear layers (QKV, output, cross q/o, FFN), bfloat16 elsewhere; "
                                   "GPUs of compute capability 8.9 or newer (Ada, Hopper)",
                                   "fp8"},
                                  {0, nullptr, nullptr}};
const GEnumValue kColorFixes[] = {
    {GST_FLASHVSR_COLOR_FIX_NONE, "No colour correction", "none"},
    {GST_FLASHVSR_COLOR_FIX_ADAIN, "Per-frame mean and deviation matched to the input (AdaIN)", "adain"},
    {GST_FLASHVSR_COLOR_FIX_WAVELET, "Low frequencies taken from the input (wavelet)", "wavelet"},
    {0, nullptr, nullptr}};
const GEnumValue kAttentions[] = {
    {GST_FLASHVSR_ATTENTION_AUTO, "The CUDA kernel on CUDA devices when built, else the reference", "auto"},
    {GST_FLASHVSR_ATTENTION_REFERENCE, "Exact reference implementation (any device)", "reference"},
    {GST_FLASHVSR_ATTENTION_CUDA, "Block-sparse CUDA kernel (CUDA builds and devices only)", "cuda"},
    {0, nullptr, nullptr}};

// The enum type `name` of `values`, registered once (thread-safe) in *type.
GType enum_type(GType* type, const char* name, const GEnumValue* values) {
  if (g_once_init_enter(type)) g_once_init_leave(type, g_enum_register_static(name, values));
  return *type;
}

GType model_version_type = 0, variant_type = 0, precision_type = 0, color_fix_type = 0, attention_type = 0;

}  // namespace

GType gst_flashvsr_model_version_get_type(void) {
  return enum_type(&model_version_type, "GstFlashVsrModelVersion", kModelVersions);
}
GType gst_flashvsr_variant_get_type(void) { return enum_type(&variant_type, "GstFlashVsrVariant", kVariants); }
GType gst_flashvsr_precision_get_type(void) { return enum_type(&precision_type, "GstFlashVsrPrecision", kPrecisions); }
GType gst_flashvsr_color_fix_get_type(void) { return enum_type(&color_fix_type, "GstFlashVsrColorFix", kColorFixes); }
GType gst_flashvsr_attention_get_type(void) { return enum_type(&attention_type, "GstFlashVsrAttention", kAttentions); }

namespace gstflashvsr {

void install_properties(GObjectClass* klass) {
  const auto rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const auto ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const auto playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  const auto ro = static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);

  g_object_class_install_property(
      klass, PROP_MODEL_DIR,
      g_param_spec_string("model-dir", "Model directory",
                          "Directory of a FlashVSR release (diffusion_pytorch_model_streaming_dmd.safetensors, "
                          "LQ_proj_in.ckpt, posi_prompt.pth, and TCDecoder.ckpt for Tiny or Wan2.1_VAE.pth for "
                          "Full); loaded when going to READY",
                          DEFAULT_MODEL_DIR, ready));
  g_object_class_install_property(
      klass, PROP_MODEL_VERSION,
      g_param_spec_enum("model-version", "Model version",
                        "Release the weights belong to (decides how the LQ projection caches frames; not "
                        "detectable from the weights)",
                        GST_TYPE_FLASHVSR_MODEL_VERSION, DEFAULT_MODEL_VERSION, ready));
  g_object_class_install_property(
      klass, PROP_VARIANT,
      g_param_spec_enum("variant", "Variant",
                        "Which FlashVSR the model directory is run as (its stage-3 decoder); the files of the "
                        "variant asked for must be there",
                        GST_TYPE_FLASHVSR_VARIANT, DEFAULT_VARIANT, ready));
  g_object_class_install_property(
      klass, PROP_DEVICE,
      g_param_spec_string("device", "Device",
                          "Where the model runs: cpu, cuda, cuda:N, or auto (cuda when available, else cpu); "
                          "checked when going to READY",
                          DEFAULT_DEVICE, ready));
  g_object_class_install_property(klass, PROP_PRECISION,
                                  g_param_spec_enum("precision", "Precision", "Compute precision of the model",
                                                    GST_TYPE_FLASHVSR_PRECISION, DEFAULT_PRECISION, ready));
  g_object_class_install_property(
      klass, PROP_SCALE,
      g_param_spec_double("scale", "Scale",
                          "Output size over input size, unless downstream fixes the output width and height; a "
                          "change renegotiates",
                          MIN_SCALE, MAX_SCALE, DEFAULT_SCALE, playing));
  g_object_class_install_property(
      klass, PROP_SPARSE_RATIO,
      g_param_spec_double("sparse-ratio", "Sparse ratio",
                          "Share of attention windows kept (released default 2.0; 1.5 is faster); applies from "
                          "the next stream",
                          MIN_SPARSE_RATIO, MAX_SPARSE_RATIO, DEFAULT_SPARSE_RATIO, playing));
  g_object_class_install_property(
      klass, PROP_KV_RATIO,
      g_param_spec_double("kv-ratio", "KV ratio",
                          "Number of past latent slices kept in the attention cache (its integer part); "
                          "applies from the next stream",
                          MIN_KV_RATIO, MAX_KV_RATIO, DEFAULT_KV_RATIO, playing));
  g_object_class_install_property(
      klass, PROP_LOCAL_RANGE,
      g_param_spec_int("local-range", "Local range",
                       "Side of the window neighbourhood each attention window may see (9 is sharper); "
                       "applies from the next stream",
                       MIN_LOCAL_RANGE, MAX_LOCAL_RANGE, DEFAULT_LOCAL_RANGE, playing));
  g_object_class_install_property(
      klass, PROP_COLOR_FIX,
      g_param_spec_enum("color-fix", "Colour fix",
                        "Colour correction of the output against the input; applies from the next stream",
                        GST_TYPE_FLASHVSR_COLOR_FIX, DEFAULT_COLOR_FIX, playing));
  g_object_class_install_property(
      klass, PROP_SEED,
      g_param_spec_uint64("seed", "Seed",
                          "Seed of the diffusion noise (the same seed gives the same output); applies from the "
                          "next stream",
                          0, G_MAXUINT64, DEFAULT_SEED, playing));
  g_object_class_install_property(
      klass, PROP_ATTENTION,
      g_param_spec_enum("attention", "Attention backend",
                        "Implementation of the block-sparse attention; applies from the next stream",
                        GST_TYPE_FLASHVSR_ATTENTION, DEFAULT_ATTENTION, playing));
  g_object_class_install_property(
      klass, PROP_NOISE_FILE,
      g_param_spec_string("noise-file", "Noise file",
                          "safetensors file whose 'noise' tensor F32 [1, 16, T, H/8, W/8] (H, W: output size "
                          "rounded up to 128) replaces the seeded noise, to reproduce a reference run (e.g. a "
                          "golden fixture's input.safetensors); T must cover the stream. Applies from the next "
                          "stream",
                          DEFAULT_NOISE_FILE, playing));
  // Spatial tiling (docs/element.md "Tiling").
  g_object_class_install_property(
      klass, PROP_TILE_WIDTH,
      g_param_spec_int("tile-width", "Tile width",
                       "Width of each tile in output pixels, a multiple of 128 (0: the frame is not split "
                       "across); each tile is an engine stream of its own, blended into the frame; applies "
                       "from the next stream",
                       0, (gint)flashvsr::kMaxFrameSide, DEFAULT_TILE_WIDTH, playing));
  g_object_class_install_property(
      klass, PROP_TILE_HEIGHT,
      g_param_spec_int("tile-height", "Tile height",
                       "Height of each tile in output pixels, a multiple of 128 (0: the frame is not split "
                       "down); applies from the next stream",
                       0, (gint)flashvsr::kMaxFrameSide, DEFAULT_TILE_HEIGHT, playing));
  g_object_class_install_property(
      klass, PROP_TILE_OVERLAP,
      g_param_spec_int("tile-overlap", "Tile overlap",
                       "Output pixels neighbouring tiles share at least (blended across with a raised cosine); "
                       "applies from the next stream",
                       0, MAX_TILE_OVERLAP, DEFAULT_TILE_OVERLAP, playing));
  g_object_class_install_property(
      klass, PROP_MAX_MEMORY,
      g_param_spec_double("max-memory", "Maximum device memory",
                          "With tile-width and tile-height 0: GiB of device memory the stream may take; the "
                          "fewest tiles whose estimate fits are chosen (memory model of the released model in "
                          "bf16, docs/element.md); 0: no limit, untiled. Applies from the next stream",
                          0.0, 1e6, DEFAULT_MAX_MEMORY, playing));
  // The element's counters (Measurements), read-only.
  auto counter = [&](guint id, const char* name, const char* nick, const char* blurb) {
    g_object_class_install_property(klass, id, g_param_spec_uint64(name, nick, blurb, 0, G_MAXUINT64, 0, ro));
  };
  counter(PROP_FRAMES_IN, "frames-in", "Frames in", "Frames given to the engine since going to PAUSED");
  counter(PROP_FRAMES_OUT, "frames-out", "Frames out", "Upscaled frames produced since going to PAUSED");
  counter(PROP_CHUNKS, "chunks", "Chunks", "Engine chunks run since going to PAUSED (25 frames, then 8)");
  g_object_class_install_property(
      klass, PROP_MEAN_CHUNK_MS,
      g_param_spec_double("mean-chunk-ms", "Mean chunk time",
                          "Mean wall time per chunk in milliseconds, measured by the element from the upload "
                          "until the upscaled frames are ready on the device (0 before the first chunk)",
                          0.0, G_MAXDOUBLE, 0.0, ro));
  // Slower than a live source (LivePacer, docs/element.md).
  g_object_class_install_property(
      klass, PROP_THROUGHPUT,
      g_param_spec_double("throughput", "Throughput",
                          "Frames per second the element sustains, measured over its own work in steady chunks "
                          "(waiting downstream does not count); on a live pipeline below the framerate it "
                          "posts a warning, and with qos=true drops inputs to match it (0 until measured)",
                          0.0, G_MAXDOUBLE, 0.0, ro));
  counter(PROP_FRAMES_DROPPED, "frames-dropped", "Frames dropped",
          "Input frames dropped before the engine to hold real time on a live pipeline (qos=true) since "
          "going to PAUSED");

  for (GType type : {GST_TYPE_FLASHVSR_MODEL_VERSION, GST_TYPE_FLASHVSR_VARIANT, GST_TYPE_FLASHVSR_PRECISION, GST_TYPE_FLASHVSR_COLOR_FIX,
                     GST_TYPE_FLASHVSR_ATTENTION})
    gst_type_mark_as_plugin_api(type, static_cast<GstPluginAPIFlags>(0));
}

namespace {

std::string string_or(const GValue* value, const char* fallback) {
  const gchar* s = g_value_get_string(value);
  return s ? s : fallback;
}

}  // namespace

bool set_setting(Settings& s, guint prop_id, const GValue* value, bool* size_changed) {
  *size_changed = false;
  switch (prop_id) {
    case PROP_MODEL_DIR: s.model_dir = string_or(value, ""); break;
    case PROP_MODEL_VERSION: s.model_version = static_cast<GstFlashVsrModelVersion>(g_value_get_enum(value)); break;
    case PROP_VARIANT: s.variant = static_cast<GstFlashVsrVariant>(g_value_get_enum(value)); break;
    case PROP_DEVICE: s.device = string_or(value, DEFAULT_DEVICE); break;
    case PROP_PRECISION: s.precision = static_cast<GstFlashVsrPrecision>(g_value_get_enum(value)); break;
    case PROP_SCALE: {
      const double scale = g_value_get_double(value);
      *size_changed = scale != s.scale;
      s.scale = scale;
      break;
    }
    case PROP_SPARSE_RATIO: s.sparse_ratio = g_value_get_double(value); break;
    case PROP_KV_RATIO: s.kv_ratio = g_value_get_double(value); break;
    case PROP_LOCAL_RANGE: s.local_range = g_value_get_int(value); break;
    case PROP_COLOR_FIX: s.color_fix = static_cast<GstFlashVsrColorFix>(g_value_get_enum(value)); break;
    case PROP_SEED: s.seed = g_value_get_uint64(value); break;
    case PROP_ATTENTION: s.attention = static_cast<GstFlashVsrAttention>(g_value_get_enum(value)); break;
    case PROP_NOISE_FILE: s.noise_file = string_or(value, ""); break;
    case PROP_TILE_WIDTH: s.tile_width = g_value_get_int(value); break;
    case PROP_TILE_HEIGHT: s.tile_height = g_value_get_int(value); break;
    case PROP_TILE_OVERLAP: s.tile_overlap = g_value_get_int(value); break;
    case PROP_MAX_MEMORY: s.max_memory = g_value_get_double(value); break;
    default: return false;
  }
  return true;
}

bool get_setting(const Settings& s, guint prop_id, GValue* value) {
  switch (prop_id) {
    case PROP_MODEL_DIR: g_value_set_string(value, s.model_dir.empty() ? nullptr : s.model_dir.c_str()); break;
    case PROP_MODEL_VERSION: g_value_set_enum(value, s.model_version); break;
    case PROP_VARIANT: g_value_set_enum(value, s.variant); break;
    case PROP_DEVICE: g_value_set_string(value, s.device.c_str()); break;
    case PROP_PRECISION: g_value_set_enum(value, s.precision); break;
    case PROP_SCALE: g_value_set_double(value, s.scale); break;
    case PROP_SPARSE_RATIO: g_value_set_double(value, s.sparse_ratio); break;
    case PROP_KV_RATIO: g_value_set_double(value, s.kv_ratio); break;
    case PROP_LOCAL_RANGE: g_value_set_int(value, s.local_range); break;
    case PROP_COLOR_FIX: g_value_set_enum(value, s.color_fix); break;
    case PROP_SEED: g_value_set_uint64(value, s.seed); break;
    case PROP_ATTENTION: g_value_set_enum(value, s.attention); break;
    case PROP_NOISE_FILE: g_value_set_string(value, s.noise_file.empty() ? nullptr : s.noise_file.c_str()); break;
    case PROP_TILE_WIDTH: g_value_set_int(value, s.tile_width); break;
    case PROP_TILE_HEIGHT: g_value_set_int(value, s.tile_height); break;
    case PROP_TILE_OVERLAP: g_value_set_int(value, s.tile_overlap); break;
    case PROP_MAX_MEMORY: g_value_set_double(value, s.max_memory); break;
    default: return false;
  }
  return true;
}

flashvsr::LoadOptions load_options(const Settings& s) {
  // The precision's nick ("auto", "bf16", "fp16", "fp32", "fp8") is what the library's policy reads.
  auto* precisions = static_cast<GEnumClass*>(g_type_class_ref(GST_TYPE_FLASHVSR_PRECISION));
  const std::string precision = g_enum_get_value(precisions, s.precision)->value_nick;
  g_type_class_unref(precisions);
  flashvsr::LoadOptions o = flashvsr::resolve_load_options(s.device, precision);
  if (s.variant != GST_FLASHVSR_VARIANT_AUTO)
    o.variant = s.variant == GST_FLASHVSR_VARIANT_FULL ? flashvsr::Variant::Full : flashvsr::Variant::Tiny;
  return o;
}

bool StreamSpec::same_stream(const StreamSpec& other) const {
  const flashvsr::StreamOptions &a = options, &b = other.options;
  return a.in_width == b.in_width && a.in_height == b.in_height && a.out_width == b.out_width &&
         a.out_height == b.out_height && a.lq_version == b.lq_version && a.sparse_ratio == b.sparse_ratio &&
         a.kv_ratio == b.kv_ratio && a.local_range == b.local_range && a.color_fix == b.color_fix &&
         a.seed == b.seed && a.attention == b.attention && noise_file == other.noise_file &&
         tiling == other.tiling && max_memory_gib == other.max_memory_gib;
}

StreamSpec stream_spec(const Settings& s, const GstVideoInfo* in_info, const GstVideoInfo* out_info) {
  StreamSpec spec;
  flashvsr::StreamOptions& o = spec.options;
  o.in_width = GST_VIDEO_INFO_WIDTH(in_info);
  o.in_height = GST_VIDEO_INFO_HEIGHT(in_info);
  o.out_width = GST_VIDEO_INFO_WIDTH(out_info);
  o.out_height = GST_VIDEO_INFO_HEIGHT(out_info);
  o.scale = s.scale;
  o.lq_version = s.model_version == GST_FLASHVSR_MODEL_VERSION_1_0 ? flashvsr::LqVersion::V1_0
                                                                  : flashvsr::LqVersion::V1_1;
  o.sparse_ratio = s.sparse_ratio;
  o.kv_ratio = s.kv_ratio;
  o.local_range = s.local_range;
  switch (s.color_fix) {
    case GST_FLASHVSR_COLOR_FIX_NONE: o.color_fix = flashvsr::ColorFix::None; break;
    case GST_FLASHVSR_COLOR_FIX_ADAIN: o.color_fix = flashvsr::ColorFix::AdaIN; break;
    case GST_FLASHVSR_COLOR_FIX_WAVELET: o.color_fix = flashvsr::ColorFix::Wavelet; break;
  }
  o.seed = s.seed;
  switch (s.attention) {
    case GST_FLASHVSR_ATTENTION_AUTO: o.attention = flashvsr::AttentionBackend::Auto; break;
    case GST_FLASHVSR_ATTENTION_REFERENCE: o.attention = flashvsr::AttentionBackend::Reference; break;
    case GST_FLASHVSR_ATTENTION_CUDA: o.attention = flashvsr::AttentionBackend::Cuda; break;
  }
  spec.noise_file = s.noise_file;
  spec.tiling = flashvsr::TileOptions{s.tile_width, s.tile_height, s.tile_overlap};
  spec.max_memory_gib = s.max_memory;
  return spec;
}

}  // namespace gstflashvsr
