// SPDX-License-Identifier: LGPL-2.1-or-later
// An RTSP restreamer: pulls a live RTSP stream, upscales it with flashvsr, re-encodes it with x264 and
// serves the result again with gst-rtsp-server, with the source's audio (re-encoded as Opus) beside it.
//
//   rtsp_restream --source rtsp://camera/stream --model-dir DIR [--device auto] [--port 8554]
//                 [--mount /upscaled] [--address 127.0.0.1] [--audio auto|off] ...
//   viewer:  gst-launch-1.0 rtspsrc location=rtsp://127.0.0.1:8554/upscaled ! decodebin ! autovideosink
//
// One shared media serves every viewer. Its pipeline (the launch description below) is built when the
// first viewer connects and stopped when the last one leaves:
//
//   rtspsrc  (its video pad) ! decodebin ! queue ! videoconvert ! flashvsr ! queue ! videoconvert
//                                        ! x264enc tune=zerolatency ! queue ! rtph264pay name=pay0
//            (its audio pad) ! decodebin ! queue ! audioconvert ! audioresample ! opusenc
//                                        ! queue (holds the pipeline latency) ! rtpopuspay name=pay1
//
// Audio: rtsp-server announces one stream per payN and waits for data on every one of them before it
// serves, so the audio branch may exist only when the source has audio. With --audio auto (the default)
// each new media first reads the source's SDP (a DESCRIBE of its own, no SETUP) and builds the audio
// branch only when the SDP lists an audio stream; the program says which it built. Audio and video leave
// through sinks that synchronise on the same clock with the same pipeline latency, so the audio waits
// (in the queue before pay1, sized by --audio-buffer) for the frames that flashvsr holds back.
//
// Latency: flashvsr holds up to 24 frames of look-ahead and answers the LATENCY query with 24 frame
// durations plus its measured chunk time; rtsp-server recalculates the pipeline latency when the element
// announces a new figure. Until the first chunk ran the element knows no chunk time, so a pad probe
// reserves --chunk-allowance for it. The RTP sinks synchronise on the clock: every frame leaves
// rtspsrc latency + 24 frames + chunk time (+ encoder latency) after it was received. The queues are
// sized for that: see docs/examples.md. The program prints the media's latency with its statistics.
//
// --port 0 picks a free port; the line "serving rtsp://ADDRESS:PORT/MOUNT" on stdout tells which.
// SIGINT or SIGTERM shut down cleanly (viewers are disconnected, the media pipeline is stopped, the
// exit status is 0); a second signal exits at once with status 130.
#include <glib-unix.h>
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>

#include <gst/sdp/sdp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Options {
  std::string source;
  std::string address = "127.0.0.1";
  int port = 8554;
  std::string mount = "/upscaled";
  std::string model_dir;
  std::string device = "auto";
  std::string precision = "auto";
  double scale = 4.0;
  std::string source_transport = "any";  // rtspsrc protocols: any | udp | tcp
  int source_latency_ms = 200;            // rtspsrc jitter buffer
  int bitrate_kbps = 8000;
  int key_int = 30;
  std::string speed_preset = "veryfast";
  int engine_queue = 64;  // decoded frames waiting for the engine
  int chunk_allowance_ms = 1000;  // processing time reserved per engine chunk until it is measured
  int stats_interval_s = 5;
  std::string audio = "auto";  // auto: the source's audio when it has one | off: video only
  int audio_bitrate_kbps = 96;
  int audio_buffer_ms = 10000;  // audio that may wait for the delayed video (see the header)
  int probe_timeout_s = 10;     // for reading the source's SDP
};

// One media pipeline the factory made. Lives until the program ends (signal handlers of the media and
// of its bus point at it); the media itself is reached through the weak reference only.
struct TrackedMedia {
  int id = 0;
  GWeakRef media;
  std::atomic<bool> prepared{false};
  bool audio_branch = false;  // the media's pipeline has pay1 (set in media-configure, before streaming)
  std::atomic<bool> video_selected{false};
  std::atomic<bool> audio_selected{false};
};

struct App {
  Options opt;
  GMainLoop* loop = nullptr;
  GstRTSPServer* server = nullptr;
  guint server_source = 0;
  std::mutex mutex;  // guards medias and next_id (media-configure runs in the server's client threads)
  std::vector<std::unique_ptr<TrackedMedia>> medias;
  int next_id = 1;
  bool shutting_down = false;
  gint64 shutdown_deadline = 0;
  int exit_status = 0;
};

void say(const char* format, ...) G_GNUC_PRINTF(1, 2);
void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  gchar* text = g_strdup_vprintf(format, args);
  va_end(args);
  // stdout may be a pipe (tests read the "serving" line): flush every line.
  std::fprintf(stdout, "rtsp_restream: %s\n", text);
  std::fflush(stdout);
  g_free(text);
}

bool parse_options(int argc, char** argv, Options& opt) {
  gchar *source = nullptr, *address = nullptr, *mount = nullptr, *model_dir = nullptr, *device = nullptr,
        *precision = nullptr, *transport = nullptr, *preset = nullptr, *audio = nullptr;
  const GOptionEntry entries[] = {
      {"source", 's', 0, G_OPTION_ARG_STRING, &source, "RTSP URL to pull (required)", "URL"},
      {"model-dir", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir, "Model directory (required)", "DIR"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "auto, cpu, cuda or cuda:N (default auto)", "DEV"},
      {"precision", 0, 0, G_OPTION_ARG_STRING, &precision, "auto, bf16, fp16 or fp32 (default auto)", "P"},
      {"scale", 0, 0, G_OPTION_ARG_DOUBLE, &opt.scale, "Upscaling factor (default 4)", "F"},
      {"address", 'a', 0, G_OPTION_ARG_STRING, &address,
       "Address to serve on (default 127.0.0.1; 0.0.0.0 serves on every interface)", "ADDR"},
      {"port", 'p', 0, G_OPTION_ARG_INT, &opt.port, "RTSP port to serve on, 0 = any free one (default 8554)",
       "PORT"},
      {"mount", 0, 0, G_OPTION_ARG_STRING, &mount, "Mount point (default /upscaled)", "PATH"},
      {"source-transport", 0, 0, G_OPTION_ARG_STRING, &transport,
       "Lower transport for pulling: any, udp or tcp (default any)", "T"},
      {"source-latency", 0, 0, G_OPTION_ARG_INT, &opt.source_latency_ms,
       "Jitter buffer of the pulled stream in ms (default 200)", "MS"},
      {"bitrate", 0, 0, G_OPTION_ARG_INT, &opt.bitrate_kbps, "x264 bitrate in kbit/s (default 8000)", "KBPS"},
      {"key-int", 0, 0, G_OPTION_ARG_INT, &opt.key_int, "Frames between key frames (default 30)", "N"},
      {"speed-preset", 0, 0, G_OPTION_ARG_STRING, &preset, "x264 speed preset (default veryfast)", "NAME"},
      {"chunk-allowance", 0, 0, G_OPTION_ARG_INT, &opt.chunk_allowance_ms,
       "Processing time to reserve in the latency for one engine chunk, in ms, used until the element's "
       "own measurement is larger (default 1000)", "MS"},
      {"engine-queue", 0, 0, G_OPTION_ARG_INT, &opt.engine_queue,
       "Decoded frames that may wait for the engine (default 64)", "N"},
      {"stats", 0, 0, G_OPTION_ARG_INT, &opt.stats_interval_s,
       "Print statistics every N seconds, 0 = never (default 5)", "N"},
      {"audio", 0, 0, G_OPTION_ARG_STRING, &audio,
       "auto: serve the source's first audio stream (Opus) when its SDP has one; off: video only (default auto)",
       "MODE"},
      {"audio-bitrate", 0, 0, G_OPTION_ARG_INT, &opt.audio_bitrate_kbps, "Opus bitrate in kbit/s (default 96)",
       "KBPS"},
      {"audio-buffer", 0, 0, G_OPTION_ARG_INT, &opt.audio_buffer_ms,
       "Audio that may wait for the delayed video, in ms; must exceed the media's latency (default 10000)", "MS"},
      {"probe-timeout", 0, 0, G_OPTION_ARG_INT, &opt.probe_timeout_s,
       "Seconds to wait for the source's SDP when --audio auto (default 10)", "S"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr}};
  GOptionContext* ctx = g_option_context_new("- upscale an RTSP stream with flashvsr and serve it again");
  g_option_context_add_main_entries(ctx, entries, nullptr);
  g_option_context_add_group(ctx, gst_init_get_option_group());
  GError* err = nullptr;
  const bool parsed = g_option_context_parse(ctx, &argc, &argv, &err);
  g_option_context_free(ctx);
  if (!parsed) {
    g_printerr("rtsp_restream: %s\n", err->message);
    g_error_free(err);
    return false;
  }
  auto take = [](gchar* s, std::string& into) {
    if (s) into = s;
    g_free(s);
  };
  take(source, opt.source);
  take(address, opt.address);
  take(mount, opt.mount);
  take(model_dir, opt.model_dir);
  take(device, opt.device);
  take(precision, opt.precision);
  take(transport, opt.source_transport);
  take(preset, opt.speed_preset);
  take(audio, opt.audio);

  bool ok = true;
  auto fail = [&ok](const char* what) {
    g_printerr("rtsp_restream: %s\n", what);
    ok = false;
  };
  if (argc > 1) fail("unexpected positional argument");
  if (opt.source.empty()) fail("--source is required");
  else if (!g_str_has_prefix(opt.source.c_str(), "rtsp://") && !g_str_has_prefix(opt.source.c_str(), "rtsps://") &&
           !g_str_has_prefix(opt.source.c_str(), "rtspt://") && !g_str_has_prefix(opt.source.c_str(), "rtspu://"))
    fail("--source must be an rtsp:// URL");
  if (opt.model_dir.empty()) fail("--model-dir is required");
  if (opt.port < 0 || opt.port > 65535) fail("--port must be 0..65535");
  if (opt.mount.empty() || opt.mount[0] != '/') fail("--mount must start with '/'");
  if (opt.source_transport != "any" && opt.source_transport != "udp" && opt.source_transport != "tcp")
    fail("--source-transport must be any, udp or tcp");
  if (opt.source_latency_ms < 0) fail("--source-latency must be >= 0");
  if (opt.chunk_allowance_ms < 0) fail("--chunk-allowance must be >= 0");
  if (opt.bitrate_kbps < 1 || opt.key_int < 1 || opt.engine_queue < 1 || opt.stats_interval_s < 0)
    fail("--bitrate, --key-int and --engine-queue must be positive, --stats >= 0");
  if (!(opt.scale >= 1.0 && opt.scale <= 16.0)) fail("--scale must be within 1..16");
  bool known_preset = false;
  for (const char* p : {"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                        "veryslow", "placebo"})
    known_preset |= opt.speed_preset == p;
  if (!known_preset) fail("--speed-preset must be one of x264's presets (ultrafast ... placebo)");
  if (opt.audio != "auto" && opt.audio != "off") fail("--audio must be auto or off");
  if (opt.audio_bitrate_kbps < 6 || opt.audio_bitrate_kbps > 510) fail("--audio-bitrate must be within 6..510 (Opus)");
  if (opt.audio_buffer_ms < 100) fail("--audio-buffer must be >= 100");
  if (opt.probe_timeout_s < 1) fail("--probe-timeout must be >= 1");
  return ok;
}

void set_source_transport(GstElement* rtspsrc, const Options& o) {
  if (o.source_transport == "tcp")
    gst_util_set_object_arg(G_OBJECT(rtspsrc), "protocols", "tcp");
  else if (o.source_transport == "udp")
    gst_util_set_object_arg(G_OBJECT(rtspsrc), "protocols", "udp");
}

// ---- what the source offers ---------------------------------------------------------------------------

struct SourceStreams {
  bool read = false;  // the SDP arrived
  int video = 0, audio = 0;
  std::string error;  // why not, when !read
};

struct SdpProbe {
  std::mutex mutex;
  std::condition_variable done;
  bool read = false;
  int video = 0, audio = 0;
};

void on_probe_sdp(GstElement*, GstSDPMessage* sdp, gpointer user_data) {
  auto* probe = static_cast<SdpProbe*>(user_data);
  int video = 0, audio = 0;
  for (guint i = 0; i < gst_sdp_message_medias_len(sdp); ++i) {
    const gchar* media = gst_sdp_media_get_media(gst_sdp_message_get_media(sdp, i));
    if (media && std::strcmp(media, "video") == 0) ++video;
    if (media && std::strcmp(media, "audio") == 0) ++audio;
  }
  std::lock_guard<std::mutex> lock(probe->mutex);
  probe->read = true;
  probe->video = video;
  probe->audio = audio;
  probe->done.notify_all();
}

gboolean refuse_stream(GstElement*, guint, GstCaps*, gpointer) { return FALSE; }  // the probe sets nothing up

// Reads the source's SDP with an rtspsrc of its own: DESCRIBE only (every stream is refused, so nothing
// is set up), then TEARDOWN. Bounded by --probe-timeout; an error of the source ends it early.
SourceStreams probe_source(const Options& o) {
  SourceStreams found;
  SdpProbe probe;
  GstElement* pipeline = gst_pipeline_new("source-probe");
  GstElement* src = gst_element_factory_make("rtspsrc", nullptr);
  gst_bin_add(GST_BIN(pipeline), src);
  g_object_set(src, "location", o.source.c_str(), nullptr);
  set_source_transport(src, o);
  g_signal_connect(src, "on-sdp", G_CALLBACK(on_probe_sdp), &probe);
  g_signal_connect(src, "select-stream", G_CALLBACK(refuse_stream), nullptr);
  GstBus* bus = gst_element_get_bus(pipeline);
  gst_element_set_state(pipeline, GST_STATE_PAUSED);  // rtspsrc sends DESCRIBE from its own thread
  const gint64 deadline = g_get_monotonic_time() + o.probe_timeout_s * G_USEC_PER_SEC;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(probe.mutex);
      if (probe.done.wait_for(lock, std::chrono::milliseconds(20), [&] { return probe.read; })) break;
    }
    if (GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
      GError* err = nullptr;
      gst_message_parse_error(msg, &err, nullptr);
      found.error = err ? err->message : "error without message";
      g_clear_error(&err);
      gst_message_unref(msg);
      break;
    }
    if (g_get_monotonic_time() > deadline) {
      found.error = "no SDP within " + std::to_string(o.probe_timeout_s) + " s";
      break;
    }
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);  // the signal handlers' thread is joined here
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  std::lock_guard<std::mutex> lock(probe.mutex);
  if (probe.read) {
    found.read = true;
    found.error.clear();
    found.video = probe.video;
    found.audio = probe.audio;
  }
  return found;
}

// ---- the media pipeline -------------------------------------------------------------------------------

// The media's pipeline. Only numbers and the (checked) x264 preset name go into the text; free strings
// (URL, model directory, device) are set as properties in media-configure, so no quoting is needed.
// rtspsrc's pads are linked to the decoders by media type in media-configure (on_source_pad).
std::string launch_description(const Options& o, bool with_audio) {
  const int engine_out_queue = 32;   // one chunk's outputs (21, then 8 per chunk) can wait for the encoder
  const int network_queue = 256;     // encoded frames waiting for their send time (see docs/examples.md)
  std::string audio;
  if (with_audio) {
    gchar* a = g_strdup_printf(
        " decodebin name=audio-decode"
        " ! queue name=audio-in max-size-buffers=0 max-size-bytes=0 max-size-time=%" G_GUINT64_FORMAT
        " ! audioconvert ! audioresample ! opusenc name=audio-encoder bitrate=%d"
        " ! queue name=audio-to-network max-size-buffers=0 max-size-bytes=0 max-size-time=%" G_GUINT64_FORMAT
        " ! rtpopuspay name=pay1 pt=97",
        static_cast<guint64>(GST_SECOND), o.audio_bitrate_kbps * 1000,
        static_cast<guint64>(o.audio_buffer_ms) * GST_MSECOND);
    audio = a;
    g_free(a);
  }
  gchar* text = g_strdup_printf(
      "( rtspsrc name=source latency=%d"
      " decodebin name=decode"
      " ! queue name=to-engine max-size-buffers=%d max-size-bytes=0 max-size-time=0"
      " ! videoconvert name=convert-in"
      " ! flashvsr name=upscaler"
      " ! queue name=to-encoder max-size-buffers=%d max-size-bytes=0 max-size-time=0"
      " ! videoconvert name=convert-out"
      " ! x264enc name=encoder tune=zerolatency speed-preset=%s bitrate=%d key-int-max=%d"
      " ! queue name=to-network max-size-buffers=%d max-size-bytes=0 max-size-time=0"
      " ! rtph264pay name=pay0 pt=96 config-interval=-1%s )",
      o.source_latency_ms, o.engine_queue, engine_out_queue, o.speed_preset.c_str(), o.bitrate_kbps,
      o.key_int, network_queue, audio.c_str());
  std::string s(text);
  g_free(text);
  return s;
}

// rtspsrc offers every stream of the source (video, audio, ...): take the first video stream, and the
// first audio stream when the pipeline has an audio branch.
gboolean on_select_stream(GstElement*, guint num, GstCaps* caps, gpointer user_data) {
  auto* tracked = static_cast<TrackedMedia*>(user_data);
  const GstStructure* s = gst_caps_get_structure(caps, 0);
  const gchar* media = gst_structure_get_string(s, "media");
  const gchar* encoding = gst_structure_get_string(s, "encoding-name");
  const bool video = media && std::strcmp(media, "video") == 0;
  const bool audio = media && std::strcmp(media, "audio") == 0;
  bool take = false, expected = false;
  if (video) take = tracked->video_selected.compare_exchange_strong(expected, true);
  if (audio && tracked->audio_branch) take = tracked->audio_selected.compare_exchange_strong(expected, true);
  say("media %d: source stream %u (%s, %s): %s", tracked->id, num, media ? media : "?",
      encoding ? encoding : "?", !take ? "ignored" : video ? "upscaling it" : "passing it on (Opus)");
  return take;
}

// A pad of rtspsrc (one per selected stream) goes to the decoder of its media type.
void on_source_pad(GstElement* source, GstPad* pad, gpointer user_data) {
  auto* tracked = static_cast<TrackedMedia*>(user_data);
  GstCaps* caps = gst_pad_get_current_caps(pad);
  if (!caps) caps = gst_pad_query_caps(pad, nullptr);
  const gchar* media = gst_caps_is_empty(caps) ? nullptr
                                                : gst_structure_get_string(gst_caps_get_structure(caps, 0), "media");
  const char* decoder = media && std::strcmp(media, "video") == 0   ? "decode"
                        : media && std::strcmp(media, "audio") == 0 ? "audio-decode"
                                                                    : nullptr;
  GstElement* bin = decoder ? GST_ELEMENT(gst_object_get_parent(GST_OBJECT(source))) : nullptr;
  GstElement* target = bin ? gst_bin_get_by_name(GST_BIN(bin), decoder) : nullptr;
  GstPad* sink = target ? gst_element_get_static_pad(target, "sink") : nullptr;
  const GstPadLinkReturn linked = sink && !gst_pad_is_linked(sink) ? gst_pad_link(pad, sink) : GST_PAD_LINK_REFUSED;
  if (linked != GST_PAD_LINK_OK)
    g_printerr("rtsp_restream: media %d: source pad %s (%s) not linked\n", tracked->id, GST_PAD_NAME(pad),
               media ? media : "no media type");
  if (sink) gst_object_unref(sink);
  if (target) gst_object_unref(target);
  if (bin) gst_object_unref(bin);
  gst_caps_unref(caps);
}

void on_bus_sync_message(GstBus*, GstMessage* msg, gpointer user_data) {
  auto* tracked = static_cast<TrackedMedia*>(user_data);
  GError* err = nullptr;
  gchar* debug = nullptr;
  const bool is_error = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR;
  if (is_error)
    gst_message_parse_error(msg, &err, &debug);
  else
    gst_message_parse_warning(msg, &err, &debug);
  // Runs in whichever thread posted the message: g_printerr is thread-safe.
  g_printerr("rtsp_restream: media %d: %s from %s: %s\n", tracked->id, is_error ? "ERROR" : "warning",
             GST_MESSAGE_SRC_NAME(msg), err ? err->message : "?");
  if (debug) g_printerr("rtsp_restream:   debug: %s\n", debug);
  if (err) g_error_free(err);
  g_free(debug);
}

void on_media_prepared(GstRTSPMedia*, gpointer user_data) {
  auto* tracked = static_cast<TrackedMedia*>(user_data);
  tracked->prepared = true;
  say("media %d: prepared (first upscaled frame encoded), streaming", tracked->id);
}

void on_media_unprepared(GstRTSPMedia*, gpointer user_data) {
  auto* tracked = static_cast<TrackedMedia*>(user_data);
  tracked->prepared = false;
  say("media %d: stopped", tracked->id);
}

// flashvsr answers the LATENCY query with upstream + 24 frames + its mean chunk time, which is 0 until
// the first chunk ran. A pipeline that starts with that figure sends the first chunk's frames late, then
// raises its latency when the element announces its measurement: viewers see a burst, then a pause. This
// probe sees the element's answer and raises the processing part to at least --chunk-allowance, so the
// latency is right from the first frame (and stays put while the measurement is below the allowance).
GstPadProbeReturn on_upscaler_latency(GstPad* pad, GstPadProbeInfo* info, gpointer user_data) {
  GstQuery* query = GST_PAD_PROBE_INFO_QUERY(info);
  if (!query || GST_QUERY_TYPE(query) != GST_QUERY_LATENCY) return GST_PAD_PROBE_OK;
  const auto allowance = static_cast<GstClockTime>(GPOINTER_TO_UINT(user_data)) * GST_MSECOND;
  GstObject* element = gst_pad_get_parent(pad);
  if (!element) return GST_PAD_PROBE_OK;
  gdouble chunk_ms = 0;
  g_object_get(element, "mean-chunk-ms", &chunk_ms, nullptr);
  gst_object_unref(element);
  const auto measured = static_cast<GstClockTime>(chunk_ms * GST_MSECOND);
  if (measured < allowance) {
    gboolean live = FALSE;
    GstClockTime min = 0, max = GST_CLOCK_TIME_NONE;
    gst_query_parse_latency(query, &live, &min, &max);
    const GstClockTime extra = allowance - measured;
    gst_query_set_latency(query, live, min + extra, GST_CLOCK_TIME_IS_VALID(max) ? max + extra : max);
  }
  return GST_PAD_PROBE_OK;
}

// A new media pipeline (first viewer of the mount): set the string properties, pick the video stream,
// report errors from its bus.
void on_media_configure(GstRTSPMediaFactory*, GstRTSPMedia* media, gpointer user_data) {
  auto* app = static_cast<App*>(user_data);
  TrackedMedia* tracked = nullptr;
  {
    std::lock_guard<std::mutex> lock(app->mutex);
    auto t = std::make_unique<TrackedMedia>();
    t->id = app->next_id++;
    g_weak_ref_init(&t->media, media);
    tracked = t.get();
    app->medias.push_back(std::move(t));
  }
  GstElement* bin = gst_rtsp_media_get_element(media);
  GstElement* source = gst_bin_get_by_name(GST_BIN(bin), "source");
  GstElement* upscaler = gst_bin_get_by_name(GST_BIN(bin), "upscaler");
  GstElement* audio_pay = gst_bin_get_by_name(GST_BIN(bin), "pay1");
  tracked->audio_branch = audio_pay != nullptr;
  if (audio_pay) gst_object_unref(audio_pay);
  if (source) {
    g_object_set(source, "location", app->opt.source.c_str(), nullptr);
    set_source_transport(source, app->opt);
    g_signal_connect(source, "select-stream", G_CALLBACK(on_select_stream), tracked);
    g_signal_connect(source, "pad-added", G_CALLBACK(on_source_pad), tracked);
    gst_object_unref(source);
  }
  if (upscaler) {
    g_object_set(upscaler, "model-dir", app->opt.model_dir.c_str(), "device", app->opt.device.c_str(),
                 "scale", app->opt.scale, nullptr);
    gst_util_set_object_arg(G_OBJECT(upscaler), "precision", app->opt.precision.c_str());
    if (app->opt.chunk_allowance_ms > 0) {
      GstPad* src = gst_element_get_static_pad(upscaler, "src");
      // PULL: called with the answer, after the element handled the query.
      gst_pad_add_probe(src, static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_QUERY_UPSTREAM | GST_PAD_PROBE_TYPE_PULL),
                        on_upscaler_latency, GUINT_TO_POINTER(static_cast<guint>(app->opt.chunk_allowance_ms)),
                        nullptr);
      gst_object_unref(src);
    }
    gst_object_unref(upscaler);
  }
  // rtsp-server owns the bus watch of the media's pipeline (it handles state, EOS, errors and LATENCY
  // messages); sync-message signals let us see errors too without taking its place.
  GstObject* pipeline = gst_object_get_parent(GST_OBJECT(bin));
  if (pipeline) {
    GstBus* bus = gst_element_get_bus(GST_ELEMENT(pipeline));
    gst_bus_enable_sync_message_emission(bus);
    g_signal_connect(bus, "sync-message::error", G_CALLBACK(on_bus_sync_message), tracked);
    g_signal_connect(bus, "sync-message::warning", G_CALLBACK(on_bus_sync_message), tracked);
    gst_object_unref(bus);
    gst_object_unref(pipeline);
  }
  gst_object_unref(bin);
  g_signal_connect(media, "prepared", G_CALLBACK(on_media_prepared), tracked);
  g_signal_connect(media, "unprepared", G_CALLBACK(on_media_unprepared), tracked);
  say("media %d: new viewer, starting the pipeline (pulling %s)", tracked->id, app->opt.source.c_str());
}

// The media factory: builds each media's pipeline from what the source offers at that moment (the
// default factory parses one fixed launch line).
struct RestreamFactory {
  GstRTSPMediaFactory parent;
  App* app;
};
struct RestreamFactoryClass {
  GstRTSPMediaFactoryClass parent_class;
};
G_DEFINE_TYPE(RestreamFactory, restream_factory, GST_TYPE_RTSP_MEDIA_FACTORY)

GstElement* restream_factory_create_element(GstRTSPMediaFactory* factory, const GstRTSPUrl*) {
  const Options& opt = reinterpret_cast<RestreamFactory*>(factory)->app->opt;
  bool with_audio = false;
  if (opt.audio == "auto") {
    const SourceStreams streams = probe_source(opt);
    if (!streams.read)
      say("audio: the source's SDP could not be read (%s); building the video-only pipeline, which will "
          "report the source's error itself", streams.error.c_str());
    else
      say("audio: the source offers %d video and %d audio stream(s): %s", streams.video, streams.audio,
          streams.audio > 0 ? "serving its first audio stream as Opus (pay1)" : "video only");
    with_audio = streams.read && streams.audio > 0;
  } else {
    say("audio: off (--audio off), video only");
  }
  const std::string launch = launch_description(opt, with_audio);
  say("media pipeline %s", launch.c_str());
  GError* err = nullptr;
  GstElement* element = gst_parse_launch_full(launch.c_str(), nullptr, GST_PARSE_FLAG_PLACE_IN_BIN, &err);
  if (err) {
    g_printerr("rtsp_restream: media pipeline: %s\n", err->message);
    g_clear_error(&err);
  }
  return element;
}

void restream_factory_class_init(RestreamFactoryClass* klass) {
  GST_RTSP_MEDIA_FACTORY_CLASS(klass)->create_element = restream_factory_create_element;
}
void restream_factory_init(RestreamFactory*) {}

// Prints, per running media, the element's counters and the latency the pipeline works with up to the
// payloader (rtspsrc jitter buffer + flashvsr look-ahead and chunk time + encoder).
gboolean on_stats(gpointer user_data) {
  auto* app = static_cast<App*>(user_data);
  std::vector<std::pair<int, GstRTSPMedia*>> running;  // strong references, taken under the lock
  {
    std::lock_guard<std::mutex> lock(app->mutex);
    for (const auto& t : app->medias) {
      if (!t->prepared) continue;
      if (auto* media = static_cast<GstRTSPMedia*>(g_weak_ref_get(&t->media))) running.emplace_back(t->id, media);
    }
  }
  for (auto& [id, media] : running) {
    GstElement* bin = gst_rtsp_media_get_element(media);
    GstElement* upscaler = gst_bin_get_by_name(GST_BIN(bin), "upscaler");
    GstElement* pay = gst_bin_get_by_name(GST_BIN(bin), "pay0");
    if (upscaler && pay) {
      guint64 in = 0, out = 0, chunks = 0;
      gdouble chunk_ms = 0;
      g_object_get(upscaler, "frames-in", &in, "frames-out", &out, "chunks", &chunks, "mean-chunk-ms",
                   &chunk_ms, nullptr);
      GstQuery* q = gst_query_new_latency();
      GstPad* pad = gst_element_get_static_pad(pay, "src");
      gchar* latency = nullptr;
      if (pad && gst_pad_query(pad, q)) {
        gboolean live = FALSE;
        GstClockTime min = 0, max = 0;
        gst_query_parse_latency(q, &live, &min, &max);
        latency = g_strdup_printf("%.3f s%s", static_cast<double>(min) / GST_SECOND, live ? " (live)" : "");
      }
      say("media %d: frames in %" G_GUINT64_FORMAT ", out %" G_GUINT64_FORMAT ", chunks %" G_GUINT64_FORMAT
          ", mean chunk %.1f ms, latency up to the payloader %s",
          id, in, out, chunks, chunk_ms, latency ? latency : "unknown");
      g_free(latency);
      if (pad) gst_object_unref(pad);
      gst_query_unref(q);
    }
    if (upscaler) gst_object_unref(upscaler);
    if (pay) gst_object_unref(pay);
    gst_object_unref(bin);
    g_object_unref(media);
  }
  return G_SOURCE_CONTINUE;
}

// Medias whose pipeline still exists. Entries of destroyed medias stay (their handlers are gone).
int alive_medias(App* app) {
  std::lock_guard<std::mutex> lock(app->mutex);
  int n = 0;
  for (const auto& t : app->medias) {
    if (GObject* m = static_cast<GObject*>(g_weak_ref_get(&t->media))) {
      ++n;
      g_object_unref(m);
    }
  }
  return n;
}

GstRTSPFilterResult remove_session(GstRTSPSessionPool*, GstRTSPSession*, gpointer) {
  return GST_RTSP_FILTER_REMOVE;
}

GstRTSPFilterResult remove_client(GstRTSPServer*, GstRTSPClient*, gpointer) {
  return GST_RTSP_FILTER_REMOVE;
}

gboolean on_shutdown_poll(gpointer user_data) {
  auto* app = static_cast<App*>(user_data);
  const int alive = alive_medias(app);
  if (alive == 0) {
    g_main_loop_quit(app->loop);
    return G_SOURCE_REMOVE;
  }
  if (g_get_monotonic_time() > app->shutdown_deadline) {
    g_printerr("rtsp_restream: %d media pipeline(s) still running after 10 s; exiting anyway\n", alive);
    app->exit_status = 1;
    g_main_loop_quit(app->loop);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

// Stop listening, end every session and connection (their medias are unprepared: pipelines to NULL),
// then leave the main loop once no media pipeline is left.
gboolean on_signal(gpointer user_data) {
  auto* app = static_cast<App*>(user_data);
  if (app->shutting_down) {
    g_printerr("rtsp_restream: second signal, exiting immediately\n");
    std::_Exit(130);
  }
  app->shutting_down = true;
  say("shutting down");
  if (app->server_source) {
    g_source_remove(app->server_source);
    app->server_source = 0;
  }
  GstRTSPSessionPool* pool = gst_rtsp_server_get_session_pool(app->server);
  GList* kept = gst_rtsp_session_pool_filter(pool, remove_session, nullptr);
  g_list_free_full(kept, g_object_unref);
  g_object_unref(pool);
  kept = gst_rtsp_server_client_filter(app->server, remove_client, nullptr);
  g_list_free_full(kept, g_object_unref);
  app->shutdown_deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  g_timeout_add(50, on_shutdown_poll, app);
  return G_SOURCE_CONTINUE;
}

bool have_factory(const char* name, const char* package) {
  GstElementFactory* f = gst_element_factory_find(name);
  if (f) {
    gst_object_unref(f);
    return true;
  }
  g_printerr("rtsp_restream: GStreamer element '%s' not found (%s)\n", name, package);
  return false;
}

// Loads the model once up front (NULL->READY of a flashvsr element) so that a wrong model directory or
// device is reported at start-up, not only when the first viewer connects.
bool check_model(const Options& opt) {
  GstElement* pipeline = gst_pipeline_new("model-check");
  GstElement* vsr = gst_element_factory_make("flashvsr", nullptr);
  gst_bin_add(GST_BIN(pipeline), vsr);
  g_object_set(vsr, "model-dir", opt.model_dir.c_str(), "device", opt.device.c_str(), nullptr);
  gst_util_set_object_arg(G_OBJECT(vsr), "precision", opt.precision.c_str());
  const bool ok = gst_element_set_state(pipeline, GST_STATE_READY) != GST_STATE_CHANGE_FAILURE;
  if (!ok) {
    GstBus* bus = gst_element_get_bus(pipeline);
    while (GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
      GError* err = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(msg, &err, &debug);
      g_printerr("rtsp_restream: cannot load the model: %s\n", err->message);
      if (debug) g_printerr("rtsp_restream:   debug: %s\n", debug);
      g_error_free(err);
      g_free(debug);
      gst_message_unref(msg);
    }
    gst_object_unref(bus);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  App app;
  if (!parse_options(argc, argv, app.opt)) return 2;
  gst_init(nullptr, nullptr);  // done by the option group's parse already; a no-op then

  bool plugins = have_factory("flashvsr", "this project's plugin: set GST_PLUGIN_PATH to the build's gst/");
  plugins &= have_factory("rtspsrc", "gst-plugins-good");
  plugins &= have_factory("decodebin", "gst-plugins-base");
  plugins &= have_factory("videoconvert", "gst-plugins-base");
  plugins &= have_factory("x264enc", "gst-plugins-ugly");
  plugins &= have_factory("rtph264pay", "gst-plugins-good");
  if (!plugins) return 2;
  if (app.opt.audio == "auto") {
    // The audio branch's elements: without them, say so and serve video only.
    bool audio_plugins = true;
    for (const char* e : {"audioconvert", "audioresample", "opusenc", "rtpopuspay"}) {
      GstElementFactory* f = gst_element_factory_find(e);
      if (!f) {
        say("audio: element '%s' not found (gst-plugins-base / -good): audio off, video only", e);
        audio_plugins = false;
        break;
      }
      gst_object_unref(f);
    }
    if (!audio_plugins) app.opt.audio = "off";
  }
  if (!check_model(app.opt)) return 1;

  app.loop = g_main_loop_new(nullptr, FALSE);
  app.server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(app.server, app.opt.address.c_str());
  const std::string service = std::to_string(app.opt.port);
  gst_rtsp_server_set_service(app.server, service.c_str());

  auto* restream = static_cast<RestreamFactory*>(g_object_new(restream_factory_get_type(), nullptr));
  restream->app = &app;
  GstRTSPMediaFactory* factory = GST_RTSP_MEDIA_FACTORY(restream);
  gst_rtsp_media_factory_set_shared(factory, TRUE);  // one upscaling pipeline for all viewers
  g_signal_connect(factory, "media-configure", G_CALLBACK(on_media_configure), &app);
  GstRTSPMountPoints* mounts = gst_rtsp_server_get_mount_points(app.server);
  gst_rtsp_mount_points_add_factory(mounts, app.opt.mount.c_str(), factory);  // takes the factory
  g_object_unref(mounts);

  GError* err = nullptr;
  GSource* listen = gst_rtsp_server_create_source(app.server, nullptr, &err);
  if (!listen) {
    g_printerr("rtsp_restream: cannot listen on %s:%d: %s\n", app.opt.address.c_str(), app.opt.port,
               err ? err->message : "unknown error");
    g_clear_error(&err);
    g_object_unref(app.server);
    g_main_loop_unref(app.loop);
    return 1;
  }
  app.server_source = g_source_attach(listen, nullptr);
  g_source_unref(listen);
  const int port = gst_rtsp_server_get_bound_port(app.server);

  g_unix_signal_add(SIGINT, on_signal, &app);
  g_unix_signal_add(SIGTERM, on_signal, &app);
  guint stats = 0;
  if (app.opt.stats_interval_s > 0)
    stats = g_timeout_add_seconds(static_cast<guint>(app.opt.stats_interval_s), on_stats, &app);

  say("source %s (transport %s, jitter buffer %d ms)", app.opt.source.c_str(), app.opt.source_transport.c_str(),
      app.opt.source_latency_ms);
  say("model %s on %s (precision %s), scale %g, chunk allowance %d ms", app.opt.model_dir.c_str(),
      app.opt.device.c_str(), app.opt.precision.c_str(), app.opt.scale, app.opt.chunk_allowance_ms);
  say("audio %s (Opus %d kbit/s, up to %d ms waiting for the video)", app.opt.audio.c_str(),
      app.opt.audio_bitrate_kbps, app.opt.audio_buffer_ms);
  say("serving rtsp://%s:%d%s", app.opt.address.c_str(), port, app.opt.mount.c_str());

  g_main_loop_run(app.loop);

  if (stats) g_source_remove(stats);
  g_object_unref(app.server);
  g_main_loop_unref(app.loop);
  // Tracked entries may only be freed when no media (whose handlers point at them) is left.
  if (alive_medias(&app) > 0) {
    for (auto& t : app.medias) (void)t.release();  // deliberately leaked: a media still references it
  } else {
    for (auto& t : app.medias) g_weak_ref_clear(&t->media);
  }
  say("stopped (status %d)", app.exit_status);
  return app.exit_status;
}
