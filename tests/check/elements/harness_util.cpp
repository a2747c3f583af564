// SPDX-License-Identifier: LGPL-2.1-or-later
#include "harness_util.h"

#include "model_maker.h"
#include "test_support.h"

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

namespace flashvsr::check {

std::string scratch(const std::string& name) {
  const char* group = std::getenv("FLASHVSR_CHECK_GROUP");
  return test::scratch_dir(std::string("gst-") + (group ? group : "manual") + "-" + std::to_string(getpid()) + "/" +
                           name);
}

const std::string& tiny_model_dir() {
  static std::once_flag once;
  static std::string dir;
  std::call_once(once, [] {
    dir = scratch("tiny-model");
    write_model_dir(dir, make_random_model(ModelSpec::tiny(), 7));
  });
  return dir;
}

std::string element_line(const std::string& extra, const std::string& model_dir) {
  return "flashvsr name=vsr model-dir=\"" + model_dir + "\" device=cpu precision=fp32 " + extra;
}

at::Tensor random_frames(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Smooth-ish content (a blurred noise field) so that colour conversions behave like on video.
  auto noise = at::rand({n, 3, (h + 3) / 4, (w + 3) / 4}, gen, at::TensorOptions().dtype(at::kFloat));
  auto up = at::upsample_bilinear2d(noise, {h, w}, false);
  return (up * 255.0).round().clamp(0, 255).to(at::kByte).permute({0, 2, 3, 1}).contiguous();
}

YuvSpec yuv_spec_of(const GstVideoInfo& info) {
  YuvSpec spec;
  switch (info.colorimetry.matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT601: spec.matrix = YuvMatrix::BT601; break;
    case GST_VIDEO_COLOR_MATRIX_BT2020: spec.matrix = YuvMatrix::BT2020; break;
    default: spec.matrix = YuvMatrix::BT709; break;
  }
  spec.full_range = info.colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255;
  return spec;
}

GstBuffer* buffer_from_packed(const GstVideoInfo& info, const at::Tensor& packed) {
  if (!pixel_format_of(GST_VIDEO_INFO_FORMAT(&info))) {
    ADD_FAILURE() << "not a format of the element: " << GST_VIDEO_INFO_NAME(&info);
    return gst_buffer_new();
  }
  const PlaneLayout l = gstflashvsr::layout_of(&info);
  EXPECT_EQ(packed.numel(), l.size);
  const at::Tensor tight = packed.contiguous();
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
  gst_buffer_memset(buffer, 0, 0xA5, GST_VIDEO_INFO_SIZE(&info));  // visible garbage in the padding
  GstVideoFrame frame;
  EXPECT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_WRITE));
  gstflashvsr::write_planes(tight.data_ptr<uint8_t>(), l, &frame);
  gst_video_frame_unmap(&frame);
  return buffer;
}

at::Tensor packed_from_buffer(const GstVideoInfo& info, GstBuffer* buffer) {
  if (!pixel_format_of(GST_VIDEO_INFO_FORMAT(&info))) {
    ADD_FAILURE() << "not a format of the element: " << GST_VIDEO_INFO_NAME(&info);
    return at::empty({0}, at::kByte);
  }
  const PlaneLayout l = gstflashvsr::layout_of(&info);
  at::Tensor out = at::empty({l.size}, at::kByte);
  GstVideoFrame frame;
  EXPECT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ));
  gstflashvsr::read_planes(&frame, l, out.data_ptr<uint8_t>());
  gst_video_frame_unmap(&frame);
  return out;
}

at::Tensor engine_upscale(const at::Tensor& frames, StreamOptions options, const std::string& model_dir) {
  static std::map<std::string, std::shared_ptr<const Model>> models;
  c10::InferenceMode inference;
  auto& model = models[model_dir];
  if (!model) model = Model::load(model_dir, LoadOptions{});
  options.in_width = frames.size(2);
  options.in_height = frames.size(1);
  Stream stream(model, options);
  auto a = frames.is_floating_point() ? stream.push_float(frames).frames : stream.push(frames).frames;
  auto b = stream.finish().frames;
  return at::cat({a, b}, 0);
}

at::Tensor engine_upscale_packed(const FrameConverter& in, const at::Tensor& packed, const FrameConverter& out,
                                 StreamOptions options, const std::string& model_dir) {
  const bool deep_in = bit_depth(in.format()) > 8;
  options.float_output = bit_depth(out.format()) > 8;
  const at::Tensor rgb = engine_upscale(deep_in ? in.to_rgb_float(packed) : in.to_rgb(packed), options, model_dir);
  return options.float_output ? out.from_rgb_float(rgb) : out.from_rgb(rgb);
}

Harness::Harness(const std::string& element_description) {
  h_ = gst_harness_new_parse(element_description.c_str());
  element_ = gst_harness_find_element(h_, "flashvsr");
  gst_video_info_init(&in_info_);
}

Harness::~Harness() {
  if (bus_) {
    gst_element_set_bus(element_, nullptr);
    gst_object_unref(bus_);
  }
  if (element_) gst_object_unref(element_);
  gst_harness_teardown(h_);
}

GstBus* Harness::bus() {
  if (!bus_) {
    bus_ = gst_bus_new();
    gst_element_set_bus(element_, bus_);
  }
  return bus_;
}

void Harness::set_caps(const std::string& in_caps, const std::string& downstream_caps) {
  if (!downstream_caps.empty()) gst_harness_set_sink_caps_str(h_, downstream_caps.c_str());
  GstCaps* caps = gst_caps_from_string(in_caps.c_str());
  ASSERT_NE(caps, nullptr) << in_caps;
  ASSERT_TRUE(gst_video_info_from_caps(&in_info_, caps)) << in_caps;
  gst_harness_set_src_caps(h_, caps);
}

GstFlowReturn Harness::push_packed(const at::Tensor& packed, int64_t first) {
  GstFlowReturn ret = GST_FLOW_OK;
  for (int64_t i = 0; i < packed.size(0) && ret == GST_FLOW_OK; ++i) {
    GstBuffer* b = buffer_from_packed(in_info_, packed[i]);
    const int64_t index = first + i;
    GST_BUFFER_PTS(b) = index * 40 * GST_MSECOND;
    GST_BUFFER_DTS(b) = GST_BUFFER_PTS(b);
    GST_BUFFER_DURATION(b) = 40 * GST_MSECOND;
    GST_BUFFER_OFFSET(b) = index;
    GST_BUFFER_OFFSET_END(b) = index + 1;
    ret = gst_harness_push(h_, b);
  }
  return ret;
}

GstFlowReturn Harness::push_rgb(const at::Tensor& rgb, int64_t first) {
  FrameConverter c(PixelFormat::RGB, rgb.size(2), rgb.size(1), {}, at::kCPU);
  return push_packed(c.from_rgb(rgb), first);
}

GstFlowReturn Harness::push_eos() {
  return gst_harness_push_event(h_, gst_event_new_eos()) ? GST_FLOW_OK : GST_FLOW_ERROR;
}

std::vector<GstBuffer*> Harness::pull_all() {
  std::vector<GstBuffer*> out;
  while (GstBuffer* b = gst_harness_try_pull(h_)) out.push_back(b);
  return out;
}

GstVideoInfo Harness::output_info() const {
  GstVideoInfo info;
  gst_video_info_init(&info);
  GstPad* src = gst_element_get_static_pad(element_, "src");
  GstCaps* caps = gst_pad_get_current_caps(src);
  if (caps) {
    gst_video_info_from_caps(&info, caps);
    gst_caps_unref(caps);
  }
  gst_object_unref(src);
  return info;
}

at::Tensor packed_frames(const GstVideoInfo& info, std::vector<GstBuffer*>& buffers) {
  std::vector<at::Tensor> frames;
  for (GstBuffer* b : buffers) {
    frames.push_back(packed_from_buffer(info, b));
    gst_buffer_unref(b);
  }
  buffers.clear();
  if (frames.empty()) return at::empty({0}, at::kByte);
  return at::stack(frames, 0);
}

std::string run_pipeline(GstElement* pipeline, GstClockTime timeout) {
  GstBus* bus = gst_element_get_bus(pipeline);
  std::string result;
  if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) result = "state change failed";
  if (result.empty()) {
    GstMessage* msg = gst_bus_timed_pop_filtered(bus, timeout,
                                                 static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    if (!msg) {
      result = "timeout";
    } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      GError* err = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(msg, &err, &debug);
      result = std::string("error: ") + err->message + " (" + (debug ? debug : "") + ")";
      g_clear_error(&err);
      g_free(debug);
    }
    if (msg) gst_message_unref(msg);
  }
  if (!result.empty()) {
    // Say why the state change failed if an error was posted.
    if (GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
      GError* err = nullptr;
      gst_message_parse_error(msg, &err, nullptr);
      result += std::string(": ") + err->message;
      g_clear_error(&err);
      gst_message_unref(msg);
    }
  }
  gst_object_unref(bus);
  return result;
}

GstMessage* error_reaching(GstElement* element, GstState state) {
  GstElement* pipeline = gst_pipeline_new(nullptr);
  gst_bin_add(GST_BIN(pipeline), element);  // not floating: the bin takes a reference of its own
  GstBus* bus = gst_element_get_bus(pipeline);
  const GstStateChangeReturn ret = gst_element_set_state(element, state);
  GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  if (ret != GST_STATE_CHANGE_FAILURE && msg) {
    ADD_FAILURE() << "state change succeeded but an error was posted";
  }
  if (ret == GST_STATE_CHANGE_FAILURE && !msg) ADD_FAILURE() << "state change failed without an error message";
  gst_element_set_state(element, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_bin_remove(GST_BIN(pipeline), element);
  gst_object_unref(pipeline);
  return msg;
}

at::Tensor rgb_of(const GstVideoInfo& info, std::vector<GstBuffer*>& buffers) {
  at::Tensor packed = packed_frames(info, buffers);
  return packed.view({-1, GST_VIDEO_INFO_HEIGHT(&info), GST_VIDEO_INFO_WIDTH(&info), 3});
}

void expect_equal_frames(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (!at::equal(got, want)) {
    const int max_diff = (got.to(at::kInt) - want.to(at::kInt)).abs().max().item<int>();
    ADD_FAILURE() << what << ": frames differ (max difference " << max_diff << ")";
  }
}

std::string error_text(GstMessage* msg, GQuark* domain, int* code) {
  GError* err = nullptr;
  gchar* debug = nullptr;
  gst_message_parse_error(msg, &err, &debug);
  std::string text = std::string(err->message) + " | " + (debug ? debug : "");
  if (domain) *domain = err->domain;
  if (code) *code = err->code;
  g_clear_error(&err);
  g_free(debug);
  return text;
}

std::string checked_error_text(GstMessage* msg, GQuark domain, int code) {
  GQuark got_domain = 0;
  int got_code = 0;
  const std::string text = error_text(msg, &got_domain, &got_code);
  gst_message_unref(msg);
  EXPECT_EQ(g_quark_to_string(got_domain), std::string(g_quark_to_string(domain))) << text;
  EXPECT_EQ(got_code, code) << text;
  return text;
}

}  // namespace flashvsr::check
