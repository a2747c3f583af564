// SPDX-License-Identifier: LGPL-2.1-or-later
/**
 * SECTION:element-flashvsr
 * @title: flashvsr
 * @short_description: streaming FlashVSR-Tiny video super-resolution
 *
 * Upscales raw video with the FlashVSR-Tiny one-step diffusion model (LibTorch, CPU or CUDA). The
 * model reads the video as a stream: the first output frame needs 25 input frames, after which every 8
 * input frames give 8 output frames. Exactly one output buffer is pushed per input buffer, with that
 * input's timestamps, so the element adds 24 frames (plus processing time) of latency.
 *
 * The output size is #GstFlashVsr:scale times the input size unless downstream fixes a width and
 * height, which are then produced exactly. Colour conversion to and from RGB runs on the model's device.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
 *     flashvsr model-dir=/models/FlashVSR-v1.1 device=cuda ! videoconvert ! autovideosink
 * ]| Upscales a clip four times on the first CUDA device.
 * |[
 * gst-launch-1.0 videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48 ! \
 *     flashvsr model-dir=/models/tiny device=cpu precision=fp32 ! video/x-raw,width=200,height=150 ! \
 *     videoconvert ! pngenc ! multifilesink location=frame%03d.png
 * ]| A downstream-fixed, non-integer scale on the CPU.
 *
 * Since: 0.1
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstflashvsr.h"

#include "engine.h"
#include "frame_format.h"
#include "model_cache.h"
#include "io/safetensors.h"

#include <gst/video/video.h>

#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

GST_DEBUG_CATEGORY_STATIC (gst_flashvsr_debug);
#define GST_CAT_DEFAULT gst_flashvsr_debug
GST_DEBUG_CATEGORY_STATIC (gst_flashvsr_model_debug);

/* The engine's streaming schedule (spec section 2): the output of frame i is ready once frame i + 24
 * arrived (25-frame first window, then 8-frame windows). */
#define LOOKAHEAD_FRAMES 24
/* Latency frame duration when the caps carry no framerate (0/1, variable). */
#define FALLBACK_FPS_N 25
#define FALLBACK_FPS_D 1
/* A new processing estimate is announced (LATENCY message) when it moved by more than this fraction. */
#define LATENCY_CHANGE_RATIO 0.2
/* The engine refuses output frames larger than this per side. */
#define MAX_OUTPUT_SIDE 16384

/* ------------------------------------------------------------------------------------------------ */
/* Enumerations                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

typedef enum
{
  GST_FLASHVSR_MODEL_VERSION_1_0,
  GST_FLASHVSR_MODEL_VERSION_1_1,
} GstFlashVsrModelVersion;

typedef enum
{
  GST_FLASHVSR_PRECISION_AUTO,
  GST_FLASHVSR_PRECISION_BF16,
  GST_FLASHVSR_PRECISION_FP16,
  GST_FLASHVSR_PRECISION_FP32,
} GstFlashVsrPrecision;

typedef enum
{
  GST_FLASHVSR_COLOR_FIX_NONE,
  GST_FLASHVSR_COLOR_FIX_ADAIN,
  GST_FLASHVSR_COLOR_FIX_WAVELET,
} GstFlashVsrColorFix;

typedef enum
{
  GST_FLASHVSR_ATTENTION_AUTO,
  GST_FLASHVSR_ATTENTION_REFERENCE,
  GST_FLASHVSR_ATTENTION_CUDA,
} GstFlashVsrAttention;

#define GST_TYPE_FLASHVSR_MODEL_VERSION (gst_flashvsr_model_version_get_type ())
static GType
gst_flashvsr_model_version_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FLASHVSR_MODEL_VERSION_1_0,
        "FlashVSR v1.0 (LQ projection caches the current clip)", "1.0"},
    {GST_FLASHVSR_MODEL_VERSION_1_1,
        "FlashVSR v1.1 (causal LQ projection)", "1.1"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFlashVsrModelVersion", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_FLASHVSR_PRECISION (gst_flashvsr_precision_get_type ())
static GType
gst_flashvsr_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FLASHVSR_PRECISION_AUTO,
        "bfloat16 on CUDA devices, float32 on the CPU", "auto"},
    {GST_FLASHVSR_PRECISION_BF16, "bfloat16", "bf16"},
    {GST_FLASHVSR_PRECISION_FP16, "float16", "fp16"},
    {GST_FLASHVSR_PRECISION_FP32, "float32", "fp32"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFlashVsrPrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_FLASHVSR_COLOR_FIX (gst_flashvsr_color_fix_get_type ())
static GType
gst_flashvsr_color_fix_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FLASHVSR_COLOR_FIX_NONE, "No colour correction", "none"},
    {GST_FLASHVSR_COLOR_FIX_ADAIN,
        "Per-frame mean and deviation matched to the input (AdaIN)", "adain"},
    {GST_FLASHVSR_COLOR_FIX_WAVELET,
        "Low frequencies taken from the input (wavelet)", "wavelet"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFlashVsrColorFix", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_FLASHVSR_ATTENTION (gst_flashvsr_attention_get_type ())
static GType
gst_flashvsr_attention_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FLASHVSR_ATTENTION_AUTO,
        "The CUDA kernel on CUDA devices when built, else the reference", "auto"},
    {GST_FLASHVSR_ATTENTION_REFERENCE,
        "Exact reference implementation (any device)", "reference"},
    {GST_FLASHVSR_ATTENTION_CUDA,
        "Block-sparse CUDA kernel (CUDA builds and devices only)", "cuda"},
    {0, NULL, NULL},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFlashVsrAttention", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

/* ------------------------------------------------------------------------------------------------ */
/* Properties                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

enum
{
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
  PROP_FRAMES_IN,
  PROP_FRAMES_OUT,
  PROP_CHUNKS,
  PROP_MEAN_CHUNK_MS,
};

#define DEFAULT_MODEL_DIR NULL
#define DEFAULT_MODEL_VERSION GST_FLASHVSR_MODEL_VERSION_1_1
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

/* ------------------------------------------------------------------------------------------------ */
/* Pads                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

#define FLASHVSR_FORMATS "{ RGB, RGBx, BGRx, RGBA, BGRA, I420, NV12 }"
#define FLASHVSR_CAPS \
  "video/x-raw, format = (string) " FLASHVSR_FORMATS ", " \
  "width = (int) [ 1, 16384 ], height = (int) [ 1, 16384 ], " \
  "framerate = (fraction) [ 0, max ], interlace-mode = (string) progressive"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (FLASHVSR_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (FLASHVSR_CAPS));

/* ------------------------------------------------------------------------------------------------ */
/* Instance                                                                                         */
/* ------------------------------------------------------------------------------------------------ */

namespace {

struct Settings
{
  std::string model_dir;
  GstFlashVsrModelVersion model_version = DEFAULT_MODEL_VERSION;
  std::string device = DEFAULT_DEVICE;
  GstFlashVsrPrecision precision = DEFAULT_PRECISION;
  double scale = DEFAULT_SCALE;
  double sparse_ratio = DEFAULT_SPARSE_RATIO;
  double kv_ratio = DEFAULT_KV_RATIO;
  int local_range = DEFAULT_LOCAL_RANGE;
  GstFlashVsrColorFix color_fix = DEFAULT_COLOR_FIX;
  guint64 seed = DEFAULT_SEED;
  GstFlashVsrAttention attention = DEFAULT_ATTENTION;
  std::string noise_file;       /* "" = seeded noise */
};

struct EventUnref
{
  void operator() (GstEvent * event) const
  {
    gst_event_unref (event);
  }
};
using EventPtr = std::unique_ptr < GstEvent, EventUnref >;

/* What an output buffer takes over from its input buffer. */
struct FrameMeta
{
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  GstClockTime duration = GST_CLOCK_TIME_NONE;
  guint64 offset = GST_BUFFER_OFFSET_NONE;
  guint64 offset_end = GST_BUFFER_OFFSET_NONE;
  guint flags = 0;
};

/* An input frame inside the engine, or a GAP event that arrived after it (kept in order). */
struct Pending
{
  EventPtr event;
  FrameMeta meta;
};

/* An upscaled frame (packed planes on the host) or an event, in push order. */
struct Ready
{
  EventPtr event;
  FrameMeta meta;
  at::Tensor packed;            /* uint8 [layout size] on the CPU */
};

/* Buffer flags copied from an input to its output: all but GAP (the output is not neutral data) and
 * TAG_MEMORY (a property of the memory, not of the frame). */
const guint kCarriedFlags = ~((guint) GST_MINI_OBJECT_FLAG_LAST - 1) &
    ~((guint) GST_BUFFER_FLAG_GAP | (guint) GST_BUFFER_FLAG_TAG_MEMORY);

}  // namespace

struct GstFlashVsrPrivate
{
  /* Guards settings, model, counters and latency figures: read by other threads (properties,
   * LATENCY queries). Never held while pushing downstream or while the engine runs. */
  std::mutex lock;
  Settings settings;
  /* model-dir/device/precision changed in READY: reload when going to PAUSED. */
  bool model_stale = false;
  std::shared_ptr < const flashvsr::Model > model;

  guint64 frames_in = 0, frames_out = 0, chunks = 0;
  double chunk_ms_total = 0.0;
  /* The time of a stream's first (and slowest) chunk: timed on a scratch stream at negotiation when
   * upstream is live, then the measured first chunk of each stream. 0 while unknown. */
  double first_chunk_ms = 0.0;
  GstClockTime frame_duration = GST_CLOCK_TIME_NONE;   /* of the negotiated framerate */
  GstClockTime announced_processing = 0;        /* last processing estimate announced */

  /* Streaming state. Only the streaming thread touches it (buffers, serialized events, set_caps),
   * or a state change once streaming has stopped (start/stop), so it needs no lock. */
  std::unique_ptr < flashvsr::Stream > stream;
  std::optional < flashvsr::FrameConverter > in_conv, out_conv;
  GstVideoInfo in_info, out_info;
  std::deque < Pending > pending;
  std::deque < Ready > ready;
  int64_t stream_frames = 0;    /* frames pushed into the engine since the last reset */
  /* Caps were accepted (in_info/out_info hold them): a failed stream can be set up again from them. */
  bool negotiated = false;
  std::string stream_noise_file;        /* the noise-file the stream was made with */
  bool discont_next = true;     /* mark the next frame's output DISCONT (first after a reset) */
};

struct _GstFlashVsr
{
  GstBaseTransform parent;
  GstFlashVsrPrivate *priv;
};

#define gst_flashvsr_parent_class parent_class
G_DEFINE_TYPE (GstFlashVsr, gst_flashvsr, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE (flashvsr, "flashvsr", GST_RANK_NONE,
    GST_TYPE_FLASHVSR);

static void gst_flashvsr_finalize (GObject * object);
static void gst_flashvsr_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_flashvsr_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static GstStateChangeReturn gst_flashvsr_change_state (GstElement * element,
    GstStateChange transition);
static gboolean gst_flashvsr_start (GstBaseTransform * trans);
static gboolean gst_flashvsr_stop (GstBaseTransform * trans);
static GstCaps *gst_flashvsr_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static GstCaps *gst_flashvsr_fixate_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * othercaps);
static gboolean gst_flashvsr_set_caps (GstBaseTransform * trans,
    GstCaps * incaps, GstCaps * outcaps);
static gboolean gst_flashvsr_propose_allocation (GstBaseTransform * trans,
    GstQuery * decide_query, GstQuery * query);
static gboolean gst_flashvsr_decide_allocation (GstBaseTransform * trans,
    GstQuery * query);
static gboolean gst_flashvsr_query (GstBaseTransform * trans,
    GstPadDirection direction, GstQuery * query);
static gboolean gst_flashvsr_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_flashvsr_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input);
static GstFlowReturn gst_flashvsr_generate_output (GstBaseTransform * trans,
    GstBuffer ** outbuf);

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

namespace {

std::optional < flashvsr::PixelFormat > pixel_format_of (GstVideoFormat format)
{
  switch (format) {
    case GST_VIDEO_FORMAT_RGB:
      return flashvsr::PixelFormat::RGB;
    case GST_VIDEO_FORMAT_RGBx:
      return flashvsr::PixelFormat::RGBx;
    case GST_VIDEO_FORMAT_BGRx:
      return flashvsr::PixelFormat::BGRx;
    case GST_VIDEO_FORMAT_RGBA:
      return flashvsr::PixelFormat::RGBA;
    case GST_VIDEO_FORMAT_BGRA:
      return flashvsr::PixelFormat::BGRA;
    case GST_VIDEO_FORMAT_I420:
      return flashvsr::PixelFormat::I420;
    case GST_VIDEO_FORMAT_NV12:
      return flashvsr::PixelFormat::NV12;
    default:
      return std::nullopt;
  }
}

/* gst_video_info_from_caps, keeping an explicit chroma-site: before GStreamer 1.26 it is replaced by the
 * default for the height when the caps carry no colorimetry. */
static gboolean
video_info_from_caps (GstVideoInfo * info, const GstCaps * caps)
{
  if (!gst_video_info_from_caps (info, caps))
    return FALSE;
  const gchar *site =
      gst_structure_get_string (gst_caps_get_structure (caps, 0), "chroma-site");
  if (site && GST_VIDEO_INFO_IS_YUV (info))
    info->chroma_site = gst_video_chroma_site_from_string (site);
  return TRUE;
}

/* The Y'CbCr matrix, range and chroma siting of YUV caps. An unknown matrix or range (caps that do not
 * say) gets GStreamer's default for the frame height: BT.2020 from 2160 lines, BT.709 above 576, else
 * BT.601; limited range. An unknown chroma siting gets the default of GStreamer's video-info.c
 * (set_default_chroma_site since 1.26, set_default_colorimetry before): mpeg2 (horizontally co-sited)
 * above 576 lines, else jpeg (centred). Other matrices (FCC, SMPTE 240M) and alternate-line sitings
 * (ALT_LINE, dv) are not supported: nullopt. */
std::optional < flashvsr::YuvSpec > yuv_spec_of (const GstVideoInfo * info)
{
  flashvsr::YuvSpec spec;
  if (!GST_VIDEO_INFO_IS_YUV (info))
    return spec;
  switch (info->colorimetry.matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT601:
      spec.matrix = flashvsr::YuvMatrix::BT601;
      break;
    case GST_VIDEO_COLOR_MATRIX_BT709:
      spec.matrix = flashvsr::YuvMatrix::BT709;
      break;
    case GST_VIDEO_COLOR_MATRIX_BT2020:
      spec.matrix = flashvsr::YuvMatrix::BT2020;
      break;
    case GST_VIDEO_COLOR_MATRIX_UNKNOWN:
      spec.matrix = GST_VIDEO_INFO_HEIGHT (info) >= 2160 ?
          flashvsr::YuvMatrix::BT2020 : GST_VIDEO_INFO_HEIGHT (info) > 576 ?
          flashvsr::YuvMatrix::BT709 : flashvsr::YuvMatrix::BT601;
      break;
    default:
      return std::nullopt;
  }
  switch (info->colorimetry.range) {
    case GST_VIDEO_COLOR_RANGE_0_255:
      spec.full_range = true;
      break;
    case GST_VIDEO_COLOR_RANGE_16_235:
    case GST_VIDEO_COLOR_RANGE_UNKNOWN:
      spec.full_range = false;
      break;
    default:
      return std::nullopt;
  }
  /* Chroma siting, per axis (any combination of H_COSITED and V_COSITED, NONE = centred both ways). */
  const guint site = GST_VIDEO_INFO_CHROMA_SITE (info);
  const guint cosited =
      GST_VIDEO_CHROMA_SITE_H_COSITED | GST_VIDEO_CHROMA_SITE_V_COSITED;
  if (site == GST_VIDEO_CHROMA_SITE_UNKNOWN) {
    spec.site = GST_VIDEO_INFO_HEIGHT (info) > 576 ?
        flashvsr::kChromaSiteMpeg2 : flashvsr::kChromaSiteJpeg;
  } else if (site == GST_VIDEO_CHROMA_SITE_NONE || (site & ~cosited) == 0) {
    spec.site.horizontal = (site & GST_VIDEO_CHROMA_SITE_H_COSITED) ?
        flashvsr::ChromaSiting::Cosited : flashvsr::ChromaSiting::Centred;
    spec.site.vertical = (site & GST_VIDEO_CHROMA_SITE_V_COSITED) ?
        flashvsr::ChromaSiting::Cosited : flashvsr::ChromaSiting::Centred;
  } else {
    gchar *name =
        gst_video_chroma_site_to_string ((GstVideoChromaSite) site);
    GST_DEBUG ("chroma-site %s (0x%x) is not supported: expected jpeg, "
        "mpeg2, cosited, h-cosited or v-cosited (alternate-line siting such "
        "as dv is not implemented)", GST_STR_NULL (name), site);
    g_free (name);
    return std::nullopt;
  }
  return spec;
}

/* Size on the other pad for a size on this one: the engine's scaled size for sink -> src, its nearest
 * inverse for src -> sink; clamped to what the engine accepts. */
gint
transform_dimension (GstPadDirection direction, gint size, double scale)
{
  int64_t v;
  if (direction == GST_PAD_SINK)
    v = flashvsr::scaled_size (size, scale);
  else
    v = std::llround (size / scale);
  return (gint) CLAMP (v, 1, MAX_OUTPUT_SIDE);
}

/* Transforms an int or int-range dimension field; FALSE for other types (lists...). */
gboolean
transform_dimension_value (GstPadDirection direction, const GValue * in,
    double scale, GValue * out)
{
  if (G_VALUE_HOLDS_INT (in)) {
    g_value_init (out, G_TYPE_INT);
    g_value_set_int (out, transform_dimension (direction, g_value_get_int (in),
            scale));
    return TRUE;
  }
  if (GST_VALUE_HOLDS_INT_RANGE (in)) {
    gint lo = transform_dimension (direction, gst_value_get_int_range_min (in),
        scale);
    gint hi = transform_dimension (direction, gst_value_get_int_range_max (in),
        scale);
    if (lo == hi) {
      g_value_init (out, G_TYPE_INT);
      g_value_set_int (out, lo);
    } else {
      g_value_init (out, GST_TYPE_INT_RANGE);
      gst_value_set_int_range (out, lo, hi);
    }
    return TRUE;
  }
  return FALSE;
}

void
set_format_list (GstStructure * s)
{
  GValue list = G_VALUE_INIT;
  GValue item = G_VALUE_INIT;
  static const char *formats[] =
      { "RGB", "RGBx", "BGRx", "RGBA", "BGRA", "I420", "NV12" };
  gst_value_list_init (&list, G_N_ELEMENTS (formats));
  g_value_init (&item, G_TYPE_STRING);
  for (const char *f:formats) {
    g_value_set_string (&item, f);
    gst_value_list_append_value (&list, &item);
  }
  g_value_unset (&item);
  gst_structure_take_value (s, "format", &list);
}

/* Whether `s` can take `value` as its field `name` (absent fields can take anything). */
gboolean
structure_accepts (const GstStructure * s, const char *name,
    const GValue * value)
{
  const GValue *v = gst_structure_get_value (s, name);
  return v == NULL || gst_value_can_intersect (v, value);
}

GstClockTime
duration_of_fps (gint fps_n, gint fps_d)
{
  if (fps_n <= 0 || fps_d <= 0) {
    fps_n = FALLBACK_FPS_N;
    fps_d = FALLBACK_FPS_D;
  }
  return gst_util_uint64_scale_int (GST_SECOND, fps_d, fps_n);
}

double
elapsed_ms (std::chrono::steady_clock::time_point since)
{
  return std::chrono::duration < double, std::milli > (std::chrono::steady_clock::now () - since).count ();
}

}  // namespace

/* The engine's stream options for the settings and the negotiated sizes. */
static flashvsr::StreamOptions
stream_options (const Settings & s, const GstVideoInfo * in_info,
    const GstVideoInfo * out_info)
{
  flashvsr::StreamOptions o;
  o.in_width = GST_VIDEO_INFO_WIDTH (in_info);
  o.in_height = GST_VIDEO_INFO_HEIGHT (in_info);
  o.out_width = GST_VIDEO_INFO_WIDTH (out_info);
  o.out_height = GST_VIDEO_INFO_HEIGHT (out_info);
  o.scale = s.scale;
  o.lq_version = s.model_version == GST_FLASHVSR_MODEL_VERSION_1_0 ?
      flashvsr::LqVersion::V1_0 : flashvsr::LqVersion::V1_1;
  o.sparse_ratio = s.sparse_ratio;
  o.kv_ratio = s.kv_ratio;
  o.local_range = s.local_range;
  switch (s.color_fix) {
    case GST_FLASHVSR_COLOR_FIX_NONE:
      o.color_fix = flashvsr::ColorFix::None;
      break;
    case GST_FLASHVSR_COLOR_FIX_ADAIN:
      o.color_fix = flashvsr::ColorFix::AdaIN;
      break;
    case GST_FLASHVSR_COLOR_FIX_WAVELET:
      o.color_fix = flashvsr::ColorFix::Wavelet;
      break;
  }
  o.seed = s.seed;
  switch (s.attention) {
    case GST_FLASHVSR_ATTENTION_AUTO:
      o.attention = flashvsr::AttentionBackend::Auto;
      break;
    case GST_FLASHVSR_ATTENTION_REFERENCE:
      o.attention = flashvsr::AttentionBackend::Reference;
      break;
    case GST_FLASHVSR_ATTENTION_CUDA:
      o.attention = flashvsr::AttentionBackend::Cuda;
      break;
  }
  return o;
}

/* An engine stream with these options, drawing its noise from `noise_file`'s 'noise' tensor when one is
 * given (throws flashvsr::Error naming the file when it has none, or too few latent frames). */
static std::unique_ptr < flashvsr::Stream >
make_engine_stream (std::shared_ptr < const flashvsr::Model > model,
    const flashvsr::StreamOptions & o, const std::string & noise_file)
{
  auto stream = std::make_unique < flashvsr::Stream > (std::move (model), o);
  if (noise_file.empty ())
    return stream;
  const flashvsr::TensorMap tensors = flashvsr::io::read_safetensors (noise_file);
  auto it = tensors.find ("noise");
  if (it == tensors.end ())
    throw flashvsr::Error (flashvsr::Error::Kind::BadFile,
        noise_file + ": no tensor 'noise' (expected F32 [1, 16, T, H/8, W/8])");
  const at::Tensor noise = it->second.to (at::kFloat);
  stream->set_noise_source ([noise, noise_file] (int64_t first, int64_t count) {
        if (noise.dim () != 5 || first + count > noise.size (2))
          throw flashvsr::Error (flashvsr::Error::Kind::BadInput, noise_file +
              ": tensor 'noise' has shape " +
              flashvsr::shape_string (noise.sizes ().vec ()) +
              ", the stream needs latent frames up to " +
              std::to_string (first + count));
        return noise.narrow (2, first, count);
      });
  return stream;
}

/* Whether two option sets give the same stream (the output size is explicit, so scale is not used). */
static bool
same_stream (const flashvsr::StreamOptions & a,
    const flashvsr::StreamOptions & b)
{
  return a.in_width == b.in_width && a.in_height == b.in_height
      && a.out_width == b.out_width && a.out_height == b.out_height
      && a.lq_version == b.lq_version && a.sparse_ratio == b.sparse_ratio
      && a.kv_ratio == b.kv_ratio && a.local_range == b.local_range
      && a.color_fix == b.color_fix && a.seed == b.seed
      && a.attention == b.attention;
}

/* Posts an ERROR message with a text assembled at run time (GST_ELEMENT_ERROR needs literal codes). */
#define FLASHVSR_POST_ERROR(self, domain, code, text, debug) \
  gst_element_message_full (GST_ELEMENT_CAST (self), GST_MESSAGE_ERROR, \
      domain, code, g_strdup ((text).c_str ()), g_strdup ((debug).c_str ()), \
      __FILE__, GST_FUNCTION, __LINE__)

/* The error domain and code of an engine error met while setting up (model load, stream creation):
 * RESOURCE/NOT_FOUND for a missing directory or file, RESOURCE/READ for a file that is not what it
 * should be (truncated, wrong tensors or shapes), RESOURCE/SETTINGS for bad settings, LIBRARY/INIT for
 * the device and LibTorch. */
static GQuark
setup_error_domain (flashvsr::Error::Kind kind)
{
  switch (kind) {
    case flashvsr::Error::Kind::NotFound:
    case flashvsr::Error::Kind::BadFile:
    case flashvsr::Error::Kind::BadSettings:
    case flashvsr::Error::Kind::BadInput:
      return GST_RESOURCE_ERROR;
    case flashvsr::Error::Kind::Device:
    case flashvsr::Error::Kind::Internal:
      break;
  }
  return GST_LIBRARY_ERROR;
}

static gint
setup_error_code (flashvsr::Error::Kind kind)
{
  switch (kind) {
    case flashvsr::Error::Kind::NotFound:
      return GST_RESOURCE_ERROR_NOT_FOUND;
    case flashvsr::Error::Kind::BadFile:
      return GST_RESOURCE_ERROR_READ;
    case flashvsr::Error::Kind::BadSettings:
    case flashvsr::Error::Kind::BadInput:
      return GST_RESOURCE_ERROR_SETTINGS;
    case flashvsr::Error::Kind::Device:
    case flashvsr::Error::Kind::Internal:
      break;
  }
  return GST_LIBRARY_ERROR_INIT;
}

#define FLASHVSR_POST_SETUP_ERROR(self, kind, text, debug) \
  FLASHVSR_POST_ERROR (self, setup_error_domain (kind), \
      setup_error_code (kind), text, debug)

static void
model_log (GstFlashVsr * self, flashvsr::LogLevel level,
    const std::string & message)
{
  GstDebugLevel l = GST_LEVEL_DEBUG;
  switch (level) {
    case flashvsr::LogLevel::Debug:
      l = GST_LEVEL_DEBUG;
      break;
    case flashvsr::LogLevel::Info:
      l = GST_LEVEL_INFO;
      break;
    case flashvsr::LogLevel::Warning:
      l = GST_LEVEL_WARNING;
      break;
    case flashvsr::LogLevel::Error:
      l = GST_LEVEL_ERROR;
      break;
  }
  GST_CAT_LEVEL_LOG (gst_flashvsr_model_debug, l, self, "%s", message.c_str ());
}

/* ------------------------------------------------------------------------------------------------ */
/* Class                                                                                            */
/* ------------------------------------------------------------------------------------------------ */

static void
gst_flashvsr_class_init (GstFlashVsrClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags rw = (GParamFlags) (G_PARAM_READWRITE |
      G_PARAM_STATIC_STRINGS);
  const GParamFlags ready = (GParamFlags) (rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags playing = (GParamFlags) (rw | GST_PARAM_MUTABLE_PLAYING);
  const GParamFlags ro = (GParamFlags) (G_PARAM_READABLE |
      G_PARAM_STATIC_STRINGS);

  GST_DEBUG_CATEGORY_INIT (gst_flashvsr_debug, "flashvsr", 0,
      "FlashVSR video super-resolution element");
  GST_DEBUG_CATEGORY_INIT (gst_flashvsr_model_debug, "flashvsr-model", 0,
      "FlashVSR engine library");

  gobject_class->finalize = gst_flashvsr_finalize;
  gobject_class->set_property = gst_flashvsr_set_property;
  gobject_class->get_property = gst_flashvsr_get_property;

  g_object_class_install_property (gobject_class, PROP_MODEL_DIR,
      g_param_spec_string ("model-dir", "Model directory",
          "Directory of a FlashVSR release (diffusion_pytorch_model_streaming_dmd"
          ".safetensors, LQ_proj_in.ckpt, TCDecoder.ckpt, posi_prompt.pth); "
          "loaded when going to READY", DEFAULT_MODEL_DIR, ready));
  g_object_class_install_property (gobject_class, PROP_MODEL_VERSION,
      g_param_spec_enum ("model-version", "Model version",
          "Release the weights belong to (decides how the LQ projection caches "
          "frames; not detectable from the weights)",
          GST_TYPE_FLASHVSR_MODEL_VERSION, DEFAULT_MODEL_VERSION, ready));
  g_object_class_install_property (gobject_class, PROP_DEVICE,
      g_param_spec_string ("device", "Device",
          "Where the model runs: cpu, cuda, cuda:N, or auto (cuda when "
          "available, else cpu); checked when going to READY", DEFAULT_DEVICE,
          ready));
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Compute precision of the model", GST_TYPE_FLASHVSR_PRECISION,
          DEFAULT_PRECISION, ready));
  g_object_class_install_property (gobject_class, PROP_SCALE,
      g_param_spec_double ("scale", "Scale",
          "Output size over input size, unless downstream fixes the output "
          "width and height; a change renegotiates", MIN_SCALE, MAX_SCALE,
          DEFAULT_SCALE, playing));
  g_object_class_install_property (gobject_class, PROP_SPARSE_RATIO,
      g_param_spec_double ("sparse-ratio", "Sparse ratio",
          "Share of attention windows kept (released default 2.0; 1.5 is "
          "faster); applies from the next stream", MIN_SPARSE_RATIO,
          MAX_SPARSE_RATIO, DEFAULT_SPARSE_RATIO, playing));
  g_object_class_install_property (gobject_class, PROP_KV_RATIO,
      g_param_spec_double ("kv-ratio", "KV ratio",
          "Number of past latent slices kept in the attention cache (its "
          "integer part); applies from the next stream", MIN_KV_RATIO,
          MAX_KV_RATIO, DEFAULT_KV_RATIO, playing));
  g_object_class_install_property (gobject_class, PROP_LOCAL_RANGE,
      g_param_spec_int ("local-range", "Local range",
          "Side of the window neighbourhood each attention window may see "
          "(9 is sharper); applies from the next stream", MIN_LOCAL_RANGE,
          MAX_LOCAL_RANGE, DEFAULT_LOCAL_RANGE, playing));
  g_object_class_install_property (gobject_class, PROP_COLOR_FIX,
      g_param_spec_enum ("color-fix", "Colour fix",
          "Colour correction of the output against the input; applies from "
          "the next stream", GST_TYPE_FLASHVSR_COLOR_FIX, DEFAULT_COLOR_FIX,
          playing));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Seed of the diffusion noise (the same seed gives the same output); "
          "applies from the next stream", 0, G_MAXUINT64, DEFAULT_SEED,
          playing));
  g_object_class_install_property (gobject_class, PROP_ATTENTION,
      g_param_spec_enum ("attention", "Attention backend",
          "Implementation of the block-sparse attention; applies from the "
          "next stream", GST_TYPE_FLASHVSR_ATTENTION, DEFAULT_ATTENTION,
          playing));
  g_object_class_install_property (gobject_class, PROP_NOISE_FILE,
      g_param_spec_string ("noise-file", "Noise file",
          "safetensors file whose 'noise' tensor F32 [1, 16, T, H/8, W/8] (H, W: "
          "output size rounded up to 128) replaces the seeded noise, to reproduce "
          "a reference run (e.g. a golden fixture's input.safetensors); T must cover "
          "the stream. Applies from the next stream", DEFAULT_NOISE_FILE,
          playing));
  g_object_class_install_property (gobject_class, PROP_FRAMES_IN,
      g_param_spec_uint64 ("frames-in", "Frames in",
          "Frames given to the engine since going to PAUSED", 0, G_MAXUINT64,
          0, ro));
  g_object_class_install_property (gobject_class, PROP_FRAMES_OUT,
      g_param_spec_uint64 ("frames-out", "Frames out",
          "Upscaled frames produced since going to PAUSED", 0, G_MAXUINT64, 0,
          ro));
  g_object_class_install_property (gobject_class, PROP_CHUNKS,
      g_param_spec_uint64 ("chunks", "Chunks",
          "Engine chunks run since going to PAUSED (25 frames, then 8)", 0,
          G_MAXUINT64, 0, ro));
  g_object_class_install_property (gobject_class, PROP_MEAN_CHUNK_MS,
      g_param_spec_double ("mean-chunk-ms", "Mean chunk time",
          "Mean wall time per chunk in milliseconds, measured by the element "
          "from upload to download of the frames (0 before the first chunk)",
          0.0, G_MAXDOUBLE, 0.0, ro));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "FlashVSR video super-resolution", "Filter/Effect/Video/Scaler",
      "Upscales video with the streaming FlashVSR-Tiny diffusion model",
      "gst-flashvsr developers");

  element_class->change_state = GST_DEBUG_FUNCPTR (gst_flashvsr_change_state);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_flashvsr_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_flashvsr_stop);
  trans_class->transform_caps = GST_DEBUG_FUNCPTR (gst_flashvsr_transform_caps);
  trans_class->fixate_caps = GST_DEBUG_FUNCPTR (gst_flashvsr_fixate_caps);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_flashvsr_set_caps);
  trans_class->propose_allocation =
      GST_DEBUG_FUNCPTR (gst_flashvsr_propose_allocation);
  trans_class->decide_allocation =
      GST_DEBUG_FUNCPTR (gst_flashvsr_decide_allocation);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_flashvsr_query);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_flashvsr_sink_event);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_flashvsr_submit_input_buffer);
  trans_class->generate_output =
      GST_DEBUG_FUNCPTR (gst_flashvsr_generate_output);

  gst_type_mark_as_plugin_api (GST_TYPE_FLASHVSR_MODEL_VERSION,
      (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FLASHVSR_PRECISION,
      (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FLASHVSR_COLOR_FIX,
      (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_FLASHVSR_ATTENTION,
      (GstPluginAPIFlags) 0);
}

static void
gst_flashvsr_init (GstFlashVsr * self)
{
  self->priv = new GstFlashVsrPrivate ();
  gst_video_info_init (&self->priv->in_info);
  gst_video_info_init (&self->priv->out_info);
  /* Caps from transform_caps come in order of preference (scaled size first): never reorder them for a
   * passthrough we cannot do. QoS stays off by default (the base class default): see docs/element.md. */
  gst_base_transform_set_prefer_passthrough (GST_BASE_TRANSFORM (self), FALSE);
}

static void
gst_flashvsr_finalize (GObject * object)
{
  GstFlashVsr *self = GST_FLASHVSR (object);

  delete self->priv;
  self->priv = NULL;

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* TRUE when the element is above READY, where model-level settings can no longer change. */
static gboolean
gst_flashvsr_is_running (GstFlashVsr * self)
{
  GstState state, pending;

  GST_OBJECT_LOCK (self);
  state = GST_STATE (self);
  pending = GST_STATE_PENDING (self);
  GST_OBJECT_UNLOCK (self);
  return state > GST_STATE_READY || (pending != GST_STATE_VOID_PENDING
      && pending > GST_STATE_READY);
}

static void
gst_flashvsr_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFlashVsr *self = GST_FLASHVSR (object);
  GstFlashVsrPrivate *priv = self->priv;
  gboolean renegotiate = FALSE;

  if ((pspec->flags & GST_PARAM_MUTABLE_READY) && gst_flashvsr_is_running (self)) {
    GST_WARNING_OBJECT (self, "property '%s' can only be changed in the NULL "
        "or READY state; keeping the current value", pspec->name);
    return;
  }

  {
    std::lock_guard < std::mutex > guard (priv->lock);
    Settings & s = priv->settings;
    switch (prop_id) {
      case PROP_MODEL_DIR:{
        const gchar *dir = g_value_get_string (value);
        s.model_dir = dir ? dir : "";
        priv->model_stale = true;
        break;
      }
      case PROP_MODEL_VERSION:
        s.model_version = (GstFlashVsrModelVersion) g_value_get_enum (value);
        break;
      case PROP_DEVICE:{
        const gchar *device = g_value_get_string (value);
        s.device = device ? device : DEFAULT_DEVICE;
        priv->model_stale = true;
        break;
      }
      case PROP_PRECISION:
        s.precision = (GstFlashVsrPrecision) g_value_get_enum (value);
        priv->model_stale = true;
        break;
      case PROP_SCALE:{
        double scale = g_value_get_double (value);
        renegotiate = scale != s.scale;
        s.scale = scale;
        break;
      }
      case PROP_SPARSE_RATIO:
        s.sparse_ratio = g_value_get_double (value);
        break;
      case PROP_KV_RATIO:
        s.kv_ratio = g_value_get_double (value);
        break;
      case PROP_LOCAL_RANGE:
        s.local_range = g_value_get_int (value);
        break;
      case PROP_COLOR_FIX:
        s.color_fix = (GstFlashVsrColorFix) g_value_get_enum (value);
        break;
      case PROP_SEED:
        s.seed = g_value_get_uint64 (value);
        break;
      case PROP_ATTENTION:
        s.attention = (GstFlashVsrAttention) g_value_get_enum (value);
        break;
      case PROP_NOISE_FILE:{
        const gchar *file = g_value_get_string (value);
        s.noise_file = file ? file : "";
        break;
      }
      default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
        break;
    }
  }

  if (renegotiate)
    gst_base_transform_reconfigure_src (GST_BASE_TRANSFORM (self));
}

static void
gst_flashvsr_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstFlashVsr *self = GST_FLASHVSR (object);
  GstFlashVsrPrivate *priv = self->priv;
  std::lock_guard < std::mutex > guard (priv->lock);
  const Settings & s = priv->settings;

  switch (prop_id) {
    case PROP_MODEL_DIR:
      g_value_set_string (value, s.model_dir.empty ()? NULL :
          s.model_dir.c_str ());
      break;
    case PROP_MODEL_VERSION:
      g_value_set_enum (value, s.model_version);
      break;
    case PROP_DEVICE:
      g_value_set_string (value, s.device.c_str ());
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, s.precision);
      break;
    case PROP_SCALE:
      g_value_set_double (value, s.scale);
      break;
    case PROP_SPARSE_RATIO:
      g_value_set_double (value, s.sparse_ratio);
      break;
    case PROP_KV_RATIO:
      g_value_set_double (value, s.kv_ratio);
      break;
    case PROP_LOCAL_RANGE:
      g_value_set_int (value, s.local_range);
      break;
    case PROP_COLOR_FIX:
      g_value_set_enum (value, s.color_fix);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, s.seed);
      break;
    case PROP_ATTENTION:
      g_value_set_enum (value, s.attention);
      break;
    case PROP_NOISE_FILE:
      g_value_set_string (value, s.noise_file.empty ()? NULL :
          s.noise_file.c_str ());
      break;
    case PROP_FRAMES_IN:
      g_value_set_uint64 (value, priv->frames_in);
      break;
    case PROP_FRAMES_OUT:
      g_value_set_uint64 (value, priv->frames_out);
      break;
    case PROP_CHUNKS:
      g_value_set_uint64 (value, priv->chunks);
      break;
    case PROP_MEAN_CHUNK_MS:
      g_value_set_double (value, priv->chunks ?
          priv->chunk_ms_total / (double) priv->chunks : 0.0);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Model                                                                                            */
/* ------------------------------------------------------------------------------------------------ */

namespace {

/* The models of all flashvsr elements of the process: the one intentional process-wide object of the
 * plugin. Elements that ask for the same model directory on the same device in the same precision (and
 * whose files did not change in between: see model_cache.h) get the same immutable flashvsr::Model,
 * loaded once; each element keeps its own Stream (all per-video state). The cache holds models weakly:
 * a model is freed when its last element goes to NULL. `handed_out` remembers which models were already
 * given to an element, only to say in the debug log whether a request loaded the weights or shared
 * them. Made on first use and deliberately never destroyed, so that no element or streaming thread can
 * reach it after a static destructor ran at process exit. */
struct SharedModels
{
  flashvsr::ModelCache cache;
  std::mutex lock;              /* guards handed_out */
  std::vector < std::weak_ptr < const flashvsr::Model >> handed_out;
};

SharedModels & shared_models ()
{
  static SharedModels *models = new SharedModels ();
  return *models;
}

/* The model for `dir` and `options` from the process-wide cache (throws what Model::load throws).
 * *loaded tells whether this call read the weights (no other element held that model). Thread-safe. */
std::shared_ptr < const flashvsr::Model >
acquire_model (const std::string & dir, const flashvsr::LoadOptions & options,
    bool *loaded)
{
  SharedModels & shared = shared_models ();
  std::shared_ptr < const flashvsr::Model > model = shared.cache.get (dir,
      options);
  std::lock_guard < std::mutex > guard (shared.lock);
  bool seen = false;
  auto & list = shared.handed_out;
  for (auto it = list.begin (); it != list.end ();) {
    if (it->expired ()) {
      it = list.erase (it);
      continue;
    }
    /* Same owner: the same model object (an expired entry cannot match a live model). */
    if (!it->owner_before (model) && !model.owner_before (*it))
      seen = true;
    ++it;
  }
  if (!seen)
    list.push_back (model);
  *loaded = !seen;
  return model;
}

}  // namespace

/* Gets the model of the current settings from the process-wide cache: loads it when no element holds
 * it (or its files changed), else shares the loaded one. Posts an ERROR message and returns FALSE on
 * failure. */
static gboolean
gst_flashvsr_load_model (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  Settings s;
  std::shared_ptr < const flashvsr::Model > previous;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    s = priv->settings;
    previous = priv->model;
  }

  if (s.model_dir.empty ()) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No FlashVSR model directory given."),
        ("set the model-dir property to a directory in the release layout"));
    return FALSE;
  }

  const std::string where = "model-dir=" + s.model_dir + " device=" + s.device;
  try {
    c10::InferenceMode inference;
    flashvsr::LoadOptions options;
    if (s.device == "auto")
      options.device = at::hasCUDA ()? at::Device (at::kCUDA, 0) : at::Device (at::kCPU);
    else
      options.device = flashvsr::parse_device (s.device);
    switch (s.precision) {
      case GST_FLASHVSR_PRECISION_AUTO:
        options.dtype = options.device.is_cuda ()? at::kBFloat16 : at::kFloat;
        break;
      case GST_FLASHVSR_PRECISION_BF16:
        options.dtype = at::kBFloat16;
        break;
      case GST_FLASHVSR_PRECISION_FP16:
        options.dtype = at::kHalf;
        break;
      case GST_FLASHVSR_PRECISION_FP32:
        options.dtype = at::kFloat;
        break;
    }
    options.log =[self](flashvsr::LogLevel level, const std::string & m) {
      model_log (self, level, m);
    };

    GST_DEBUG_OBJECT (self, "asking for %s on %s as %s", s.model_dir.c_str (),
        options.device.str ().c_str (), flashvsr::dtype_name (options.dtype));
    const auto t0 = std::chrono::steady_clock::now ();
    bool loaded = false;
    auto model = acquire_model (s.model_dir, options, &loaded);
    if (model == previous)
      GST_DEBUG_OBJECT (self, "model kept: %s on %s as %s is unchanged",
          s.model_dir.c_str (), options.device.str ().c_str (),
          flashvsr::dtype_name (options.dtype));
    else if (loaded)
      GST_INFO_OBJECT (self, "model loaded: %s on %s as %s in %.0f ms (no "
          "other element held it): %s", s.model_dir.c_str (),
          options.device.str ().c_str (), flashvsr::dtype_name (options.dtype),
          elapsed_ms (t0), model->config ().describe ().c_str ());
    else
      GST_INFO_OBJECT (self, "model shared: %s on %s as %s was already loaded "
          "by another element", s.model_dir.c_str (),
          options.device.str ().c_str (), flashvsr::dtype_name (options.dtype));

    std::lock_guard < std::mutex > guard (priv->lock);
    priv->model = std::move (model);
    /* Settings changed meanwhile stay stale and reload at the next start. */
    priv->model_stale = priv->settings.model_dir != s.model_dir
        || priv->settings.device != s.device
        || priv->settings.precision != s.precision;
    return TRUE;
  }
  catch (const flashvsr::Error & e) {
    FLASHVSR_POST_SETUP_ERROR (self, e.kind (),
        std::string ("Could not load the FlashVSR model: ") + e.what (), where);
  }
  catch (const c10::Error & e) {
    FLASHVSR_POST_ERROR (self, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
        std::string ("LibTorch failed while loading the FlashVSR model from ") +
        s.model_dir + ": " + e.what_without_backtrace (), where);
  }
  catch (const std::exception & e) {
    FLASHVSR_POST_ERROR (self, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
        std::string ("Could not load the FlashVSR model from ") + s.model_dir +
        ": " + e.what (), where);
  }
  return FALSE;
}

static GstStateChangeReturn
gst_flashvsr_change_state (GstElement * element, GstStateChange transition)
{
  GstFlashVsr *self = GST_FLASHVSR (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_NULL_TO_READY
      && !gst_flashvsr_load_model (self))
    return GST_STATE_CHANGE_FAILURE;

  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE)
    return ret;

  if (transition == GST_STATE_CHANGE_READY_TO_NULL) {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    self->priv->model.reset ();
  }
  return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* Stream state                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

/* Forgets every pending frame and event. */
static void
gst_flashvsr_clear_pending (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;

  priv->pending.clear ();
  priv->ready.clear ();
  priv->stream_frames = 0;
  priv->discont_next = true;
}

static void
gst_flashvsr_free_stream (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;

  gst_flashvsr_clear_pending (self);
  priv->stream.reset ();
  priv->in_conv.reset ();
  priv->out_conv.reset ();
}

/* Sets up the engine stream and the frame converters for the negotiated in_info/out_info, with the
 * settings as they are now. Posts an error (RESOURCE/SETTINGS, LIBRARY/INIT) and returns FALSE when the
 * engine refuses them, e.g. frames too large for the attention's key-window limit. */
static gboolean
gst_flashvsr_setup_stream (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  const GstVideoInfo *in_info = &priv->in_info, *out_info = &priv->out_info;
  const auto in_format = pixel_format_of (GST_VIDEO_INFO_FORMAT (in_info));
  const auto out_format = pixel_format_of (GST_VIDEO_INFO_FORMAT (out_info));
  const auto in_yuv = yuv_spec_of (in_info);
  const auto out_yuv = yuv_spec_of (out_info);
  if (!in_format || !out_format || !in_yuv || !out_yuv)
    return FALSE;               /* set_caps checked these already */

  Settings s;
  std::shared_ptr < const flashvsr::Model > model;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    s = priv->settings;
    model = priv->model;
  }
  if (!model) {
    GST_ELEMENT_ERROR (self, CORE, STATE_CHANGE, ("No model is loaded."),
        ("stream set-up without a model"));
    return FALSE;
  }

  const flashvsr::StreamOptions o = stream_options (s, in_info, out_info);
  const std::string what = std::to_string (o.in_width) + "x" +
      std::to_string (o.in_height) + " -> " + std::to_string (o.out_width) +
      "x" + std::to_string (o.out_height);
  try {
    c10::InferenceMode inference;
    const at::Device device = model->device ();
    priv->stream = make_engine_stream (model, o, s.noise_file);
    priv->stream_noise_file = s.noise_file;
    priv->in_conv.emplace (*in_format, o.in_width, o.in_height, *in_yuv,
        device);
    priv->out_conv.emplace (*out_format, o.out_width, o.out_height, *out_yuv,
        device);
  }
  catch (const flashvsr::Error & e) {
    gst_flashvsr_free_stream (self);
    FLASHVSR_POST_SETUP_ERROR (self, e.kind (),
        std::string ("Could not set up a FlashVSR stream for ") + what + ": " +
        e.what (), what);
    return FALSE;
  }
  catch (const c10::Error & e) {
    gst_flashvsr_free_stream (self);
    FLASHVSR_POST_ERROR (self, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
        std::string ("LibTorch failed setting up a FlashVSR stream for ") +
        what + ": " + e.what_without_backtrace (), what);
    return FALSE;
  }
  catch (const std::exception & e) {
    gst_flashvsr_free_stream (self);
    FLASHVSR_POST_ERROR (self, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
        std::string ("Could not set up a FlashVSR stream for ") + what + ": " +
        e.what (), what);
    return FALSE;
  }
  GST_INFO_OBJECT (self, "stream %s %s -> %s on %s, look-ahead %d frames",
      what.c_str (), GST_VIDEO_INFO_NAME (in_info),
      GST_VIDEO_INFO_NAME (out_info), model->device ().str ().c_str (),
      LOOKAHEAD_FRAMES);
  const flashvsr::AttentionPlan & attention = priv->stream->attention ();
  if (attention.backend_reason.empty ())
    GST_INFO_OBJECT (self, "attention backend: %s",
        flashvsr::attention_backend_name (attention.backend));
  else
    GST_WARNING_OBJECT (self, "attention backend: %s on %s, the slow path "
        "(it waits for the device once per head and block): %s",
        flashvsr::attention_backend_name (attention.backend),
        model->device ().str ().c_str (), attention.backend_reason.c_str ());
  return TRUE;
}

/* Starts the engine's stream afresh, with the settings as they are now (properties changed while
 * PLAYING apply from here). Posts an error and frees the stream when the new settings fail. */
static void
gst_flashvsr_reset_stream (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;

  gst_flashvsr_clear_pending (self);
  if (!priv->stream)
    return;

  Settings s;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    s = priv->settings;
  }
  const flashvsr::StreamOptions o = stream_options (s, &priv->in_info,
      &priv->out_info);
  if (same_stream (o, priv->stream->options ())
      && s.noise_file == priv->stream_noise_file) {
    priv->stream->reset ();
    return;
  }
  GST_INFO_OBJECT (self, "settings changed: new engine stream");
  /* On failure the error is posted and the stream freed, as when caps arrive. */
  priv->negotiated = gst_flashvsr_setup_stream (self);
}

/* When upstream is live, times a first chunk on a scratch stream (flashvsr::time_first_chunk) so that
 * the LATENCY answer covers the first chunk before the stream's own has run: without it, frames 0-20 of
 * a live stream reach a synchronising sink late. Returns whether the estimate changed. */
static gboolean
gst_flashvsr_time_first_chunk (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  gboolean live = FALSE;
  GstQuery *query = gst_query_new_latency ();
  if (gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (self), query))
    gst_query_parse_latency (query, &live, NULL, NULL);
  gst_query_unref (query);
  if (!live || !priv->stream)
    return FALSE;

  std::shared_ptr < const flashvsr::Model > model;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    model = priv->model;
  }
  double ms = 0.0;
  try {
    c10::InferenceMode inference;
    ms = flashvsr::time_first_chunk (model, priv->stream->options ()) * 1000.0;
  }
  catch (const std::exception & e) {
    /* The stream's own first chunk will meet (and report) the same problem. */
    GST_WARNING_OBJECT (self, "timing a first chunk failed: %s", e.what ());
    return FALSE;
  }
  std::lock_guard < std::mutex > guard (priv->lock);
  GST_INFO_OBJECT (self, "live upstream: a first chunk takes %.1f ms here",
      ms);
  const gboolean changed = ms != priv->first_chunk_ms;
  priv->first_chunk_ms = ms;
  return changed;
}

/* An error while streaming (engine, allocation, mapping): post STREAM/FAILED and free the stream state
 * (engine stream with its caches on the device, converters, pending and ready frames), so that a failed
 * stream gives its memory back at once, e.g. to the other streams sharing the device. Later buffers are
 * refused (not-negotiated) until new caps or a new start set a stream up again. */
static GstFlowReturn
gst_flashvsr_stream_failed (GstFlashVsr * self, const std::string & reason,
    const std::string & hint = std::string ())
{
  std::string debug = std::string ("stream state freed after ") +
      std::to_string (self->priv->stream_frames) + " frames";
  if (!hint.empty ())
    debug += "; " + hint;
  FLASHVSR_POST_ERROR (self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
      std::string ("FlashVSR inference failed: ") + reason, debug);
  gst_flashvsr_free_stream (self);
  return GST_FLOW_ERROR;
}

/* Maps the exception being handled (call only inside a catch block) to gst_flashvsr_stream_failed. */
static GstFlowReturn
gst_flashvsr_stream_exception (GstFlashVsr * self)
{
  try {
    throw;
  }
  catch (const flashvsr::Error & e) {
    return gst_flashvsr_stream_failed (self, e.what ());
  }
  catch (const c10::OutOfMemoryError & e) {
    /* Typically CUDA: the frame size, the precision or the number of streams on the device is too
     * much. Freeing this stream returns its memory to LibTorch's allocator for the other streams. */
    return gst_flashvsr_stream_failed (self,
        std::string ("out of memory: ") + e.what_without_backtrace (),
        "smaller frames, bf16/fp16 precision or fewer streams per device may fit");
  }
  catch (const c10::Error & e) {
    return gst_flashvsr_stream_failed (self, e.what_without_backtrace ());
  }
  catch (const std::exception & e) {
    return gst_flashvsr_stream_failed (self, e.what ());
  }
  catch (...) {
    return gst_flashvsr_stream_failed (self, "unknown exception");
  }
}

/* Pairs the engine's outputs (packed, on the host: [m, size]) with the oldest pending frames, moving
 * them with the GAP events between them to the ready queue; GAPs whose preceding frames are all out
 * follow. */
static GstFlowReturn
gst_flashvsr_queue_outputs (GstFlashVsr * self, const at::Tensor & packed)
{
  GstFlashVsrPrivate *priv = self->priv;
  const int64_t m = packed.defined ()? packed.size (0) : 0;

  auto flush_events =[priv]() {
    while (!priv->pending.empty () && priv->pending.front ().event) {
      Ready r;
      r.event = std::move (priv->pending.front ().event);
      priv->pending.pop_front ();
      priv->ready.push_back (std::move (r));
    }
  };

  for (int64_t i = 0; i < m; ++i) {
    flush_events ();
    if (priv->pending.empty ())
      return gst_flashvsr_stream_failed (self,
          "the engine returned more frames than were pushed");
    Ready r;
    r.meta = priv->pending.front ().meta;
    r.packed = packed[i];
    priv->pending.pop_front ();
    priv->ready.push_back (std::move (r));
  }
  flush_events ();
  return GST_FLOW_OK;
}

/* The processing part of the latency (call with the lock held): the slower of a stream's first chunk
 * and the mean chunk. */
static GstClockTime
gst_flashvsr_processing_locked (GstFlashVsrPrivate * priv)
{
  const double mean_ms = priv->chunks ? priv->chunk_ms_total /
      (double) priv->chunks : 0.0;
  return (GstClockTime) (std::max (priv->first_chunk_ms,
          mean_ms) * GST_MSECOND);
}

/* Records the time of `chunks` chunks (the stream's first chunk alone when `first_chunk`) and announces
 * the new latency when the estimate moved. */
static void
gst_flashvsr_account (GstFlashVsr * self, int64_t frames_in, int64_t chunks,
    double ms, bool first_chunk = false)
{
  GstFlashVsrPrivate *priv = self->priv;
  gboolean announce = FALSE;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    priv->frames_in += frames_in;
    if (chunks <= 0)
      return;
    priv->chunks += chunks;
    priv->chunk_ms_total += ms;
    if (first_chunk && chunks == 1)
      priv->first_chunk_ms = ms;
    const GstClockTime processing = gst_flashvsr_processing_locked (priv);
    const double before = (double) priv->announced_processing;
    if (before == 0.0 || std::fabs ((double) processing - before) >
        LATENCY_CHANGE_RATIO * before) {
      priv->announced_processing = processing;
      announce = TRUE;
    }
  }
  if (announce) {
    GST_DEBUG_OBJECT (self, "processing estimate changed, posting LATENCY");
    gst_element_post_message (GST_ELEMENT_CAST (self),
        gst_message_new_latency (GST_OBJECT_CAST (self)));
  }
}

/* The latency the element adds: look-ahead plus the processing estimate. The first output of a stream
 * (frame 0) leaves when frame 24 arrived and the first chunk ran; later frames leave 4 to 11 frames after
 * their own arrival, plus a (shorter) steady chunk. */
static GstClockTime
gst_flashvsr_latency (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  std::lock_guard < std::mutex > guard (priv->lock);
  GstClockTime frame = GST_CLOCK_TIME_IS_VALID (priv->frame_duration) ?
      priv->frame_duration : duration_of_fps (0, 1);
  return LOOKAHEAD_FRAMES * frame + gst_flashvsr_processing_locked (priv);
}

/* Writes one packed frame into a new output buffer. */
static GstFlowReturn
gst_flashvsr_make_buffer (GstFlashVsr * self, const Ready & item,
    GstBuffer ** out)
{
  GstFlashVsrPrivate *priv = self->priv;
  GstBufferPool *pool = gst_base_transform_get_buffer_pool (GST_BASE_TRANSFORM
      (self));
  GstBuffer *buffer = NULL;
  GstVideoFrame frame;

  if (pool) {
    GstFlowReturn ret = GST_FLOW_OK;
    if (!gst_buffer_pool_is_active (pool)
        && !gst_buffer_pool_set_active (pool, TRUE)) {
      gst_object_unref (pool);
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("Failed to activate the output buffer pool."), (NULL));
      return GST_FLOW_ERROR;
    }
    ret = gst_buffer_pool_acquire_buffer (pool, &buffer, NULL);
    gst_object_unref (pool);
    if (ret != GST_FLOW_OK) {
      GST_DEBUG_OBJECT (self, "no output buffer: %s", gst_flow_get_name (ret));
      return ret;
    }
  } else {
    buffer = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&priv->out_info),
        NULL);
    if (!buffer) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("Could not allocate an output buffer."), ("%" G_GSIZE_FORMAT
              " bytes", GST_VIDEO_INFO_SIZE (&priv->out_info)));
      return GST_FLOW_ERROR;
    }
  }

  if (!gst_video_frame_map (&frame, &priv->out_info, buffer, GST_MAP_WRITE)) {
    gst_buffer_unref (buffer);
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Could not map an output buffer."),
        (NULL));
    return GST_FLOW_ERROR;
  }
  const flashvsr::PlaneLayout & layout = priv->out_conv->layout ();
  const uint8_t *src = item.packed.data_ptr < uint8_t > ();
  for (int p = 0; p < layout.planes; ++p) {
    guint8 *dst = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, p);
    const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frame, p);
    const uint8_t *plane = src + layout.offset[p];
    for (int64_t row = 0; row < layout.rows[p]; ++row)
      memcpy (dst + row * stride, plane + row * layout.row_bytes[p],
          layout.row_bytes[p]);
  }
  gst_video_frame_unmap (&frame);

  GST_BUFFER_PTS (buffer) = item.meta.pts;
  GST_BUFFER_DTS (buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION (buffer) = item.meta.duration;
  GST_BUFFER_OFFSET (buffer) = item.meta.offset;
  GST_BUFFER_OFFSET_END (buffer) = item.meta.offset_end;
  GST_BUFFER_FLAG_UNSET (buffer, kCarriedFlags);
  GST_BUFFER_FLAG_SET (buffer, item.meta.flags);

  {
    std::lock_guard < std::mutex > guard (priv->lock);
    priv->frames_out++;
  }
  *out = buffer;
  return GST_FLOW_OK;
}

/* Pushes everything in the ready queue downstream (the caller holds no lock). */
static GstFlowReturn
gst_flashvsr_push_ready (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  GstPad *srcpad = GST_BASE_TRANSFORM_SRC_PAD (self);
  GstFlowReturn ret = GST_FLOW_OK;

  while (!priv->ready.empty ()) {
    Ready item = std::move (priv->ready.front ());
    priv->ready.pop_front ();
    if (item.event) {
      gst_pad_push_event (srcpad, item.event.release ());
      continue;
    }
    GstBuffer *buffer = NULL;
    ret = gst_flashvsr_make_buffer (self, item, &buffer);
    if (ret == GST_FLOW_OK)
      ret = gst_pad_push (srcpad, buffer);
    if (ret != GST_FLOW_OK) {
      GST_DEBUG_OBJECT (self, "drain stopped: %s", gst_flow_get_name (ret));
      priv->ready.clear ();
      break;
    }
  }
  return ret;
}

/* Emits every frame still inside the engine (finish()), pushes them with the GAPs between them, and
 * resets the stream for the next one. */
static GstFlowReturn
gst_flashvsr_drain (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  GstFlowReturn ret = GST_FLOW_OK;

  if (priv->stream && priv->stream_frames > 0) {
    GST_DEBUG_OBJECT (self, "draining %" G_GSIZE_FORMAT " pending frames",
        priv->pending.size ());
    at::Tensor packed;
    int64_t chunks = 0;
    const auto t0 = std::chrono::steady_clock::now ();
    try {
      c10::InferenceMode inference;
      const int64_t before = priv->stream->stats ().chunks;
      at::Tensor rgb = priv->stream->finish ();
      if (rgb.size (0) > 0)
        packed = priv->out_conv->from_rgb (rgb).cpu ().contiguous ();
      chunks = priv->stream->stats ().chunks - before;
    }
    catch (...) {
      return gst_flashvsr_stream_exception (self);
    }
    gst_flashvsr_account (self, 0, chunks, elapsed_ms (t0));
    ret = gst_flashvsr_queue_outputs (self, packed);
    if (ret != GST_FLOW_OK)
      return ret;
  }
  /* GAPs left behind (no frame followed them) go out after the frames. */
  for (auto & p:priv->pending) {
    if (p.event) {
      Ready r;
      r.event = std::move (p.event);
      priv->ready.push_back (std::move (r));
    }
  }
  priv->pending.clear ();
  ret = gst_flashvsr_push_ready (self);
  gst_flashvsr_reset_stream (self);
  return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* GstBaseTransform                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

static gboolean
gst_flashvsr_start (GstBaseTransform * trans)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;
  bool stale;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    stale = priv->model_stale || !priv->model;
    priv->frames_in = priv->frames_out = priv->chunks = 0;
    priv->chunk_ms_total = 0.0;
    priv->first_chunk_ms = 0.0;
    priv->announced_processing = 0;
    priv->frame_duration = GST_CLOCK_TIME_NONE;
  }
  if (stale)
    GST_INFO_OBJECT (self, "model settings changed in READY, reloading");
  priv->negotiated = false;
  /* Every stream asks the cache again: the same model unless the settings or the files changed (a
   * model directory updated while the element sat in READY is picked up here). */
  gst_flashvsr_free_stream (self);
  return gst_flashvsr_load_model (self);
}

static gboolean
gst_flashvsr_stop (GstBaseTransform * trans)
{
  gst_flashvsr_free_stream (GST_FLASHVSR (trans));
  return TRUE;
}

static GstCaps *
gst_flashvsr_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstCaps *ret = gst_caps_new_empty ();
  double scale;
  {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    scale = self->priv->settings.scale;
  }

  for (guint i = 0; i < gst_caps_get_size (caps); ++i) {
    const GstStructure *s = gst_caps_get_structure (caps, i);
    GstCapsFeatures *features = gst_caps_get_features (caps, i);

    if (features && !gst_caps_features_is_any (features)
        && !gst_caps_features_is_equal (features,
            GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY))
      continue;

    /* Any format on the other side; colorimetry and chroma siting belong to the format. */
    GstStructure *base = gst_structure_copy (s);
    gst_structure_remove_fields (base, "format", "colorimetry", "chroma-site",
        NULL);
    set_format_list (base);

    /* Preferred first: the scaled size (inverse for the src pad)... */
    const GValue *w = gst_structure_get_value (s, "width");
    const GValue *h = gst_structure_get_value (s, "height");
    GValue tw = G_VALUE_INIT, th = G_VALUE_INIT;
    if (w && h && transform_dimension_value (direction, w, scale, &tw)) {
      if (transform_dimension_value (direction, h, scale, &th)) {
        GstStructure *scaled = gst_structure_copy (base);
        gst_structure_take_value (scaled, "width", &tw);
        gst_structure_take_value (scaled, "height", &th);
        ret = gst_caps_merge_structure_full (ret, scaled,
            gst_caps_features_new (GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY, NULL));
      } else {
        g_value_unset (&tw);
      }
    }
    /* ...then any size, since downstream may fix one (the engine resizes to it). */
    gst_structure_set (base, "width", GST_TYPE_INT_RANGE, 1, MAX_OUTPUT_SIDE,
        "height", GST_TYPE_INT_RANGE, 1, MAX_OUTPUT_SIDE, NULL);
    ret = gst_caps_merge_structure_full (ret, base,
        gst_caps_features_new (GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY, NULL));
  }

  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_DEBUG_OBJECT (self, "%s %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

/* Colorimetry for the output format, from the input's: the same within a family (RGB or YUV); across
 * families the primaries and transfer carry over with the matrix and range of the new family. */
static std::string
preferred_colorimetry (const GstVideoInfo * in_info, GstVideoFormat out_format)
{
  const GstVideoFormatInfo *out = gst_video_format_get_info (out_format);
  GstVideoColorimetry c = in_info->colorimetry;
  const gboolean in_yuv = GST_VIDEO_INFO_IS_YUV (in_info);
  const gboolean out_yuv = GST_VIDEO_FORMAT_INFO_IS_YUV (out);

  if (in_yuv && !out_yuv) {
    c.matrix = GST_VIDEO_COLOR_MATRIX_RGB;
    c.range = GST_VIDEO_COLOR_RANGE_0_255;
  } else if (!in_yuv && out_yuv) {
    c.matrix = GST_VIDEO_COLOR_MATRIX_BT709;
    c.range = GST_VIDEO_COLOR_RANGE_16_235;
  }
  gchar *str = gst_video_colorimetry_to_string (&c);
  std::string result = str ? str : "";
  g_free (str);
  return result;
}

static GstCaps *
gst_flashvsr_fixate_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * othercaps)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  const GstStructure *in = gst_caps_get_structure (caps, 0);
  const gchar *in_format = gst_structure_get_string (in, "format");
  gint in_w = 0, in_h = 0;
  double scale;
  {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    scale = self->priv->settings.scale;
  }

  gst_structure_get_int (in, "width", &in_w);
  gst_structure_get_int (in, "height", &in_h);
  const gint want_w = in_w > 0 ? transform_dimension (direction, in_w, scale) : 0;
  const gint want_h = in_h > 0 ? transform_dimension (direction, in_h, scale) : 0;

  /* Choose the structure that takes the preferred size, then the input format. */
  GValue vw = G_VALUE_INIT, vh = G_VALUE_INIT, vf = G_VALUE_INIT;
  g_value_init (&vw, G_TYPE_INT);
  g_value_init (&vh, G_TYPE_INT);
  g_value_init (&vf, G_TYPE_STRING);
  g_value_set_int (&vw, want_w);
  g_value_set_int (&vh, want_h);
  g_value_set_string (&vf, in_format ? in_format : "");
  guint best = 0;
  int best_score = -1;
  for (guint i = 0; i < gst_caps_get_size (othercaps); ++i) {
    const GstStructure *s = gst_caps_get_structure (othercaps, i);
    int score = 0;
    if (want_w > 0 && structure_accepts (s, "width", &vw)
        && structure_accepts (s, "height", &vh))
      score += 2;
    if (in_format && structure_accepts (s, "format", &vf))
      score += 1;
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  g_value_unset (&vw);
  g_value_unset (&vh);
  g_value_unset (&vf);

  GstCaps *result = gst_caps_copy_nth (othercaps, best);
  gst_caps_unref (othercaps);
  GstStructure *s = gst_caps_get_structure (result, 0);

  if (in_format && gst_structure_has_field (s, "format")
      && !gst_structure_fixate_field_string (s, "format", in_format))
    gst_structure_fixate_field (s, "format");
  if (want_w > 0)
    gst_structure_fixate_field_nearest_int (s, "width", want_w);
  if (want_h > 0)
    gst_structure_fixate_field_nearest_int (s, "height", want_h);

  gint n, d;
  if (gst_structure_get_fraction (in, "framerate", &n, &d)
      && gst_structure_has_field (s, "framerate"))
    gst_structure_fixate_field_nearest_fraction (s, "framerate", n, d);
  if (gst_structure_get_fraction (in, "pixel-aspect-ratio", &n, &d)) {
    if (gst_structure_has_field (s, "pixel-aspect-ratio"))
      gst_structure_fixate_field_nearest_fraction (s, "pixel-aspect-ratio", n,
          d);
    else
      gst_structure_set (s, "pixel-aspect-ratio", GST_TYPE_FRACTION, n, d,
          NULL);
  }

  /* Colorimetry (and chroma siting within YUV) carried over from the input. */
  GstVideoInfo in_info;
  const gchar *out_format = gst_structure_get_string (s, "format");
  if (out_format && gst_video_info_from_caps (&in_info, caps)) {
    const GstVideoFormat of = gst_video_format_from_string (out_format);
    const std::string colorimetry = preferred_colorimetry (&in_info, of);
    if (!colorimetry.empty ()) {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, G_TYPE_STRING);
      g_value_set_string (&v, colorimetry.c_str ());
      /* A colorimetry downstream asks for stays; a choice (list) takes ours if it is among them. */
      const GValue *current = gst_structure_get_value (s, "colorimetry");
      if (!current || (!G_VALUE_HOLDS_STRING (current)
              && gst_value_can_intersect (current, &v)))
        gst_structure_take_value (s, "colorimetry", &v);
      else
        g_value_unset (&v);
    }
    /* Chroma siting, written out so that downstream need not guess: YUV -> YUV keeps the input's (the
     * caps' string: GStreamer before 1.26 replaces it in GstVideoInfo by the height default when the
     * caps carry no colorimetry), or GStreamer's default for the input height where the caps do not
     * say; RGB -> YUV takes the default for the output height. A siting downstream fixed stays. */
    gint out_h = 0;
    if (GST_VIDEO_FORMAT_INFO_IS_YUV (gst_video_format_get_info (of))
        && !gst_structure_has_field (s, "chroma-site")) {
      const gboolean yuv_in = GST_VIDEO_INFO_IS_YUV (&in_info);
      const gchar *given = gst_structure_get_string (in, "chroma-site");
      guint site = !yuv_in ? GST_VIDEO_CHROMA_SITE_UNKNOWN : given ?
          gst_video_chroma_site_from_string (given) :
          GST_VIDEO_INFO_CHROMA_SITE (&in_info);
      const gint lines = yuv_in ? GST_VIDEO_INFO_HEIGHT (&in_info) :
          gst_structure_get_int (s, "height", &out_h) ? out_h : 0;
      if (site == GST_VIDEO_CHROMA_SITE_UNKNOWN && lines > 0)
        site = lines > 576 ? GST_VIDEO_CHROMA_SITE_MPEG2 :
            GST_VIDEO_CHROMA_SITE_JPEG;
      gchar *name = site == GST_VIDEO_CHROMA_SITE_UNKNOWN ? NULL :
          gst_video_chroma_site_to_string ((GstVideoChromaSite) site);
      if (name)
        gst_structure_set (s, "chroma-site", G_TYPE_STRING, name, NULL);
      g_free (name);
    }
  }

  result = gst_caps_fixate (result);
  GST_DEBUG_OBJECT (self, "fixated to %" GST_PTR_FORMAT, result);
  return result;
}

static gboolean
gst_flashvsr_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;
  GstVideoInfo in_info, out_info;

  if (!video_info_from_caps (&in_info, incaps)) {
    GST_DEBUG_OBJECT (self, "invalid input caps %" GST_PTR_FORMAT, incaps);
    return FALSE;
  }
  if (!video_info_from_caps (&out_info, outcaps)) {
    GST_DEBUG_OBJECT (self, "invalid output caps %" GST_PTR_FORMAT, outcaps);
    return FALSE;
  }
  if (GST_VIDEO_INFO_IS_INTERLACED (&in_info)
      || GST_VIDEO_INFO_IS_INTERLACED (&out_info)) {
    GST_DEBUG_OBJECT (self, "interlaced video is not supported");
    return FALSE;
  }
  const auto in_format = pixel_format_of (GST_VIDEO_INFO_FORMAT (&in_info));
  const auto out_format = pixel_format_of (GST_VIDEO_INFO_FORMAT (&out_info));
  if (!in_format || !out_format) {
    GST_DEBUG_OBJECT (self, "unsupported format %s -> %s",
        GST_VIDEO_INFO_NAME (&in_info), GST_VIDEO_INFO_NAME (&out_info));
    return FALSE;
  }
  const auto in_yuv = yuv_spec_of (&in_info);
  const auto out_yuv = yuv_spec_of (&out_info);
  if (!in_yuv || !out_yuv) {
    GST_DEBUG_OBJECT (self, "unsupported colorimetry (matrix or range) or "
        "chroma-site in %"
        GST_PTR_FORMAT " -> %" GST_PTR_FORMAT, incaps, outcaps);
    return FALSE;
  }

  /* Frames of the previous caps leave with the previous caps: the base class sets the new src caps
   * only after this returns. */
  if (priv->stream && priv->stream_frames > 0) {
    GST_DEBUG_OBJECT (self, "caps change mid-stream: draining");
    gst_flashvsr_drain (self);
  }
  gst_flashvsr_free_stream (self);
  priv->in_info = in_info;
  priv->out_info = out_info;
  priv->negotiated = gst_flashvsr_setup_stream (self);
  if (!priv->negotiated)
    return FALSE;

  const GstClockTime frame = duration_of_fps (GST_VIDEO_INFO_FPS_N (&in_info),
      GST_VIDEO_INFO_FPS_D (&in_info));
  gboolean latency_changed;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    latency_changed = priv->frame_duration != frame;
    priv->frame_duration = frame;
  }
  if (gst_flashvsr_time_first_chunk (self))
    latency_changed = TRUE;
  if (latency_changed)
    gst_element_post_message (GST_ELEMENT_CAST (self),
        gst_message_new_latency (GST_OBJECT_CAST (self)));
  return TRUE;
}

static gboolean
gst_flashvsr_propose_allocation (GstBaseTransform * /* trans */,
    GstQuery * /* decide_query */, GstQuery * query)
{
  /* Input frames are read through GstVideoFrame, so any strides and plane offsets will do. */
  gst_query_add_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL);
  return TRUE;
}

static gboolean
gst_flashvsr_decide_allocation (GstBaseTransform * trans, GstQuery * query)
{
  GstCaps *outcaps = NULL;
  GstVideoInfo info;
  GstBufferPool *pool = NULL;
  guint size, min = 0, max = 0;

  gst_query_parse_allocation (query, &outcaps, NULL);
  if (!outcaps || !gst_video_info_from_caps (&info, outcaps))
    return FALSE;
  size = GST_VIDEO_INFO_SIZE (&info);

  const gboolean have_pool = gst_query_get_n_allocation_pools (query) > 0;
  if (have_pool) {
    gst_query_parse_nth_allocation_pool (query, 0, &pool, &size, &min, &max);
    size = MAX (size, GST_VIDEO_INFO_SIZE (&info));
  }
  if (!pool)
    pool = gst_video_buffer_pool_new ();

  GstStructure *config = gst_buffer_pool_get_config (pool);
  gst_buffer_pool_config_set_params (config, outcaps, size, min, max);
  if (gst_query_find_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL))
    gst_buffer_pool_config_add_option (config,
        GST_BUFFER_POOL_OPTION_VIDEO_META);
  if (!gst_buffer_pool_set_config (pool, config)) {
    config = gst_buffer_pool_get_config (pool);
    if (!gst_buffer_pool_config_validate_params (config, outcaps, size, min,
            max)) {
      /* Downstream's pool wants something else: use our own. */
      gst_structure_free (config);
      gst_object_unref (pool);
      pool = gst_video_buffer_pool_new ();
      config = gst_buffer_pool_get_config (pool);
      gst_buffer_pool_config_set_params (config, outcaps, size, min, max);
    }
    if (!gst_buffer_pool_set_config (pool, config)) {
      gst_object_unref (pool);
      GST_ELEMENT_ERROR (trans, RESOURCE, SETTINGS,
          ("Failed to configure the output buffer pool."), (NULL));
      return FALSE;
    }
  }

  if (have_pool)
    gst_query_set_nth_allocation_pool (query, 0, pool, size, min, max);
  else
    gst_query_add_allocation_pool (query, pool, size, min, max);
  gst_object_unref (pool);

  return GST_BASE_TRANSFORM_CLASS (parent_class)->decide_allocation (trans,
      query);
}

static gboolean
gst_flashvsr_query (GstBaseTransform * trans, GstPadDirection direction,
    GstQuery * query)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);

  if (direction == GST_PAD_SRC && GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live;
    GstClockTime min, max;

    if (!gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (trans), query))
      return FALSE;
    gst_query_parse_latency (query, &live, &min, &max);
    const GstClockTime ours = gst_flashvsr_latency (self);
    GST_DEBUG_OBJECT (self, "upstream latency min %" GST_TIME_FORMAT " max %"
        GST_TIME_FORMAT ", adding %" GST_TIME_FORMAT, GST_TIME_ARGS (min),
        GST_TIME_ARGS (max), GST_TIME_ARGS (ours));
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += ours;
    gst_query_set_latency (query, live, min, max);
    return TRUE;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans, direction,
      query);
}

static gboolean
gst_flashvsr_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_STOP:
      GST_DEBUG_OBJECT (self, "flush: dropping %" G_GSIZE_FORMAT
          " pending frames", priv->pending.size ());
      gst_flashvsr_reset_stream (self);
      break;
    case GST_EVENT_EOS:
      gst_flashvsr_drain (self);
      break;
    case GST_EVENT_STREAM_START:
    case GST_EVENT_SEGMENT:
      if (GST_EVENT_TYPE (event) == GST_EVENT_STREAM_START
          || priv->stream_frames > 0)
        gst_flashvsr_drain (self);
      /* A stream that failed starts again with the caps it had, unless new caps follow. */
      if (!priv->stream && priv->negotiated) {
        GST_INFO_OBJECT (self, "%s after a failed stream: setting it up again",
            GST_EVENT_TYPE_NAME (event));
        priv->negotiated = gst_flashvsr_setup_stream (self);
      }
      break;
    case GST_EVENT_GAP:
      if (!priv->pending.empty ()) {
        /* Forwarded once the frames before it are out. */
        Pending p;
        p.event.reset (event);
        priv->pending.push_back (std::move (p));
        return TRUE;
      }
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static GstFlowReturn
gst_flashvsr_submit_input_buffer (GstBaseTransform * trans, gboolean is_discont,
    GstBuffer * input)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;

  /* The base class renegotiates if needed and drops late buffers when QoS is enabled. */
  GstFlowReturn ret = GST_BASE_TRANSFORM_CLASS (parent_class)->submit_input_buffer
      (trans, is_discont, input);
  if (ret != GST_FLOW_OK)
    return ret;
  GstBuffer *buffer = trans->queued_buf;
  trans->queued_buf = NULL;
  if (!buffer)
    return GST_FLOW_OK;

  if (!priv->stream) {
    /* Caps were refused, or the stream failed (already reported). */
    GST_DEBUG_OBJECT (self, "no stream set up, refusing buffer");
    gst_buffer_unref (buffer);
    return GST_FLOW_NOT_NEGOTIATED;
  }

  Pending p;
  p.meta.pts = GST_BUFFER_PTS (buffer);
  p.meta.duration = GST_BUFFER_DURATION (buffer);
  p.meta.offset = GST_BUFFER_OFFSET (buffer);
  p.meta.offset_end = GST_BUFFER_OFFSET_END (buffer);
  p.meta.flags = GST_BUFFER_FLAGS (buffer) & kCarriedFlags;
  if (priv->discont_next)
    p.meta.flags |= GST_BUFFER_FLAG_DISCONT;
  priv->discont_next = false;

  /* Copy the planes into one tight host tensor (pinned for a fast upload to CUDA). */
  const flashvsr::PlaneLayout & layout = priv->in_conv->layout ();
  const at::Device device = priv->stream->model ().device ();
  at::Tensor packed;
  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, &priv->in_info, buffer, GST_MAP_READ)) {
    /* E.g. a buffer smaller than its caps say. */
    const std::string what = std::to_string (gst_buffer_get_size (buffer)) +
        "-byte buffer for " + GST_VIDEO_INFO_NAME (&priv->in_info) + " " +
        std::to_string (GST_VIDEO_INFO_WIDTH (&priv->in_info)) + "x" +
        std::to_string (GST_VIDEO_INFO_HEIGHT (&priv->in_info)) + " (" +
        std::to_string (GST_VIDEO_INFO_SIZE (&priv->in_info)) + " bytes)";
    gst_buffer_unref (buffer);
    return gst_flashvsr_stream_failed (self,
        "could not map an input buffer: " + what);
  }
  try {
    packed = at::empty ({1, layout.size}, at::TensorOptions ().dtype (at::kByte)
        .pinned_memory (device.is_cuda ()));
  }
  catch (...) {
    gst_video_frame_unmap (&frame);
    gst_buffer_unref (buffer);
    return gst_flashvsr_stream_exception (self);
  }
  uint8_t *dst = packed.data_ptr < uint8_t > ();
  for (int p_i = 0; p_i < layout.planes; ++p_i) {
    const guint8 *src = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
        p_i);
    const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frame, p_i);
    for (int64_t row = 0; row < layout.rows[p_i]; ++row)
      memcpy (dst + layout.offset[p_i] + row * layout.row_bytes[p_i],
          src + row * stride, layout.row_bytes[p_i]);
  }
  gst_video_frame_unmap (&frame);
  gst_buffer_unref (buffer);

  priv->pending.push_back (std::move (p));
  priv->stream_frames++;

  at::Tensor out;
  int64_t chunks = 0, before = 0;
  const auto t0 = std::chrono::steady_clock::now ();
  try {
    c10::InferenceMode inference;
    before = priv->stream->stats ().chunks;
    at::Tensor rgb = priv->stream->push (priv->in_conv->to_rgb (packed));
    if (rgb.size (0) > 0)
      out = priv->out_conv->from_rgb (rgb).cpu ().contiguous ();
    chunks = priv->stream->stats ().chunks - before;
  }
  catch (...) {
    return gst_flashvsr_stream_exception (self);
  }
  gst_flashvsr_account (self, 1, chunks, elapsed_ms (t0), before == 0);
  if (chunks > 0)
    GST_LOG_OBJECT (self, "%" G_GINT64_FORMAT " chunk(s) gave %" G_GINT64_FORMAT
        " frames", chunks, out.defined ()? out.size (0) : (int64_t) 0);
  return gst_flashvsr_queue_outputs (self, out);
}

static GstFlowReturn
gst_flashvsr_generate_output (GstBaseTransform * trans, GstBuffer ** outbuf)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;

  *outbuf = NULL;
  while (!priv->ready.empty ()) {
    Ready item = std::move (priv->ready.front ());
    priv->ready.pop_front ();
    if (item.event) {
      /* A GAP whose preceding frames were all pushed. */
      gst_pad_push_event (GST_BASE_TRANSFORM_SRC_PAD (trans),
          item.event.release ());
      continue;
    }
    return gst_flashvsr_make_buffer (self, item, outbuf);
  }
  return GST_FLOW_OK;
}
