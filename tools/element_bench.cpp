// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-element-bench: the steady frame rate of whole GStreamer pipelines, timed inside the process on
// the buffers that reach the sink, so that start-up (plugin and model loading, the first chunk) and the
// tail never enter the figure, and alternating the pipelines run after run so that a drift of the machine
// (clocks, other load) falls on all of them alike.
//
// usage: flashvsr-element-bench [--repeat 3] [--skip 33] [--timeout 600] NAME=PIPELINE...
// Each PIPELINE is gst-launch syntax whose sink element is named "sink" (e.g. fakesink name=sink
// sync=false). Runs them in turn (A B C A B C ...) --repeat times. For every run, the wall clock of each
// buffer arriving at the sink's sink pad; the steady time per frame is the span from buffer i0 to buffer i1
// over i1 - i0, where i0 is the first buffer of the first chunk that starts at or after --skip (chunks of the
// element: buffer 21, then every 8th) and i1 the first buffer of the last chunk that the stream's end did not
// flush (at least 8 before the last buffer); for pipelines without the element (copies alone) the same
// indices are simply buffers. Prints a JSON line per run and one per pipeline:
//   {"pipeline": NAME, "ms_per_frame": {"median", "min", "max"}, "fps_median", "runs"}.
#include <gst/gst.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Timed {
  std::vector<Clock::time_point> arrivals;
};

GstPadProbeReturn on_buffer(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* t = static_cast<Timed*>(data);
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) t->arrivals.push_back(Clock::now());
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER_LIST)
    for (guint i = 0; i < gst_buffer_list_length(GST_PAD_PROBE_INFO_BUFFER_LIST(info)); ++i)
      t->arrivals.push_back(Clock::now());
  return GST_PAD_PROBE_OK;
}

// The chunk boundaries of the element's output: buffer 21 starts chunk 1, then every 8th buffer.
int64_t chunk_start_at_or_after(int64_t i) {
  if (i <= 21) return 21;
  return 21 + ((i - 21 + 7) / 8) * 8;
}

// Runs one pipeline to EOS; returns the ms per frame of its steady span, or a negative value (with the
// reason in `error`).
double run_once(const std::string& launch, int64_t skip, int timeout_s, std::string& error, int64_t& frames) {
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &err);
  if (!pipeline || err) {
    error = std::string("parse: ") + (err ? err->message : "unknown");
    if (err) g_error_free(err);
    if (pipeline) gst_object_unref(pipeline);
    return -1.0;
  }
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  if (!sink) {
    error = "no element named 'sink'";
    gst_object_unref(pipeline);
    return -1.0;
  }
  Timed timed;
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST),
                    on_buffer, &timed, nullptr);
  gst_object_unref(pad);
  gst_object_unref(sink);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* msg = gst_bus_timed_pop_filtered(bus, static_cast<GstClockTime>(timeout_s) * GST_SECOND,
                                               static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  if (!msg) {
    error = "timeout after " + std::to_string(timeout_s) + " s";
  } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    GError* e = nullptr;
    gchar* dbg = nullptr;
    gst_message_parse_error(msg, &e, &dbg);
    error = std::string(e ? e->message : "error") + (dbg ? std::string(" (") + dbg + ")" : "");
    if (e) g_error_free(e);
    g_free(dbg);
  }
  if (msg) gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  frames = static_cast<int64_t>(timed.arrivals.size());
  if (!error.empty()) return -1.0;
  const int64_t i0 = chunk_start_at_or_after(skip);
  int64_t i1 = i0;
  while (i1 + 8 <= frames - 8) i1 += 8;
  if (i1 - i0 < 8) {
    error = std::to_string(frames) + " buffers: too few for a steady span after buffer " + std::to_string(i0);
    return -1.0;
  }
  const double ms = std::chrono::duration<double, std::milli>(timed.arrivals[i1] - timed.arrivals[i0]).count();
  return ms / static_cast<double>(i1 - i0);
}

// The text in a JSON string (quotes and backslashes replaced, control characters dropped).
std::string json_text(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"') out += '\'';
    else if (c == '\\') out += '/';
    else if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  int repeat = 3, timeout_s = 600;
  int64_t skip = 33;
  std::vector<std::pair<std::string, std::string>> pipelines;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "flashvsr-element-bench: %s needs a value\n", name);
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--repeat") repeat = static_cast<int>(value("--repeat"));
    else if (a == "--skip") skip = value("--skip");
    else if (a == "--timeout") timeout_s = static_cast<int>(value("--timeout"));
    else if (a == "--help") {
      std::puts("usage: flashvsr-element-bench [--repeat 3] [--skip 33] [--timeout 600] NAME=PIPELINE...\n"
                "PIPELINE: gst-launch syntax with its sink named 'sink'. Prints JSON lines: one per run, one per\n"
                "pipeline (median, min, max ms per frame over the steady span; see the source's header).");
      return 0;
    } else if (a.find('=') != std::string::npos && a.rfind("--", 0) != 0) {
      pipelines.emplace_back(a.substr(0, a.find('=')), a.substr(a.find('=') + 1));
    } else {
      std::fprintf(stderr, "flashvsr-element-bench: unknown argument '%s' (--help)\n", a.c_str());
      return 2;
    }
  }
  if (pipelines.empty() || repeat < 1) {
    std::fprintf(stderr, "flashvsr-element-bench: give at least one NAME=PIPELINE (--help)\n");
    return 2;
  }
  std::vector<std::vector<double>> ms(pipelines.size());
  bool ok = true;
  for (int r = 0; r < repeat; ++r) {
    for (size_t p = 0; p < pipelines.size(); ++p) {
      std::string error;
      int64_t frames = 0;
      const double v = run_once(pipelines[p].second, skip, timeout_s, error, frames);
      if (v < 0) {
        std::printf("{\"pipeline\":\"%s\",\"run\":%d,\"frames\":%lld,\"error\":\"%s\"}\n", pipelines[p].first.c_str(),
                    r, static_cast<long long>(frames), json_text(error).c_str());
        ok = false;
      } else {
        std::printf("{\"pipeline\":\"%s\",\"run\":%d,\"frames\":%lld,\"ms_per_frame\":%.3f}\n",
                    pipelines[p].first.c_str(), r, static_cast<long long>(frames), v);
        ms[p].push_back(v);
      }
      std::fflush(stdout);
    }
  }
  for (size_t p = 0; p < pipelines.size(); ++p) {
    if (ms[p].empty()) continue;
    const double med = median(ms[p]);
    std::printf("{\"pipeline\":\"%s\",\"ms_per_frame\":{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f},\"fps_median\":%.3f,"
                "\"runs\":%zu}\n",
                pipelines[p].first.c_str(), med, *std::min_element(ms[p].begin(), ms[p].end()),
                *std::max_element(ms[p].begin(), ms[p].end()), 1000.0 / med, ms[p].size());
  }
  return ok ? 0 : 1;
}
