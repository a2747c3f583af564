// SPDX-License-Identifier: LGPL-2.1-or-later
// Behaviour of the flashvsr element: caps and sizes, one output per input with its timestamps, pixels
// equal to the engine's, events (EOS, flush, caps change, segment, GAP), latency, states, properties,
// errors, and whole pipelines through GStreamer's own encoders and the gst-launch-1.0 binary.
// Everything runs on the CPU with a tiny random model written by the tests; CUDA cases skip without a GPU.
#include "harness_util.h"

#include "cli.h"
#include "io/file_util.h"
#include "io/json.h"
#include "model_maker.h"
#include "io/safetensors.h"
#include "test_support.h"
#include "tiling.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

using namespace flashvsr;
using namespace flashvsr::io;
using namespace flashvsr::check;

namespace {

const char* kRgb32x24 = "video/x-raw,format=RGB,width=32,height=24,framerate=25/1";
const char* kRgb64x48 = "video/x-raw,format=RGB,width=64,height=48,framerate=25/1";

// The project keeps to POSIX file calls (see model/file_util.h: std::filesystem from the LibTorch wheel
// can bind in and crash).
int64_t file_size(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

void copy_model_dir(const std::string& from, const std::string& to) {
  ASSERT_TRUE(make_directories(to));
  for (const std::string& name : list_directory(from))
    test::write_file(join_path(to, name), test::read_file(join_path(from, name)));
}

GstElement* make_element(const std::string& model_dir, const std::string& device = "cpu") {
  GstElement* e = gst_element_factory_make("flashvsr", nullptr);
  EXPECT_NE(e, nullptr) << "flashvsr not found: is GST_PLUGIN_PATH set to the build's gst/?";
  gst_object_ref_sink(e);
  if (!model_dir.empty()) g_object_set(e, "model-dir", model_dir.c_str(), nullptr);
  g_object_set(e, "device", device.c_str(), nullptr);
  gst_util_set_object_arg(G_OBJECT(e), "precision", "fp32");
  return e;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Timing: one output per input, its metadata, the engine's schedule
// ------------------------------------------------------------------------------------------------

class TimingCount : public ::testing::TestWithParam<int> {};

TEST_P(TimingCount, OutputCountEqualsInputCountWithPreservedMetadata) {
  const int n = GetParam();
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(random_frames(n, 24, 32, n)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(static_cast<int>(out.size()), n);
  for (int i = 0; i < n; ++i) {
    GstBuffer* b = out[i];
    EXPECT_EQ(GST_BUFFER_PTS(b), static_cast<GstClockTime>(i) * 40 * GST_MSECOND) << i;
    EXPECT_FALSE(GST_BUFFER_DTS_IS_VALID(b)) << i;
    EXPECT_EQ(GST_BUFFER_DURATION(b), 40 * GST_MSECOND) << i;
    EXPECT_EQ(GST_BUFFER_OFFSET(b), static_cast<guint64>(i)) << i;
    EXPECT_EQ(GST_BUFFER_OFFSET_END(b), static_cast<guint64>(i + 1)) << i;
    EXPECT_EQ(gst_buffer_get_size(b), static_cast<gsize>(128 * 96 * 3)) << i;
    EXPECT_EQ(GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_DISCONT), i == 0) << i;
    gst_buffer_unref(b);
  }
  guint64 frames_in = 0, frames_out = 0;
  g_object_get(run.element(), "frames-in", &frames_in, "frames-out", &frames_out, nullptr);
  EXPECT_EQ(frames_in, static_cast<guint64>(n));
  EXPECT_EQ(frames_out, static_cast<guint64>(n));
}

INSTANTIATE_TEST_SUITE_P(Timing, TimingCount, ::testing::Values(1, 5, 24, 25, 26, 33, 61),
                         [](const auto& info) { return "N" + std::to_string(info.param); });

TEST(Timing, FirstOutputAfter25InputsThenEightPerEight) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  auto frames = random_frames(41, 24, 32, 3);
  auto queued = [&]() { return gst_harness_buffers_in_queue(run.h()); };
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 0, 24)), GST_FLOW_OK);
  EXPECT_EQ(queued(), 0u);
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 24, 1), 24), GST_FLOW_OK);
  EXPECT_EQ(queued(), 21u);  // chunk 0 emits frames 0..20
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 25, 7), 25), GST_FLOW_OK);
  EXPECT_EQ(queued(), 21u);
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 32, 1), 32), GST_FLOW_OK);
  EXPECT_EQ(queued(), 29u);  // chunk 1: frames 21..28
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 33, 8), 33), GST_FLOW_OK);
  EXPECT_EQ(queued(), 37u);
  guint64 chunks = 0;
  g_object_get(run.element(), "chunks", &chunks, nullptr);
  EXPECT_EQ(chunks, 3u);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  EXPECT_EQ(queued(), 41u);
  auto out = run.pull_all();
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(GST_BUFFER_OFFSET(out[i]), i);
    gst_buffer_unref(out[i]);
  }
}

TEST(Timing, DiscontOnFirstOutputAndAgainAfterFlush) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(random_frames(3, 24, 32, 4)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[0], GST_BUFFER_FLAG_DISCONT));
  EXPECT_FALSE(GST_BUFFER_FLAG_IS_SET(out[1], GST_BUFFER_FLAG_DISCONT));
  EXPECT_FALSE(GST_BUFFER_FLAG_IS_SET(out[2], GST_BUFFER_FLAG_DISCONT));
  for (auto* b : out) gst_buffer_unref(b);

  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_stop(TRUE)));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_segment(&segment)));
  ASSERT_EQ(run.push_rgb(random_frames(2, 24, 32, 5)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[0], GST_BUFFER_FLAG_DISCONT));
  EXPECT_FALSE(GST_BUFFER_FLAG_IS_SET(out[1], GST_BUFFER_FLAG_DISCONT));
  for (auto* b : out) gst_buffer_unref(b);
}

// ------------------------------------------------------------------------------------------------
// Pixels: the element's output equals the engine's for the same frames and settings
// ------------------------------------------------------------------------------------------------

TEST(Pixels, OutputEqualsEngineOutputRgb) {
  auto frames = random_frames(30, 24, 32, 11);
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 30u);
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "32x24 RGB");
}

TEST(Pixels, OddSizeWithPaddedStridesEqualsEngineOutput) {
  // 70x46 RGB has 210-byte rows in 212-byte strides on input and 840-byte rows on output.
  auto frames = random_frames(3, 46, 70, 12);
  Harness run(element_line());
  run.set_caps("video/x-raw,format=RGB,width=70,height=46,framerate=25/1");
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  const GstVideoInfo info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 280);
  EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 184);
  expect_equal_frames(rgb_of(info, out), engine_upscale(frames, {}), "70x46 RGB");
}

TEST(Pixels, OddSizedI420InAndOutEqualsEngineOutput) {
  // 35x21 I420: 36-byte luma and 20-byte chroma strides, 18x11 chroma planes; 140x84 out.
  const at::Tensor frames = random_frames(2, 21, 35, 16);
  Harness run(element_line());
  run.set_caps("video/x-raw,format=I420,width=35,height=21,framerate=25/1,colorimetry=bt709");
  FrameConverter in(PixelFormat::I420, 35, 21, {YuvMatrix::BT709, false}, at::kCPU);
  const at::Tensor packed = in.from_rgb(frames);
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  const GstVideoInfo info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_I420);
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), 140);
  ASSERT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 84);
  EXPECT_EQ(info.colorimetry.matrix, GST_VIDEO_COLOR_MATRIX_BT709);
  FrameConverter conv(PixelFormat::I420, 140, 84, {YuvMatrix::BT709, false}, at::kCPU);
  expect_equal_frames(packed_frames(info, out), conv.from_rgb(engine_upscale(in.to_rgb(packed), {})), "I420 35x21");
}

TEST(Pixels, OddSizedP010InAndOutEqualsEngineOutputThroughFloatRgb) {
  // 35x21 P010_10LE: 72-byte luma and chroma strides (70 and 72 bytes used), 18x11 chroma pairs; 140x84
  // out. The deep frames keep their precision: the element gives the engine float RGB
  // (FrameConverter::to_rgb_float, Stream::push_float) and writes the 10-bit output from its float frames
  // (float_output, from_rgb_float; docs/element.md).
  Harness run(element_line());
  run.set_caps("video/x-raw,format=P010_10LE,width=35,height=21,framerate=25/1,colorimetry=bt2020");
  FrameConverter in(PixelFormat::P010_10LE, 35, 21, {YuvMatrix::BT2020, false}, at::kCPU);
  const at::Tensor packed = in.from_rgb_float(random_frames(2, 21, 35, 17).to(at::kFloat) + 0.3);
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  const GstVideoInfo info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_P010_10LE);
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), 140);
  EXPECT_EQ(info.colorimetry.matrix, GST_VIDEO_COLOR_MATRIX_BT2020);
  FrameConverter conv(PixelFormat::P010_10LE, 140, 84, {YuvMatrix::BT2020, false}, at::kCPU);
  expect_equal_frames(packed_frames(info, out), engine_upscale_packed(in, packed, conv), "P010 35x21");
  EXPECT_FALSE(at::equal(packed_frames(info, out), conv.from_rgb(engine_upscale(in.to_rgb(packed), {}))))
      << "equal to the 8-bit path: the deep precision is lost";
}

// 10-bit input precision reaches the output: two P010_10LE gradients that round to the same 8-bit RGB
// frames (grey 8-bit levels + 0.3 and - 0.3, checked below), through P010_10LE in and out, give different
// output frames. Through 8-bit RGB (the element before the float path) they could not differ. The
// outputs' distinct Y codes are no test here: a random-weight model's output is not grey, so even 8-bit
// RGB frames give far more than 256 Y codes (measured 876 vs 877 on this gradient).
TEST(Pixels, TenBitInputDifferencesBelowEightBitsReachTheP010Output) {
  const int64_t w = 64, h = 32;
  FrameConverter in(PixelFormat::P010_10LE, w, h, {YuvMatrix::BT2020, false}, at::kCPU);
  const at::Tensor x = at::arange(w, at::kFloat).view({1, w}), y = at::arange(h, at::kFloat).view({h, 1});
  const at::Tensor levels = (x * (200.0 / (w - 1.0))).round() + y + 10.0;  // [h, w] 8-bit grey levels 10..241
  const at::Tensor grey = levels.view({1, h, w, 1}).expand({3, h, w, 3});
  const at::Tensor up = in.from_rgb_float(grey + 0.3), down = in.from_rgb_float(grey - 0.3);
  ASSERT_FALSE(at::equal(up, down));
  ASSERT_TRUE(at::equal(in.to_rgb(up), in.to_rgb(down))) << "the two inputs must be one 8-bit input";

  std::vector<at::Tensor> outputs;
  for (const at::Tensor& packed : {up, down}) {
    Harness run(element_line());
    run.set_caps("video/x-raw,format=P010_10LE,width=64,height=32,framerate=25/1,colorimetry=bt2020",
                 "video/x-raw,format=P010_10LE");
    ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
    ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
    auto out = run.pull_all();
    ASSERT_EQ(out.size(), 3u);
    outputs.push_back(packed_frames(run.output_info(), out));
  }
  EXPECT_FALSE(at::equal(outputs[0], outputs[1])) << "the sub-8-bit difference of the inputs was lost";
}

TEST(Pixels, NonDefaultSettingsReachTheEngine) {
  auto frames = random_frames(4, 24, 32, 13);
  Harness run(element_line("model-version=1.0 sparse-ratio=0.5 kv-ratio=2 local-range=3 color-fix=wavelet seed=42 "
                           "attention=reference"));
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  StreamOptions o;
  o.lq_version = LqVersion::V1_0;
  o.sparse_ratio = 0.5;
  o.kv_ratio = 2.0;
  o.local_range = 3;
  o.color_fix = ColorFix::Wavelet;
  o.seed = 42;
  o.attention = AttentionBackend::Reference;
  const at::Tensor got = rgb_of(run.output_info(), out);
  expect_equal_frames(got, engine_upscale(frames, o), "non-default settings");
  // And they matter: the defaults give another picture.
  EXPECT_FALSE(at::equal(got, engine_upscale(frames, {})));
}

TEST(Pixels, SettingsChangedWhilePlayingApplyFromTheNextStream) {
  const at::Tensor a = random_frames(2, 24, 32, 14), b = random_frames(2, 24, 32, 15);
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(a), GST_FLOW_OK);
  // Changed while frames are pending: the current stream keeps its settings.
  gst_util_set_object_arg(G_OBJECT(run.element()), "color-fix", "none");
  g_object_set(run.element(), "seed", G_GUINT64_CONSTANT(5), nullptr);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(a, {}), "stream before the change");

  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_stop(TRUE)));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_segment(&segment)));
  ASSERT_EQ(run.push_rgb(b), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  out = run.pull_all();
  StreamOptions o;
  o.color_fix = ColorFix::None;
  o.seed = 5;
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(b, o), "next stream");
}

// ------------------------------------------------------------------------------------------------
// Caps
// ------------------------------------------------------------------------------------------------

TEST(Caps, OutputSizeIsScaleTimesInputWithTheEnginesRounding) {
  struct Case {
    double scale;
    int w, h, out_w, out_h;
  };
  // Python-style round half to even: 35 * 2.5 = 87.5 -> 88, 21 * 2.5 = 52.5 -> 52.
  for (const Case& c : {Case{4.0, 32, 24, 128, 96}, Case{2.5, 35, 21, 88, 52}, Case{1.0, 17, 9, 17, 9}}) {
    Harness run(element_line("scale=" + std::to_string(c.scale)));
    run.set_caps("video/x-raw,format=RGB,width=" + std::to_string(c.w) + ",height=" + std::to_string(c.h) +
                 ",framerate=25/1");
    ASSERT_EQ(run.push_rgb(random_frames(1, c.h, c.w, 1)), GST_FLOW_OK);
    const GstVideoInfo info = run.output_info();
    EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), c.out_w) << c.scale;
    EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), c.out_h) << c.scale;
    EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_RGB);
    EXPECT_EQ(GST_VIDEO_INFO_FPS_N(&info), 25);
    EXPECT_EQ(GST_VIDEO_INFO_FPS_D(&info), 1);
    ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
    auto out = run.pull_all();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(gst_buffer_get_size(out[0]), GST_VIDEO_INFO_SIZE(&info));
    gst_buffer_unref(out[0]);
  }
}

TEST(Caps, DownstreamFixedSizeIsProducedExactly) {
  auto frames = random_frames(2, 24, 32, 21);
  Harness run(element_line());
  run.set_caps(kRgb32x24, "video/x-raw,format=RGB,width=100,height=70");
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  const GstVideoInfo info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), 100);
  ASSERT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 70);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  StreamOptions o;
  o.out_width = 100;
  o.out_height = 70;
  expect_equal_frames(rgb_of(info, out), engine_upscale(frames, o), "downstream 100x70");
}

TEST(Caps, FramerateAndPixelAspectRatioCarryOver) {
  Harness run(element_line());
  run.set_caps("video/x-raw,format=RGB,width=32,height=24,framerate=30000/1001,pixel-aspect-ratio=4/3");
  ASSERT_EQ(run.push_rgb(random_frames(1, 24, 32, 2)), GST_FLOW_OK);
  const GstVideoInfo info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_FPS_N(&info), 30000);
  EXPECT_EQ(GST_VIDEO_INFO_FPS_D(&info), 1001);
  EXPECT_EQ(GST_VIDEO_INFO_PAR_N(&info), 4);
  EXPECT_EQ(GST_VIDEO_INFO_PAR_D(&info), 3);
}

TEST(Caps, SameFormatIsPreferredAndYuvColorimetryCarriesOver) {
  Harness run(element_line());
  run.set_caps("video/x-raw,format=NV12,width=32,height=24,framerate=25/1,colorimetry=bt601");
  ASSERT_EQ(run.push_packed(at::zeros({1, 32 * 24 + 32 * 12}, at::kByte)), GST_FLOW_OK);
  const GstVideoInfo info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_NV12);
  EXPECT_EQ(info.colorimetry.matrix, GST_VIDEO_COLOR_MATRIX_BT601);
  EXPECT_EQ(info.colorimetry.range, GST_VIDEO_COLOR_RANGE_16_235);
}

TEST(Caps, TransformCapsPrefersTheScaledSizeAndAllowsAnySize) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  GstPad* src = gst_element_get_static_pad(run.element(), "src");
  GstCaps* caps = gst_pad_query_caps(src, nullptr);
  gst_object_unref(src);
  ASSERT_GE(gst_caps_get_size(caps), 2u);
  const GstStructure* first = gst_caps_get_structure(caps, 0);
  int w = 0, h = 0;
  EXPECT_TRUE(gst_structure_get_int(first, "width", &w));
  EXPECT_TRUE(gst_structure_get_int(first, "height", &h));
  EXPECT_EQ(w, 128);
  EXPECT_EQ(h, 96);
  GstCaps* odd = gst_caps_from_string("video/x-raw,format=I420,width=333,height=77,framerate=25/1");
  EXPECT_TRUE(gst_caps_can_intersect(caps, odd));
  gst_caps_unref(odd);
  gst_caps_unref(caps);

  GstPad* sink = gst_element_get_static_pad(run.element(), "sink");
  GstCaps* filter = gst_caps_from_string("video/x-raw,width=7,height=5");
  GstCaps* sink_caps = gst_pad_query_caps(sink, nullptr);
  EXPECT_TRUE(gst_caps_can_intersect(sink_caps, filter)) << "any input size";
  gst_caps_unref(filter);
  gst_caps_unref(sink_caps);
  gst_object_unref(sink);
}

// HDR and colour metadata of the input caps reach the output caps: P010 in PQ with mastering-display and
// content-light-level fields comes out with the same three fields, and out as RGB with the same
// mastering and light-level fields and the input's primaries and transfer (the matrix and range of RGB).
TEST(Caps, HdrAndColourMetadataOfTheInputCapsReachTheOutputUnchanged) {
  const char* mastering = "35400:14600:8500:39850:6550:2300:15635:16450:10000000:50";
  const char* light = "1000:400";
  const std::string in = std::string("video/x-raw,format=P010_10LE,width=32,height=24,framerate=25/1,") +
                         "colorimetry=bt2100-pq,mastering-display-info=(string)" + mastering +
                         ",content-light-level=(string)" + light;
  for (const char* downstream : {"video/x-raw,format=P010_10LE", "video/x-raw,format=RGB"}) {
    SCOPED_TRACE(downstream);
    Harness run(element_line());
    run.set_caps(in, downstream);
    FrameConverter conv(PixelFormat::P010_10LE, 32, 24, {YuvMatrix::BT2020, false}, at::kCPU);
    ASSERT_EQ(run.push_packed(conv.from_rgb(random_frames(1, 24, 32, 40))), GST_FLOW_OK);
    GstPad* src = gst_element_get_static_pad(run.element(), "src");
    GstCaps* caps = gst_pad_get_current_caps(src);
    gst_object_unref(src);
    ASSERT_NE(caps, nullptr);
    const GstStructure* s = gst_caps_get_structure(caps, 0);
    EXPECT_STREQ(gst_structure_get_string(s, "mastering-display-info"), mastering);
    EXPECT_STREQ(gst_structure_get_string(s, "content-light-level"), light);
    GstVideoMasteringDisplayInfo minfo;
    EXPECT_TRUE(gst_video_mastering_display_info_from_caps(&minfo, caps));
    EXPECT_EQ(minfo.max_display_mastering_luminance, 10000000u);
    GstVideoColorimetry c;
    ASSERT_TRUE(gst_video_colorimetry_from_string(&c, gst_structure_get_string(s, "colorimetry")));
    EXPECT_EQ(c.transfer, GST_VIDEO_TRANSFER_SMPTE2084);
    EXPECT_EQ(c.primaries, GST_VIDEO_COLOR_PRIMARIES_BT2020);
    if (std::string(downstream).find("P010") != std::string::npos) {
      EXPECT_STREQ(gst_structure_get_string(s, "colorimetry"), "bt2100-pq");
    } else {
      EXPECT_EQ(c.matrix, GST_VIDEO_COLOR_MATRIX_RGB);
    }
    gst_caps_unref(caps);
  }
}

// Deep formats stay deep: each 10/16-bit input format is the output format unless downstream asks.
TEST(Caps, TenAndSixteenBitInputKeepsItsFormat) {
  for (const char* format : {"I420_10LE", "P010_10LE", "Y444_16LE"}) {
    Harness run(element_line());
    run.set_caps(std::string("video/x-raw,width=32,height=24,framerate=25/1,format=") + format);
    const GstVideoInfo in_info = run.input_info();
    FrameConverter conv(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&in_info)), 32, 24, yuv_spec_of(in_info), at::kCPU);
    ASSERT_EQ(run.push_packed(conv.from_rgb(random_frames(1, 24, 32, 41))), GST_FLOW_OK) << format;
    const GstVideoInfo info = run.output_info();
    EXPECT_STREQ(GST_VIDEO_INFO_NAME(&info), format);
  }
}

// The formats of the pads (docs/element.md, Caps), written out here.
const std::vector<std::string> kPadFormats = {"RGB",  "RGBx", "BGRx",      "RGBA",      "BGRA",
                                              "I420", "NV12", "I420_10LE", "P010_10LE", "Y444_16LE"};

std::vector<std::string> formats_of(const GstStructure* s) {
  std::vector<std::string> out;
  const GValue* list = gst_structure_get_value(s, "format");
  if (list && GST_VALUE_HOLDS_LIST(list))
    for (guint i = 0; i < gst_value_list_get_size(list); ++i)
      out.push_back(g_value_get_string(gst_value_list_get_value(list, i)));
  return out;
}

// Both pad templates: video/x-raw(memory:CUDAMemory) first, then system memory, each with every format
// (a build without gstreamer-cuda-1.0 offers system memory only).
TEST(Caps, TemplatesOfferCudaMemoryFirstThenSystemMemoryForEveryFormat) {
  GstElement* element = gst_element_factory_make("flashvsr", nullptr);
  ASSERT_NE(element, nullptr);
  for (const char* name : {"sink", "src"}) {
    GstPad* pad = gst_element_get_static_pad(element, name);
    GstCaps* caps = gst_pad_get_pad_template_caps(pad);
    const guint want = gstflashvsr::kHaveCudaMemory ? 2 : 1;
    ASSERT_EQ(gst_caps_get_size(caps), want) << name;
    for (guint i = 0; i < want; ++i) {
      const bool cuda = gstflashvsr::kHaveCudaMemory && i == 0;
      GstCapsFeatures* f = gst_caps_get_features(caps, i);
      EXPECT_EQ(gst_caps_features_contains(f, "memory:CUDAMemory"), cuda) << name << " " << i;
      EXPECT_EQ(gst_caps_features_contains(f, GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY), !cuda) << name << " " << i;
      EXPECT_EQ(formats_of(gst_caps_get_structure(caps, i)), kPadFormats) << name << " " << i;
    }
    gst_caps_unref(caps);
    gst_object_unref(pad);
  }
  gst_object_unref(element);
}

// Warnings of the flashvsr debug category, while it lives.
class WarningLog {
 public:
  WarningLog() {
    gst_debug_set_threshold_for_name("flashvsr", GST_LEVEL_WARNING);
    gst_debug_add_log_function(&WarningLog::log, this, nullptr);
  }
  ~WarningLog() {
    gst_debug_remove_log_function_by_data(this);
    gst_debug_unset_threshold_for_name("flashvsr");
  }
  bool contains(const std::string& text) {
    std::lock_guard<std::mutex> guard(lock_);
    for (const std::string& line : lines_)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }

 private:
  static void log(GstDebugCategory* category, GstDebugLevel level, const gchar*, const gchar*, gint, GObject*,
                  GstDebugMessage* message, gpointer data) {
    if (level != GST_LEVEL_WARNING || std::string(gst_debug_category_get_name(category)) != "flashvsr") return;
    auto* self = static_cast<WarningLog*>(data);
    std::lock_guard<std::mutex> guard(self->lock_);
    self->lines_.push_back(gst_debug_message_get(message));
  }
  std::mutex lock_;
  std::vector<std::string> lines_;
};

// On the CPU (device=cpu) neither pad offers memory:CUDAMemory, such caps are refused with the reason
// logged, and a buffer under them is not negotiated (docs/element.md, Caps).
TEST(Caps, CudaMemoryOnTheCpuIsNotOfferedAndIsRefusedWithTheReason) {
  const char* cuda = "video/x-raw(memory:CUDAMemory),format=NV12,width=32,height=24,framerate=25/1";
  WarningLog warnings;
  Harness run(element_line());
  for (const char* name : {"sink", "src"}) {
    GstPad* pad = gst_element_get_static_pad(run.element(), name);
    GstCaps* caps = gst_pad_query_caps(pad, nullptr);
    EXPECT_GT(gst_caps_get_size(caps), 0u) << name;
    for (guint i = 0; i < gst_caps_get_size(caps); ++i)
      EXPECT_FALSE(gst_caps_features_contains(gst_caps_get_features(caps, i), "memory:CUDAMemory")) << name;
    GstCaps* c = gst_caps_from_string(cuda);
    EXPECT_FALSE(gst_pad_query_accept_caps(pad, c)) << name;
    gst_caps_unref(c);
    gst_caps_unref(caps);
    gst_object_unref(pad);
  }
  if (gstflashvsr::kHaveCudaMemory)
    EXPECT_TRUE(warnings.contains("the element runs on the CPU (device=cpu): memory:CUDAMemory needs device=cuda"));
  else
    EXPECT_TRUE(warnings.contains("this build of the plugin has no CUDA memory support"));
  gst_harness_set_src_caps_str(run.h(), cuda);
  EXPECT_EQ(gst_harness_push(run.h(), gst_buffer_new_allocate(nullptr, 32 * 24 * 3 / 2, nullptr)),
            GST_FLOW_NOT_NEGOTIATED);
}

TEST(Caps, UnsupportedInputIsNotNegotiated) {
  for (const char* caps : {"video/x-raw,format=YUY2,width=32,height=24,framerate=25/1",
                           "video/x-raw,format=GRAY8,width=32,height=24,framerate=25/1",
                           "video/x-raw,format=RGB,width=32,height=24,framerate=25/1,interlace-mode=interleaved"}) {
    Harness run(element_line());
    gst_harness_set_src_caps_str(run.h(), caps);
    GstBuffer* b = gst_buffer_new_allocate(nullptr, 32 * 24 * 4, nullptr);
    EXPECT_EQ(gst_harness_push(run.h(), b), GST_FLOW_NOT_NEGOTIATED) << caps;
    GstPad* sink = gst_element_get_static_pad(run.element(), "sink");
    GstCaps* c = gst_caps_from_string(caps);
    EXPECT_FALSE(gst_pad_query_accept_caps(sink, c)) << caps;
    gst_caps_unref(c);
    gst_object_unref(sink);
  }
}

TEST(Caps, CudaAttentionOnTheCpuIsRefusedAtNegotiationWithAnErrorMessage) {
  // Without the kernel in the build, or on the CPU with it, the stream cannot be set up: RESOURCE/SETTINGS,
  // not negotiated, with a message naming the backend.
  Harness run(element_line("attention=cuda"));
  GstBus* bus = run.bus();
  run.set_caps(kRgb32x24);
  EXPECT_EQ(run.push_rgb(random_frames(25, 24, 32, 5)), GST_FLOW_NOT_NEGOTIATED);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  const std::string text = checked_error_text(msg, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS);
  EXPECT_NE(text.find("cuda"), std::string::npos) << text;
  // The stream is gone: later buffers are refused, without another crash or error.
  EXPECT_EQ(run.push_rgb(random_frames(1, 24, 32, 6), 25), GST_FLOW_NOT_NEGOTIATED);
}

// Every supported format on the sink pad (RGB out) and on the src pad (RGB in), against the engine with
// the same conversions.
struct FormatCase {
  const char* format;
  const char* colorimetry;  // "" to let the element choose
};

class Formats : public ::testing::TestWithParam<FormatCase> {};

TEST_P(Formats, SinkFormatConvertsLikeTheFrameConverter) {
  const FormatCase& fc = GetParam();
  std::string caps = std::string("video/x-raw,format=") + fc.format + ",width=32,height=24,framerate=25/1";
  if (*fc.colorimetry) caps += std::string(",colorimetry=") + fc.colorimetry;
  Harness run(element_line());
  run.set_caps(caps, "video/x-raw,format=RGB");
  const GstVideoInfo in_info = run.input_info();
  const auto format = pixel_format_of(GST_VIDEO_INFO_FORMAT(&in_info));
  ASSERT_TRUE(format.has_value());
  FrameConverter conv(*format, 32, 24, yuv_spec_of(in_info), at::kCPU);
  const at::Tensor packed = conv.from_rgb(random_frames(2, 24, 32, 31));
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  const GstVideoInfo out_info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_FORMAT(&out_info), GST_VIDEO_FORMAT_RGB);
  // 10/16-bit input enters the engine as float RGB (push_float), 8-bit as 8-bit RGB (push).
  const at::Tensor rgb = bit_depth(*format) > 8 ? conv.to_rgb_float(packed) : conv.to_rgb(packed);
  expect_equal_frames(rgb_of(out_info, out), engine_upscale(rgb, {}), caps);
}

TEST_P(Formats, SrcFormatConvertsLikeTheFrameConverter) {
  const FormatCase& fc = GetParam();
  std::string downstream = std::string("video/x-raw,format=") + fc.format;
  if (*fc.colorimetry) downstream += std::string(",colorimetry=") + fc.colorimetry;
  const at::Tensor frames = random_frames(2, 24, 32, 32);
  Harness run(element_line());
  run.set_caps(kRgb32x24, downstream);
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  const GstVideoInfo out_info = run.output_info();
  ASSERT_EQ(std::string(GST_VIDEO_INFO_NAME(&out_info)), fc.format);
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&out_info), 128);
  FrameConverter conv(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&out_info)), 128, 96, yuv_spec_of(out_info), at::kCPU);
  // 10/16-bit output is written from the engine's float frames (float_output), 8-bit from its 8-bit frames.
  StreamOptions o;
  o.float_output = bit_depth(conv.format()) > 8;
  const at::Tensor rgb = engine_upscale(frames, o);
  expect_equal_frames(packed_frames(out_info, out), o.float_output ? conv.from_rgb_float(rgb) : conv.from_rgb(rgb),
                      downstream);
}

// The chroma siting of the caps reaches the conversion both ways, also without a colorimetry field (which
// GStreamer 1.22 would replace by the default for the height): MPEG-2-sited I420 in and out equals the
// FrameConverter with MPEG-2 siting and differs from reading it as centred (JPEG); DV siting is refused.
TEST(Caps, ChromaSiteOfTheCapsIsHonouredInAndOutAndAlternateLineSitingIsRefused) {
  const YuvSpec mpeg2{YuvMatrix::BT601, false, kChromaSiteMpeg2};
  const YuvSpec jpeg{YuvMatrix::BT601, false, kChromaSiteJpeg};
  FrameConverter in_mpeg2(PixelFormat::I420, 32, 24, mpeg2, at::kCPU), in_jpeg(PixelFormat::I420, 32, 24, jpeg, at::kCPU);
  const at::Tensor packed = in_mpeg2.from_rgb(random_frames(2, 24, 32, 33));
  ASSERT_FALSE(at::equal(in_mpeg2.to_rgb(packed), in_jpeg.to_rgb(packed))) << "the sitings must differ on this data";

  const std::string caps = "video/x-raw,format=I420,width=32,height=24,framerate=25/1,chroma-site=mpeg2";
  Harness run(element_line());
  run.set_caps(caps, "video/x-raw,format=I420");
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  const GstVideoInfo out_info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_CHROMA_SITE(&out_info), GST_VIDEO_CHROMA_SITE_MPEG2) << "siting carried to the output";
  FrameConverter out_mpeg2(PixelFormat::I420, 128, 96, mpeg2, at::kCPU);
  expect_equal_frames(packed_frames(out_info, out), out_mpeg2.from_rgb(engine_upscale(in_mpeg2.to_rgb(packed), {})),
                      caps);

  Harness dv(element_line());
  gst_harness_set_src_caps_str(dv.h(), "video/x-raw,format=I420,width=32,height=24,framerate=25/1,chroma-site=dv");
  GstBuffer* b = gst_buffer_new_allocate(nullptr, 32 * 24 * 3 / 2, nullptr);
  EXPECT_EQ(gst_harness_push(dv.h(), b), GST_FLOW_NOT_NEGOTIATED);
}

INSTANTIATE_TEST_SUITE_P(Formats, Formats,
                         ::testing::Values(FormatCase{"RGB", ""}, FormatCase{"RGBx", ""}, FormatCase{"BGRx", ""},
                                           FormatCase{"RGBA", ""}, FormatCase{"BGRA", ""},
                                           FormatCase{"I420", "bt601"}, FormatCase{"I420", "1:3:5:1"},
                                           FormatCase{"NV12", "bt709"}, FormatCase{"NV12", ""},
                                           FormatCase{"I420_10LE", "bt709"}, FormatCase{"P010_10LE", "bt2020"},
                                           FormatCase{"P010_10LE", "bt2100-pq"}, FormatCase{"Y444_16LE", "bt601"}),
                         [](const auto& info) {
                           std::string name = std::string(info.param.format) + "_" +
                                              (*info.param.colorimetry ? info.param.colorimetry : "default");
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// ------------------------------------------------------------------------------------------------
// Events
// ------------------------------------------------------------------------------------------------

TEST(Events, EosDrainsEveryPendingFrameThenForwardsEos) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(random_frames(10, 24, 32, 41)), GST_FLOW_OK);
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 0u);
  // Drop the events so far (stream-start, caps, segment) and look at what follows.
  while (GstEvent* e = gst_harness_try_pull_event(run.h())) gst_event_unref(e);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 10u);
  GstEvent* e = gst_harness_try_pull_event(run.h());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(GST_EVENT_TYPE(e), GST_EVENT_EOS);
  gst_event_unref(e);
  auto out = run.pull_all();
  for (auto* b : out) gst_buffer_unref(b);
}

TEST(Events, FlushMidWindowDropsPendingFramesAndRestartsTheStream) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(random_frames(10, 24, 32, 51)), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_flush_stop(TRUE)));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_segment(&segment)));
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 0u);
  const at::Tensor after = random_frames(5, 24, 32, 52);
  ASSERT_EQ(run.push_rgb(after, 100), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(GST_BUFFER_OFFSET(out[0]), 100u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[0], GST_BUFFER_FLAG_DISCONT));
  // Equal to a fresh run of the frames after the flush (same seed: same noise).
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(after, {}), "after flush");
}

TEST(Events, CapsChangeMidStreamDrainsThenUsesTheNewSize) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  const at::Tensor first = random_frames(5, 24, 32, 61), second = random_frames(3, 32, 40, 62);
  ASSERT_EQ(run.push_rgb(first), GST_FLOW_OK);
  const GstVideoInfo first_info = run.output_info();
  run.set_caps("video/x-raw,format=RGB,width=40,height=32,framerate=25/1");
  auto drained = run.pull_all();
  ASSERT_EQ(drained.size(), 5u) << "the caps change drains with the old caps";
  for (auto* b : drained) EXPECT_EQ(gst_buffer_get_size(b), static_cast<gsize>(128 * 96 * 3));
  expect_equal_frames(rgb_of(first_info, drained), engine_upscale(first, {}), "before the caps change");
  ASSERT_EQ(run.push_rgb(second, 5), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  const GstVideoInfo info = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 160);
  EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 128);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[0], GST_BUFFER_FLAG_DISCONT));
  EXPECT_EQ(GST_BUFFER_OFFSET(out[0]), 5u);
  expect_equal_frames(rgb_of(info, out), engine_upscale(second, {}), "after the caps change");
}

TEST(Events, ScaleChangeWhilePlayingDrainsThenRenegotiates) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  const at::Tensor first = random_frames(3, 24, 32, 63), second = random_frames(2, 24, 32, 64);
  ASSERT_EQ(run.push_rgb(first), GST_FLOW_OK);
  const GstVideoInfo before = run.output_info();
  g_object_set(run.element(), "scale", 2.0, nullptr);
  ASSERT_EQ(run.push_rgb(second, 3), GST_FLOW_OK);
  auto drained = run.pull_all();
  ASSERT_EQ(drained.size(), 3u) << "frames of the old size leave before the renegotiation";
  expect_equal_frames(rgb_of(before, drained), engine_upscale(first, {}), "scale 4");
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  const GstVideoInfo after = run.output_info();
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&after), 64);
  EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&after), 48);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(GST_BUFFER_OFFSET(out[0]), 3u);
  StreamOptions o;
  o.scale = 2.0;
  expect_equal_frames(rgb_of(after, out), engine_upscale(second, o), "scale 2");
}

TEST(Events, NewSegmentAfterDataDrainsAndStreamStartDrains) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(random_frames(4, 24, 32, 71)), GST_FLOW_OK);
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  segment.base = GST_SECOND;
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_segment(&segment)));
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 4u);
  ASSERT_EQ(run.push_rgb(random_frames(3, 24, 32, 72), 4), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_stream_start("second")));
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 7u);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 7u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[4], GST_BUFFER_FLAG_DISCONT)) << "first output of the new segment";
  for (auto* b : out) gst_buffer_unref(b);
}

// A stream error (here an input buffer smaller than its caps say) frees the stream; the next stream of the
// same caps starts cleanly on STREAM_START, or on a new SEGMENT, without new caps.
TEST(Events, StreamStartOrSegmentAfterAFailedStreamStartsCleanlyWithTheSameCaps) {
  for (const bool by_stream_start : {true, false}) {
    SCOPED_TRACE(by_stream_start ? "stream-start" : "segment");
    Harness run(element_line());
    GstBus* bus = run.bus();
    run.set_caps(kRgb32x24);
    ASSERT_EQ(run.push_rgb(random_frames(2, 24, 32, 73)), GST_FLOW_OK);
    GstBuffer* truncated = gst_buffer_new_allocate(nullptr, 32 * 24 * 3 / 2, nullptr);
    GST_BUFFER_PTS(truncated) = 2 * 40 * GST_MSECOND;
    EXPECT_EQ(gst_harness_push(run.h(), truncated), GST_FLOW_ERROR);
    GstMessage* err = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    ASSERT_NE(err, nullptr) << "the failure is reported";
    gst_message_unref(err);
    EXPECT_EQ(run.push_rgb(random_frames(1, 24, 32, 74), 3), GST_FLOW_NOT_NEGOTIATED) << "failed stream refuses";
    for (auto* b : run.pull_all()) gst_buffer_unref(b);

    if (by_stream_start) {
      ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_stream_start("after-failure")));
    } else {
      GstSegment segment;
      gst_segment_init(&segment, GST_FORMAT_TIME);
      ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_segment(&segment)));
    }
    const at::Tensor frames = random_frames(5, 24, 32, 75);
    ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
    ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
    auto out = run.pull_all();
    ASSERT_EQ(out.size(), 5u);
    EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out[0], GST_BUFFER_FLAG_DISCONT));
    EXPECT_EQ(gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR), nullptr) << "no further error";
    expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "stream after the failure");
  }
}

namespace {

GstPadProbeReturn record_flow(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* log = static_cast<std::vector<std::string>*>(data);
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
    log->push_back("B" + std::to_string(GST_BUFFER_OFFSET(GST_PAD_PROBE_INFO_BUFFER(info))));
  } else if (GstEvent* e = GST_PAD_PROBE_INFO_EVENT(info)) {
    if (GST_EVENT_TYPE(e) == GST_EVENT_GAP) log->push_back("GAP");
    if (GST_EVENT_TYPE(e) == GST_EVENT_EOS) log->push_back("EOS");
  }
  return GST_PAD_PROBE_OK;
}

}  // namespace

TEST(Events, GapIsForwardedAfterTheOutputsThatPrecedeIt) {
  Harness run(element_line());
  std::vector<std::string> log;
  GstPad* src = gst_element_get_static_pad(run.element(), "src");
  gst_pad_add_probe(src, static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                    record_flow, &log, nullptr);
  gst_object_unref(src);
  run.set_caps(kRgb32x24);
  // Nothing pending: forwarded at once.
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_gap(0, 40 * GST_MSECOND)));
  EXPECT_EQ(log, std::vector<std::string>({"GAP"}));
  auto frames = random_frames(6, 24, 32, 81);
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 0, 3), 1), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_gap(4 * 40 * GST_MSECOND, 40 * GST_MSECOND)));
  EXPECT_EQ(log.size(), 1u) << "held back while frames before it are pending";
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 3, 2), 5), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(run.h(), gst_event_new_gap(7 * 40 * GST_MSECOND, 40 * GST_MSECOND)));
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  EXPECT_EQ(log, std::vector<std::string>({"GAP", "B1", "B2", "B3", "GAP", "B5", "B6", "GAP", "EOS"}));
  auto out = run.pull_all();
  for (auto* b : out) gst_buffer_unref(b);
}

TEST(Events, QosDisabledByDefaultKeepsEveryFrame) {
  Harness run(element_line());
  gboolean qos = TRUE;
  g_object_get(run.element(), "qos", &qos, nullptr);
  EXPECT_FALSE(qos);
  run.set_caps(kRgb32x24);
  // A QoS event saying everything before 10 s is late: without QoS handling nothing is dropped.
  GstPad* src = gst_element_get_static_pad(run.element(), "src");
  ASSERT_TRUE(gst_pad_send_event(src, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 0.5, 10 * GST_SECOND, 0)));
  gst_object_unref(src);
  ASSERT_EQ(run.push_rgb(random_frames(3, 24, 32, 91)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  EXPECT_EQ(out.size(), 3u);
  for (auto* b : out) gst_buffer_unref(b);
}

TEST(Events, QosEnabledDropsLateInputsBeforeTheEngine) {
  Harness run(element_line("qos=true"));
  run.set_caps(kRgb32x24);
  GstPad* src = gst_element_get_static_pad(run.element(), "src");
  // Late until running time 100 ms: inputs at 0, 40 and 80 ms are dropped, 120 and 160 ms go through.
  ASSERT_TRUE(gst_pad_send_event(src, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 0.5, 100 * GST_MSECOND, 0)));
  gst_object_unref(src);
  ASSERT_EQ(run.push_rgb(random_frames(5, 24, 32, 92)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(GST_BUFFER_OFFSET(out[0]), 3u);
  EXPECT_EQ(GST_BUFFER_OFFSET(out[1]), 4u);
  guint64 frames_in = 0;
  g_object_get(run.element(), "frames-in", &frames_in, nullptr);
  EXPECT_EQ(frames_in, 2u);
  for (auto* b : out) gst_buffer_unref(b);
}

// ------------------------------------------------------------------------------------------------
// Latency
// ------------------------------------------------------------------------------------------------

namespace {

void query_latency(GstHarness* h, gboolean* live, GstClockTime* min, GstClockTime* max) {
  GstQuery* q = gst_query_new_latency();
  ASSERT_TRUE(gst_pad_peer_query(h->sinkpad, q));
  gst_query_parse_latency(q, live, min, max);
  gst_query_unref(q);
}

}  // namespace

// On a live upstream (the harness answers live), the first LATENCY answer already covers the stream's
// first chunk: its processing part is compared with the test's own clock around the push that runs it.
TEST(Latency, LiveUpstreamLatencyCoversTheFirstChunkFromTheFirstQuery) {
  Harness run(element_line());
  gst_harness_set_upstream_latency(run.h(), 10 * GST_MSECOND);
  run.set_caps(kRgb64x48);
  const GstClockTime look_ahead = 24 * 40 * GST_MSECOND;

  gboolean live = FALSE;
  GstClockTime min = 0, max = 0;
  query_latency(run.h(), &live, &min, &max);
  ASSERT_GT(min, 10 * GST_MSECOND + look_ahead) << "a processing estimate before any chunk ran";
  const double estimate_ms = static_cast<double>(min - 10 * GST_MSECOND - look_ahead) / GST_MSECOND;

  const at::Tensor frames = random_frames(25, 48, 64, 101);
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 0, 24)), GST_FLOW_OK);
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 0u);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run.push_rgb(frames.narrow(0, 24, 1), 24), GST_FLOW_OK);  // runs the first chunk
  const double first_chunk_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 21u);
  // The estimate is the same work timed on a scratch stream: within scheduling noise of the real one.
  EXPECT_GE(estimate_ms, 0.7 * first_chunk_ms) << "estimate " << estimate_ms << " ms, first chunk " << first_chunk_ms;
  EXPECT_LE(estimate_ms, 4.0 * first_chunk_ms + 200.0) << "estimate " << estimate_ms << " ms, first chunk " << first_chunk_ms;

  // Afterwards the answer holds the measured first chunk (the element's own timing lies inside the push).
  query_latency(run.h(), &live, &min, &max);
  const double processing_ms = static_cast<double>(min - 10 * GST_MSECOND - look_ahead) / GST_MSECOND;
  EXPECT_GE(processing_ms, 0.8 * first_chunk_ms) << processing_ms;
  EXPECT_LE(processing_ms, first_chunk_ms + 1.0) << processing_ms;
  if (GST_CLOCK_TIME_IS_VALID(max)) {
    EXPECT_GE(max, min);
  }

  // Steady chunks are faster than the first, but a restarted stream (flush, new segment) runs a first chunk
  // again: the answer keeps covering it instead of falling to the mean chunk time.
  ASSERT_EQ(run.push_rgb(random_frames(6 * 8, 48, 64, 102), 25), GST_FLOW_OK);
  EXPECT_EQ(gst_harness_buffers_in_queue(run.h()), 21u + 6 * 8);
  query_latency(run.h(), &live, &min, &max);
  const double after_steady_ms = static_cast<double>(min - 10 * GST_MSECOND - look_ahead) / GST_MSECOND;
  EXPECT_GE(after_steady_ms, 0.8 * first_chunk_ms) << after_steady_ms;
  for (auto* b : run.pull_all()) gst_buffer_unref(b);
}

namespace {

struct Rendered {
  std::mutex lock;
  std::vector<int64_t> frames;  // buffer offsets: videotestsrc numbers its frames from 0
};

GstFlowReturn on_new_sample(GstElement* sink, gpointer data) {
  auto* r = static_cast<Rendered*>(data);
  GstSample* sample = nullptr;
  g_signal_emit_by_name(sink, "pull-sample", &sample);
  if (!sample) return GST_FLOW_ERROR;
  std::lock_guard<std::mutex> guard(r->lock);
  r->frames.push_back(static_cast<int64_t>(GST_BUFFER_OFFSET(gst_sample_get_buffer(sample))));
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

}  // namespace

// A live source into a clock-synchronised sink that drops frames later than 20 ms: with the first chunk
// covered by the latency from the start, every frame of the first chunk (0-20) is rendered.
TEST(Latency, LiveSourceIntoSyncedSinkRendersEveryFrameOfTheFirstChunk) {
  const std::string line = "videotestsrc is-live=true num-buffers=33 pattern=ball ! "
                           "video/x-raw,format=RGB,width=64,height=48,framerate=25/1 ! " + element_line() +
                           " ! appsink name=sink sync=true max-lateness=20000000 emit-signals=true";
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &error);
  ASSERT_NE(pipeline, nullptr) << (error ? error->message : line);
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  Rendered rendered;
  g_signal_connect(sink, "new-sample", G_CALLBACK(on_new_sample), &rendered);
  GstBus* bus = gst_element_get_bus(pipeline);
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  std::string result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (result.empty()) {
    GstMessage* msg = gst_bus_timed_pop_filtered(
        bus, 100 * GST_MSECOND,
        static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_LATENCY));
    if (std::chrono::steady_clock::now() > deadline) result = "timeout";
    if (!msg) continue;
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_LATENCY) gst_bin_recalculate_latency(GST_BIN(pipeline));  // as gst-launch
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) result = "eos";
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) result = "error: " + error_text(msg);
    gst_message_unref(msg);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  EXPECT_EQ(result, "eos");
  const std::vector<int64_t>& frames = rendered.frames;
  std::string missing, later;
  for (int64_t i = 0; i < 33; ++i)
    if (std::find(frames.begin(), frames.end(), i) == frames.end()) (i <= 20 ? missing : later) += " " + std::to_string(i);
  EXPECT_TRUE(missing.empty()) << "frames of the first chunk dropped as late:" << missing;
  std::printf("live pipeline: %zu of 33 frames rendered; later frames dropped:%s\n", frames.size(),
              later.empty() ? " none" : later.c_str());
}

namespace {

gboolean answer_live_latency(GstPad*, GstObject*, GstQuery* query) {
  if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY) return FALSE;
  gst_query_set_latency(query, TRUE, 20 * GST_MSECOND, GST_CLOCK_TIME_NONE);
  return TRUE;
}

gboolean answer_bounded_latency(GstPad*, GstObject*, GstQuery* query) {
  if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY) return FALSE;
  gst_query_set_latency(query, TRUE, 20 * GST_MSECOND, 500 * GST_MSECOND);
  return TRUE;
}

gboolean answer_not_live(GstPad*, GstObject*, GstQuery* query) {
  if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY) return FALSE;
  gst_query_set_latency(query, FALSE, 0, GST_CLOCK_TIME_NONE);
  return TRUE;
}

}  // namespace

TEST(Latency, LiveUpstreamUnboundedMaxStaysUnboundedAndFallbackIs25Fps) {
  for (auto answer : {answer_live_latency, answer_bounded_latency}) {
    Harness run(element_line());
    // Not live while negotiating: no first chunk is timed, the processing part stays 0 until one runs.
    gst_pad_set_query_function(run.h()->srcpad, answer_not_live);
    run.set_caps("video/x-raw,format=RGB,width=32,height=24,framerate=0/1");
    gst_pad_set_query_function(run.h()->srcpad, answer);
    gboolean live = FALSE;
    GstClockTime min = 0, max = 0;
    query_latency(run.h(), &live, &min, &max);
    EXPECT_TRUE(live);
    const GstClockTime ours = 24 * 40 * GST_MSECOND;  // 25 fps when the framerate is 0/1
    EXPECT_EQ(min, 20 * GST_MSECOND + ours);
    if (answer == answer_live_latency) {
      EXPECT_EQ(max, GST_CLOCK_TIME_NONE);
    } else {
      EXPECT_EQ(max, 500 * GST_MSECOND + ours);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// States
// ------------------------------------------------------------------------------------------------

TEST(State, RepeatedNullPlayingCyclesGiveFullOutputEachTime) {
  const std::string line = "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=32,height=24 ! " +
                           element_line() + " ! fakesink sync=false";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
  for (int cycle = 0; cycle < 3; ++cycle) {
    EXPECT_EQ(run_pipeline(pipeline, 120 * GST_SECOND), "") << "cycle " << cycle;
    guint64 out = 0;
    g_object_get(vsr, "frames-out", &out, nullptr);
    EXPECT_EQ(out, 3u) << "cycle " << cycle;
    ASSERT_EQ(gst_element_set_state(pipeline, cycle == 1 ? GST_STATE_READY : GST_STATE_NULL),
              GST_STATE_CHANGE_SUCCESS);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(vsr);
  gst_object_unref(pipeline);
}

TEST(State, AutoDeviceAndPrecisionRunOnTheCpuWithoutCuda) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA is available: auto means cuda here (see the Cuda group)";
  const at::Tensor frames = random_frames(2, 24, 32, 17);
  Harness run("flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\" device=auto precision=auto");
  run.set_caps(kRgb32x24);
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 2u);
  // auto = fp32 on the CPU: the same as the explicit settings.
  expect_equal_frames(rgb_of(run.output_info(), out), engine_upscale(frames, {}), "auto on the CPU");
}

TEST(State, ModelSettingsCannotChangeWhilePlaying) {
  Harness run(element_line());
  run.set_caps(kRgb32x24);
  ASSERT_GT(GST_STATE(run.element()), GST_STATE_READY);
  g_object_set(run.element(), "model-dir", "/somewhere/else", "device", "cuda:3", nullptr);
  gst_util_set_object_arg(G_OBJECT(run.element()), "precision", "bf16");
  gst_util_set_object_arg(G_OBJECT(run.element()), "model-version", "1.0");
  gchar *dir = nullptr, *device = nullptr;
  g_object_get(run.element(), "model-dir", &dir, "device", &device, nullptr);
  EXPECT_EQ(std::string(dir), tiny_model_dir());
  EXPECT_EQ(std::string(device), "cpu");
  g_free(dir);
  g_free(device);
  gint precision = -1, version = -1;
  g_object_get(run.element(), "precision", &precision, "model-version", &version, nullptr);
  EXPECT_EQ(precision, 3);  // fp32
  EXPECT_EQ(version, 1);    // 1.1
  // Still working.
  ASSERT_EQ(run.push_rgb(random_frames(1, 24, 32, 1)), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  EXPECT_EQ(out.size(), 1u);
  for (auto* b : out) gst_buffer_unref(b);
}

TEST(State, ModelDirChangedInReadyIsLoadedWhenGoingToPaused) {
  GstElement* e = make_element(tiny_model_dir());
  GstElement* pipeline = gst_pipeline_new(nullptr);
  gst_bin_add(GST_BIN(pipeline), e);  // e is not floating: the bin takes a reference of its own
  ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  const std::string missing = scratch("not-a-model") + "/nothing";
  g_object_set(e, "model-dir", missing.c_str(), nullptr);
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find(missing), std::string::npos);
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  gst_object_unref(e);
}

// ------------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------------

TEST(Properties, EveryPropertyHasRangeDefaultAndBlurb) {
  GstElement* e = make_element("");
  GObjectClass* klass = G_OBJECT_GET_CLASS(e);
  struct Expect {
    const char* name;
    bool mutable_ready;
  };
  for (const Expect& x : {Expect{"model-dir", true}, Expect{"model-version", true}, Expect{"device", true},
                          Expect{"precision", true}, Expect{"scale", false}, Expect{"sparse-ratio", false},
                          Expect{"kv-ratio", false}, Expect{"local-range", false}, Expect{"color-fix", false},
                          Expect{"seed", false}, Expect{"attention", false}, Expect{"frames-in", false},
                          Expect{"frames-out", false}, Expect{"chunks", false}, Expect{"mean-chunk-ms", false}}) {
    GParamSpec* p = g_object_class_find_property(klass, x.name);
    ASSERT_NE(p, nullptr) << x.name;
    EXPECT_GT(strlen(g_param_spec_get_blurb(p)), 10u) << x.name;
    EXPECT_EQ((p->flags & GST_PARAM_MUTABLE_READY) != 0, x.mutable_ready) << x.name;
  }
  auto dspec = [&](const char* name) { return G_PARAM_SPEC_DOUBLE(g_object_class_find_property(klass, name)); };
  EXPECT_EQ(dspec("scale")->default_value, 4.0);
  EXPECT_EQ(dspec("sparse-ratio")->default_value, 2.0);
  EXPECT_EQ(dspec("kv-ratio")->default_value, 3.0);
  EXPECT_EQ(dspec("kv-ratio")->minimum, 1.0);
  EXPECT_EQ(G_PARAM_SPEC_INT(g_object_class_find_property(klass, "local-range"))->default_value, 11);
  EXPECT_EQ(G_PARAM_SPEC_UINT64(g_object_class_find_property(klass, "seed"))->default_value, 0u);
  EXPECT_STREQ(G_PARAM_SPEC_STRING(g_object_class_find_property(klass, "device"))->default_value, "auto");
  auto enum_default_nick = [&](const char* name) {
    GParamSpec* p = g_object_class_find_property(klass, name);
    GEnumClass* ec = G_PARAM_SPEC_ENUM(p)->enum_class;
    return std::string(g_enum_get_value(ec, G_PARAM_SPEC_ENUM(p)->default_value)->value_nick);
  };
  EXPECT_EQ(enum_default_nick("model-version"), "1.1");
  EXPECT_EQ(enum_default_nick("precision"), "auto");
  EXPECT_EQ(enum_default_nick("color-fix"), "adain");
  EXPECT_EQ(enum_default_nick("attention"), "auto");
  for (const char* ro : {"frames-in", "frames-out", "chunks", "mean-chunk-ms"})
    EXPECT_FALSE(g_object_class_find_property(klass, ro)->flags & G_PARAM_WRITABLE) << ro;
  // Enum nicks as gst-launch takes them.
  gst_util_set_object_arg(G_OBJECT(e), "color-fix", "wavelet");
  gst_util_set_object_arg(G_OBJECT(e), "attention", "reference");
  gint fix = 0, attention = 0;
  g_object_get(e, "color-fix", &fix, "attention", &attention, nullptr);
  EXPECT_EQ(fix, 2);
  EXPECT_EQ(attention, 1);
  gst_object_unref(e);
}

TEST(Properties, OutOfRangeValuesAreOutsideTheParamSpecs) {
  GstElement* e = make_element("");
  GObjectClass* klass = G_OBJECT_GET_CLASS(e);
  auto rejected = [&](const char* name, const GValue& v) {
    GValue copy = G_VALUE_INIT;
    g_value_init(&copy, G_VALUE_TYPE(&v));
    g_value_copy(&v, &copy);
    const bool changed = g_param_value_validate(g_object_class_find_property(klass, name), &copy);
    g_value_unset(&copy);
    return changed;
  };
  GValue d = G_VALUE_INIT;
  g_value_init(&d, G_TYPE_DOUBLE);
  g_value_set_double(&d, 0.5);
  EXPECT_TRUE(rejected("scale", d));
  g_value_set_double(&d, 100.0);
  EXPECT_TRUE(rejected("scale", d));
  g_value_set_double(&d, 0.0);
  EXPECT_TRUE(rejected("sparse-ratio", d));
  EXPECT_TRUE(rejected("kv-ratio", d));
  g_value_set_double(&d, 2.5);
  EXPECT_FALSE(rejected("scale", d));
  GValue i = G_VALUE_INIT;
  g_value_init(&i, G_TYPE_INT);
  g_value_set_int(&i, 0);
  EXPECT_TRUE(rejected("local-range", i));
  g_value_set_int(&i, 9);
  EXPECT_FALSE(rejected("local-range", i));
  g_value_unset(&d);
  g_value_unset(&i);
  gst_object_unref(e);
}

// ------------------------------------------------------------------------------------------------
// Errors at READY: the message names the path and the reason
// ------------------------------------------------------------------------------------------------

namespace {

struct ErrorSeen {
  GQuark domain = 0;
  int code = 0;
  std::string text;
};

ErrorSeen error_at_ready(const std::string& model_dir, const std::string& device = "cpu") {
  GstElement* e = make_element(model_dir, device);
  ErrorSeen seen;
  GstMessage* msg = error_reaching(e, GST_STATE_READY);
  EXPECT_NE(msg, nullptr) << "no error for model-dir '" << model_dir << "' device " << device;
  if (msg) {
    seen.text = error_text(msg, &seen.domain, &seen.code);
    gst_message_unref(msg);
  }
  EXPECT_EQ(GST_STATE(e), GST_STATE_NULL);
  gst_object_unref(e);
  return seen;
}

// The element (`line`) given RGB caps of width x height and one frame: the frame is refused as not
// negotiated with a settings error (RESOURCE/SETTINGS) on the bus; returns its text ("" when none came).
std::string refused_at_negotiation(const std::string& line, int width, int height) {
  Harness run(line);
  GstBus* bus = run.bus();
  run.set_caps("video/x-raw,format=RGB,width=" + std::to_string(width) + ",height=" + std::to_string(height) +
               ",framerate=25/1");
  EXPECT_EQ(run.push_rgb(random_frames(1, height, width, 7)), GST_FLOW_NOT_NEGOTIATED);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  EXPECT_NE(msg, nullptr) << "no error message";
  return msg ? checked_error_text(msg, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS) : std::string();
}

}  // namespace

// 512x512 in, 2048x2048 out: 256 attention windows per latent slice; kv-ratio 64 keeps 65 slices, 16640 key
// windows, beyond the 16384 the attention takes. Refused when the caps arrive, not ~63 chunks later.
TEST(Errors, KvRatioBeyondTheKeyWindowLimitIsRefusedAtNegotiationWithTheNumbers) {
  const std::string text = refused_at_negotiation(element_line("kv-ratio=64"), 512, 512);
  EXPECT_NE(text.find("16640 key windows"), std::string::npos) << text;
  EXPECT_NE(text.find("kv ratio of at most 63"), std::string::npos) << text;
}

// Upstream renegotiates to a size the element refuses, then back to the size that worked. The pads keep the
// old caps after the refusal and GstBaseTransform does not call set_caps again for caps equal to the current
// ones, so the element must keep a working stream for them: the frames after the return come out.
TEST(Errors, ReturningToTheLastWorkingCapsAfterARefusedChangeResumesTheStream) {
  Harness run(element_line("kv-ratio=64"));
  GstBus* bus = run.bus();
  const std::string small = "video/x-raw,format=RGB,width=64,height=64,framerate=25/1";
  run.set_caps(small);
  ASSERT_EQ(run.push_rgb(random_frames(2, 64, 64, 8)), GST_FLOW_OK);
  run.set_caps("video/x-raw,format=RGB,width=512,height=512,framerate=25/1");  // 16640 key windows: refused
  EXPECT_EQ(run.push_rgb(random_frames(1, 512, 512, 9), 2), GST_FLOW_NOT_NEGOTIATED);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  gst_message_unref(msg);
  std::vector<GstBuffer*> before = run.pull_all();  // the first stream's 2 frames, drained at the change
  EXPECT_EQ(before.size(), 2u);
  for (GstBuffer* b : before) gst_buffer_unref(b);

  run.set_caps(small);
  ASSERT_EQ(run.push_rgb(random_frames(3, 64, 64, 10), 3), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  std::vector<GstBuffer*> after = run.pull_all();
  EXPECT_EQ(after.size(), 3u) << "every frame after the return comes out";
  for (GstBuffer* b : after) gst_buffer_unref(b);
}

TEST(Errors, MissingModelDirPropertyFailsAtReady) {
  const ErrorSeen e = error_at_ready("");
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_NOT_FOUND);
  EXPECT_NE(e.text.find("model-dir"), std::string::npos) << e.text;
}

TEST(Errors, MissingModelDirectoryNamesThePath) {
  const std::string dir = scratch("missing") + "/no-such-model";
  const ErrorSeen e = error_at_ready(dir);
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_NOT_FOUND);
  EXPECT_NE(e.text.find(dir), std::string::npos) << e.text;
}

TEST(Errors, MissingModelFileNamesTheFile) {
  const std::string dir = scratch("missing-file");
  copy_model_dir(tiny_model_dir(), dir);
  ASSERT_EQ(::unlink(join_path(dir, "TCDecoder.ckpt").c_str()), 0);
  const ErrorSeen e = error_at_ready(dir);
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_NOT_FOUND);
  EXPECT_NE(e.text.find("TCDecoder.ckpt"), std::string::npos) << e.text;
}

TEST(Errors, CorruptModelFileNamesTheFile) {
  const std::string dir = scratch("corrupt");
  copy_model_dir(tiny_model_dir(), dir);
  const std::string dit = join_path(dir, "diffusion_pytorch_model_streaming_dmd.safetensors");
  ASSERT_EQ(::truncate(dit.c_str(), file_size(dit) / 2), 0);
  const ErrorSeen e = error_at_ready(dir);
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_READ);
  EXPECT_NE(e.text.find("diffusion_pytorch_model_streaming_dmd.safetensors"), std::string::npos) << e.text;
}

TEST(Errors, WrongTensorShapeNamesFileAndTensor) {
  const std::string dir = scratch("wrong-shape");
  ModelTensors t = make_random_model(ModelSpec::tiny(), 3);
  const std::string key = "blocks.1.self_attn.q.weight";
  ASSERT_TRUE(t.dit.count(key)) << "model maker has no " << key;
  at::Tensor w = t.dit[key];
  t.dit[key] = at::cat({w, w.narrow(0, 0, 1)}, 0);
  write_model_dir(dir, t);
  const ErrorSeen e = error_at_ready(dir);
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_READ);
  EXPECT_NE(e.text.find("diffusion_pytorch_model_streaming_dmd.safetensors"), std::string::npos) << e.text;
  EXPECT_NE(e.text.find(key), std::string::npos) << e.text;
}

TEST(Errors, BadDeviceStringFailsAtReadyWithSettingsError) {
  const ErrorSeen e = error_at_ready(tiny_model_dir(), "gpu7");
  EXPECT_EQ(e.domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(e.code, GST_RESOURCE_ERROR_SETTINGS);
  EXPECT_NE(e.text.find("gpu7"), std::string::npos) << e.text;
}

// precision=fp8 needs fp8 tensor cores: on the CPU the element refuses it at READY with the reason, rather
// than running bf16 under the name fp8.
TEST(Errors, Fp8OnTheCpuFailsAtReadyWithTheReason) {
  GstElement* e = make_element(tiny_model_dir(), "cpu");
  gst_util_set_object_arg(G_OBJECT(e), "precision", "fp8");
  GstMessage* msg = error_reaching(e, GST_STATE_READY);
  ASSERT_NE(msg, nullptr) << "precision fp8 on the CPU accepted";
  const std::string text = checked_error_text(msg, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS);
  EXPECT_NE(text.find("fp8"), std::string::npos) << text;
  EXPECT_NE(text.find("compute capability 8.9"), std::string::npos) << text;
  EXPECT_EQ(GST_STATE(e), GST_STATE_NULL);
  gst_object_unref(e);
}

TEST(Errors, CudaRequestedWithoutCudaFailsAtReadyWithLibraryInit) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA is available here";
  const ErrorSeen e = error_at_ready(tiny_model_dir(), "cuda:0");
  EXPECT_EQ(e.domain, GST_LIBRARY_ERROR);
  EXPECT_EQ(e.code, GST_LIBRARY_ERROR_INIT);
  EXPECT_NE(e.text.find("cuda"), std::string::npos) << e.text;
}

// ------------------------------------------------------------------------------------------------
// Whole pipelines
// ------------------------------------------------------------------------------------------------

namespace {

struct Decoded {
  int frames = 0;
  int width = 0, height = 0;
};

GstPadProbeReturn count_frame(GstPad* pad, GstPadProbeInfo*, gpointer data) {
  auto* d = static_cast<Decoded*>(data);
  d->frames++;
  if (GstCaps* caps = gst_pad_get_current_caps(pad)) {
    const GstStructure* s = gst_caps_get_structure(caps, 0);
    gst_structure_get_int(s, "width", &d->width);
    gst_structure_get_int(s, "height", &d->height);
    gst_caps_unref(caps);
  }
  return GST_PAD_PROBE_OK;
}

Decoded decode_file(const std::string& path) {
  Decoded d;
  const std::string line = "filesrc location=\"" + path + "\" ! decodebin ! videoconvert ! fakesink name=sink sync=false";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  EXPECT_NE(pipeline, nullptr) << (err ? err->message : "");
  if (!pipeline) return d;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, count_frame, &d, nullptr);
  gst_object_unref(pad);
  gst_object_unref(sink);
  EXPECT_EQ(run_pipeline(pipeline, 120 * GST_SECOND), "") << line;
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  return d;
}

void run_line(const std::string& line) {
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << line << ": " << (err ? err->message : "");
  EXPECT_EQ(run_pipeline(pipeline, 300 * GST_SECOND), "") << line;
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

}  // namespace

TEST(Pipeline, EncodedClipUpscalesWithTheSameFrameCount) {
  const std::string dir = scratch("pipeline");
  const std::string in = dir + "/in.mp4", out = dir + "/out.mp4";
  run_line("videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=48,height=32,framerate=25/1 ! "
           "x264enc ! mp4mux ! filesink location=\"" + in + "\"");
  const Decoded source = decode_file(in);
  ASSERT_EQ(source.frames, 30);
  run_line("filesrc location=\"" + in + "\" ! decodebin ! videoconvert ! " + element_line() +
           " ! videoconvert ! x264enc ! mp4mux ! filesink location=\"" + out + "\"");
  const Decoded result = decode_file(out);
  EXPECT_EQ(result.frames, 30);
  EXPECT_EQ(result.width, 192);
  EXPECT_EQ(result.height, 128);
}

class Launch : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(Launch, GstLaunchWritesNFramesOfFourTimesTheSize) {
  const auto [n, w, h] = GetParam();
  const char* launch = std::getenv("GST_LAUNCH");
  if (!launch || !*launch) GTEST_SKIP() << "gst-launch-1.0 was not found at configure time";
  const std::string dir = scratch("launch-" + std::to_string(n) + "-" + std::to_string(w) + "x" + std::to_string(h));
  const std::string out = dir + "/out.rgb";
  const std::string command = std::string("\"") + launch + "\" -q videotestsrc num-buffers=" + std::to_string(n) +
                              " ! video/x-raw,format=RGB,width=" + std::to_string(w) + ",height=" +
                              std::to_string(h) + " ! flashvsr model-dir=\"" + tiny_model_dir() +
                              "\" device=cpu precision=fp32 ! filesink location=\"" + out + "\" 2>&1";
  std::string output;
  const int status = test::run_command(command, &output);
  ASSERT_EQ(status, 0) << command << "\n" << output;
  ASSERT_TRUE(path_exists(out));
  EXPECT_EQ(file_size(out), static_cast<int64_t>(n) * (4 * w) * (4 * h) * 3);
}

// FlashVSR Full through gst-launch-1.0: the vendored Full fixture's model (Wan2.1_VAE.pth, no TCDecoder.ckpt)
// with variant=full, N frames in, N frames of the fixture's output size out.
TEST(Launch, GstLaunchRunsAFullModelWithNFramesOut) {
  const char* launch = std::getenv("GST_LAUNCH");
  if (!launch || !*launch) GTEST_SKIP() << "gst-launch-1.0 was not found at configure time";
  const std::string fixture = test::vendored_fixtures_dir() + "/full-v11-adain";
  const Json p = read_json_file(fixture + "/params.json");
  ASSERT_EQ(p.at("variant").get<std::string>(), "full");
  const int64_t n = 29, w = p.at("lr_width").get<int64_t>(), h = p.at("lr_height").get<int64_t>();
  const std::string out = scratch("launch-full") + "/out.rgb";
  const std::string command = std::string("\"") + launch + "\" -q videotestsrc num-buffers=" + std::to_string(n) +
                              " pattern=ball ! video/x-raw,format=RGB,width=" + std::to_string(w) + ",height=" +
                              std::to_string(h) + " ! flashvsr model-dir=\"" + fixture +
                              "/model\" variant=full device=cpu precision=fp32 ! filesink location=\"" + out +
                              "\" 2>&1";
  std::string output;
  ASSERT_EQ(test::run_command(command, &output), 0) << command << "\n" << output;
  EXPECT_EQ(file_size(out), n * p.at("width").get<int64_t>() * p.at("height").get<int64_t>() * 3);
}

INSTANTIATE_TEST_SUITE_P(Launch, Launch,
                         ::testing::Values(std::make_tuple(1, 32, 24), std::make_tuple(3, 35, 21),
                                           std::make_tuple(27, 33, 25)),
                         [](const auto& info) {
                           return "N" + std::to_string(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "x" +
                                  std::to_string(std::get<2>(info.param));
                         });

// ------------------------------------------------------------------------------------------------
// A fixture's release-layout model (bf16 LQ projection, its own sizes) through the element
// ------------------------------------------------------------------------------------------------

TEST(Fixtures, FixtureModelsGiveTheEnginesOutput) {
  const auto dirs = test::fixture_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no fixtures under " << test::fixtures_dir();
  for (const std::string& fixture : dirs) {
    const std::string model_dir = fixture + "/model";
    if (!is_directory(model_dir)) continue;
    SCOPED_TRACE(fixture);
    const Json p = read_json_file(fixture + "/params.json");
    if (test::skip_unsupported_fixture(fixture)) continue;
    at::Tensor lr = read_safetensors(fixture + "/input.safetensors").at("lr_frames");
    lr = lr.narrow(0, 0, std::min<int64_t>(lr.size(0), 9)).contiguous();
    const int64_t h = lr.size(1), w = lr.size(2);

    StreamOptions o;
    o.scale = p.at("scale").get<double>();
    o.lq_version = parse_lq_version(p.at("model_version").get<std::string>());
    o.sparse_ratio = p.at("sparse_ratio").get<double>();
    o.kv_ratio = p.at("kv_ratio").get<double>();
    o.local_range = p.at("local_range").get<int64_t>();
    o.color_fix = parse_color_fix(p.at("color_fix").get<std::string>());
    o.seed = static_cast<uint64_t>(p.at("seed").get<int64_t>());

    char props[512];
    g_snprintf(props, sizeof props, "scale=%.17g model-version=%s sparse-ratio=%.17g kv-ratio=%.17g local-range=%d "
               "color-fix=%s seed=%" G_GUINT64_FORMAT, o.scale, p.at("model_version").get<std::string>().c_str(),
               o.sparse_ratio, o.kv_ratio, static_cast<int>(o.local_range),
               p.at("color_fix").get<std::string>().c_str(), static_cast<guint64>(o.seed));
    Harness run(element_line(props, model_dir));
    run.set_caps("video/x-raw,format=RGB,width=" + std::to_string(w) + ",height=" + std::to_string(h) +
                 ",framerate=25/1");
    ASSERT_EQ(run.push_rgb(lr), GST_FLOW_OK);
    ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
    auto out = run.pull_all();
    ASSERT_EQ(out.size(), static_cast<size_t>(lr.size(0)));
    const GstVideoInfo info = run.output_info();
    EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), p.at("width").get<int64_t>());
    EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), p.at("height").get<int64_t>());
    expect_equal_frames(rgb_of(info, out), engine_upscale(lr, o, model_dir), fixture);
  }
}


// The element, given only what a user gives it (properties from params.json, the LR frames as buffers, and
// the fixture's noise through noise-file), reproduces the reference's output frames: >= 45 dB per frame on
// 8-bit RGB in float32 on the CPU. The user-facing sparse-ratio goes through the element's top-k conversion.
TEST(Fixtures, ElementReproducesTheReferenceOutputOfEveryFixture) {
  const auto dirs = test::fixture_dirs();
  ASSERT_FALSE(dirs.empty()) << "the vendored fixture is missing";
  int checked = 0;
  for (const std::string& fixture : dirs) {
    SCOPED_TRACE(fixture);
    const Json p = read_json_file(fixture + "/params.json");
    if (test::skip_unsupported_fixture(fixture)) continue;
    const at::Tensor lr = read_safetensors(fixture + "/input.safetensors").at("lr_frames");  // [N, h, w, 3]
    const int64_t n = lr.size(0), h = lr.size(1), w = lr.size(2);
    char props[1024];
    g_snprintf(props, sizeof props,
               "scale=%.17g model-version=%s sparse-ratio=%.17g kv-ratio=%.17g local-range=%d color-fix=%s "
               "noise-file=\"%s/input.safetensors\"",
               p.at("scale").get<double>(), p.at("model_version").get<std::string>().c_str(),
               p.at("sparse_ratio").get<double>(), p.at("kv_ratio").get<double>(),
               static_cast<int>(p.at("local_range").get<int64_t>()), p.at("color_fix").get<std::string>().c_str(),
               fixture.c_str());
    Harness run(element_line(props, fixture + "/model"));
    run.set_caps("video/x-raw,format=RGB,width=" + std::to_string(w) + ",height=" + std::to_string(h) +
                 ",framerate=25/1");
    ASSERT_EQ(run.push_rgb(lr), GST_FLOW_OK);
    ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
    auto out = run.pull_all();
    ASSERT_EQ(out.size(), static_cast<size_t>(n));
    const GstVideoInfo info = run.output_info();
    ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), p.at("width").get<int64_t>());
    ASSERT_EQ(GST_VIDEO_INFO_HEIGHT(&info), p.at("height").get<int64_t>());
    const std::string expected = fixture + "/expected.safetensors";
    const at::Tensor got = rgb_of(info, out), want = cli::reference_frames_u8(read_safetensors(expected), expected);
    ASSERT_EQ(got.sizes(), want.sizes());
    const std::vector<double> psnr = cli::psnr_per_frame(got, want);
    const double worst = *std::min_element(psnr.begin(), psnr.end());
    EXPECT_GE(worst, 45.0) << "lowest frame PSNR";
    std::printf("element parity %s: %lld frames, lowest PSNR %.2f dB\n", fixture.c_str(),
                static_cast<long long>(n), worst);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// ------------------------------------------------------------------------------------------------
// Tiling: the element's frame path through flashvsr::TiledStream
// ------------------------------------------------------------------------------------------------

TEST(Tiling, TiledElementGivesEveryFrameAtTheOutputSizeAsTheTiledEngineDoes) {
  // 48x40 -> 192x160 in 2x2 tiles of 128x128 (overlap >= 32).
  const at::Tensor frames = random_frames(3, 40, 48, 21);
  Harness run(element_line("tile-width=128 tile-height=128 tile-overlap=32"));
  run.set_caps("video/x-raw,format=RGB,width=48,height=40,framerate=25/1");
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 3u);
  const GstVideoInfo info = run.output_info();
  ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&info), 192);
  ASSERT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 160);
  c10::InferenceMode inference;
  StreamOptions o;
  o.in_width = 48;
  o.in_height = 40;
  TiledStream engine(Model::load(tiny_model_dir(), LoadOptions{}), o, TileOptions{128, 128, 32});
  ASSERT_EQ(engine.plan().tiles.size(), 4u);
  const at::Tensor a = engine.push(frames).frames, b = engine.finish().frames;
  expect_equal_frames(rgb_of(info, out), at::cat({a, b}, 0), "2x2 tiles");
}

TEST(Tiling, PropertiesDefaultToUntiled) {
  GstElement* e = make_element("");
  GObjectClass* klass = G_OBJECT_GET_CLASS(e);
  auto ispec = [&](const char* name) { return G_PARAM_SPEC_INT(g_object_class_find_property(klass, name)); };
  EXPECT_EQ(ispec("tile-width")->default_value, 0);
  EXPECT_EQ(ispec("tile-height")->default_value, 0);
  EXPECT_EQ(ispec("tile-overlap")->default_value, 128);
  EXPECT_EQ(G_PARAM_SPEC_DOUBLE(g_object_class_find_property(klass, "max-memory"))->default_value, 0.0);
  for (const char* name : {"tile-width", "tile-height", "tile-overlap", "max-memory"})
    EXPECT_GT(strlen(g_param_spec_get_blurb(g_object_class_find_property(klass, name))), 10u) << name;
  gst_object_unref(e);
}

TEST(Tiling, TileNotAMultipleOf128IsRefusedAtNegotiationWithTheReason) {
  const std::string text = refused_at_negotiation(element_line("tile-width=100"), 48, 40);
  EXPECT_NE(text.find("multiples of 128"), std::string::npos) << text;
}

TEST(Tiling, MaxMemoryThatNoTilingFitsIsRefusedAtNegotiationWithTheEstimate) {
  // 1 GiB is below the memory model's base (the released model's weights and constants, 3.42 GiB).
  const std::string text = refused_at_negotiation(element_line("max-memory=1"), 48, 40);
  EXPECT_NE(text.find("no tiling of 192x160 fits"), std::string::npos) << text;
}

// ------------------------------------------------------------------------------------------------
// CUDA (registered only where a GPU exists; skipped without one)
// ------------------------------------------------------------------------------------------------

TEST(Cuda, CudaOutputHasTheSizeAndCountAndTracksTheCpuOutput) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process";
  const at::Tensor frames = random_frames(9, 24, 32, 201);
  Harness run("flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\" device=cuda precision=fp32");
  run.set_caps("video/x-raw,format=NV12,width=32,height=24,framerate=25/1,colorimetry=bt709",
               "video/x-raw,format=RGB");
  FrameConverter conv(PixelFormat::NV12, 32, 24, {YuvMatrix::BT709, false}, at::kCPU);
  const at::Tensor packed = conv.from_rgb(frames);
  ASSERT_EQ(run.push_packed(packed), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 9u);
  const at::Tensor got = rgb_of(run.output_info(), out);
  const at::Tensor cpu = engine_upscale(conv.to_rgb(packed), {});
  // float32 on both devices: the same picture up to kernel rounding.
  const double mean_diff = (got.to(at::kFloat) - cpu.to(at::kFloat)).abs().mean().item<double>();
  EXPECT_LT(mean_diff, 2.0);
}

TEST(Cuda, AutoDeviceUsesCudaInBf16AndKeepsOneOutputPerInput) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this process";
  const at::Tensor frames = random_frames(30, 24, 32, 202);
  Harness run("flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\"");
  run.set_caps(kRgb32x24, "video/x-raw,format=I420");
  ASSERT_EQ(run.push_rgb(frames), GST_FLOW_OK);
  ASSERT_EQ(run.push_eos(), GST_FLOW_OK);
  auto out = run.pull_all();
  ASSERT_EQ(out.size(), 30u);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(GST_BUFFER_PTS(out[i]), i * 40 * GST_MSECOND);
    gst_buffer_unref(out[i]);
  }
  guint64 chunks = 0;
  gdouble mean_ms = 0;
  g_object_get(run.element(), "chunks", &chunks, "mean-chunk-ms", &mean_ms, nullptr);
  EXPECT_EQ(chunks, 3u);  // frames 0..20, 21..28, and 29 with the padded tail at EOS
  EXPECT_GT(mean_ms, 0.0);
}

// ---------------------------------------------------------------------------------------------------
// CUDA memory (docs/element.md, CUDA memory): GPU only, with gst-plugins-bad's cudaupload/cudadownload.
// ---------------------------------------------------------------------------------------------------

namespace {

// Why the CUDA memory cases cannot run here ("" when they can).
std::string cuda_memory_skip_reason() {
  if (!at::hasCUDA()) return "no CUDA device in this process";
  if (!gstflashvsr::kHaveCudaMemory) return "the plugin is built without CUDA memory (gstreamer-cuda-1.0)";
  for (const char* name : {"cudaupload", "cudadownload"}) {
    GstElementFactory* f = gst_element_factory_find(name);
    if (!f) return std::string("no ") + name + " element (gst-plugins-bad's nvcodec plugin)";
    gst_object_unref(f);
  }
  return "";
}

// What a pipeline run gave: the buffers at the sink named "out", their caps, the element "vsr"'s
// negotiated caps.
struct PipelineRun {
  std::vector<GstBuffer*> buffers;
  GstVideoInfo info;
  std::string sink_caps, src_caps;
};

GstPadProbeReturn keep_buffer(GstPad*, GstPadProbeInfo* info, gpointer data) {
  static_cast<std::vector<GstBuffer*>*>(data)->push_back(gst_buffer_ref(GST_PAD_PROBE_INFO_BUFFER(info)));
  return GST_PAD_PROBE_OK;
}

std::string current_caps(GstElement* element, const char* pad_name) {
  GstPad* pad = gst_element_get_static_pad(element, pad_name);
  GstCaps* caps = gst_pad_get_current_caps(pad);
  gchar* str = caps ? gst_caps_to_string(caps) : g_strdup("");
  std::string out = str;
  g_free(str);
  if (caps) gst_caps_unref(caps);
  gst_object_unref(pad);
  return out;
}

PipelineRun run_and_keep(const std::string& line) {
  PipelineRun r;
  gst_video_info_init(&r.info);
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  EXPECT_NE(pipeline, nullptr) << line << ": " << (err ? err->message : "");
  g_clear_error(&err);
  if (!pipeline) return r;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "out");
  GstElement* vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, keep_buffer, &r.buffers, nullptr);
  EXPECT_EQ(run_pipeline(pipeline, 300 * GST_SECOND), "") << line;
  if (GstCaps* caps = gst_pad_get_current_caps(pad)) {
    gst_video_info_from_caps(&r.info, caps);
    gst_caps_unref(caps);
  }
  r.sink_caps = current_caps(vsr, "sink");
  r.src_caps = current_caps(vsr, "src");
  gst_object_unref(pad);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(vsr);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  return r;
}

const std::string kCudaCaps = "video/x-raw(memory:CUDAMemory)";

std::string cuda_element_line() {
  return "flashvsr name=vsr model-dir=\"" + tiny_model_dir() + "\" device=cuda precision=fp32";
}

}  // namespace

// On a CUDA device both pads offer memory:CUDAMemory first (nothing downstream to constrain them).
TEST(CudaMemory, CudaDeviceOffersCudaMemoryFirstOnBothPads) {
  const std::string skip = cuda_memory_skip_reason();
  if (!skip.empty()) GTEST_SKIP() << skip;
  Harness run(cuda_element_line());
  for (const char* name : {"sink", "src"}) {
    GstPad* pad = gst_element_get_static_pad(run.element(), name);
    GstCaps* caps = gst_pad_query_caps(pad, nullptr);
    ASSERT_GT(gst_caps_get_size(caps), 0u) << name;
    EXPECT_TRUE(gst_caps_features_contains(gst_caps_get_features(caps, 0), "memory:CUDAMemory")) << name;
    GstCaps* c = gst_caps_from_string("video/x-raw(memory:CUDAMemory),format=NV12,width=32,height=24,framerate=25/1");
    EXPECT_TRUE(gst_pad_query_accept_caps(pad, c)) << name;
    gst_caps_unref(c);
    gst_caps_unref(caps);
    gst_object_unref(pad);
  }
}

// videotestsrc ! cudaupload ! flashvsr ! cudadownload gives, bit for bit, what the system-memory path
// gives, for a 4:2:0 and an RGB format, with CUDA memory negotiated on both pads of the element.
TEST(CudaMemory, UploadFlashvsrDownloadEqualsTheSystemMemoryPathBitForBit) {
  const std::string skip = cuda_memory_skip_reason();
  if (!skip.empty()) GTEST_SKIP() << skip;
  for (const char* format : {"NV12", "RGBA", "P010_10LE"}) {
    const std::string src = std::string("videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=") + format +
                            ",width=66,height=50,framerate=25/1 ! ";
    const std::string tail = std::string(" ! video/x-raw,format=") + format + " ! fakesink name=out";
    PipelineRun sys = run_and_keep(src + cuda_element_line() + tail);
    // cudaupload and cudadownload prefer system memory (their passthrough caps come first): the capsfilters
    // ask for CUDA memory on both sides of the element, as a user's line does.
    PipelineRun cuda = run_and_keep(src + "cudaupload ! " + kCudaCaps + " ! " + cuda_element_line() + " ! " +
                                    kCudaCaps + " ! cudadownload" + tail);
    EXPECT_EQ(sys.sink_caps.find("memory:CUDAMemory"), std::string::npos) << sys.sink_caps;
    EXPECT_NE(cuda.sink_caps.find("memory:CUDAMemory"), std::string::npos) << cuda.sink_caps;
    EXPECT_NE(cuda.src_caps.find("memory:CUDAMemory"), std::string::npos) << cuda.src_caps;
    ASSERT_EQ(sys.buffers.size(), 12u) << format;
    ASSERT_EQ(cuda.buffers.size(), 12u) << format;
    ASSERT_EQ(GST_VIDEO_INFO_WIDTH(&cuda.info), 264) << format;
    const at::Tensor want = packed_frames(sys.info, sys.buffers);
    const at::Tensor got = packed_frames(cuda.info, cuda.buffers);
    expect_equal_frames(got, want, std::string(format) + " through CUDA memory");
  }
}

namespace {

// The device memory in use on CUDA device 0 (cuMemGetInfo in its primary context), -1 when the driver
// does not answer. Looked up at run time so that the test program needs no CUDA headers.
int64_t device_memory_used() {
  using Retain = int (*)(void**, int);
  using Release = int (*)(int);
  using Push = int (*)(void*);
  using Pop = int (*)(void**);
  using Info = int (*)(size_t*, size_t*);
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return -1;
  auto retain = reinterpret_cast<Retain>(dlsym(lib, "cuDevicePrimaryCtxRetain"));
  auto release = reinterpret_cast<Release>(dlsym(lib, "cuDevicePrimaryCtxRelease_v2"));
  auto push = reinterpret_cast<Push>(dlsym(lib, "cuCtxPushCurrent_v2"));
  auto pop = reinterpret_cast<Pop>(dlsym(lib, "cuCtxPopCurrent_v2"));
  auto info = reinterpret_cast<Info>(dlsym(lib, "cuMemGetInfo_v2"));
  void* ctx = nullptr;
  if (!retain || !release || !push || !pop || !info || retain(&ctx, 0) != 0) return -1;
  size_t free_bytes = 0, total = 0;
  int64_t used = -1;
  if (push(ctx) == 0) {
    if (info(&free_bytes, &total) == 0) used = static_cast<int64_t>(total - free_bytes);
    void* popped = nullptr;
    pop(&popped);
  }
  release(0);
  return used;
}

struct MemorySamples {
  int64_t frames = 0;
  int64_t at_warm = -1, at_end = -1;
};

GstPadProbeReturn sample_memory(GstPad*, GstPadProbeInfo*, gpointer data) {
  auto* m = static_cast<MemorySamples*>(data);
  ++m->frames;
  if (m->frames == 60) m->at_warm = device_memory_used();
  if (m->frames == 1000) m->at_end = device_memory_used();
  return GST_PAD_PROBE_OK;
}

}  // namespace

// 1,000 frames in CUDA memory through the element: the device memory in use after the first 60 (pools
// and caches warm) stays within 16 MiB to the end (a leaked 512x384 NV12 output buffer per frame would
// add about 280 MiB).
TEST(CudaMemory, ManyFramesInCudaMemoryKeepDeviceMemoryFlat) {
  const std::string skip = cuda_memory_skip_reason();
  if (!skip.empty()) GTEST_SKIP() << skip;
  if (device_memory_used() < 0) GTEST_SKIP() << "the CUDA driver does not report device memory";
  const std::string line = "videotestsrc num-buffers=1000 pattern=ball ! "
                           "video/x-raw,format=NV12,width=128,height=96,framerate=25/1 ! cudaupload ! " +
                           kCudaCaps + " ! " + cuda_element_line() + " ! " + kCudaCaps +
                           " ! cudadownload ! fakesink name=out";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "out");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  MemorySamples m;
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, sample_memory, &m, nullptr);
  EXPECT_EQ(run_pipeline(pipeline, 300 * GST_SECOND), "") << line;
  GstElement* vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
  EXPECT_NE(current_caps(vsr, "src").find("memory:CUDAMemory"), std::string::npos);
  gst_object_unref(vsr);
  gst_object_unref(pad);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  ASSERT_EQ(m.frames, 1000);
  ASSERT_GE(m.at_warm, 0);
  ASSERT_GE(m.at_end, 0);
  EXPECT_LE(m.at_end - m.at_warm, int64_t{16} << 20)
      << "device memory in use: " << m.at_warm << " bytes after 60 frames, " << m.at_end << " after 1000";
}

namespace {

GstPadProbeReturn count_buffer(GstPad*, GstPadProbeInfo*, gpointer data) {
  ++*static_cast<int64_t*>(data);
  return GST_PAD_PROBE_OK;
}

}  // namespace

// An H.264 clip decoded by NVDEC stays on the device into the element: filesrc ! qtdemux ! h264parse !
// nvh264dec ! flashvsr ! cudadownload ! fakesink runs to EOS, negotiates CUDA memory on the element's
// sink pad, and gives one output frame per input frame (about 49: identity eos-after). The clip
// comes from FLASHVSR_H264_CLIP (an MP4 with H.264 video; none is committed).
TEST(CudaMemory, NvdecDecodedClipRunsThroughTheElementInCudaMemory) {
  const std::string skip = cuda_memory_skip_reason();
  if (!skip.empty()) GTEST_SKIP() << skip;
  const char* clip = std::getenv("FLASHVSR_H264_CLIP");
  if (!clip || !*clip) GTEST_SKIP() << "set FLASHVSR_H264_CLIP to an MP4 with H.264 video";
  if (!g_file_test(clip, G_FILE_TEST_IS_REGULAR)) GTEST_SKIP() << "FLASHVSR_H264_CLIP: no file " << clip;
  GstElementFactory* nvdec = gst_element_factory_find("nvh264dec");
  if (!nvdec) GTEST_SKIP() << "no nvh264dec element (gst-plugins-bad's nvcodec plugin with NVDEC)";
  gst_object_unref(nvdec);
  const std::string line = std::string("filesrc location=\"") + clip +
                           "\" ! qtdemux ! h264parse ! nvh264dec name=dec ! identity eos-after=49 ! "
                           "flashvsr name=vsr model-dir=\"" + tiny_model_dir() +
                           "\" device=cuda ! " + kCudaCaps + " ! cudadownload ! fakesink name=out";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* dec = gst_bin_get_by_name(GST_BIN(pipeline), "dec");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "out");
  GstElement* vsr = gst_bin_get_by_name(GST_BIN(pipeline), "vsr");
  GstPad* dec_src = gst_element_get_static_pad(dec, "src");
  GstPad* vsr_sink = gst_element_get_static_pad(vsr, "sink");
  GstPad* sink_pad = gst_element_get_static_pad(sink, "sink");
  int64_t decoded = 0, in = 0, out = 0;
  gst_pad_add_probe(dec_src, GST_PAD_PROBE_TYPE_BUFFER, count_buffer, &decoded, nullptr);
  gst_pad_add_probe(vsr_sink, GST_PAD_PROBE_TYPE_BUFFER, count_buffer, &in, nullptr);
  gst_pad_add_probe(sink_pad, GST_PAD_PROBE_TYPE_BUFFER, count_buffer, &out, nullptr);
  EXPECT_EQ(run_pipeline(pipeline, 300 * GST_SECOND), "") << line;
  EXPECT_NE(current_caps(vsr, "sink").find("memory:CUDAMemory"), std::string::npos) << current_caps(vsr, "sink");
  EXPECT_NE(current_caps(vsr, "src").find("memory:CUDAMemory"), std::string::npos) << current_caps(vsr, "src");
  gst_object_unref(vsr_sink);
  gst_object_unref(vsr);
  gst_object_unref(sink_pad);
  gst_object_unref(dec_src);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(dec);
  gst_object_unref(pipeline);
  EXPECT_GE(in, 49);
  EXPECT_GE(decoded, in);
  EXPECT_EQ(out, in);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  // Any GLib warning or critical (a refused property set included) fails the run.
  g_log_set_always_fatal(static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL));
  at::set_num_threads(1);
  const int status = RUN_ALL_TESTS();
  gst_deinit();
  return status;
}
