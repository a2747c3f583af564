// SPDX-License-Identifier: LGPL-2.1-or-later
// The flashvsr element's properties: their specs (ranges, defaults, blurbs, when they may change), their
// enum types, the values of the writable ones (Settings), and what those mean to the engine: the model
// request (directory, device, precision) and the options of a stream. The read-only ones are the
// element's counters (measurements.h).
#pragma once

#include "engine.h"
#include "tiling.h"

#include <gst/video/video.h>

#include <string>

G_BEGIN_DECLS

typedef enum {
  GST_FLASHVSR_MODEL_VERSION_1_0,
  GST_FLASHVSR_MODEL_VERSION_1_1,
} GstFlashVsrModelVersion;

typedef enum {
  GST_FLASHVSR_VARIANT_AUTO,
  GST_FLASHVSR_VARIANT_TINY,
  GST_FLASHVSR_VARIANT_FULL,
} GstFlashVsrVariant;

typedef enum {
  GST_FLASHVSR_PRECISION_AUTO,
  GST_FLASHVSR_PRECISION_BF16,
  GST_FLASHVSR_PRECISION_FP16,
  GST_FLASHVSR_PRECISION_FP32,
  GST_FLASHVSR_PRECISION_FP8,
} GstFlashVsrPrecision;

typedef enum {
  GST_FLASHVSR_COLOR_FIX_NONE,
  GST_FLASHVSR_COLOR_FIX_ADAIN,
  GST_FLASHVSR_COLOR_FIX_WAVELET,
} GstFlashVsrColorFix;

typedef enum {
  GST_FLASHVSR_ATTENTION_AUTO,
  GST_FLASHVSR_ATTENTION_REFERENCE,
  GST_FLASHVSR_ATTENTION_CUDA,
} GstFlashVsrAttention;

#define GST_TYPE_FLASHVSR_MODEL_VERSION (gst_flashvsr_model_version_get_type())
GType gst_flashvsr_model_version_get_type(void);
#define GST_TYPE_FLASHVSR_VARIANT (gst_flashvsr_variant_get_type())
GType gst_flashvsr_variant_get_type(void);
#define GST_TYPE_FLASHVSR_PRECISION (gst_flashvsr_precision_get_type())
GType gst_flashvsr_precision_get_type(void);
#define GST_TYPE_FLASHVSR_COLOR_FIX (gst_flashvsr_color_fix_get_type())
GType gst_flashvsr_color_fix_get_type(void);
#define GST_TYPE_FLASHVSR_ATTENTION (gst_flashvsr_attention_get_type())
GType gst_flashvsr_attention_get_type(void);

G_END_DECLS

#define DEFAULT_MODEL_DIR NULL
#define DEFAULT_MODEL_VERSION GST_FLASHVSR_MODEL_VERSION_1_1
#define DEFAULT_VARIANT GST_FLASHVSR_VARIANT_AUTO
#define DEFAULT_DEVICE "auto"
#define DEFAULT_PRECISION GST_FLASHVSR_PRECISION_AUTO
#define DEFAULT_SCALE 4.0
#define MIN_SCALE 1.0
#define MAX_SCALE 16.0
#define DEFAULT_SPARSE_RATIO 2.0
#define MIN_SPARSE_RATIO 0.01
#define MAX_SPARSE_RATIO 1000.0
#define DEFAULT_KV_RATIO 3.0
#define MIN_KV_RATIO 1.0
#define MAX_KV_RATIO 64.0
#define DEFAULT_LOCAL_RANGE 11
#define MIN_LOCAL_RANGE 1
#define MAX_LOCAL_RANGE 255
#define DEFAULT_COLOR_FIX GST_FLASHVSR_COLOR_FIX_ADAIN
#define DEFAULT_SEED 0
#define DEFAULT_ATTENTION GST_FLASHVSR_ATTENTION_AUTO
#define DEFAULT_NOISE_FILE NULL
#define DEFAULT_TILE_WIDTH 0
#define DEFAULT_TILE_HEIGHT 0
#define DEFAULT_TILE_OVERLAP 128
#define MAX_TILE_OVERLAP 4096
#define DEFAULT_MAX_MEMORY 0.0

namespace gstflashvsr {

enum {
  PROP_0,
  PROP_MODEL_DIR,
  PROP_MODEL_VERSION,
  PROP_DEVICE,
  PROP_PRECISION,
  PROP_SCALE,
  PROP_SPARSE_RATIO,
  PROP_KV_RATIO,
  PROP_LOCAL_RANGE,
  PROP_COLOR_FIX,
  PROP_SEED,
  PROP_ATTENTION,
  PROP_NOISE_FILE,
  PROP_VARIANT,
  PROP_FRAMES_IN,
  PROP_FRAMES_OUT,
  PROP_CHUNKS,
  PROP_MEAN_CHUNK_MS,
  PROP_THROUGHPUT,
  PROP_FRAMES_DROPPED,
  PROP_TILE_WIDTH,
  PROP_TILE_HEIGHT,
  PROP_TILE_OVERLAP,
  PROP_MAX_MEMORY,
};

// Installs every property of the element's class (and marks the enum types as plugin API).
void install_properties(GObjectClass* klass);

struct Settings {
  std::string model_dir;  // "" = not set
  GstFlashVsrModelVersion model_version = DEFAULT_MODEL_VERSION;
  GstFlashVsrVariant variant = DEFAULT_VARIANT;
  std::string device = DEFAULT_DEVICE;
  GstFlashVsrPrecision precision = DEFAULT_PRECISION;
  double scale = DEFAULT_SCALE;
  double sparse_ratio = DEFAULT_SPARSE_RATIO;
  double kv_ratio = DEFAULT_KV_RATIO;
  int local_range = DEFAULT_LOCAL_RANGE;
  GstFlashVsrColorFix color_fix = DEFAULT_COLOR_FIX;
  guint64 seed = DEFAULT_SEED;
  GstFlashVsrAttention attention = DEFAULT_ATTENTION;
  std::string noise_file;  // "" = seeded noise
  int tile_width = DEFAULT_TILE_WIDTH, tile_height = DEFAULT_TILE_HEIGHT;  // output px; 0 = not split
  int tile_overlap = DEFAULT_TILE_OVERLAP;
  double max_memory = DEFAULT_MAX_MEMORY;  // GiB; 0 = no limit
};

// Sets the writable property `prop_id` (false for another id). *size_changed tells whether the output
// size of the settings changed (scale), which renegotiates.
bool set_setting(Settings& s, guint prop_id, const GValue* value, bool* size_changed);
// Reads the writable property `prop_id` (false for another id).
bool get_setting(const Settings& s, guint prop_id, GValue* value);

// The variant, device and precision the settings ask for ("auto" resolved by the engine library's policy:
// the variant from the directory's files when the model loads, the device and precision here); throws
// flashvsr::Error(BadSettings) for a device string it does not know.
flashvsr::LoadOptions load_options(const Settings& s);

// What an engine stream is made from: its options and where its noise comes from.
struct StreamSpec {
  flashvsr::StreamOptions options;
  std::string noise_file;  // "" = the seeded noise of options.seed
  flashvsr::TileOptions tiling;  // as set; with max_memory > 0 and no tile size, chosen by the memory model
  double max_memory_gib = 0.0;
  // Whether `other` makes the same stream (the output size is explicit, so `scale` does not count).
  bool same_stream(const StreamSpec& other) const;
};

// The stream the settings make for the negotiated input and output video.
StreamSpec stream_spec(const Settings& s, const GstVideoInfo* in_info, const GstVideoInfo* out_info);

}  // namespace gstflashvsr
