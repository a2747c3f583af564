// SPDX-License-Identifier: LGPL-2.1-or-later
// End-to-end test of examples/rtsp_restream on the loopback interface:
//
//   upstream RTSP server (this process: videotestsrc 64x48 at 10 fps, x264, TCP only, 127.0.0.1:free port;
//                         with --source-audio also a 440 Hz tone, Opus)
//     -> rtsp_restream (child process: pulls it, flashvsr on the CPU with a tiny model, x264, serves it on
//        127.0.0.1 at a free port it prints)
//     -> client (this process: rtspsrc, video: rtph264depay ! h264parse ! avdec_h264 ! appsink,
//                audio: rtpopusdepay ! opusdec ! appsink)
//
// Passes when the client decodes at least --frames frames, every one exactly 4x the source size, with
// increasing timestamps, within --timeout seconds; when the restreamer's SDP has one video stream and, with
// --source-audio, one audio stream of which the client decodes at least 1 s with increasing timestamps
// (without it, no audio stream at all); when the restreamer reported a pipeline latency of at
// least its jitter buffer plus flashvsr's 24 frames of look-ahead; and when, after the client left, the
// restreamer stops on SIGINT with exit status 0 and the upstream media pipeline is gone. Every address
// used is 127.0.0.1 and every transport is TCP (interleaved), so nothing leaves the host.
//
//   rtsp_loopback --restreamer build/examples/rtsp_restream --model-dir DIR [--frames 40] [--timeout 120]
//                 [--source-audio]
#include <glib-unix.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <gst/sdp/sdp.h>
#include <gst/video/video.h>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr int kSourceWidth = 64;
constexpr int kSourceHeight = 48;
constexpr int kSourceFps = 10;
constexpr int kScale = 4;
constexpr int kLookAheadFrames = 24;    // flashvsr's look-ahead
constexpr int kSourceLatencyMs = 200;   // rtspsrc jitter buffer we ask the restreamer for
constexpr int kChunkAllowanceMs = 6000; // processing time the restreamer reserves per chunk (CPU, tiny model)
constexpr GstClockTime kWantAudio = GST_SECOND;  // decoded audio the client must receive with --source-audio

enum class Phase { kStarting, kReceiving, kStoppingRestreamer, kDone };

struct Test {
  // settings
  std::string restreamer;
  std::string model_dir;
  int want_frames = 40;
  int timeout_s = 120;
  bool source_audio = false;

  GMainLoop* loop = nullptr;
  Phase phase = Phase::kStarting;
  std::string failure;  // first failure; empty while all is well
  gint64 t0 = 0;

  // upstream server
  GstRTSPServer* upstream = nullptr;
  guint upstream_source = 0;
  GWeakRef upstream_media;  // the upstream's media pipeline once a client (the restreamer) came
  std::atomic<bool> upstream_media_seen{false};

  // restreamer child
  GPid pid = 0;
  bool child_running = false;
  int child_wait_status = 0;
  GIOChannel* child_out = nullptr;
  guint child_out_watch = 0;
  std::string restream_url;
  double max_reported_latency_s = -1;  // from the restreamer's statistics lines
  gint64 t_sigint = 0, t_child_exit = 0;
  bool timeout_fired = false;
  bool tick_removed = false;

  // client
  GstElement* client = nullptr;
  std::mutex mutex;  // guards the frame bookkeeping (appsink callback runs in a streaming thread)
  int frames = 0;
  int wrong_size = 0;
  std::string first_wrong;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  int non_increasing_pts = 0;
  std::string first_non_increasing;
  gint64 t_client = 0, t_first_frame = 0, t_enough = 0;
  // the restreamer's SDP, as the client read it
  bool sdp_read = false;
  int sdp_video = 0, sdp_audio = 0;
  // decoded audio
  GstClockTime audio_duration = 0;
  int audio_buffers = 0;
  GstClockTime last_audio_pts = GST_CLOCK_TIME_NONE;
  int non_increasing_audio_pts = 0;
  GstClockTime last_video_pts_at_stop = GST_CLOCK_TIME_NONE, last_audio_pts_at_stop = GST_CLOCK_TIME_NONE;
};

std::string time_text(GstClockTime t) {
  if (!GST_CLOCK_TIME_IS_VALID(t)) return "none";
  gchar* s = g_strdup_printf("%" GST_TIME_FORMAT, GST_TIME_ARGS(t));
  std::string r(s);
  g_free(s);
  return r;
}

double seconds_since(const Test& t, gint64 when) { return static_cast<double>(when - t.t0) / G_USEC_PER_SEC; }

void fail(Test& t, const std::string& why) {
  if (t.failure.empty()) {
    t.failure = why;
    g_printerr("rtsp_loopback: FAILURE: %s\n", why.c_str());
  }
  if (t.loop) g_main_loop_quit(t.loop);
}

// ---- upstream server ----------------------------------------------------------------------------------

void on_upstream_media_configure(GstRTSPMediaFactory*, GstRTSPMedia* media, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  g_weak_ref_set(&t->upstream_media, media);
  t->upstream_media_seen = true;
}

bool start_upstream(Test& t, int& port) {
  t.upstream = gst_rtsp_server_new();
  gst_rtsp_server_set_address(t.upstream, "127.0.0.1");
  gst_rtsp_server_set_service(t.upstream, "0");
  GstRTSPMediaFactory* factory = gst_rtsp_media_factory_new();
  gchar* launch = g_strdup_printf(
      "( videotestsrc is-live=true pattern=ball"
      " ! video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1"
      " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=%d bitrate=256"
      " ! rtph264pay name=pay0 pt=96 config-interval=-1%s )",
      kSourceWidth, kSourceHeight, kSourceFps, kSourceFps,
      t.source_audio ? " audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer=960"
                       " ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=64000 ! rtpopuspay name=pay1 pt=97"
                     : "");
  gst_rtsp_media_factory_set_launch(factory, launch);
  g_free(launch);
  gst_rtsp_media_factory_set_shared(factory, TRUE);
  gst_rtsp_media_factory_set_protocols(factory, GST_RTSP_LOWER_TRANS_TCP);  // no UDP sockets at all
  g_signal_connect(factory, "media-configure", G_CALLBACK(on_upstream_media_configure), &t);
  GstRTSPMountPoints* mounts = gst_rtsp_server_get_mount_points(t.upstream);
  gst_rtsp_mount_points_add_factory(mounts, "/source", factory);
  g_object_unref(mounts);
  GError* err = nullptr;
  GSource* source = gst_rtsp_server_create_source(t.upstream, nullptr, &err);
  if (!source) {
    g_printerr("rtsp_loopback: upstream server cannot listen: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    return false;
  }
  t.upstream_source = g_source_attach(source, nullptr);
  g_source_unref(source);
  port = gst_rtsp_server_get_bound_port(t.upstream);
  return port > 0;
}

GstRTSPFilterResult remove_session(GstRTSPSessionPool*, GstRTSPSession*, gpointer) {
  return GST_RTSP_FILTER_REMOVE;
}
GstRTSPFilterResult remove_client(GstRTSPServer*, GstRTSPClient*, gpointer) { return GST_RTSP_FILTER_REMOVE; }

// Ends the upstream's sessions and connections and waits (bounded) until its media pipeline is gone.
bool stop_upstream(Test& t) {
  if (!t.upstream) return true;
  if (t.upstream_source) g_source_remove(t.upstream_source);
  t.upstream_source = 0;
  GstRTSPSessionPool* pool = gst_rtsp_server_get_session_pool(t.upstream);
  g_list_free_full(gst_rtsp_session_pool_filter(pool, remove_session, nullptr), g_object_unref);
  g_object_unref(pool);
  g_list_free_full(gst_rtsp_server_client_filter(t.upstream, remove_client, nullptr), g_object_unref);
  g_object_unref(t.upstream);
  t.upstream = nullptr;
  const gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  for (;;) {
    GObject* media = static_cast<GObject*>(g_weak_ref_get(&t.upstream_media));
    if (!media) return true;
    g_object_unref(media);
    if (g_get_monotonic_time() > deadline) return false;
    g_main_context_iteration(nullptr, FALSE);
    g_usleep(20 * 1000);
  }
}

// ---- client -------------------------------------------------------------------------------------------

GstFlowReturn on_client_sample(GstAppSink* sink, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  GstSample* sample = gst_app_sink_pull_sample(sink);
  if (!sample) return GST_FLOW_EOS;
  GstVideoInfo info;
  const bool have_info = gst_video_info_from_caps(&info, gst_sample_get_caps(sample));
  GstBuffer* buffer = gst_sample_get_buffer(sample);
  {
    std::lock_guard<std::mutex> lock(t->mutex);
    const int w = have_info ? GST_VIDEO_INFO_WIDTH(&info) : -1;
    const int h = have_info ? GST_VIDEO_INFO_HEIGHT(&info) : -1;
    if (w != kSourceWidth * kScale || h != kSourceHeight * kScale ||
        !buffer || gst_buffer_get_size(buffer) < (have_info ? GST_VIDEO_INFO_SIZE(&info) : 1)) {
      if (t->wrong_size++ == 0)
        t->first_wrong = std::to_string(w) + "x" + std::to_string(h) + " (" +
                         std::to_string(buffer ? gst_buffer_get_size(buffer) : 0) + " bytes)";
    }
    const GstClockTime pts = buffer ? GST_BUFFER_PTS(buffer) : GST_CLOCK_TIME_NONE;
    if (!GST_CLOCK_TIME_IS_VALID(pts) ||
        (GST_CLOCK_TIME_IS_VALID(t->last_pts) && pts <= t->last_pts)) {
      if (t->non_increasing_pts++ == 0)
        t->first_non_increasing = "frame " + std::to_string(t->frames) + ": PTS " + time_text(pts) +
                                  " after " + time_text(t->last_pts);
    }
    t->last_pts = pts;
    if (t->frames++ == 0) t->t_first_frame = g_get_monotonic_time();
  }
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

GstFlowReturn on_client_audio(GstAppSink* sink, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  GstSample* sample = gst_app_sink_pull_sample(sink);
  if (!sample) return GST_FLOW_EOS;
  GstBuffer* buffer = gst_sample_get_buffer(sample);
  {
    std::lock_guard<std::mutex> lock(t->mutex);
    const GstClockTime pts = buffer ? GST_BUFFER_PTS(buffer) : GST_CLOCK_TIME_NONE;
    if (!GST_CLOCK_TIME_IS_VALID(pts) || (GST_CLOCK_TIME_IS_VALID(t->last_audio_pts) && pts <= t->last_audio_pts))
      ++t->non_increasing_audio_pts;
    t->last_audio_pts = pts;
    if (buffer && GST_BUFFER_DURATION_IS_VALID(buffer)) t->audio_duration += GST_BUFFER_DURATION(buffer);
    ++t->audio_buffers;
  }
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

void on_client_sdp(GstElement*, GstSDPMessage* sdp, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  int video = 0, audio = 0;
  for (guint i = 0; i < gst_sdp_message_medias_len(sdp); ++i) {
    const gchar* media = gst_sdp_media_get_media(gst_sdp_message_get_media(sdp, i));
    if (media && std::strcmp(media, "video") == 0) ++video;
    if (media && std::strcmp(media, "audio") == 0) ++audio;
  }
  std::lock_guard<std::mutex> lock(t->mutex);
  t->sdp_read = true;
  t->sdp_video = video;
  t->sdp_audio = audio;
}

// rtspsrc's pads (one per stream) go to the depayloader of their media type.
void on_client_pad(GstElement* src, GstPad* pad, gpointer) {
  GstCaps* caps = gst_pad_get_current_caps(pad);
  if (!caps) caps = gst_pad_query_caps(pad, nullptr);
  const gchar* media = gst_caps_is_empty(caps) ? nullptr
                                                : gst_structure_get_string(gst_caps_get_structure(caps, 0), "media");
  const char* depay = media && std::strcmp(media, "video") == 0   ? "video-depay"
                      : media && std::strcmp(media, "audio") == 0 ? "audio-depay"
                                                                  : nullptr;
  GstObject* bin = gst_object_get_parent(GST_OBJECT(src));
  GstElement* target = depay && bin ? gst_bin_get_by_name(GST_BIN(bin), depay) : nullptr;
  GstPad* sink = target ? gst_element_get_static_pad(target, "sink") : nullptr;
  if (!sink || gst_pad_is_linked(sink) || gst_pad_link(pad, sink) != GST_PAD_LINK_OK)
    g_printerr("rtsp_loopback: client pad %s (%s) not linked\n", GST_PAD_NAME(pad), media ? media : "?");
  if (sink) gst_object_unref(sink);
  if (target) gst_object_unref(target);
  if (bin) gst_object_unref(bin);
  gst_caps_unref(caps);
}

gboolean on_client_bus(GstBus*, GstMessage* msg, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  switch (GST_MESSAGE_TYPE(msg)) {
    case GST_MESSAGE_ERROR: {
      GError* err = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(msg, &err, &debug);
      const std::string text = std::string("client error from ") + GST_MESSAGE_SRC_NAME(msg) + ": " +
                               (err ? err->message : "?") + (debug ? std::string(" (") + debug + ")" : "");
      g_clear_error(&err);
      g_free(debug);
      fail(*t, text);
      break;
    }
    case GST_MESSAGE_EOS:
      if (t->phase == Phase::kReceiving) fail(*t, "the client got EOS before enough frames");
      break;
    default:
      break;
  }
  return G_SOURCE_CONTINUE;
}

bool start_client(Test& t) {
  GError* err = nullptr;
  // The audio branch only when the source has audio: an appsink that never gets data would keep the
  // client from reaching PLAYING. Without it, an audio stream that the restreamer wrongly serves still
  // shows in its SDP (checked in on_tick).
  const std::string launch =
      std::string("rtspsrc name=src protocols=tcp latency=200 tcp-timeout=60000000"
                  " rtph264depay name=video-depay ! h264parse ! avdec_h264 ! appsink name=sink sync=false max-buffers=0") +
      (t.source_audio ? " rtpopusdepay name=audio-depay ! opusdec ! appsink name=audio-sink sync=false max-buffers=0" : "");
  t.client = gst_parse_launch(launch.c_str(), &err);
  if (!t.client) {
    fail(t, std::string("cannot build the client: ") + (err ? err->message : "?"));
    g_clear_error(&err);
    return false;
  }
  GstElement* src = gst_bin_get_by_name(GST_BIN(t.client), "src");
  g_object_set(src, "location", t.restream_url.c_str(), nullptr);
  g_signal_connect(src, "on-sdp", G_CALLBACK(on_client_sdp), &t);
  g_signal_connect(src, "pad-added", G_CALLBACK(on_client_pad), &t);
  gst_object_unref(src);
  if (GstElement* audio_sink = gst_bin_get_by_name(GST_BIN(t.client), "audio-sink")) {
    GstAppSinkCallbacks audio_callbacks{};
    audio_callbacks.new_sample = on_client_audio;
    gst_app_sink_set_callbacks(GST_APP_SINK(audio_sink), &audio_callbacks, &t, nullptr);
    gst_object_unref(audio_sink);
  }
  GstElement* sink = gst_bin_get_by_name(GST_BIN(t.client), "sink");
  GstAppSinkCallbacks callbacks{};
  callbacks.new_sample = on_client_sample;
  gst_app_sink_set_callbacks(GST_APP_SINK(sink), &callbacks, &t, nullptr);
  gst_object_unref(sink);
  GstBus* bus = gst_element_get_bus(t.client);
  gst_bus_add_watch(bus, on_client_bus, &t);
  gst_object_unref(bus);
  t.t_client = g_get_monotonic_time();
  if (gst_element_set_state(t.client, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    fail(t, "the client pipeline refused to start");
    return false;
  }
  return true;
}

void stop_client(Test& t) {
  if (!t.client) return;
  gst_element_set_state(t.client, GST_STATE_NULL);  // sends TEARDOWN
  GstBus* bus = gst_element_get_bus(t.client);
  gst_bus_remove_watch(bus);
  gst_object_unref(bus);
  gst_object_unref(t.client);
  t.client = nullptr;
}

// ---- restreamer child ---------------------------------------------------------------------------------

void child_setup(gpointer) {
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test, even if the test is killed
#endif
}

void on_child_exit(GPid pid, gint wait_status, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  g_spawn_close_pid(pid);
  t->child_running = false;
  t->child_wait_status = wait_status;
  t->t_child_exit = g_get_monotonic_time();
  if (t->phase != Phase::kStoppingRestreamer) {
    fail(*t, "the restreamer exited early (wait status " + std::to_string(wait_status) + ")");
    return;
  }
  t->phase = Phase::kDone;
  g_main_loop_quit(t->loop);
}

// Parses "... latency up to the payloader 2.834 s (live)" from a statistics line.
void note_latency(Test& t, const std::string& line) {
  const std::string key = "latency up to the payloader ";
  const size_t at = line.find(key);
  if (at == std::string::npos) return;
  const double v = g_ascii_strtod(line.c_str() + at + key.size(), nullptr);
  if (v > t.max_reported_latency_s) t.max_reported_latency_s = v;
}

gboolean on_child_output(GIOChannel* channel, GIOCondition, gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  for (;;) {
    gchar* line = nullptr;
    gsize len = 0;
    const GIOStatus st = g_io_channel_read_line(channel, &line, &len, nullptr, nullptr);
    if (st == G_IO_STATUS_NORMAL && line) {
      std::string s(line, len);
      g_free(line);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      std::printf("[restreamer %6.2f s] %s\n", seconds_since(*t, g_get_monotonic_time()), s.c_str());
      std::fflush(stdout);
      note_latency(*t, s);
      const std::string key = "rtsp_restream: serving ";
      if (t->restream_url.empty() && s.rfind(key, 0) == 0) {
        t->restream_url = s.substr(key.size());
        // Loopback only: refuse anything else the restreamer might announce.
        if (t->restream_url.rfind("rtsp://127.0.0.1:", 0) != 0) {
          fail(*t, "the restreamer serves on a non-loopback URL: " + t->restream_url);
          return G_SOURCE_REMOVE;
        }
        t->phase = Phase::kReceiving;
        start_client(*t);
      }
      continue;
    }
    g_free(line);
    if (st == G_IO_STATUS_AGAIN) return G_SOURCE_CONTINUE;
    t->child_out_watch = 0;  // EOF or error: the child closed its stdout
    return G_SOURCE_REMOVE;
  }
}

bool spawn_restreamer(Test& t, int upstream_port) {
  const std::string source = "rtsp://127.0.0.1:" + std::to_string(upstream_port) + "/source";
  const std::string latency = std::to_string(kSourceLatencyMs);
  const std::string allowance = std::to_string(kChunkAllowanceMs);
  std::vector<std::string> args = {t.restreamer, "--source", source, "--source-transport", "tcp",
                                   "--source-latency", latency, "--address", "127.0.0.1", "--port", "0",
                                   "--mount", "/upscaled", "--model-dir", t.model_dir, "--device", "cpu",
                                   "--precision", "fp32", "--speed-preset", "ultrafast", "--bitrate", "1000",
                                   "--key-int", "10", "--stats", "1", "--chunk-allowance", allowance};
  std::vector<gchar*> argv;
  for (auto& a : args) argv.push_back(const_cast<gchar*>(a.c_str()));
  argv.push_back(nullptr);
  gint out_fd = -1;
  GError* err = nullptr;
  if (!g_spawn_async_with_pipes(nullptr, argv.data(), nullptr, G_SPAWN_DO_NOT_REAP_CHILD, child_setup, nullptr,
                                &t.pid, nullptr, &out_fd, nullptr, &err)) {
    g_printerr("rtsp_loopback: cannot start %s: %s\n", t.restreamer.c_str(), err ? err->message : "?");
    g_clear_error(&err);
    return false;
  }
  t.child_running = true;
  g_child_watch_add(t.pid, on_child_exit, &t);
  t.child_out = g_io_channel_unix_new(out_fd);
  g_io_channel_set_close_on_unref(t.child_out, TRUE);
  g_io_channel_set_flags(t.child_out, G_IO_FLAG_NONBLOCK, nullptr);
  t.child_out_watch = g_io_add_watch(t.child_out, static_cast<GIOCondition>(G_IO_IN | G_IO_HUP | G_IO_ERR),
                                     on_child_output, &t);
  return true;
}

// Bounded wait for the child after a signal; escalates to SIGKILL. Used on failure paths.
void kill_restreamer(Test& t) {
  if (!t.child_running) return;
  t.t_sigint = g_get_monotonic_time();
  kill(t.pid, SIGINT);
  const gint64 deadline = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
  while (t.child_running && g_get_monotonic_time() < deadline) {
    g_main_context_iteration(nullptr, FALSE);
    g_usleep(20 * 1000);
  }
  if (t.child_running) {
    g_printerr("rtsp_loopback: restreamer ignored SIGINT; killing it\n");
    kill(t.pid, SIGKILL);
    const gint64 kill_deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (t.child_running && g_get_monotonic_time() < kill_deadline) {
      g_main_context_iteration(nullptr, FALSE);
      g_usleep(20 * 1000);
    }
  }
}

// ---- progress -----------------------------------------------------------------------------------------

gboolean on_tick(gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  if (t->phase != Phase::kReceiving) return G_SOURCE_CONTINUE;
  int frames, wrong, non_increasing, non_increasing_audio;
  bool sdp_read;
  int sdp_video, sdp_audio;
  GstClockTime audio;
  std::string first_wrong, first_non_increasing;
  {
    std::lock_guard<std::mutex> lock(t->mutex);
    sdp_read = t->sdp_read;
    sdp_video = t->sdp_video;
    sdp_audio = t->sdp_audio;
    audio = t->audio_duration;
    non_increasing_audio = t->non_increasing_audio_pts;
    first_non_increasing = t->first_non_increasing;
    frames = t->frames;
    wrong = t->wrong_size;
    first_wrong = t->first_wrong;
    non_increasing = t->non_increasing_pts;
    if (frames >= t->want_frames && t->t_enough == 0) t->t_enough = g_get_monotonic_time();
  }
  if (wrong > 0) {
    fail(*t, std::to_string(wrong) + " decoded frame(s) of the wrong size, first " + first_wrong +
                 ", expected " + std::to_string(kSourceWidth * kScale) + "x" +
                 std::to_string(kSourceHeight * kScale));
    t->tick_removed = true;
    return G_SOURCE_REMOVE;
  }
  if (non_increasing > 0) {
    fail(*t, std::to_string(non_increasing) + " decoded frame(s) without increasing timestamps, first " +
                 first_non_increasing);
    t->tick_removed = true;
    return G_SOURCE_REMOVE;
  }
  const int want_sdp_audio = t->source_audio ? 1 : 0;
  if (sdp_read && (sdp_video != 1 || sdp_audio != want_sdp_audio)) {
    fail(*t, "the restreamer's SDP has " + std::to_string(sdp_video) + " video and " + std::to_string(sdp_audio) +
                 " audio stream(s), expected 1 and " + std::to_string(want_sdp_audio) +
                 (t->source_audio ? " (the source has audio)" : " (the source has none)"));
    t->tick_removed = true;
    return G_SOURCE_REMOVE;
  }
  if (non_increasing_audio > 0) {
    fail(*t, std::to_string(non_increasing_audio) + " decoded audio buffer(s) without increasing timestamps");
    t->tick_removed = true;
    return G_SOURCE_REMOVE;
  }
  // Enough frames (and audio, when the source has some), and the restreamer has reported its latency at
  // least once: stop the client, then the restreamer.
  const bool enough_audio = !t->source_audio || audio >= kWantAudio;
  if (frames >= t->want_frames && enough_audio && t->max_reported_latency_s >= 0) {
    std::printf("rtsp_loopback: %d frames and %.2f s of audio received; stopping the client\n", frames,
                static_cast<double>(audio) / GST_SECOND);
    std::fflush(stdout);
    {
      std::lock_guard<std::mutex> lock(t->mutex);
      t->last_video_pts_at_stop = t->last_pts;
      t->last_audio_pts_at_stop = t->last_audio_pts;
    }
    stop_client(*t);
    t->phase = Phase::kStoppingRestreamer;
    t->t_sigint = g_get_monotonic_time();
    kill(t->pid, SIGINT);
  }
  return G_SOURCE_CONTINUE;
}

gboolean on_timeout(gpointer user_data) {
  auto* t = static_cast<Test*>(user_data);
  t->timeout_fired = true;
  int frames;
  {
    std::lock_guard<std::mutex> lock(t->mutex);
    frames = t->frames;
  }
  const char* where = t->phase == Phase::kStarting            ? "waiting for the restreamer to serve"
                      : t->phase == Phase::kReceiving          ? "receiving"
                      : t->phase == Phase::kStoppingRestreamer ? "waiting for the restreamer to exit"
                                                               : "done";
  fail(*t, "timeout after " + std::to_string(t->timeout_s) + " s while " + where + " (" +
               std::to_string(frames) + " frames received, want " + std::to_string(t->want_frames) + ")");
  return G_SOURCE_REMOVE;
}

bool parse_options(int argc, char** argv, Test& t) {
  gchar *restreamer = nullptr, *model_dir = nullptr;
  const GOptionEntry entries[] = {
      {"restreamer", 0, 0, G_OPTION_ARG_FILENAME, &restreamer, "rtsp_restream executable", "PATH"},
      {"model-dir", 0, 0, G_OPTION_ARG_FILENAME, &model_dir, "Tiny model directory", "DIR"},
      {"frames", 0, 0, G_OPTION_ARG_INT, &t.want_frames, "Frames the client must decode (default 40)", "K"},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &t.timeout_s, "Time limit in seconds (default 120)", "S"},
      {"source-audio", 0, 0, G_OPTION_ARG_NONE, &t.source_audio,
       "The upstream source has an Opus audio stream beside its video", nullptr},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr}};
  GOptionContext* ctx = g_option_context_new("- end-to-end test of rtsp_restream on 127.0.0.1");
  g_option_context_add_main_entries(ctx, entries, nullptr);
  GError* err = nullptr;
  bool ok = g_option_context_parse(ctx, &argc, &argv, &err);
  g_option_context_free(ctx);
  if (!ok) {
    g_printerr("rtsp_loopback: %s\n", err->message);
    g_error_free(err);
  }
  if (restreamer) t.restreamer = restreamer;
  if (model_dir) t.model_dir = model_dir;
  g_free(restreamer);
  g_free(model_dir);
  if (ok && (t.restreamer.empty() || t.model_dir.empty() || t.want_frames < 1 || t.timeout_s < 1)) {
    g_printerr("rtsp_loopback: --restreamer and --model-dir are required; --frames, --timeout positive\n");
    ok = false;
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Test t;
  if (!parse_options(argc, argv, t)) return 2;
  gst_init(nullptr, nullptr);
  for (const char* f : {"x264enc", "rtph264pay", "rtspsrc", "rtph264depay", "h264parse", "avdec_h264",
                        "videotestsrc", "flashvsr", "audiotestsrc", "opusenc", "rtpopuspay", "rtpopusdepay",
                        "opusdec"}) {
    GstElementFactory* factory = gst_element_factory_find(f);
    if (!factory) {
      g_printerr("rtsp_loopback: element %s missing\n", f);
      return 1;
    }
    gst_object_unref(factory);
  }
  g_weak_ref_init(&t.upstream_media, nullptr);
  t.loop = g_main_loop_new(nullptr, FALSE);
  t.t0 = g_get_monotonic_time();

  int upstream_port = 0;
  if (!start_upstream(t, upstream_port)) return 1;
  std::printf("rtsp_loopback: upstream test server at rtsp://127.0.0.1:%d/source (%dx%d, %d fps, H.264%s)\n",
              upstream_port, kSourceWidth, kSourceHeight, kSourceFps, t.source_audio ? ", Opus audio" : "");
  std::fflush(stdout);
  if (!spawn_restreamer(t, upstream_port)) {
    stop_upstream(t);
    return 1;
  }
  const guint tick = g_timeout_add(100, on_tick, &t);
  const guint timeout = g_timeout_add_seconds(static_cast<guint>(t.timeout_s), on_timeout, &t);
  g_main_loop_run(t.loop);
  if (!t.tick_removed) g_source_remove(tick);
  if (!t.timeout_fired) g_source_remove(timeout);

  // Whatever happened, nothing may be left running.
  stop_client(t);
  kill_restreamer(t);
  if (t.child_out_watch) g_source_remove(t.child_out_watch);
  if (t.child_out) g_io_channel_unref(t.child_out);
  const bool upstream_gone = stop_upstream(t);

  if (t.failure.empty()) {
    if (!WIFEXITED(t.child_wait_status) || WEXITSTATUS(t.child_wait_status) != 0)
      fail(t, "the restreamer did not exit cleanly after SIGINT (wait status " +
                  std::to_string(t.child_wait_status) + ")");
    // The latency the restreamer works with must cover rtspsrc's jitter buffer, 24 frames at 10 fps and
    // the processing allowance (or the element's larger measurement).
    const double min_latency = kSourceLatencyMs / 1000.0 + static_cast<double>(kLookAheadFrames) / kSourceFps +
                               kChunkAllowanceMs / 1000.0;
    if (t.max_reported_latency_s + 1e-3 < min_latency)
      fail(t, "the restreamer's pipeline latency " + std::to_string(t.max_reported_latency_s) +
                  " s is below jitter buffer + look-ahead + chunk allowance = " + std::to_string(min_latency) + " s");
    if (!upstream_gone) fail(t, "the upstream media pipeline did not stop");
    if (!t.sdp_read) fail(t, "the client never read the restreamer's SDP");
  }
  if (t.source_audio)
    std::printf("rtsp_loopback: audio %.2f s in %d buffers (want >= %.2f s); newest PTS when stopping: video %s,"
                " audio %s\n",
                static_cast<double>(t.audio_duration) / GST_SECOND, t.audio_buffers,
                static_cast<double>(kWantAudio) / GST_SECOND, time_text(t.last_video_pts_at_stop).c_str(),
                time_text(t.last_audio_pts_at_stop).c_str());

  std::printf("rtsp_loopback: frames %d (want >= %d, of %dx%d); first frame %.2f s after the client started,"
              " %d frames after %.2f s; restreamer latency %.3f s; restreamer exit %.2f s after SIGINT"
              " (status %d); total %.2f s\n",
              t.frames, t.want_frames, kSourceWidth * kScale, kSourceHeight * kScale,
              t.t_first_frame ? static_cast<double>(t.t_first_frame - t.t_client) / G_USEC_PER_SEC : -1.0,
              t.want_frames,
              t.t_enough ? static_cast<double>(t.t_enough - t.t_client) / G_USEC_PER_SEC : -1.0,
              t.max_reported_latency_s,
              t.t_sigint && t.t_child_exit ? static_cast<double>(t.t_child_exit - t.t_sigint) / G_USEC_PER_SEC : -1.0,
              t.child_wait_status, seconds_since(t, g_get_monotonic_time()));
  std::printf("rtsp_loopback: %s\n", t.failure.empty() ? "PASS" : ("FAIL: " + t.failure).c_str());
  g_weak_ref_clear(&t.upstream_media);
  g_main_loop_unref(t.loop);
  return t.failure.empty() ? 0 : 1;
}
