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

#include "caps_negotiation.h"
#include "cuda_memory.h"
#include "element_error.h"
#include "frame_window.h"
#include "live_pacer.h"
#include "measurements.h"
#include "properties.h"
#include "video_format.h"

#include "engine.h"
#include "model_cache.h"
#include "schedule.h"

#include <c10/core/InferenceMode.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

GST_DEBUG_CATEGORY_STATIC (gst_flashvsr_debug);
#define GST_CAT_DEFAULT gst_flashvsr_debug
GST_DEBUG_CATEGORY_STATIC (gst_flashvsr_model_debug);

using namespace gstflashvsr;

/* The video negotiated on the two pads (set_caps accepted it): a stream that failed can be set up
 * again from it. */
struct NegotiatedVideo
{
  GstVideoInfo in, out;
};

struct GstFlashVsrPrivate
{
  /* Guards settings and model: read by other threads (properties, state changes). Never held while
   * pushing downstream or while the engine runs. */
  std::mutex lock;
  Settings settings;
  std::shared_ptr < const flashvsr::Model > model;
  /* Counters and latency figures (locked on their own). */
  Measurements measurements;
#ifdef FLASHVSR_GST_CUDA
  /* The CUDA context shared with the neighbours (GstContext "gst.cuda.context"): LibTorch's primary
   * context of the element's device, from READY to NULL; guarded by `lock`. */
  GstCudaContext *cuda_ctx = nullptr;
#endif

  /* Streaming state. Only the streaming thread touches it (buffers, serialized events, set_caps), or a
   * state change once streaming has stopped (start/stop), so it needs no lock. */
  std::optional < NegotiatedVideo > video;
  std::unique_ptr < FrameWindow > window;       /* null before negotiation and after a failure */
  /* Whether the engine keeps up with a live source, and which inputs it drops when not (qos=true). */
  LivePacer pacer;
  GstClockTime upstream_latency = 0;    /* upstream's minimum latency at negotiation */
  /* pacer.pacing(), for the QoS events that arrive in other threads (gst_flashvsr_src_event). */
  std::atomic < bool > pacing { false };
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
static void gst_flashvsr_set_context (GstElement * element,
    GstContext * context);
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
static gboolean gst_flashvsr_src_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_flashvsr_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input);
static GstFlowReturn gst_flashvsr_generate_output (GstBaseTransform * trans,
    GstBuffer ** outbuf);

/* ------------------------------------------------------------------------------------------------ */
/* Class and properties                                                                             */
/* ------------------------------------------------------------------------------------------------ */

static void
gst_flashvsr_class_init (GstFlashVsrClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (gst_flashvsr_debug, "flashvsr", 0,
      "FlashVSR video super-resolution element");
  GST_DEBUG_CATEGORY_INIT (gst_flashvsr_model_debug, "flashvsr-model", 0,
      "FlashVSR engine library");

  gobject_class->finalize = gst_flashvsr_finalize;
  gobject_class->set_property = gst_flashvsr_set_property;
  gobject_class->get_property = gst_flashvsr_get_property;

  install_properties (gobject_class);

  GstCaps *caps = template_caps ();
  gst_element_class_add_pad_template (element_class,
      gst_pad_template_new ("sink", GST_PAD_SINK, GST_PAD_ALWAYS, caps));
  gst_element_class_add_pad_template (element_class,
      gst_pad_template_new ("src", GST_PAD_SRC, GST_PAD_ALWAYS, caps));
  gst_caps_unref (caps);
  gst_element_class_set_static_metadata (element_class,
      "FlashVSR video super-resolution", "Filter/Effect/Video/Scaler",
      "Upscales video with the streaming FlashVSR-Tiny diffusion model",
      "gst-flashvsr developers");

  element_class->change_state = GST_DEBUG_FUNCPTR (gst_flashvsr_change_state);
  element_class->set_context = GST_DEBUG_FUNCPTR (gst_flashvsr_set_context);

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
  trans_class->src_event = GST_DEBUG_FUNCPTR (gst_flashvsr_src_event);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_flashvsr_submit_input_buffer);
  trans_class->generate_output =
      GST_DEBUG_FUNCPTR (gst_flashvsr_generate_output);
}

static void
gst_flashvsr_init (GstFlashVsr * self)
{
  self->priv = new GstFlashVsrPrivate ();
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

  if ((pspec->flags & GST_PARAM_MUTABLE_READY) && gst_flashvsr_is_running (self)) {
    GST_WARNING_OBJECT (self, "property '%s' can only be changed in the NULL "
        "or READY state; keeping the current value", pspec->name);
    return;
  }

  bool size_changed = false;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    if (!set_setting (priv->settings, prop_id, value, &size_changed))
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
  }
  /* A new scale renegotiates: the caps change drains the frames of the old size first. */
  if (size_changed)
    gst_base_transform_reconfigure_src (GST_BASE_TRANSFORM (self));
}

static void
gst_flashvsr_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstFlashVsr *self = GST_FLASHVSR (object);
  GstFlashVsrPrivate *priv = self->priv;
  const Measurements::Counters counters = priv->measurements.counters ();

  switch (prop_id) {
    case PROP_FRAMES_IN:
      g_value_set_uint64 (value, counters.frames_in);
      break;
    case PROP_FRAMES_OUT:
      g_value_set_uint64 (value, counters.frames_out);
      break;
    case PROP_CHUNKS:
      g_value_set_uint64 (value, counters.chunks);
      break;
    case PROP_MEAN_CHUNK_MS:
      g_value_set_double (value, counters.mean_chunk_ms);
      break;
    case PROP_THROUGHPUT:
      g_value_set_double (value, counters.throughput);
      break;
    case PROP_FRAMES_DROPPED:
      g_value_set_uint64 (value, counters.frames_dropped);
      break;
    default:{
      std::lock_guard < std::mutex > guard (priv->lock);
      if (!get_setting (priv->settings, prop_id, value))
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
    }
  }
}

/* The settings as they are now, and the model (copies: the lock is not held afterwards). */
static Settings
gst_flashvsr_settings (GstFlashVsr * self)
{
  std::lock_guard < std::mutex > guard (self->priv->lock);
  return self->priv->settings;
}

static std::shared_ptr < const flashvsr::Model >
gst_flashvsr_model (GstFlashVsr * self)
{
  std::lock_guard < std::mutex > guard (self->priv->lock);
  return self->priv->model;
}

/* ------------------------------------------------------------------------------------------------ */
/* Model                                                                                            */
/* ------------------------------------------------------------------------------------------------ */

/* The models of all flashvsr elements of the process: the one intentional process-wide object of the
 * plugin. Elements that ask for the same model directory on the same device in the same precision (and
 * whose files did not change in between: see model_cache.h) get the same immutable flashvsr::Model,
 * loaded once; each element keeps its own stream (all per-video state). The cache holds models weakly:
 * a model is freed when its last element goes to NULL. Made on first use and deliberately never
 * destroyed, so that no element or streaming thread can reach it after a static destructor ran at
 * process exit. */
static flashvsr::ModelCache &
shared_models ()
{
  static flashvsr::ModelCache *cache = new flashvsr::ModelCache ();
  return *cache;
}

/* The engine library's log lines, in the flashvsr-model debug category. */
static void
model_log (GstFlashVsr * self, flashvsr::LogLevel level,
    const std::string & message)
{
  const GstDebugLevel l = level == flashvsr::LogLevel::Error ? GST_LEVEL_ERROR
      : level == flashvsr::LogLevel::Warning ? GST_LEVEL_WARNING
      : level == flashvsr::LogLevel::Info ? GST_LEVEL_INFO : GST_LEVEL_DEBUG;
  GST_CAT_LEVEL_LOG (gst_flashvsr_model_debug, l, self, "%s", message.c_str ());
}

/* Gets the model of the current settings from the process-wide cache: loads it when no element holds
 * it (or its files changed), else shares the loaded one. Posts an ERROR message and returns FALSE on
 * failure. */
static gboolean
gst_flashvsr_load_model (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  const Settings s = gst_flashvsr_settings (self);
  const std::shared_ptr < const flashvsr::Model > previous =
      gst_flashvsr_model (self);

  if (s.model_dir.empty ()) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No FlashVSR model directory given."),
        ("set the model-dir property to a directory in the release layout"));
    return FALSE;
  }

  try {
    c10::InferenceMode inference;
    flashvsr::LoadOptions options = load_options (s);
    options.log =[self](flashvsr::LogLevel level, const std::string & m) {
      model_log (self, level, m);
    };
    const std::string device = options.device.str ();
    const char *dtype = flashvsr::precision_name (options);
    GST_DEBUG_OBJECT (self, "asking for %s on %s as %s", s.model_dir.c_str (),
        device.c_str (), dtype);
    const auto t0 = std::chrono::steady_clock::now ();
    const flashvsr::CachedModel got = shared_models ().get (s.model_dir,
        options);
    const double ms = std::chrono::duration < double, std::milli >
        (std::chrono::steady_clock::now () - t0).count ();
    if (got.model == previous)
      GST_DEBUG_OBJECT (self, "model kept: %s on %s as %s is unchanged",
          s.model_dir.c_str (), device.c_str (), dtype);
    else if (got.loaded_now)
      GST_INFO_OBJECT (self, "model loaded: %s on %s as %s in %.0f ms (no "
          "other element held it): %s", s.model_dir.c_str (), device.c_str (),
          dtype, ms, got.model->config ().describe ().c_str ());
    else
      GST_INFO_OBJECT (self, "model shared: %s on %s as %s was already loaded "
          "by another element", s.model_dir.c_str (), device.c_str (), dtype);

    std::lock_guard < std::mutex > guard (priv->lock);
    priv->model = got.model;
    return TRUE;
  }
  catch (...) {
    const StepWords words = { "Could not load the FlashVSR model",
      "LibTorch failed while loading the FlashVSR model from " + s.model_dir,
      "Could not load the FlashVSR model from " + s.model_dir
    };
    FLASHVSR_POST_ERROR (self, current_exception_message (Stage::Setup, words,
            "model-dir=" + s.model_dir + " device=" + s.device));
  }
  return FALSE;
}

/* ------------------------------------------------------------------------------------------------ */
/* CUDA memory (gst/cuda_memory.h)                                                                   */
/* ------------------------------------------------------------------------------------------------ */

/* The CUDA device index the element runs on (the loaded model's, else the settings'), -1 on the CPU. */
static int
gst_flashvsr_cuda_device (GstFlashVsr * self)
{
  const std::shared_ptr < const flashvsr::Model > model =
      gst_flashvsr_model (self);
  try {
    const at::Device device = model ? model->device ()
        : load_options (gst_flashvsr_settings (self)).device;
    return device.is_cuda ()? (device.has_index ()? device.index () : 0) : -1;
  }
  catch (...) {
    return -1;
  }
}

/* Why the element does not take or make video in CUDA memory now ("" when it does). */
static std::string
gst_flashvsr_cuda_memory_refusal (GstFlashVsr * self)
{
  if (!kHaveCudaMemory)
    return "this build of the plugin has no CUDA memory support "
        "(built without gstreamer-cuda-1.0 or without a CUDA LibTorch)";
  if (gst_flashvsr_cuda_device (self) < 0)
    return "the element runs on the CPU (device=" +
        gst_flashvsr_settings (self).device +
        "): memory:CUDAMemory needs device=cuda or cuda:N";
#ifdef FLASHVSR_GST_CUDA
  std::lock_guard < std::mutex > guard (self->priv->lock);
  if (!self->priv->cuda_ctx && GST_STATE (self) != GST_STATE_NULL)
    return "no usable CUDA context (see the warning at the NULL to READY change)";
#endif
  return "";
}

/* NULL -> READY on a CUDA device: the CUDA context the element shares with its neighbours. One set on the
 * element before (by the application or a bin) is kept when LibTorch can use its memory (the device's
 * primary context); else the element wraps LibTorch's primary context and announces it (HAVE_CONTEXT),
 * before the CUDA elements around it make their own at READY -> PAUSED. Without one, CUDA memory is off
 * (logged). */
static void
gst_flashvsr_share_cuda_context (GstFlashVsr * self)
{
#ifdef FLASHVSR_GST_CUDA
  GstFlashVsrPrivate *priv = self->priv;
  const int device = gst_flashvsr_cuda_device (self);
  if (device < 0)
    return;
  GstCudaContext *ctx = NULL;
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    if (priv->cuda_ctx && !is_torch_cuda_context (priv->cuda_ctx)) {
      GST_WARNING_OBJECT (self, "the CUDA context set on the element is not "
          "the primary context of device %d, whose memory LibTorch uses: "
          "ignoring it", device);
      gst_clear_object (&priv->cuda_ctx);
    }
    if (priv->cuda_ctx) {
      GST_INFO_OBJECT (self, "CUDA memory through the given context of "
          "device %d", device);
      return;
    }
  }
  std::string error;
  ctx = new_torch_cuda_context (device, &error);
  if (!ctx) {
    GST_WARNING_OBJECT (self, "no CUDA context for device %d (%s): video in "
        "CUDA memory is refused, system memory only", device, error.c_str ());
    return;
  }
  {
    std::lock_guard < std::mutex > guard (priv->lock);
    gst_object_replace ((GstObject **) & priv->cuda_ctx, GST_OBJECT (ctx));
  }
  GST_INFO_OBJECT (self, "sharing LibTorch's CUDA context of device %d",
      device);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_have_context (GST_OBJECT (self),
          gst_context_new_cuda_context (ctx)));
  gst_object_unref (ctx);
#else
  GST_DEBUG_OBJECT (self, "built without CUDA memory support: system memory "
      "only");
#endif
}

static void
gst_flashvsr_set_context (GstElement * element, GstContext * context)
{
#ifdef FLASHVSR_GST_CUDA
  GstFlashVsr *self = GST_FLASHVSR (element);
  const int device = gst_flashvsr_cuda_device (self);
  GstCudaContext *given = NULL;
  if (device >= 0
      && gst_cuda_handle_set_context (element, context, device, &given)
      && given) {
    /* Only a context whose memory LibTorch can use replaces the element's. */
    if (is_torch_cuda_context (given)) {
      std::lock_guard < std::mutex > guard (self->priv->lock);
      gst_object_replace ((GstObject **) & self->priv->cuda_ctx,
          GST_OBJECT (given));
    } else {
      GST_WARNING_OBJECT (self, "ignoring a CUDA context of device %d that is "
          "not its primary context (LibTorch's): CUDA memory made in it "
          "would not be usable here", device);
    }
  }
  gst_clear_object (&given);
#endif
  GST_ELEMENT_CLASS (parent_class)->set_context (element, context);
}

static GstStateChangeReturn
gst_flashvsr_change_state (GstElement * element, GstStateChange transition)
{
  GstFlashVsr *self = GST_FLASHVSR (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_NULL_TO_READY
      && !gst_flashvsr_load_model (self))
    return GST_STATE_CHANGE_FAILURE;

  if (transition == GST_STATE_CHANGE_NULL_TO_READY)
    gst_flashvsr_share_cuda_context (self);

  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE)
    return ret;

  if (transition == GST_STATE_CHANGE_READY_TO_NULL) {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    self->priv->model.reset ();
#ifdef FLASHVSR_GST_CUDA
    gst_clear_object (&self->priv->cuda_ctx);
#endif
  }
  return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* Stream                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

/* Sets up the frame window (engine stream and frame converters) for the negotiated video `in` -> `out`
 * (copies: the caller's may belong to the window being replaced), with the settings as they are now.
 * Posts an error (RESOURCE/SETTINGS, LIBRARY/INIT) and returns FALSE when the engine refuses them, e.g.
 * frames too large for the attention's key-window limit: the video then no longer counts as negotiated. */
static gboolean
gst_flashvsr_setup_stream (GstFlashVsr * self, const GstVideoInfo in,
    const GstVideoInfo out)
{
  GstFlashVsrPrivate *priv = self->priv;
  const Settings s = gst_flashvsr_settings (self);
  const std::shared_ptr < const flashvsr::Model > model =
      gst_flashvsr_model (self);
  priv->window.reset ();
  priv->video.reset ();
  if (!model) {
    GST_ELEMENT_ERROR (self, CORE, STATE_CHANGE, ("No model is loaded."),
        ("stream set-up without a model"));
    return FALSE;
  }

  const StreamSpec spec = stream_spec (s, &in, &out);
  const std::string what = std::to_string (spec.options.in_width) + "x" +
      std::to_string (spec.options.in_height) + " -> " +
      std::to_string (spec.options.out_width) + "x" +
      std::to_string (spec.options.out_height);
  try {
    c10::InferenceMode inference;
    priv->window = std::make_unique < FrameWindow > (model, spec, in, out);
  }
  catch (...) {
    FLASHVSR_POST_ERROR (self, current_exception_message (Stage::Setup,
            StepWords::all ("Could not set up a FlashVSR stream for " + what),
            what));
    return FALSE;
  }
  priv->video = NegotiatedVideo { in, out };

  const std::string device = model->device ().str ();
  GST_INFO_OBJECT (self, "stream %s %s -> %s on %s, outputs wait up to %d "
      "frames", what.c_str (), GST_VIDEO_INFO_NAME (&in),
      GST_VIDEO_INFO_NAME (&out), device.c_str (),
      (int) flashvsr::kMaxOutputDelayFrames);
  GST_INFO_OBJECT (self, "tiling: %s",
      priv->window->stream ().plan ().describe ().c_str ());
  const flashvsr::AttentionPlan & attention = priv->window->stream ().attention ();
  if (attention.backend_reason.empty ())
    GST_INFO_OBJECT (self, "attention backend: %s",
        flashvsr::attention_backend_name (attention.backend));
  else
    GST_WARNING_OBJECT (self, "attention backend: %s on %s, the slow path "
        "(it waits for the device once per head and block): %s",
        flashvsr::attention_backend_name (attention.backend), device.c_str (),
        attention.backend_reason.c_str ());
  return TRUE;
}

/* Starts the stream afresh with the settings as they are now (properties changed while PLAYING apply
 * from here): the same engine stream reset when they make the same stream, else a new one (an error is
 * posted and the stream freed when the new settings fail). */
static void
gst_flashvsr_restart_stream (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  if (!priv->window)
    return;

  const GstVideoInfo in = priv->window->in_info ();
  const GstVideoInfo out = priv->window->out_info ();
  const StreamSpec spec = stream_spec (gst_flashvsr_settings (self), &in, &out);
  if (spec.same_stream (priv->window->spec ())) {
    priv->window->flush ();
    return;
  }
  GST_INFO_OBJECT (self, "settings changed: new engine stream");
  gst_flashvsr_setup_stream (self, in, out);
}

/* An error while streaming (engine, allocation, mapping; call only inside a catch block): posts
 * STREAM/FAILED and frees the stream (engine stream with its caches on the device, converters, pending
 * and ready frames), so that a failed stream gives its memory back at once, e.g. to the other streams
 * sharing the device. Later buffers are refused (not-negotiated) until new caps, a STREAM_START or
 * SEGMENT, or a new start set a stream up again. */
static GstFlowReturn
gst_flashvsr_stream_failed (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  const int64_t frames = priv->window ? priv->window->frames_in () : 0;
  FLASHVSR_POST_ERROR (self, current_exception_message (Stage::Streaming,
          StepWords::all ("FlashVSR inference failed"),
          "stream state freed after " + std::to_string (frames) + " frames"));
  priv->window.reset ();
  return GST_FLOW_ERROR;
}

/* Tells the user what the pacer found about a live source (a WARNING when slower than it, again when the
 * throughput moved a lot, an INFO when back to real time), with the numbers. */
static void
gst_flashvsr_report_pace (GstFlashVsr * self, LivePacer::Report report)
{
  GstFlashVsrPrivate *priv = self->priv;
  const LivePacer & pacer = priv->pacer;
  if (report == LivePacer::Report::None || !priv->window)
    return;
  const GstVideoInfo & in = priv->window->in_info ();
  const GstVideoInfo & out = priv->window->out_info ();
  gchar *numbers = g_strdup_printf ("%dx%d -> %dx%d: %.1f fps of %.1f needed",
      GST_VIDEO_INFO_WIDTH (&in), GST_VIDEO_INFO_HEIGHT (&in),
      GST_VIDEO_INFO_WIDTH (&out), GST_VIDEO_INFO_HEIGHT (&out),
      pacer.sustained_fps (), pacer.needed_fps ());
  if (report == LivePacer::Report::RealTime) {
    GST_ELEMENT_INFO (self, CORE, CLOCK,
        ("flashvsr is back to real time: %s.", numbers),
        ("no input frame is dropped any more (%" G_GUINT64_FORMAT
            " were dropped)", pacer.dropped ()));
  } else {
    const gboolean qos =
        gst_base_transform_is_qos_enabled (GST_BASE_TRANSFORM (self));
    gchar *detail = qos ? g_strdup_printf ("qos=true: %.0f %% of the input "
        "frames are kept, evenly spread, the others dropped before the engine "
        "so that the output holds real time at a lower frame rate",
        100.0 * pacer.keep_ratio ())
        : g_strdup ("qos=false: every frame is upscaled, so the output falls "
        "further behind the source for as long as this lasts; set qos=true to "
        "drop input frames instead, or use a smaller size or a faster device");
    GST_ELEMENT_WARNING (self, CORE, CLOCK,
        ("flashvsr is slower than the live source: %s.", numbers), ("%s",
            detail));
    g_free (detail);
  }
  g_free (numbers);
}

/* Counts what a push or a drain did, posts a LATENCY message when the processing estimate moved, and
 * gives a new throughput figure to the pacer. */
static void
gst_flashvsr_record (GstFlashVsr * self, const FrameWindow::Step & step)
{
  GstFlashVsrPrivate *priv = self->priv;
  Measurements::Recorded recorded = priv->measurements.record (step);
  if (recorded.throughput_measured) {
    const double fps = priv->measurements.counters ().throughput;
    GST_DEBUG_OBJECT (self, "throughput %.2f fps%s (%.2f needed, %s)", fps,
        recorded.throughput_provisional ? " (provisional: a first chunk's)" :
        "", priv->pacer.needed_fps (), priv->pacer.live ()? "live" :
        "not live");
    gst_flashvsr_report_pace (self, priv->pacer.observe (fps,
            recorded.throughput_provisional));
    /* Kept frames wait for later kept ones: while inputs are dropped, the latency covers that wait. */
    const double keep = priv->pacer.slow ()
        && gst_base_transform_is_qos_enabled (GST_BASE_TRANSFORM (self)) ?
        priv->pacer.keep_ratio () : 1.0;
    if (priv->measurements.set_keep_ratio (keep)) {
      GST_DEBUG_OBJECT (self, "keeping %.3f of the inputs: latency now %"
          GST_TIME_FORMAT, keep, GST_TIME_ARGS (priv->measurements.latency ()));
      recorded.latency_changed = true;
    }
  }
  if (!recorded.latency_changed)
    return;
  GST_DEBUG_OBJECT (self, "processing estimate changed, posting LATENCY");
  gst_element_post_message (GST_ELEMENT_CAST (self),
      gst_message_new_latency (GST_OBJECT_CAST (self)));
}

/* Whether upstream is live, and its minimum latency (its answer to a LATENCY query). */
static gboolean
gst_flashvsr_upstream_is_live (GstFlashVsr * self, GstClockTime * min_latency)
{
  gboolean live = FALSE;
  GstClockTime min = 0;
  GstQuery *query = gst_query_new_latency ();
  if (gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (self), query))
    gst_query_parse_latency (query, &live, &min, NULL);
  gst_query_unref (query);
  *min_latency = GST_CLOCK_TIME_IS_VALID (min) ? min : 0;
  return live;
}

/* When upstream is live, times a first chunk on a scratch stream (flashvsr::time_first_chunk) so that
 * the LATENCY answer covers the first chunk before the stream's own has run: without it, frames 0-20 of
 * a live stream reach a synchronising sink late. Returns whether the estimate changed. */
static gboolean
gst_flashvsr_time_first_chunk (GstFlashVsr * self, gboolean live)
{
  GstFlashVsrPrivate *priv = self->priv;
  if (!live || !priv->window)
    return FALSE;

  double ms = 0.0;
  try {
    c10::InferenceMode inference;
    ms = flashvsr::time_first_chunk (gst_flashvsr_model (self),
        priv->window->stream ().options (),
        priv->window->stream ().tiling ()) * 1000.0;
  }
  catch (const std::exception & e) {
    /* The stream's own first chunk will meet (and report) the same problem. */
    GST_WARNING_OBJECT (self, "timing a first chunk failed: %s", e.what ());
    return FALSE;
  }
  GST_INFO_OBJECT (self, "live upstream: a first chunk takes %.1f ms here",
      ms);
  return priv->measurements.set_first_chunk_estimate (ms);
}

/* Writes one frame into a new output buffer (from the negotiated pool when there is one). */
static GstFlowReturn
gst_flashvsr_make_buffer (GstFlashVsr * self, const FrameWindow::Output & item,
    GstBuffer ** out)
{
  GstFlashVsrPrivate *priv = self->priv;
  GstBufferPool *pool = gst_base_transform_get_buffer_pool (GST_BASE_TRANSFORM
      (self));
  const gsize size = GST_VIDEO_INFO_SIZE (&priv->window->out_info ());
  GstBuffer *buffer = NULL;

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
    buffer = gst_buffer_new_allocate (NULL, size, NULL);
    if (!buffer) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("Could not allocate an output buffer."), ("%" G_GSIZE_FORMAT
              " bytes", size));
      return GST_FLOW_ERROR;
    }
  }

  const auto t0 = std::chrono::steady_clock::now ();
  try {
    if (!priv->window->write (item, buffer)) {
      gst_buffer_unref (buffer);
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("Could not map an output buffer."), (NULL));
      return GST_FLOW_ERROR;
    }
  }
  catch (...) {
    gst_buffer_unref (buffer);
    return gst_flashvsr_stream_failed (self);
  }
  priv->measurements.count_output (std::chrono::duration < double,
      std::milli > (std::chrono::steady_clock::now () - t0).count ());
  *out = buffer;
  return GST_FLOW_OK;
}

/* Emits every frame still inside the engine, pushes them with the GAPs between them (the caller holds
 * no lock), and restarts the stream for the next one. */
static GstFlowReturn
gst_flashvsr_drain (GstFlashVsr * self)
{
  GstFlashVsrPrivate *priv = self->priv;
  GstPad *srcpad = GST_BASE_TRANSFORM_SRC_PAD (self);
  GstFlowReturn ret = GST_FLOW_OK;

  if (!priv->window)
    return GST_FLOW_OK;
  if (priv->window->frames_in () > 0)
    GST_DEBUG_OBJECT (self, "draining %" G_GSIZE_FORMAT " pending frames",
        priv->window->frames_pending ());
  try {
    gst_flashvsr_record (self, priv->window->drain ());
  }
  catch (...) {
    return gst_flashvsr_stream_failed (self);
  }
  while (priv->window && ret == GST_FLOW_OK) {
    std::optional < FrameWindow::Output > item = priv->window->pop ();
    if (!item)
      break;
    if (item->event) {
      gst_pad_push_event (srcpad, item->event.release ());
      continue;
    }
    GstBuffer *buffer = NULL;
    ret = gst_flashvsr_make_buffer (self, *item, &buffer);
    if (ret == GST_FLOW_OK)
      ret = gst_pad_push (srcpad, buffer);
    if (ret != GST_FLOW_OK)
      GST_DEBUG_OBJECT (self, "drain stopped: %s", gst_flow_get_name (ret));
  }
  gst_flashvsr_restart_stream (self);
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

  priv->measurements.reset ();
  priv->window.reset ();
  priv->video.reset ();
  priv->pacer = LivePacer ();
  priv->pacing = false;
  /* Every start asks the cache again: the same model unless the settings or the files changed (a model
   * directory updated while the element sat in READY is picked up here). */
  return gst_flashvsr_load_model (self);
}

static gboolean
gst_flashvsr_stop (GstBaseTransform * trans)
{
  GST_FLASHVSR (trans)->priv->window.reset ();
  return TRUE;
}

static GstCaps *
gst_flashvsr_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  const std::string cuda_refusal = gst_flashvsr_cuda_memory_refusal (self);
  if (!cuda_refusal.empty () && has_cuda_memory (caps))
    GST_DEBUG_OBJECT (self, "memory:CUDAMemory refused: %s",
        cuda_refusal.c_str ());
  GstCaps *ret = transform_caps (direction, caps, filter,
      gst_flashvsr_settings (self).scale, cuda_refusal.empty ());
  GST_DEBUG_OBJECT (self, "%s %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

static GstCaps *
gst_flashvsr_fixate_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * othercaps)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstCaps *result = fixate_caps (direction, caps, othercaps,
      gst_flashvsr_settings (self).scale);
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

  if (!video_info_from_caps (&in_info, incaps)
      || !video_info_from_caps (&out_info, outcaps)) {
    GST_DEBUG_OBJECT (self, "invalid caps %" GST_PTR_FORMAT " -> %"
        GST_PTR_FORMAT, incaps, outcaps);
    return FALSE;
  }
  for (const GstVideoInfo * info : {&in_info, &out_info}) {
    const char *reason = unsupported_reason (info);
    if (*reason) {
      GST_DEBUG_OBJECT (self, "%s: %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
          reason, incaps, outcaps);
      return FALSE;
    }
  }

#ifdef FLASHVSR_GST_CUDA
  /* CUDA memory from or to a neighbour working on another GPU: refused here, with the devices named. */
  const int device = gst_flashvsr_cuda_device (self);
  for (GstPad * pad : {GST_BASE_TRANSFORM_SINK_PAD (trans),
          GST_BASE_TRANSFORM_SRC_PAD (trans)}) {
    const bool sink = pad == GST_BASE_TRANSFORM_SINK_PAD (trans);
    if (!has_cuda_memory (sink ? incaps : outcaps))
      continue;
    const int peer = peer_cuda_device (pad);
    if (peer >= 0 && peer != device) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("The %s element's CUDA memory is on another GPU.",
              sink ? "upstream" : "downstream"),
          ("its CUDA context is on device %d, the element runs on cuda:%d: "
              "set device=cuda:%d, or its cuda-device-id=%d", peer, device,
              peer, device));
      return FALSE;
    }
  }
#endif


  /* 10/16-bit video keeps its precision through the engine: float RGB in (Stream::push_float) and out
   * (float_output, FrameConverter::from_rgb_float); 8-bit video goes through 8-bit RGB as the reference
   * does (docs/element.md, 10-bit video). */
  GST_INFO_OBJECT (self, "frame path: %s (%u-bit) into the engine as %s, "
      "%s (%u-bit) out of it from %s", GST_VIDEO_INFO_NAME (&in_info),
      GST_VIDEO_INFO_COMP_DEPTH (&in_info, 0),
      GST_VIDEO_INFO_COMP_DEPTH (&in_info, 0) > 8 ? "float RGB (push_float)" :
      "8-bit RGB (push)", GST_VIDEO_INFO_NAME (&out_info),
      GST_VIDEO_INFO_COMP_DEPTH (&out_info, 0),
      GST_VIDEO_INFO_COMP_DEPTH (&out_info, 0) > 8 ? "float RGB frames" :
      "8-bit RGB frames");

  /* Frames of the previous caps leave with the previous caps: the base class sets the new src caps
   * only after this returns. */
  if (priv->window && priv->window->frames_in () > 0) {
    GST_DEBUG_OBJECT (self, "caps change mid-stream: draining");
    gst_flashvsr_drain (self);
  }
  const std::optional < NegotiatedVideo > previous = priv->video;
  if (!gst_flashvsr_setup_stream (self, in_info, out_info)) {
    /* The pads keep the previous caps, and the base class does not call set_caps again for caps equal to
     * the current ones: a fresh stream for those, so that returning to them works. */
    if (previous) {
      const gboolean ready = gst_flashvsr_setup_stream (self, previous->in, previous->out);
      GST_INFO_OBJECT (self, "caps refused: a new stream for the previous caps is %s",
          ready ? "ready" : "not possible either");
    }
    return FALSE;
  }

  gboolean latency_changed = priv->measurements.set_framerate
      (GST_VIDEO_INFO_FPS_N (&in_info), GST_VIDEO_INFO_FPS_D (&in_info));
  /* A new video: its throughput is measured afresh, and the pacer starts from the new framerate. */
  const gboolean live = gst_flashvsr_upstream_is_live (self,
      &priv->upstream_latency);
  const double fps = GST_VIDEO_INFO_FPS_N (&in_info) > 0
      && GST_VIDEO_INFO_FPS_D (&in_info) > 0 ?
      (double) GST_VIDEO_INFO_FPS_N (&in_info) / GST_VIDEO_INFO_FPS_D (&in_info)
      : 0.0;
  priv->measurements.reset_throughput ();
  priv->pacer.start (fps, live);
  priv->pacing = false;
  GST_DEBUG_OBJECT (self, "%s upstream at %.2f fps", live ? "live" :
      "non-live", fps);
  if (gst_flashvsr_time_first_chunk (self, live))
    latency_changed = TRUE;
  if (latency_changed)
    gst_element_post_message (GST_ELEMENT_CAST (self),
        gst_message_new_latency (GST_OBJECT_CAST (self)));
  return TRUE;
}

static gboolean
gst_flashvsr_propose_allocation (GstBaseTransform * trans,
    GstQuery * /* decide_query */, GstQuery * query)
{
  /* Input frames are read through GstVideoFrame, so any strides and plane offsets will do. */
  gst_query_add_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL);
#ifdef FLASHVSR_GST_CUDA
  /* CUDA caps: a pool of the shared context, so that upstream writes where LibTorch reads. */
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstCaps *caps = NULL;
  GstVideoInfo info;
  gst_query_parse_allocation (query, &caps, NULL);
  if (!caps || !has_cuda_memory (caps) || !gst_video_info_from_caps (&info, caps))
    return TRUE;
  GstCudaContext *ctx = NULL;
  {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    if (self->priv->cuda_ctx)
      ctx = (GstCudaContext *) gst_object_ref (self->priv->cuda_ctx);
  }
  if (!ctx)
    return FALSE;
  guint size = GST_VIDEO_INFO_SIZE (&info);
  GstBufferPool *pool = new_cuda_pool (ctx, caps, &size, 0, 0);
  gst_object_unref (ctx);
  if (!pool) {
    GST_WARNING_OBJECT (self, "the CUDA buffer pool refused %" GST_PTR_FORMAT,
        caps);
    return FALSE;
  }
  gst_query_add_allocation_pool (query, pool, size, 0, 0);
  gst_object_unref (pool);
#else
  (void) trans;
#endif
  return TRUE;
}

#ifdef FLASHVSR_GST_CUDA
/* CUDA output caps: a GstCudaBufferPool of the shared context (downstream's min and max buffers). */
static gboolean
gst_flashvsr_decide_cuda_allocation (GstFlashVsr * self, GstQuery * query,
    GstCaps * outcaps, guint size)
{
  guint min = 0, max = 0;
  const gboolean have_pool = gst_query_get_n_allocation_pools (query) > 0;
  if (have_pool)
    gst_query_parse_nth_allocation_pool (query, 0, NULL, NULL, &min, &max);
  GstCudaContext *ctx = NULL;
  {
    std::lock_guard < std::mutex > guard (self->priv->lock);
    if (self->priv->cuda_ctx)
      ctx = (GstCudaContext *) gst_object_ref (self->priv->cuda_ctx);
  }
  GstBufferPool *pool = ctx ? new_cuda_pool (ctx, outcaps, &size, min, max)
      : NULL;
  gst_clear_object (&ctx);
  if (!pool) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Failed to set up a CUDA buffer pool for the output."),
        ("caps %" GST_PTR_FORMAT ", %s", outcaps, ctx ? "pool refused "
            "the configuration" : "no CUDA context"));
    return FALSE;
  }
  if (have_pool)
    gst_query_set_nth_allocation_pool (query, 0, pool, size, min, max);
  else
    gst_query_add_allocation_pool (query, pool, size, min, max);
  gst_object_unref (pool);
  GST_DEBUG_OBJECT (self, "output in a CUDA buffer pool of %u-byte buffers",
      size);
  return GST_BASE_TRANSFORM_CLASS (parent_class)->decide_allocation
      (GST_BASE_TRANSFORM (self), query);
}
#endif

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

#ifdef FLASHVSR_GST_CUDA
  if (has_cuda_memory (outcaps))
    return gst_flashvsr_decide_cuda_allocation (GST_FLASHVSR (trans), query,
        outcaps, size);
#endif
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
    const GstClockTime ours = self->priv->measurements.latency ();
    GST_DEBUG_OBJECT (self, "upstream latency min %" GST_TIME_FORMAT " max %"
        GST_TIME_FORMAT ", adding %" GST_TIME_FORMAT, GST_TIME_ARGS (min),
        GST_TIME_ARGS (max), GST_TIME_ARGS (ours));
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += ours;
    gst_query_set_latency (query, live, min, max);
    return TRUE;
  }
#ifdef FLASHVSR_GST_CUDA
  if (GST_QUERY_TYPE (query) == GST_QUERY_CONTEXT) {
    GstCudaContext *ctx = NULL;
    {
      std::lock_guard < std::mutex > guard (self->priv->lock);
      if (self->priv->cuda_ctx)
        ctx = (GstCudaContext *) gst_object_ref (self->priv->cuda_ctx);
    }
    const gboolean answered = ctx
        && gst_cuda_handle_context_query (GST_ELEMENT (self), query, ctx);
    gst_clear_object (&ctx);
    if (answered)
      return TRUE;
  }
#endif
  if (GST_QUERY_TYPE (query) == GST_QUERY_ACCEPT_CAPS) {
    GstCaps *caps = NULL;
    gst_query_parse_accept_caps (query, &caps);
    const std::string refusal = caps && has_cuda_memory (caps)
        ? gst_flashvsr_cuda_memory_refusal (self) : std::string ();
    if (!refusal.empty ()) {
      GST_WARNING_OBJECT (self, "memory:CUDAMemory caps refused on the %s "
          "pad: %s", direction == GST_PAD_SINK ? "sink" : "src",
          refusal.c_str ());
      gst_query_set_accept_caps_result (query, FALSE);
      return TRUE;
    }
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
      if (priv->window)
        GST_DEBUG_OBJECT (self, "flush: dropping %" G_GSIZE_FORMAT
            " pending frames", priv->window->frames_pending ());
      gst_flashvsr_restart_stream (self);
      break;
    case GST_EVENT_EOS:
      gst_flashvsr_drain (self);
      break;
    case GST_EVENT_STREAM_START:
    case GST_EVENT_SEGMENT:
      if (GST_EVENT_TYPE (event) == GST_EVENT_STREAM_START
          || (priv->window && priv->window->frames_in () > 0))
        gst_flashvsr_drain (self);
      /* A stream that failed starts again with the caps it had, unless new caps follow. */
      if (!priv->window && priv->video) {
        GST_INFO_OBJECT (self, "%s after a failed stream: setting it up again",
            GST_EVENT_TYPE_NAME (event));
        const NegotiatedVideo video = *priv->video;
        gst_flashvsr_setup_stream (self, video.in, video.out);
      }
      break;
    case GST_EVENT_GAP:
      /* Forwarded once the frames before it are out; at once when none is pending. */
      if (priv->window && priv->window->push_gap (event))
        return TRUE;
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* While the pacer drops inputs (live, slower than the source, qos=true), it alone decides which: the base
 * class would drop every input older than the lateness downstream reports, a burst each time. The QoS
 * events still go upstream. */
static gboolean
gst_flashvsr_src_event (GstBaseTransform * trans, GstEvent * event)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS && self->priv->pacing)
    return gst_pad_push_event (GST_BASE_TRANSFORM_SINK_PAD (trans), event);
  return GST_BASE_TRANSFORM_CLASS (parent_class)->src_event (trans, event);
}

/* How far an input is behind the clock: the clock's running time now minus the buffer's, less upstream's
 * latency (0 without a clock or a timestamp). */
static GstClockTimeDiff
gst_flashvsr_lag (GstFlashVsr * self, GstBuffer * buffer)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  const GstClockTime running = gst_segment_to_running_time (&trans->segment,
      GST_FORMAT_TIME, GST_BUFFER_PTS (buffer));
  GstClock *clock = gst_element_get_clock (GST_ELEMENT_CAST (self));
  GstClockTimeDiff lag = 0;
  if (clock && GST_CLOCK_TIME_IS_VALID (running)) {
    const GstClockTime now = gst_clock_get_time (clock) -
        gst_element_get_base_time (GST_ELEMENT_CAST (self));
    lag = GST_CLOCK_DIFF (running + self->priv->upstream_latency, now);
  }
  if (clock)
    gst_object_unref (clock);
  return lag;
}

/* Drops an input the pacer did not keep, and posts a QoS message counting the drops (live: TRUE; jitter:
 * how far the input is behind the clock; proportion: needed over sustained; quality: the share kept). */
static void
gst_flashvsr_drop (GstFlashVsr * self, GstBuffer * buffer,
    GstClockTimeDiff jitter)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  const LivePacer & pacer = self->priv->pacer;
  const GstClockTime pts = GST_BUFFER_PTS (buffer);
  const GstClockTime running = gst_segment_to_running_time (&trans->segment,
      GST_FORMAT_TIME, pts);
  const GstClockTime stream = gst_segment_to_stream_time (&trans->segment,
      GST_FORMAT_TIME, pts);

  self->priv->measurements.count_dropped ();
  GST_LOG_OBJECT (self, "dropping input %" GST_TIME_FORMAT " (%" G_GUINT64_FORMAT
      " dropped, %" G_GUINT64_FORMAT " kept)", GST_TIME_ARGS (pts),
      pacer.dropped (), pacer.kept ());
  GstMessage *qos = gst_message_new_qos (GST_OBJECT_CAST (self), TRUE, running,
      stream, pts, GST_BUFFER_DURATION (buffer));
  gst_message_set_qos_values (qos, jitter,
      pacer.needed_fps () / pacer.sustained_fps (),
      (gint) (pacer.applied_ratio () * 1000000.0));
  gst_message_set_qos_stats (qos, GST_FORMAT_BUFFERS, pacer.kept (),
      pacer.dropped ());
  gst_element_post_message (GST_ELEMENT_CAST (self), qos);
  gst_buffer_unref (buffer);
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

  if (!priv->window) {
    /* Caps were refused, or the stream failed (already reported). */
    GST_DEBUG_OBJECT (self, "no stream set up, refusing buffer");
    gst_buffer_unref (buffer);
    return GST_FLOW_NOT_NEGOTIATED;
  }
#ifdef FLASHVSR_GST_CUDA
  /* Under CUDA caps the memory must be usable in place (under system caps any memory is mapped to the
   * host). */
  GstCaps *sink_caps =
      gst_pad_get_current_caps (GST_BASE_TRANSFORM_SINK_PAD (trans));
  const bool cuda_caps = sink_caps && has_cuda_memory (sink_caps);
  gst_clear_caps (&sink_caps);
  if (cuda_caps) {
    const std::string refusal = cuda_buffer_refusal (buffer,
        gst_flashvsr_cuda_device (self));
    if (!refusal.empty ()) {
      gst_buffer_unref (buffer);
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("Cannot use the input's CUDA memory."), ("%s", refusal.c_str ()));
      return GST_FLOW_ERROR;
    }
  }
#endif

  const gboolean qos = gst_base_transform_is_qos_enabled (trans);
  const GstClockTimeDiff lag = priv->pacer.slow () && qos ?
      gst_flashvsr_lag (self, buffer) : 0;
  const bool was_catching_up = priv->pacer.catching_up ();
  const bool keep = priv->pacer.keep (qos, (double) lag / GST_SECOND);
  priv->pacing = priv->pacer.pacing ();
  if (priv->pacer.catching_up () != was_catching_up)
    GST_DEBUG_OBJECT (self, "inputs %" GST_STIME_FORMAT " behind the clock: %s",
        GST_STIME_ARGS (lag), priv->pacer.catching_up ()?
        "catching up, keeping half as many" : "caught up");
  if (!keep) {
    gst_flashvsr_drop (self, buffer, lag);
    return GST_FLOW_OK;
  }
  FrameWindow::Step step;
  try {
    step = priv->window->push (buffer);
  }
  catch (...) {
    gst_buffer_unref (buffer);
    return gst_flashvsr_stream_failed (self);
  }
  gst_buffer_unref (buffer);
  gst_flashvsr_record (self, step);
  if (step.chunks > 0)
    GST_LOG_OBJECT (self, "%" G_GINT64_FORMAT " chunk(s) gave %" G_GINT64_FORMAT
        " frames in %.1f ms", step.chunks, step.frames_ready, step.ms);
  return GST_FLOW_OK;
}

static GstFlowReturn
gst_flashvsr_generate_output (GstBaseTransform * trans, GstBuffer ** outbuf)
{
  GstFlashVsr *self = GST_FLASHVSR (trans);
  GstFlashVsrPrivate *priv = self->priv;

  *outbuf = NULL;
  while (priv->window) {
    std::optional < FrameWindow::Output > item = priv->window->pop ();
    if (!item)
      break;
    if (item->event) {
      /* A GAP whose preceding frames were all pushed. */
      gst_pad_push_event (GST_BASE_TRANSFORM_SRC_PAD (trans),
          item->event.release ());
      continue;
    }
    return gst_flashvsr_make_buffer (self, *item, outbuf);
  }
  return GST_FLOW_OK;
}
