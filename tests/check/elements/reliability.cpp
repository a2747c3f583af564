// SPDX-License-Identifier: LGPL-2.1-or-later
// Reliability of the flashvsr element: several elements in one process sharing one loaded model from
// several streaming threads; model files replaced or corrupted between streams; hostile input (no
// timestamps, variable framerate, GAPs, DISCONT, caps changing every few frames, tiny and oversized
// frames, truncated buffers); an allocation failure in the middle of a stream; and a 10,000-frame stream
// whose host memory stays flat. Everything runs on the CPU with the tiny random model.
#include "harness_util.h"

#include "io/file_util.h"
#include "model_maker.h"
#include "schedule.h"
#include "test_support.h"

#include <ATen/Parallel.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace flashvsr;
using namespace flashvsr::io;
using namespace flashvsr::check;

// Sanitizer builds (-Dsanitize_tests): their allocators abort on allocation failure, and their quarantine
// and shadow memory make resident sizes meaningless for a leak bound (LeakSanitizer checks leaks there).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FLASHVSR_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define FLASHVSR_SANITIZED 1
#endif
#endif

namespace {

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

int64_t file_size(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

// Writes a tiny random model into `dir`, with file modification times certainly after any earlier
// version's (the model cache keys a directory by sizes and times; equal sizes are the norm here).
void write_tiny_model(const std::string& dir, uint64_t seed) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c10::InferenceMode guard;
  write_model_dir(dir, make_random_model(ModelSpec::tiny(), seed));
}

// A tiny model directory of this test's own, removed again when the test is done with it (15 MB each).
struct ScratchModel {
  std::string dir;
  ScratchModel(const std::string& name, uint64_t seed) : dir(scratch(name)) { write_tiny_model(dir, seed); }
  ~ScratchModel() { remove_tree(dir); }
  ScratchModel(const ScratchModel&) = delete;
  ScratchModel& operator=(const ScratchModel&) = delete;
};

// /proc/self/statm: total program size and resident set, in bytes.
struct Memory {
  int64_t virtual_bytes = 0, resident_bytes = 0;
};

Memory memory_now() {
  Memory m;
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  m.virtual_bytes = size * page;
  m.resident_bytes = resident * page;
  return m;
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// Pops the error a failed stream posts and checks it: STREAM/FAILED, naming `must_contain`, with the
// stream state freed. Records the message in the test's XML.
void expect_stream_failed(GstBus* bus, const std::string& must_contain) {
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr) << "no error message";
  const std::string text = checked_error_text(msg, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED);
  EXPECT_NE(text.find(must_contain), std::string::npos) << text;
  EXPECT_NE(text.find("stream state freed"), std::string::npos) << text;
  ::testing::Test::RecordProperty("error", text.substr(0, 300));
}

std::string rgb_caps(int w, int h, const std::string& framerate = "25/1") {
  return "video/x-raw,format=RGB,width=" + std::to_string(w) + ",height=" + std::to_string(h) +
         ",framerate=" + framerate;
}

// A buffer of the harness's input caps holding RGB frame `rgb` (uint8 [h, w, 3]) with the given metadata.
GstBuffer* rgb_buffer(const Harness& run, const at::Tensor& rgb, GstClockTime pts, GstClockTime duration,
                      guint64 offset, guint flags = 0) {
  const GstVideoInfo info = run.input_info();
  FrameConverter c(PixelFormat::RGB, rgb.size(1), rgb.size(0), {}, at::kCPU);
  GstBuffer* b = buffer_from_packed(info, c.from_rgb(rgb.unsqueeze(0))[0]);
  GST_BUFFER_PTS(b) = pts;
  GST_BUFFER_DTS(b) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION(b) = duration;
  GST_BUFFER_OFFSET(b) = offset;
  GST_BUFFER_OFFSET_END(b) = offset == GST_BUFFER_OFFSET_NONE ? GST_BUFFER_OFFSET_NONE : offset + 1;
  GST_BUFFER_FLAG_SET(b, flags);
  return b;
}

// The element's debug log (category "flashvsr") while an instance lives; other categories pass by.
class ElementLog {
 public:
  ElementLog() {
    removed_default_ = gst_debug_remove_log_function(gst_debug_log_default) > 0;
    was_active_ = gst_debug_is_active();
    gst_debug_set_active(TRUE);
    gst_debug_set_threshold_for_name("flashvsr", GST_LEVEL_DEBUG);
    gst_debug_add_log_function(&ElementLog::log, this, nullptr);
  }
  ~ElementLog() {
    gst_debug_remove_log_function(&ElementLog::log);
    gst_debug_unset_threshold_for_name("flashvsr");
    gst_debug_set_active(was_active_);
    if (removed_default_) gst_debug_add_log_function(gst_debug_log_default, nullptr, nullptr);
  }
  ElementLog(const ElementLog&) = delete;
  ElementLog& operator=(const ElementLog&) = delete;

  int count(const std::string& needle) {
    std::lock_guard<std::mutex> guard(lock_);
    int n = 0;
    for (const auto& line : lines_) n += line.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }
  std::string all() {
    std::lock_guard<std::mutex> guard(lock_);
    std::string text;
    for (const auto& line : lines_) text += line + "\n";
    return text;
  }

 private:
  static void log(GstDebugCategory* category, GstDebugLevel, const gchar*, const gchar*, gint, GObject*,
                  GstDebugMessage* message, gpointer data) {
    if (std::strcmp(gst_debug_category_get_name(category), "flashvsr") != 0) return;
    auto* self = static_cast<ElementLog*>(data);
    const gchar* text = gst_debug_message_get(message);
    std::lock_guard<std::mutex> guard(self->lock_);
    self->lines_.emplace_back(text ? text : "");
  }

  std::mutex lock_;
  std::vector<std::string> lines_;
  bool removed_default_ = false;
  gboolean was_active_ = FALSE;
};

// A launch line whose flashvsr element's outputs are recorded (bytes of each buffer, in order).
struct RecordedPipeline {
  GstElement* pipeline = nullptr;
  GstElement* vsr = nullptr;
  std::vector<std::string> frames;  // touched by the streaming thread only while the pipeline runs

  explicit RecordedPipeline(const std::string& line) {
    GError* err = nullptr;
    pipeline = gst_parse_launch(line.c_str(), &err);
    EXPECT_NE(pipeline, nullptr) << line << ": " << (err ? err->message : "");
    g_clear_error(&err);
    if (!pipeline) return;
    vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
    EXPECT_NE(vsr, nullptr) << line;
    GstPad* src = gst_element_get_static_pad(vsr, "src");
    gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, &RecordedPipeline::record, this, nullptr);
    gst_object_unref(src);
  }
  ~RecordedPipeline() {
    if (!pipeline) return;
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(vsr);
    gst_object_unref(pipeline);
  }
  RecordedPipeline(const RecordedPipeline&) = delete;
  RecordedPipeline& operator=(const RecordedPipeline&) = delete;

  static GstPadProbeReturn record(GstPad*, GstPadProbeInfo* info, gpointer data) {
    auto* self = static_cast<RecordedPipeline*>(data);
    GstBuffer* b = GST_PAD_PROBE_INFO_BUFFER(info);
    GstMapInfo map;
    if (gst_buffer_map(b, &map, GST_MAP_READ)) {
      self->frames.emplace_back(reinterpret_cast<const char*>(map.data), map.size);
      gst_buffer_unmap(b, &map);
    }
    return GST_PAD_PROBE_OK;
  }
};

std::string test_source_line(const std::string& pattern, int frames, const std::string& model_dir,
                             const std::string& extra = "") {
  return "videotestsrc num-buffers=" + std::to_string(frames) + " pattern=" + pattern + " ! " + rgb_caps(32, 24) +
         " ! " + element_line(extra, model_dir) + " ! fakesink sync=false";
}

// Runs a recorded pipeline once from its current state to EOS; returns its outputs.
std::vector<std::string> run_recorded(const std::string& line) {
  RecordedPipeline p(line);
  if (!p.pipeline) return {};
  EXPECT_EQ(run_pipeline(p.pipeline, 300 * GST_SECOND), "") << line;
  return p.frames;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Sharing: many elements, one model
// ------------------------------------------------------------------------------------------------

TEST(Sharing, FourConcurrentPipelinesShareOneModelAndMatchTheirSingleRuns) {
  const ScratchModel model("sharing-concurrent", 7);
  const std::string& dir = model.dir;
  const std::vector<std::string> patterns{"ball", "smpte", "zone-plate", "gradient"};
  const int frames = 41;  // chunk 0, one steady chunk, and a padded tail at EOS

  // Each alone first (the model is loaded and freed each time).
  std::vector<std::vector<std::string>> alone;
  for (size_t i = 0; i < patterns.size(); ++i) {
    alone.push_back(run_recorded(test_source_line(patterns[i], frames, dir, "seed=" + std::to_string(i))));
    ASSERT_EQ(alone.back().size(), static_cast<size_t>(frames)) << patterns[i];
  }
  for (size_t i = 1; i < alone.size(); ++i) EXPECT_NE(alone[i][30], alone[0][30]) << "different content";

  // Then all four at once: four application threads take their pipeline to PLAYING at the same time
  // (four concurrent model requests), four streaming threads run the engine concurrently.
  ElementLog log;
  std::vector<std::unique_ptr<RecordedPipeline>> pipelines;
  for (size_t i = 0; i < patterns.size(); ++i)
    pipelines.push_back(std::make_unique<RecordedPipeline>(
        test_source_line(patterns[i], frames, dir, "seed=" + std::to_string(i))));
  std::vector<std::string> results(patterns.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < pipelines.size(); ++i)
    threads.emplace_back([&, i] { results[i] = run_pipeline(pipelines[i]->pipeline, 300 * GST_SECOND); });
  for (auto& t : threads) t.join();

  for (size_t i = 0; i < pipelines.size(); ++i) {
    SCOPED_TRACE(patterns[i]);
    EXPECT_EQ(results[i], "");
    ASSERT_EQ(pipelines[i]->frames.size(), static_cast<size_t>(frames));
    for (int f = 0; f < frames; ++f)
      EXPECT_TRUE(pipelines[i]->frames[f] == alone[i][f]) << "frame " << f << " differs from the single run";
  }
  // Every element holds the model until it goes to NULL, so the four overlapped: loaded once, shared three
  // times (each single run above loaded it again: nothing held it in between).
  EXPECT_EQ(log.count("model loaded:"), 1) << log.all();
  EXPECT_EQ(log.count("model shared:"), 3) << log.all();
  pipelines.clear();
}

TEST(Sharing, OnlyTheSameDirectoryDeviceAndPrecisionAreShared) {
  const ScratchModel model_a("sharing-a", 7), model_b("sharing-b", 7);
  const std::string &a = model_a.dir, &b = model_b.dir;
  ElementLog log;
  GstElement* pipeline = gst_pipeline_new(nullptr);
  std::vector<GstElement*> elements;
  for (const std::string& dir : {a, a, b, a + "/"}) {
    GstElement* e = gst_element_factory_make("flashvsr", nullptr);
    ASSERT_NE(e, nullptr);
    g_object_set(e, "model-dir", dir.c_str(), "device", "cpu", nullptr);
    gst_util_set_object_arg(G_OBJECT(e), "precision", "fp32");
    gst_bin_add(GST_BIN(pipeline), e);
    elements.push_back(e);
  }
  // The same directory in bf16 is another model.
  GstElement* bf16 = gst_element_factory_make("flashvsr", nullptr);
  g_object_set(bf16, "model-dir", a.c_str(), "device", "cpu", nullptr);
  gst_util_set_object_arg(G_OBJECT(bf16), "precision", "bf16");
  gst_bin_add(GST_BIN(pipeline), bf16);

  ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  EXPECT_EQ(log.count("model loaded:"), 3) << log.all();  // a fp32, b fp32, a bf16
  EXPECT_EQ(log.count("model shared:"), 2) << log.all();  // a fp32 twice more ("a/" is the same directory)
  // READY -> PAUSED asks again: the files did not change, each element keeps its model.
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  EXPECT_EQ(log.count("model loaded:"), 3) << log.all();
  EXPECT_EQ(log.count("model kept:"), 5) << log.all();
  // Back to NULL frees them all: the next READY loads again.
  ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  EXPECT_EQ(log.count("model loaded:"), 6) << log.all();
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

// ------------------------------------------------------------------------------------------------
// Model files changed between streams
// ------------------------------------------------------------------------------------------------

TEST(ModelFiles, ReplacedFilesAreUsedByTheNextStream) {
  const ScratchModel model("replaced", 7), model_other("replaced-reference", 8);
  const std::string &dir = model.dir, &other = model_other.dir;
  const std::string line = test_source_line("ball", 5, dir);
  const auto before = run_recorded(line);
  const auto want_other = run_recorded(test_source_line("ball", 5, other));
  ASSERT_EQ(before.size(), 5u);
  ASSERT_EQ(want_other.size(), 5u);
  EXPECT_NE(before, want_other) << "two models give two outputs";

  RecordedPipeline p(line);
  // NULL -> PLAYING after the files changed: the new model.
  write_tiny_model(dir, 8);
  ASSERT_EQ(run_pipeline(p.pipeline, 300 * GST_SECOND), "");
  EXPECT_TRUE(p.frames == want_other) << "the files written before NULL -> READY are used";
  // Replaced again while the element sits in READY: READY -> PAUSED takes the new files too.
  ASSERT_EQ(gst_element_set_state(p.pipeline, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  write_tiny_model(dir, 7);
  p.frames.clear();
  ASSERT_EQ(run_pipeline(p.pipeline, 300 * GST_SECOND), "");
  EXPECT_TRUE(p.frames == before) << "the files written in READY are used from READY -> PAUSED";
}

TEST(ModelFiles, CorruptedFilesFailTheNextLoadCleanlyWhileRunningStreamsGoOn) {
  const ScratchModel model("corrupted", 7), model_pristine("corrupted-reference", 7);
  const std::string &dir = model.dir, &pristine = model_pristine.dir;
  const at::Tensor frames = random_frames(33, 24, 32, 301);

  // A running stream holds the model.
  Harness running(element_line("", dir));
  running.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(running.push_rgb(frames.narrow(0, 0, 10)), GST_FLOW_OK);

  // The DiT file is truncated: another element going to READY fails with RESOURCE/READ naming it.
  const std::string dit = join_path(dir, "diffusion_pytorch_model_streaming_dmd.safetensors");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(::truncate(dit.c_str(), file_size(dit) / 2), 0);
  GstElement* late = gst_element_factory_make("flashvsr", nullptr);
  gst_object_ref_sink(late);
  g_object_set(late, "model-dir", dir.c_str(), "device", "cpu", nullptr);
  gst_util_set_object_arg(G_OBJECT(late), "precision", "fp32");
  GstMessage* msg = error_reaching(late, GST_STATE_READY);
  ASSERT_NE(msg, nullptr);
  const std::string text = checked_error_text(msg, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ);
  EXPECT_NE(text.find("diffusion_pytorch_model_streaming_dmd.safetensors"), std::string::npos) << text;

  // The running stream keeps its model in memory and finishes correctly.
  ASSERT_EQ(running.push_rgb(frames.narrow(0, 10, 23), 10), GST_FLOW_OK);
  ASSERT_EQ(running.push_eos(), GST_FLOW_OK);
  auto out = running.pull_all();
  ASSERT_EQ(out.size(), 33u);
  expect_equal_frames(rgb_of(running.output_info(), out), engine_upscale(frames, {}, pristine), "running stream");

  // Good files again: the element that failed loads them and works.
  write_tiny_model(dir, 7);
  EXPECT_EQ(gst_element_set_state(late, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  gst_element_set_state(late, GST_STATE_NULL);
  gst_object_unref(late);
  Harness again(element_line("", dir));
  again.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(again.push_rgb(frames.narrow(0, 0, 3)), GST_FLOW_OK);
  ASSERT_EQ(again.push_eos(), GST_FLOW_OK);
  out = again.pull_all();
  expect_equal_frames(rgb_of(again.output_info(), out), engine_upscale(frames.narrow(0, 0, 3), {}, pristine),
                      "after the files were repaired");
}

// ------------------------------------------------------------------------------------------------
// Hostile input
// ------------------------------------------------------------------------------------------------

TEST(Hostile, FramesWithoutTimestampsComeOutOneToOneWithoutTimestamps) {
  const at::Tensor frames = random_frames(30, 24, 32, 311);
  Harness run(element_line());
  run.set_caps(rgb_caps(32, 24));
  for (int64_t i = 0; i < frames.size(0); ++i)
    ASSERT_EQ(gst_harness_push(run.h(), rgb_buffer(run, frames[i], GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE,
                                                   GST_BUFFER_OFFSET_NONE)),
              GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 30u);
  for (GstBuffer* b : out) {
    EXPECT_FALSE(GST_BUFFER_PTS_IS_VALID(b));
    EXPECT_FALSE(GST_BUFFER_DTS_IS_VALID(b));
    EXPECT_FALSE(GST_BUFFER_DURATION_IS_VALID(b));
    EXPECT_EQ(GST_BUFFER_OFFSET(b), GST_BUFFER_OFFSET_NONE);
  }
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "no timestamps");
}

TEST(Hostile, VariableFramerateKeepsEveryTimestampEvenGoingBackwards) {
  const at::Tensor frames = random_frames(34, 24, 32, 321);
  Harness run(element_line());
  run.set_caps(rgb_caps(32, 24, "0/1"));
  std::vector<GstClockTime> pts;
  for (int i = 0; i < 34; ++i) {
    // Irregular spacing, no durations, and one step back (a misbehaving source).
    GstClockTime t = static_cast<GstClockTime>(i * i) * 3 * GST_MSECOND + (i % 3) * 7 * GST_MSECOND;
    if (i == 20) t = pts[10];
    pts.push_back(t);
    ASSERT_EQ(gst_harness_push(run.h(), rgb_buffer(run, frames[i], t, GST_CLOCK_TIME_NONE, i)), GST_FLOW_OK);
  }
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 34u);
  for (int i = 0; i < 34; ++i) {
    EXPECT_EQ(GST_BUFFER_PTS(out[i]), pts[i]) << i;
    EXPECT_EQ(GST_BUFFER_OFFSET(out[i]), static_cast<guint64>(i)) << i;
  }
  const GstVideoInfo info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_FPS_N(&info), 0);
  expect_equal_frames(rgb_of(info, out), engine_upscale(frames, {}), "variable framerate");
}

namespace {

GstPadProbeReturn record_flow(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* log = static_cast<std::vector<std::string>*>(data);
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
    GstBuffer* b = GST_PAD_PROBE_INFO_BUFFER(info);
    log->push_back("B" + std::to_string(GST_BUFFER_OFFSET(b)) + "/" + std::to_string(gst_buffer_get_size(b)));
  } else if (GstEvent* e = GST_PAD_PROBE_INFO_EVENT(info)) {
    if (GST_EVENT_TYPE(e) == GST_EVENT_GAP) log->push_back("GAP");
    if (GST_EVENT_TYPE(e) == GST_EVENT_EOS) log->push_back("EOS");
    if (GST_EVENT_TYPE(e) == GST_EVENT_CAPS) {
      GstCaps* caps;
      gst_event_parse_caps(e, &caps);
      const GstStructure* s = gst_caps_get_structure(caps, 0);
      int w = 0, h = 0;
      gst_structure_get_int(s, "width", &w);
      gst_structure_get_int(s, "height", &h);
      log->push_back("C" + std::to_string(w) + "x" + std::to_string(h));
    }
  }
  return GST_PAD_PROBE_OK;
}

void watch_src(Harness& run, std::vector<std::string>* log) {
  GstPad* src = gst_element_get_static_pad(run.element(), "src");
  gst_pad_add_probe(src, static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                    record_flow, log, nullptr);
  gst_object_unref(src);
}

}  // namespace

TEST(Hostile, ManyGapEventsKeepTheirPlaceAmongTheFrames) {
  Harness run(element_line());
  std::vector<std::string> log;
  watch_src(run, &log);
  run.set_caps(rgb_caps(32, 24));
  const at::Tensor frames = random_frames(34, 24, 32, 331);
  const std::string size = "/" + std::to_string(128 * 96 * 3);
  // GAPs before any frame, back to back, around the first chunk's 25th frame, with and without a
  // duration, and after the last frame.
  const std::vector<int> gaps_before{0, 0, 10, 24, 25, 25, 33, 34};
  std::vector<std::string> want;
  size_t g = 0;
  for (int i = 0; i <= 34; ++i) {
    for (; g < gaps_before.size() && gaps_before[g] == i; ++g) {
      const GstClockTime t = static_cast<GstClockTime>(i) * 40 * GST_MSECOND;
      ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_gap(t, g % 2 ? GST_CLOCK_TIME_NONE : 5 * GST_MSECOND)));
      want.push_back("GAP");
    }
    if (i == 34) break;
    ASSERT_EQ(run.push_rgb(frames.narrow(0, i, 1), i), GST_FLOW_OK);
    want.push_back("B" + std::to_string(i) + size);
  }
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  want.push_back("EOS");
  std::vector<std::string> seen;
  for (const auto& entry : log)
    if (entry[0] != 'C') seen.push_back(entry);
  EXPECT_EQ(seen, want);
  auto out = run.pull_all();
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "frames between GAPs");
}

TEST(Hostile, DiscontInputsAreCarriedAndDoNotBreakTheStream) {
  const at::Tensor frames = random_frames(40, 24, 32, 341);
  Harness run(element_line());
  run.set_caps(rgb_caps(32, 24));
  for (int i = 0; i < 40; ++i) {
    const guint flags = (i == 10 || i == 30) ? GST_BUFFER_FLAG_DISCONT : 0;
    ASSERT_EQ(gst_harness_push(run.h(), rgb_buffer(run, frames[i], i * 40 * GST_MSECOND, 40 * GST_MSECOND, i, flags)),
              GST_FLOW_OK);
  }
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 40u);
  std::vector<int> discont;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(GST_BUFFER_OFFSET(out[i]), static_cast<guint64>(i));
    if (GST_BUFFER_FLAG_IS_SET(out[i], GST_BUFFER_FLAG_DISCONT)) discont.push_back(i);
  }
  // The outputs of the DISCONT inputs carry it (and the first output of the stream); the base class may
  // mark the buffer it pushes next after a DISCONT input as well (docs/element.md, QoS).
  for (int i : {0, 10, 30}) EXPECT_NE(std::find(discont.begin(), discont.end(), i), discont.end()) << i;
  EXPECT_LE(discont.size(), 5u);
  RecordProperty("discont_outputs", ::testing::PrintToString(discont));
  // The engine's stream goes on across a DISCONT: the same pixels as one continuous run.
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "across DISCONT");
}

TEST(Hostile, CapsChangingEveryThreeFramesGiveEveryFrameOnceInItsSize) {
  struct Size {
    int w, h;
  };
  const std::vector<Size> sizes{{32, 24}, {16, 16}, {8, 8}, {1, 1}, {40, 32}, {24, 8}, {3, 5}, {32, 24}};
  Harness run(element_line());
  std::vector<std::string> log;
  watch_src(run, &log);
  std::vector<at::Tensor> segments;
  for (size_t s = 0; s < sizes.size(); ++s) {
    run.set_caps(rgb_caps(sizes[s].w, sizes[s].h));
    segments.push_back(random_frames(3, sizes[s].h, sizes[s].w, 350 + s));
    ASSERT_EQ(run.push_rgb(segments.back(), 3 * s), GST_FLOW_OK) << s;
  }
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);

  // Every frame once, in order, each after the caps of its own size (a caps event per change).
  std::vector<std::string> want;
  for (size_t s = 0; s < sizes.size(); ++s) {
    const int w = 4 * sizes[s].w, h = 4 * sizes[s].h;
    want.push_back("C" + std::to_string(w) + "x" + std::to_string(h));
    const int stride = (w * 3 + 3) / 4 * 4;
    for (int i = 0; i < 3; ++i)
      want.push_back("B" + std::to_string(3 * s + i) + "/" + std::to_string(stride * h));
  }
  want.push_back("EOS");
  EXPECT_EQ(log, want);

  // And each segment is a fresh stream of its own frames.
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3 * sizes.size());
  for (size_t s = 0; s < sizes.size(); ++s) {
    GstVideoInfo info;
    GstCaps* caps = gst_caps_from_string(rgb_caps(4 * sizes[s].w, 4 * sizes[s].h).c_str());
    ASSERT_TRUE(gst_video_info_from_caps(&info, caps));
    gst_caps_unref(caps);
    std::vector<GstBuffer*> part(out.begin() + 3 * s, out.begin() + 3 * s + 3);
    expect_equal_frames(rgb_of(info, part), engine_upscale(segments[s], {}), "segment " + std::to_string(s));
  }
}

struct TinyCase {
  const char* format;
  int w, h;
};

class HostileTiny : public ::testing::TestWithParam<TinyCase> {};

TEST_P(HostileTiny, TinyFramesUpscaleLikeTheEngine) {
  const TinyCase& c = GetParam();
  const std::string caps = std::string("video/x-raw,format=") + c.format + ",width=" + std::to_string(c.w) +
                           ",height=" + std::to_string(c.h) + ",framerate=25/1";
  Harness run(element_line());
  run.set_caps(caps);
  const GstVideoInfo in_info = run.input_info();
  FrameConverter in(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&in_info)), c.w, c.h, yuv_spec_of(in_info), at::kCPU);
  const at::Tensor packed = in.from_rgb(random_frames(5, c.h, c.w, 361 + c.w));
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 5u);
  const GstVideoInfo info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), 4 * c.w);
  ASSERT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 4 * c.h);
  ASSERT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_INFO_FORMAT(&in_info));
  FrameConverter conv(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&info)), 4 * c.w, 4 * c.h, yuv_spec_of(info), at::kCPU);
  // 10/16-bit formats through the engine's float path (docs/element.md, 10-bit video).
  expect_equal_frames(packed_frames(info, out), engine_upscale_packed(in, packed, conv), caps);
}

INSTANTIATE_TEST_SUITE_P(Hostile, HostileTiny,
                         ::testing::Values(TinyCase{"RGB", 1, 1}, TinyCase{"I420", 1, 1}, TinyCase{"NV12", 2, 2},
                                           TinyCase{"BGRx", 2, 2}, TinyCase{"RGB", 1, 16}, TinyCase{"I420", 16, 1},
                                           TinyCase{"RGBA", 16, 16}, TinyCase{"P010_10LE", 1, 1},
                                           TinyCase{"I420_10LE", 1, 16}, TinyCase{"Y444_16LE", 2, 2}),
                         [](const auto& info) {
                           return std::string(info.param.format) + "_" + std::to_string(info.param.w) + "x" +
                                  std::to_string(info.param.h);
                         });

TEST(Hostile, OversizedCapsAreRefusedOrClampedWithoutAbort) {
  {
    // Wider than the element takes: refused by the pad template.
    Harness run(element_line());
    gst_harness_set_src_caps_str(run.h(), rgb_caps(16385, 2).c_str());
    GstPad* sink = gst_element_get_static_pad(run.element(), "sink");
    GstCaps* c = gst_caps_from_string(rgb_caps(16385, 2).c_str());
    EXPECT_FALSE(gst_pad_query_accept_caps(sink, c));
    gst_caps_unref(c);
    gst_object_unref(sink);
    EXPECT_EQ(gst_harness_push(run.h(), gst_buffer_new_allocate(nullptr, 16385 * 2 * 3 + 2, nullptr)),
              GST_FLOW_NOT_NEGOTIATED);
  }
  {
    // Downstream insists on an output larger than the engine makes: nothing to negotiate.
    Harness run(element_line());
    gst_harness_set_sink_caps_str(run.h(), "video/x-raw,format=RGB,width=20000,height=96");
    gst_harness_set_src_caps_str(run.h(), rgb_caps(32, 24).c_str());
    FrameConverter c(PixelFormat::RGB, 32, 24, {}, at::kCPU);
    GstVideoInfo info;
    gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGB, 32, 24);
    EXPECT_EQ(gst_harness_push(run.h(), buffer_from_packed(info, c.from_rgb(random_frames(1, 24, 32, 1))[0])),
              GST_FLOW_NOT_NEGOTIATED);
  }
  {
    // scale x width beyond 16384: the output side is clamped to the largest the engine makes.
    Harness run(element_line("scale=16"));
    run.set_caps(rgb_caps(4096, 1));
    const GstVideoInfo info = run.output_info();
    EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 16384);
    EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 16);
  }
}

TEST(Hostile, TruncatedBufferFailsTheStreamCleanlyAndNewCapsRecover) {
  Harness run(element_line());
  GstBus* bus = run.bus();
  run.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(run.push_rgb(random_frames(3, 24, 32, 371)), GST_FLOW_OK);
  GstBuffer* shorty = gst_buffer_new_allocate(nullptr, 10, nullptr);
  EXPECT_EQ(gst_harness_push(run.h(), shorty), GST_FLOW_ERROR);
  expect_stream_failed(bus, "10-byte buffer");
  // The stream is gone: later frames are refused until a stream is set up again.
  EXPECT_EQ(run.push_rgb(random_frames(1, 24, 32, 372), 4), GST_FLOW_NOT_NEGOTIATED);
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 0u);
  const at::Tensor frames = random_frames(4, 16, 16, 373);
  run.set_caps(rgb_caps(16, 16));
  ASSERT_EQ(run.push_rgb(frames, 10), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 4u);
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "after recovery");
  EXPECT_EQ(gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR), nullptr);
}

// ------------------------------------------------------------------------------------------------
// An allocation failure in the middle of a stream (what CUDA out-of-memory is on a GPU)
// ------------------------------------------------------------------------------------------------

TEST(Failure, AllocationFailureMidStreamPostsStreamFailedAndFreesTheStream) {
#ifdef FLASHVSR_SANITIZED
  GTEST_SKIP() << "sanitizer allocators abort on allocation failure instead of returning null";
#endif
  // A 1024x1024 input upscaled to 4096x4096 needs a few hundred MB per frame in the engine. With the
  // address space limited to what the process has plus 64 MB, LibTorch's CPU allocator fails inside the
  // engine (a c10::Error, as CUDA out of memory is a c10::OutOfMemoryError): the real error path, with no
  // hook in the element. Small allocations (GLib, the error message) still fit.
  Harness run(element_line());
  GstBus* bus = run.bus();
  run.set_caps(rgb_caps(1024, 1024));
  const GstVideoInfo out_info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&out_info), 4096);
  GstBuffer* big = rgb_buffer(run, random_frames(1, 1024, 1024, 381)[0], 0, 40 * GST_MSECOND, 0);

  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &saved), 0);
  const Memory before = memory_now();
  struct rlimit limited = saved;
  limited.rlim_cur = static_cast<rlim_t>(before.virtual_bytes + (int64_t{64} << 20));
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &limited), 0);
  const GstFlowReturn ret = gst_harness_push(run.h(), big);
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &saved), 0);

  EXPECT_EQ(ret, GST_FLOW_ERROR);
  expect_stream_failed(bus, "allocate");
  // Freed: the address space is back near where it was, and later frames are refused.
  EXPECT_LT(memory_now().virtual_bytes - before.virtual_bytes, int64_t{64} << 20);
  EXPECT_EQ(run.push_rgb(random_frames(1, 1024, 1024, 382), 1), GST_FLOW_NOT_NEGOTIATED);

  // A new stream (new caps) works, on the same element and model.
  const at::Tensor frames = random_frames(3, 24, 32, 383);
  run.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(run.push_rgb(frames, 2), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "after the failure");
}

// ------------------------------------------------------------------------------------------------
// On CUDA, for real (these run where a GPU is and are skipped elsewhere): a device filled by others
// runs out of memory in the middle of a stream, and frames beyond the attention kernel's limit.
// ------------------------------------------------------------------------------------------------

namespace {

int64_t cuda_allocated_bytes() {
  return c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(0).allocated_bytes[0].current;
}

// The error a failed stream posts, and its device memory back with LibTorch's allocator.
void expect_cuda_stream_failed(GstBus* bus, int64_t allocated_before, const std::string& must_contain) {
  expect_stream_failed(bus, must_contain);
  EXPECT_LT(cuda_allocated_bytes() - allocated_before, int64_t{64} << 20) << "bytes still allocated after the failure";
}

// A new stream on the same element and model gives every frame.
void expect_new_stream_works(Harness& run) {
  const at::Tensor frames = random_frames(3, 24, 32, 393);
  run.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(run.push_rgb(frames, 100), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  EXPECT_EQ(out.size(), 3u);
  for (GstBuffer* b : out) gst_buffer_unref(b);
}

}  // namespace

TEST(Failure, CudaOutOfMemoryMidStreamPostsAnErrorAndGivesTheDeviceMemoryBack) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process";
  Harness run("flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\" device=cuda precision=fp32");
  GstBus* bus = run.bus();
  run.set_caps(rgb_caps(1024, 1024));  // 4096x4096 out: 200 MB per pre-processed frame, 5 GB a window
  ASSERT_EQ(run.push_rgb(random_frames(1, 1024, 1024, 390), 0), GST_FLOW_OK);  // model and stream set up

  // Others fill the device: 1 GiB blocks until the allocator gives up, then 1 GiB is given back.
  std::vector<at::Tensor> ballast;
  try {
    for (int i = 0; i < 1024; ++i)
      ballast.push_back(at::empty({int64_t{1} << 30}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA)));
  } catch (const c10::OutOfMemoryError&) {
  }
  ASSERT_FALSE(ballast.empty());
  ASSERT_LT(ballast.size(), 1024u) << "the device did not fill up";
  ballast.pop_back();
  const int64_t before = cuda_allocated_bytes();

  GstFlowReturn ret = GST_FLOW_OK;
  const at::Tensor frames = random_frames(8, 1024, 1024, 391);
  int64_t pushed = 1;
  for (int round = 0; round < 4 && ret == GST_FLOW_OK; ++round)
    for (int64_t i = 0; i < frames.size(0) && ret == GST_FLOW_OK; ++i, ++pushed)
      ret = run.push_rgb(frames.narrow(0, i, 1), pushed);
  EXPECT_EQ(ret, GST_FLOW_ERROR) << "the stream did not run out of memory in " << pushed << " frames";
  RecordProperty("frames_before_out_of_memory", static_cast<int>(pushed));
  expect_cuda_stream_failed(bus, before, "out of memory");
  EXPECT_NE(run.push_rgb(frames.narrow(0, 0, 1), pushed), GST_FLOW_OK) << "frames after the failure are refused";

  ballast.clear();
  expect_new_stream_works(run);
}

// 4096x4096 in, 16384x16384 out (the largest size the element's caps allow): 16384 attention windows per
// latent slice, 65536 key windows, beyond the 16384 the kernel takes. On CUDA the stream is refused when the
// caps arrive, before anything is uploaded (until 2026-12 it negotiated and failed at the drain, on the device).
TEST(Failure, CudaFramesBeyondTheAttentionLimitAreRefusedBeforeReachingTheDevice) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process";
  Harness run("flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\" device=cuda precision=fp32");
  GstBus* bus = run.bus();
  run.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(run.push_rgb(random_frames(1, 24, 32, 394), 0), GST_FLOW_OK);  // model on the device
  run.set_caps(rgb_caps(4096, 4096));                                       // drains the small stream
  for (GstBuffer* b : run.pull_all()) gst_buffer_unref(b);
  const int64_t before = cuda_allocated_bytes();
  EXPECT_EQ(run.push_rgb(random_frames(1, 4096, 4096, 395), 1), GST_FLOW_NOT_NEGOTIATED);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  const std::string text = checked_error_text(msg, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS);
  EXPECT_NE(text.find("65536 key windows"), std::string::npos) << text;
  EXPECT_LT(cuda_allocated_bytes() - before, int64_t{64} << 20) << "nothing of the refused stream is on the device";

  // A new stream (new caps) works on the same element and model.
  expect_new_stream_works(run);
}

// ------------------------------------------------------------------------------------------------
// A long stream: 10,000 frames, one output each, flat host memory
// ------------------------------------------------------------------------------------------------

namespace {

struct LongRun {
  int64_t outputs = 0;
  std::vector<int64_t> rss;  // resident bytes after each output (reserved up front: no growth while running)
};

GstPadProbeReturn count_and_sample(GstPad*, GstPadProbeInfo*, gpointer data) {
  auto* run = static_cast<LongRun*>(data);
  ++run->outputs;
  if (run->rss.size() < run->rss.capacity()) run->rss.push_back(memory_now().resident_bytes);
  return GST_PAD_PROBE_OK;
}

// The largest resident size over outputs (from, to]: the working set's high-water mark over 1,000
// frames (125 chunks), which does not depend on where in a chunk's allocations a single sample falls.
int64_t peak(const std::vector<int64_t>& rss, int64_t from, int64_t to) {
  int64_t m = 0;
  for (int64_t i = from; i < to && i < static_cast<int64_t>(rss.size()); ++i) m = std::max(m, rss[i]);
  return m;
}

// The growth of the resident set along the stream, in bytes per frame: the least-squares slope of one
// sample per `every` outputs after the first `from`, each sample the peak over its `every` outputs (a
// single sample falls anywhere between glibc returning freed blocks and taking them back, up to about
// 10 MiB below its neighbours; the peak over 100 outputs, 12 chunks, does not).
double rss_slope(const std::vector<int64_t>& rss, int64_t from, int64_t every, int64_t* samples) {
  std::vector<double> x, y;
  for (int64_t k = from + every; k <= static_cast<int64_t>(rss.size()); k += every) {
    x.push_back(static_cast<double>(k));
    y.push_back(static_cast<double>(peak(rss, k - every, k)));
  }
  *samples = static_cast<int64_t>(x.size());
  if (x.size() < 2) return 0.0;
  const double count = static_cast<double>(x.size());
  double mean_x = 0, mean_y = 0;
  for (size_t i = 0; i < x.size(); ++i) mean_x += x[i] / count, mean_y += y[i] / count;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mean_x) * (y[i] - mean_y);
    sxx += (x[i] - mean_x) * (x[i] - mean_x);
  }
  return sxy / sxx;
}

}  // namespace

TEST(LongStream, TenThousandFramesOneOutputEachWithFlatMemory) {
  const int64_t n = 10000;
  // Resident growth allowed from frames 1,000-2,000 to any later 1,000 frames: a coarse bound on the
  // total (a one-time jump); a steady leak is bounded by the slope below.
  const int64_t bound = int64_t{8} << 20;
  // The slope of the resident set over frames 1,000-10,000 (rss_slope: 90 peaks of 100 frames). Measured
  // on the development machine (2 shared cores, LibTorch 2.11 CPU), 10 runs without a leak: -32 to +186
  // bytes per frame (glibc returning and re-taking freed blocks, mostly); 2 runs with a planted leak of
  // 1 KiB per output (malloc'ed and written in the probe): 903 and 1,211, while the +8 MiB bound let both
  // pass (6.8 and 7.2 MiB). 400 is twice the largest leak-free slope and under half the smallest 1 KiB one.
  // An output buffer here is 3 KiB.
  const double slope_bound = 400.0;
  const int64_t warm_up = 1000, every = 100;
  // Moving content (pattern=ball would not do: GStreamer 1.22's videotestsrc corrupts the heap drawing it
  // at 8x8).
  const std::string line = "videotestsrc num-buffers=" + std::to_string(n) + " pattern=smpte horizontal-speed=1 ! " +
                           rgb_caps(8, 8) + " ! " + element_line() + " ! fakesink sync=false";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
  GstPad* src = gst_element_get_static_pad(vsr, "src");
  LongRun run;
  run.rss.reserve(n);
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, count_and_sample, &run, nullptr);
  gst_object_unref(src);

  const auto t0 = std::chrono::steady_clock::now();
#ifdef FLASHVSR_SANITIZED
  const GstClockTime limit = 4800 * GST_SECOND;  // about 1 s a chunk under ASan with full unwinding, 2 cores
#else
  const GstClockTime limit = 900 * GST_SECOND;
#endif
  EXPECT_EQ(run_pipeline(pipeline, limit), "");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  guint64 frames_in = 0, frames_out = 0, chunks = 0;
  g_object_get(vsr, "frames-in", &frames_in, "frames-out", &frames_out, "chunks", &chunks, nullptr);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(vsr);
  gst_object_unref(pipeline);

  EXPECT_EQ(run.outputs, n);
  EXPECT_EQ(frames_in, static_cast<guint64>(n));
  EXPECT_EQ(frames_out, static_cast<guint64>(n));
  EXPECT_EQ(chunks, static_cast<guint64>(chunk_count(n)));
  ASSERT_EQ(run.rss.size(), static_cast<size_t>(n));

  const int64_t at_2000 = run.rss[1999], at_end = run.rss[n - 1];
  const int64_t early = peak(run.rss, 1000, 2000), late = peak(run.rss, n - 1000, n);
  const int64_t after = peak(run.rss, 2000, n);
  std::string figures;
  for (int64_t k = 1000; k <= n; k += 1000) {
    char part[48];
    std::snprintf(part, sizeof part, "%s%lld:%.1f", figures.empty() ? "" : " ", static_cast<long long>(k),
                  mib(peak(run.rss, k - 1000, k)));
    figures += part;
  }
  char summary[256];
  std::snprintf(summary, sizeof summary,
                "RSS after 2000 frames %.1f MiB, after %lld %.1f MiB; peak over frames 1000-2000 %.1f MiB, over "
                "%lld-%lld %.1f MiB, over 2000-%lld %.1f MiB; %.1f s (%.2f ms/frame)",
                mib(at_2000), static_cast<long long>(n), mib(at_end), mib(early), static_cast<long long>(n - 1000),
                static_cast<long long>(n), mib(late), static_cast<long long>(n), mib(after), seconds,
                1000.0 * seconds / static_cast<double>(n));
  int64_t samples = 0;
  const double slope = rss_slope(run.rss, warm_up, every, &samples);
  char slope_line[160];
  std::snprintf(slope_line, sizeof slope_line,
                "RSS slope over frames %lld-%lld %.1f bytes/frame (least squares over %lld peaks of %lld frames), "
                "bound %.0f",
                static_cast<long long>(warm_up), static_cast<long long>(n), slope, static_cast<long long>(samples),
                static_cast<long long>(every), slope_bound);
  RecordProperty("rss_peak_mib_per_1000_frames", figures);
  RecordProperty("rss_slope_bytes_per_frame", std::to_string(slope));
  RecordProperty("summary", summary);
  std::printf("%s\nRSS peak per 1000 frames (frames:MiB) %s\n%s\n", summary, figures.c_str(), slope_line);
#ifdef FLASHVSR_SANITIZED
  GTEST_SKIP() << "resident sizes are not meaningful under a sanitizer: " << summary;
#endif
  // Single samples move by about +-8 MB with where in a chunk's allocations they fall (glibc keeps or
  // returns freed blocks); the high-water marks over 1,000 frames do not.
  EXPECT_LE(late - early, bound) << summary;
  EXPECT_LE(after - early, bound) << summary;
  EXPECT_LE(slope, slope_bound) << slope_line << "; " << summary;
}

// ------------------------------------------------------------------------------------------------
// The control of the leak check (run only by the sanitizer build's should-fail test)
// ------------------------------------------------------------------------------------------------

TEST(PlantedLeak, AnOutputBufferKeptByTheTestIsReported) {
  if (!std::getenv("FLASHVSR_PLANT_LEAK")) GTEST_SKIP() << "set FLASHVSR_PLANT_LEAK=1: this test leaks on purpose";
  Harness run(element_line());
  run.set_caps(rgb_caps(32, 24));
  ASSERT_EQ(run.push_rgb(random_frames(3, 24, 32, 396)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 1; i < out.size(); ++i) gst_buffer_unref(out[i]);
  // out[0], made by the element, is never released: LeakSanitizer must report it despite lsan.supp.
  out[0] = nullptr;
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  // Any GLib warning or critical fails the run.
  g_log_set_always_fatal(static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL));
  at::set_num_threads(1);
  const int status = RUN_ALL_TESTS();
  gst_deinit();
  return status;
}
