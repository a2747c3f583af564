// SPDX-License-Identifier: LGPL-2.1-or-later
// Embedding the flashvsr element in an application: frames made by the program go in through appsrc,
// upscaled frames come back through appsink.
//
//   appsrc ! videoconvert ! flashvsr ! videoconvert ! appsink
//
// The program builds that pipeline element by element, pushes --frames synthetic RGB frames (a moving
// gradient) with timestamps from a feeder thread, pulls every output sample in appsink's callback,
// watches the bus for EOS, errors and warnings, and at the end checks that exactly one output came out per
// input, of the scaled size, carrying the input's timestamps in order. It prints a summary.
//
//   appsrc_appsink --model-dir DIR [--frames 40] [--width 64] [--height 48] [--device auto]
//                  [--precision auto] [--fps 25] [--timeout 600]
//
// Exit status: 0 all checks passed; 1 the pipeline failed (error message, state change failure,
// timeout); 2 bad command line or a missing plugin; 3 the pipeline ran but a check failed.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kExitOk = 0;
constexpr int kExitPipeline = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCheck = 3;

struct Options {
  std::string model_dir;
  std::string device = "auto";
  std::string precision = "auto";
  int frames = 40;
  int width = 64;
  int height = 48;
  int fps = 25;
  int timeout_s = 600;
};

// What appsink's callback saw of one output sample.
struct OutputSample {
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  GstClockTime duration = GST_CLOCK_TIME_NONE;
  int width = 0, height = 0;
  std::string format;
  gsize size = 0;           // bytes in the buffer
  gsize expected_size = 0;  // bytes the caps call for (GstVideoInfo size)
  uint64_t checksum = 0;    // sum of all bytes, printed for the first frame only
};

struct Collected {
  std::mutex mutex;
  std::vector<OutputSample> samples;
  bool caps_unparsable = false;
};

bool parse_options(int argc, char** argv, Options& opt) {
  gchar* model_dir = nullptr;
  gchar* device = nullptr;
  gchar* precision = nullptr;
  const GOptionEntry entries[] = {
      {"model-dir", 'm', 0, G_OPTION_ARG_FILENAME, &model_dir,
       "Model directory in the release layout (required)", "DIR"},
      {"frames", 'n', 0, G_OPTION_ARG_INT, &opt.frames, "Frames to push (default 40)", "N"},
      {"width", 'W', 0, G_OPTION_ARG_INT, &opt.width, "Input width (default 64)", "W"},
      {"height", 'H', 0, G_OPTION_ARG_INT, &opt.height, "Input height (default 48)", "H"},
      {"device", 'd', 0, G_OPTION_ARG_STRING, &device, "auto, cpu, cuda or cuda:N (default auto)", "DEV"},
      {"precision", 'p', 0, G_OPTION_ARG_STRING, &precision, "auto, bf16, fp16 or fp32 (default auto)",
       "P"},
      {"fps", 0, 0, G_OPTION_ARG_INT, &opt.fps, "Frame rate written in the caps (default 25)", "FPS"},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &opt.timeout_s,
       "Give up after this many seconds (default 600)", "S"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr}};
  GOptionContext* ctx = g_option_context_new("- push frames through flashvsr with appsrc/appsink");
  g_option_context_add_main_entries(ctx, entries, nullptr);
  g_option_context_add_group(ctx, gst_init_get_option_group());
  GError* err = nullptr;
  const bool ok = g_option_context_parse(ctx, &argc, &argv, &err);
  g_option_context_free(ctx);
  if (!ok) {
    g_printerr("appsrc_appsink: %s\n", err->message);
    g_error_free(err);
    return false;
  }
  if (model_dir) opt.model_dir = model_dir;
  if (device) opt.device = device;
  if (precision) opt.precision = precision;
  g_free(model_dir);
  g_free(device);
  g_free(precision);
  if (argc > 1) {
    g_printerr("appsrc_appsink: unexpected argument '%s'\n", argv[1]);
    return false;
  }
  if (opt.model_dir.empty()) {
    g_printerr("appsrc_appsink: --model-dir is required\n");
    return false;
  }
  if (opt.frames < 1 || opt.width < 1 || opt.height < 1 || opt.width > 4096 || opt.height > 4096 ||
      opt.fps < 1 || opt.timeout_s < 1) {
    g_printerr("appsrc_appsink: --frames, --width, --height, --fps and --timeout must be positive "
               "(width and height at most 4096)\n");
    return false;
  }
  return true;
}

GstClockTime frame_pts(int i, int fps) {
  return gst_util_uint64_scale(static_cast<guint64>(i), GST_SECOND, static_cast<guint64>(fps));
}

// A tightly packed RGB frame (appsrc's caps carry no stride, so the default one applies: rows padded
// to 4 bytes). The pattern moves with the frame index so consecutive frames differ.
GstBuffer* make_frame(const GstVideoInfo& info, int index) {
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
  GstMapInfo map;
  if (!gst_buffer_map(buffer, &map, GST_MAP_WRITE)) {
    gst_buffer_unref(buffer);
    return nullptr;
  }
  const int w = GST_VIDEO_INFO_WIDTH(&info), h = GST_VIDEO_INFO_HEIGHT(&info);
  const int stride = GST_VIDEO_INFO_PLANE_STRIDE(&info, 0);
  std::memset(map.data, 0, map.size);
  for (int y = 0; y < h; ++y) {
    guint8* row = map.data + static_cast<size_t>(y) * stride;
    for (int x = 0; x < w; ++x) {
      row[3 * x + 0] = static_cast<guint8>(x * 255 / (w > 1 ? w - 1 : 1) + 3 * index);
      row[3 * x + 1] = static_cast<guint8>(y * 255 / (h > 1 ? h - 1 : 1) + 5 * index);
      row[3 * x + 2] = static_cast<guint8>(((x / 8 + y / 8 + index / 4) % 2) ? 200 : 40);
    }
  }
  gst_buffer_unmap(buffer, &map);
  return buffer;
}

GstFlowReturn on_new_sample(GstAppSink* sink, gpointer user_data) {
  auto* collected = static_cast<Collected*>(user_data);
  GstSample* sample = gst_app_sink_pull_sample(sink);
  if (!sample) return GST_FLOW_EOS;  // flushing or EOS
  OutputSample out;
  GstBuffer* buffer = gst_sample_get_buffer(sample);
  GstVideoInfo info;
  const bool have_info = gst_video_info_from_caps(&info, gst_sample_get_caps(sample));
  if (buffer) {
    out.pts = GST_BUFFER_PTS(buffer);
    out.duration = GST_BUFFER_DURATION(buffer);
    out.size = gst_buffer_get_size(buffer);
  }
  if (have_info) {
    out.width = GST_VIDEO_INFO_WIDTH(&info);
    out.height = GST_VIDEO_INFO_HEIGHT(&info);
    out.format = gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info));
    out.expected_size = GST_VIDEO_INFO_SIZE(&info);
  }
  std::lock_guard<std::mutex> lock(collected->mutex);
  if (!have_info) collected->caps_unparsable = true;
  if (buffer && collected->samples.empty()) {
    GstMapInfo map;
    if (gst_buffer_map(buffer, &map, GST_MAP_READ)) {
      for (gsize i = 0; i < map.size; ++i) out.checksum += map.data[i];
      gst_buffer_unmap(buffer, &map);
    }
  }
  collected->samples.push_back(out);
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

GstElement* make_element(const char* factory, const char* name) {
  GstElement* e = gst_element_factory_make(factory, name);
  if (!e) {
    g_printerr("appsrc_appsink: cannot create element '%s'%s\n", factory,
               std::strcmp(factory, "flashvsr") == 0
                   ? " (is the plugin on GST_PLUGIN_PATH? e.g. GST_PLUGIN_PATH=build/gst)"
                   : " (GStreamer plugin missing)");
  }
  return e;
}

// Prints an ERROR or WARNING message with the element that posted it and the debug detail.
void print_message(GstMessage* msg) {
  GError* err = nullptr;
  gchar* debug = nullptr;
  const bool is_error = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR;
  if (is_error)
    gst_message_parse_error(msg, &err, &debug);
  else
    gst_message_parse_warning(msg, &err, &debug);
  g_printerr("appsrc_appsink: %s from %s: %s\n", is_error ? "ERROR" : "WARNING",
             GST_MESSAGE_SRC_NAME(msg), err ? err->message : "(no message)");
  if (debug) g_printerr("appsrc_appsink:   debug: %s\n", debug);
  if (err) g_error_free(err);
  g_free(debug);
}

// Waits for the first ERROR or EOS on the bus (printing warnings), at most until `deadline`
// (monotonic µs). Returns "eos", "error" or "timeout".
std::string wait_on_bus(GstBus* bus, gint64 deadline) {
  for (;;) {
    const gint64 now = g_get_monotonic_time();
    if (now >= deadline) return "timeout";
    GstMessage* msg = gst_bus_timed_pop_filtered(
        bus, static_cast<GstClockTime>(deadline - now) * GST_USECOND,
        static_cast<GstMessageType>(GST_MESSAGE_ERROR | GST_MESSAGE_EOS | GST_MESSAGE_WARNING));
    if (!msg) return "timeout";
    const GstMessageType type = GST_MESSAGE_TYPE(msg);
    if (type == GST_MESSAGE_WARNING) {
      print_message(msg);
      gst_message_unref(msg);
      continue;
    }
    if (type == GST_MESSAGE_ERROR) print_message(msg);
    gst_message_unref(msg);
    return type == GST_MESSAGE_EOS ? "eos" : "error";
  }
}

// After a failed state change the reason is on the bus as an ERROR message: print it (or say that
// none came).
void print_pending_errors(GstBus* bus) {
  bool printed = false;
  while (GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
    print_message(msg);
    gst_message_unref(msg);
    printed = true;
  }
  if (!printed) g_printerr("appsrc_appsink: the pipeline refused to start (no error message)\n");
}

std::string time_string(GstClockTime t) {
  if (!GST_CLOCK_TIME_IS_VALID(t)) return "none";
  gchar* s = g_strdup_printf("%" GST_TIME_FORMAT, GST_TIME_ARGS(t));
  std::string r(s);
  g_free(s);
  return r;
}

// Compares what came out with what went in. Returns the problems found (empty: all fine).
std::vector<std::string> check_outputs(const Options& opt, const std::vector<OutputSample>& samples,
                                       int expected_w, int expected_h) {
  std::vector<std::string> problems;
  if (static_cast<int>(samples.size()) != opt.frames)
    problems.push_back("expected " + std::to_string(opt.frames) + " output frames, got " +
                       std::to_string(samples.size()));
  const size_t n = std::min(samples.size(), static_cast<size_t>(opt.frames));
  for (size_t i = 0; i < n && problems.size() < 10; ++i) {
    const OutputSample& s = samples[i];
    const std::string at = "frame " + std::to_string(i) + ": ";
    if (s.width != expected_w || s.height != expected_h)
      problems.push_back(at + "size " + std::to_string(s.width) + "x" + std::to_string(s.height) +
                         ", expected " + std::to_string(expected_w) + "x" + std::to_string(expected_h));
    if (s.format != "RGB") problems.push_back(at + "format " + s.format + ", expected RGB");
    if (s.size != s.expected_size)
      problems.push_back(at + "buffer of " + std::to_string(s.size) + " bytes, caps call for " +
                         std::to_string(s.expected_size));
    const GstClockTime pts = frame_pts(static_cast<int>(i), opt.fps);
    const GstClockTime dur = frame_pts(static_cast<int>(i) + 1, opt.fps) - pts;
    if (s.pts != pts)
      problems.push_back(at + "PTS " + time_string(s.pts) + ", expected " + time_string(pts));
    if (s.duration != dur)
      problems.push_back(at + "duration " + time_string(s.duration) + ", expected " + time_string(dur));
  }
  return problems;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!parse_options(argc, argv, opt)) return kExitUsage;
  gst_init(nullptr, nullptr);  // already done by the option group's parse; a second call is a no-op

  GstElement* pipeline = gst_pipeline_new("upscale");
  GstElement* src = make_element("appsrc", "src");
  GstElement* conv_in = make_element("videoconvert", "convert-in");
  GstElement* vsr = make_element("flashvsr", "upscaler");
  GstElement* conv_out = make_element("videoconvert", "convert-out");
  GstElement* sink = make_element("appsink", "sink");
  if (!pipeline || !src || !conv_in || !vsr || !conv_out || !sink) {
    for (GstElement* e : {src, conv_in, vsr, conv_out, sink})
      if (e) gst_object_unref(e);
    if (pipeline) gst_object_unref(pipeline);
    return kExitUsage;
  }
  gst_bin_add_many(GST_BIN(pipeline), src, conv_in, vsr, conv_out, sink, nullptr);
  if (!gst_element_link_many(src, conv_in, vsr, conv_out, sink, nullptr)) {
    g_printerr("appsrc_appsink: linking the elements failed\n");
    gst_object_unref(pipeline);
    return kExitPipeline;
  }

  // appsrc: RGB frames with timestamps in TIME format; block when 8 frames are queued, so the feeder
  // thread waits for the pipeline instead of filling memory.
  GstVideoInfo in_info;
  gst_video_info_set_format(&in_info, GST_VIDEO_FORMAT_RGB, static_cast<guint>(opt.width),
                            static_cast<guint>(opt.height));
  GST_VIDEO_INFO_FPS_N(&in_info) = opt.fps;
  GST_VIDEO_INFO_FPS_D(&in_info) = 1;
  GstCaps* in_caps = gst_video_info_to_caps(&in_info);
  g_object_set(src, "caps", in_caps, "format", GST_FORMAT_TIME, "is-live", FALSE, "block", TRUE,
               "max-bytes", static_cast<guint64>(8 * GST_VIDEO_INFO_SIZE(&in_info)), nullptr);
  gst_caps_unref(in_caps);

  // flashvsr: the model and where it runs. Enum properties take their nicks as strings.
  g_object_set(vsr, "model-dir", opt.model_dir.c_str(), "device", opt.device.c_str(), nullptr);
  gst_util_set_object_arg(G_OBJECT(vsr), "precision", opt.precision.c_str());

  // appsink: RGB out, as fast as the pipeline goes (no clock sync), every sample kept.
  GstCaps* out_caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGB", nullptr);
  g_object_set(sink, "caps", out_caps, "sync", FALSE, "max-buffers", 0u, "drop", FALSE, nullptr);
  gst_caps_unref(out_caps);
  Collected collected;
  GstAppSinkCallbacks callbacks{};
  callbacks.new_sample = on_new_sample;
  gst_app_sink_set_callbacks(GST_APP_SINK(sink), &callbacks, &collected, nullptr);

  GstBus* bus = gst_element_get_bus(pipeline);
  const auto t0 = std::chrono::steady_clock::now();
  int status = kExitOk;

  g_print("appsrc_appsink: %d frames %dx%d RGB at %d fps -> flashvsr (model %s, device %s, precision %s)\n",
          opt.frames, opt.width, opt.height, opt.fps, opt.model_dir.c_str(), opt.device.c_str(),
          opt.precision.c_str());
  // The model loads at NULL->READY: a missing or bad model directory fails here, with the reason on
  // the bus.
  if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    print_pending_errors(bus);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(bus);
    gst_object_unref(pipeline);
    return kExitPipeline;
  }

  // The feeder: pushes every frame, then EOS. push_buffer blocks while appsrc's queue is full and
  // returns FLUSHING once the pipeline is shut down (after an error), which ends the loop.
  std::atomic<int> pushed{0};
  std::atomic<bool> push_failed{false};
  std::thread feeder([&]() {
    for (int i = 0; i < opt.frames; ++i) {
      GstBuffer* frame = make_frame(in_info, i);
      if (!frame) {
        push_failed = true;
        return;
      }
      GST_BUFFER_PTS(frame) = frame_pts(i, opt.fps);
      GST_BUFFER_DTS(frame) = GST_BUFFER_PTS(frame);
      GST_BUFFER_DURATION(frame) = frame_pts(i + 1, opt.fps) - frame_pts(i, opt.fps);
      GST_BUFFER_OFFSET(frame) = static_cast<guint64>(i);
      GST_BUFFER_OFFSET_END(frame) = static_cast<guint64>(i) + 1;
      if (gst_app_src_push_buffer(GST_APP_SRC(src), frame) != GST_FLOW_OK) {  // takes the buffer
        push_failed = true;
        return;
      }
      pushed = i + 1;
    }
    gst_app_src_end_of_stream(GST_APP_SRC(src));
  });

  const gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(opt.timeout_s) * G_USEC_PER_SEC;
  const std::string outcome = wait_on_bus(bus, deadline);
  if (outcome == "timeout") {
    std::lock_guard<std::mutex> lock(collected.mutex);
    g_printerr("appsrc_appsink: no EOS within %d s (%d frames pushed, %zu received)\n", opt.timeout_s,
               pushed.load(), collected.samples.size());
  }

  // The element's counters (reset at READY->PAUSED only, so still valid after EOS).
  guint64 frames_in = 0, frames_out = 0, chunks = 0;
  gdouble mean_chunk_ms = 0;
  g_object_get(vsr, "frames-in", &frames_in, "frames-out", &frames_out, "chunks", &chunks, "mean-chunk-ms",
               &mean_chunk_ms, nullptr);

  // Shutting down to NULL flushes appsrc, which releases a feeder blocked in push_buffer.
  gst_element_set_state(pipeline, GST_STATE_NULL);
  feeder.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (outcome != "eos") {
    status = kExitPipeline;
  } else if (push_failed) {
    g_printerr("appsrc_appsink: pushing frames failed after %d frames\n", pushed.load());
    status = kExitPipeline;
  } else {
    const int ew = static_cast<int>(opt.width * 4), eh = static_cast<int>(opt.height * 4);
    std::vector<std::string> problems;
    {
      std::lock_guard<std::mutex> lock(collected.mutex);
      if (collected.caps_unparsable) problems.push_back("a sample's caps were not raw video caps");
      std::vector<std::string> more = check_outputs(opt, collected.samples, ew, eh);
      problems.insert(problems.end(), more.begin(), more.end());
    }
    for (const std::string& p : problems) g_printerr("appsrc_appsink: CHECK FAILED: %s\n", p.c_str());
    if (!problems.empty()) status = kExitCheck;
  }

  {
    std::lock_guard<std::mutex> lock(collected.mutex);
    const size_t n = collected.samples.size();
    const OutputSample* first = n ? &collected.samples.front() : nullptr;
    g_print("appsrc_appsink: pushed %d frames %dx%d, received %zu frames %dx%d %s; PTS %s .. %s\n",
            pushed.load(), opt.width, opt.height, n, first ? first->width : 0, first ? first->height : 0,
            first ? first->format.c_str() : "-", first ? time_string(first->pts).c_str() : "none",
            n ? time_string(collected.samples.back().pts).c_str() : "none");
    g_print("appsrc_appsink: element: frames-in %" G_GUINT64_FORMAT ", frames-out %" G_GUINT64_FORMAT
            ", chunks %" G_GUINT64_FORMAT ", mean chunk %.1f ms; wall %.2f s (%.1f frames/s)\n",
            frames_in, frames_out, chunks, mean_chunk_ms, wall, wall > 0 ? n / wall : 0.0);
    if (first) g_print("appsrc_appsink: first output frame byte sum %" PRIu64 "\n", first->checksum);
  }
  g_print("appsrc_appsink: %s\n", status == kExitOk         ? "OK"
                                  : status == kExitCheck    ? "FAILED (checks)"
                                                            : "FAILED (pipeline)");
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  return status;
}
