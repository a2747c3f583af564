// SPDX-License-Identifier: LGPL-2.1-or-later
// Helpers of the flashvsr element tests: the tiny model they share, raw video buffers <-> packed
// tensors, the engine run directly as the reference, and a GstHarness wrapper.
#pragma once

#include "engine.h"
#include "frame_format.h"
#include "video_format.h"

#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace flashvsr::check {

// Writes the tiny random model once per process (under the build tree) and returns its directory.
const std::string& tiny_model_dir();
// A scratch directory for this test group and process.
std::string scratch(const std::string& name);

// The element description with the tiny model on the CPU in float32, plus `extra` properties.
std::string element_line(const std::string& extra = "", const std::string& model_dir = tiny_model_dir());

// Random RGB frames uint8 [n, h, w, 3].
at::Tensor random_frames(int64_t n, int64_t h, int64_t w, uint64_t seed);

// The engine layout of a format of the element's pads (the element's own table, gst/video_format.h).
using gstflashvsr::pixel_format_of;
// The matrix and range the caps describe (for YUV formats), written here independently of the element's
// mapping (gst/video_format.h yuv_spec_of) so that an expectation does not come from the code under test.
YuvSpec yuv_spec_of(const GstVideoInfo& info);

// A buffer of `info`'s layout (its strides, padding bytes 0xA5) holding packed frame `packed` (uint8
// [layout size]), written with the element's plane copies.
GstBuffer* buffer_from_packed(const GstVideoInfo& info, const at::Tensor& packed);
// The packed (tight) planes of a buffer of `info`'s layout: uint8 [layout size].
at::Tensor packed_from_buffer(const GstVideoInfo& info, GstBuffer* buffer);

// The engine run directly: pushes `frames` (uint8 [n, h, w, 3] with push(), floating in [0, 255] with
// push_float()) then finish(); returns every output (float32 with options.float_output).
at::Tensor engine_upscale(const at::Tensor& frames, StreamOptions options,
                          const std::string& model_dir = tiny_model_dir());
// The element's frame path between two formats, on the engine directly (docs/element.md, 10-bit video):
// packed frames of `in` to RGB (8-bit: to_rgb + push; 10/16-bit: to_rgb_float + push_float), upscaled,
// and to packed frames of `out` (8-bit: from_rgb; 10/16-bit: float_output + from_rgb_float).
at::Tensor engine_upscale_packed(const FrameConverter& in, const at::Tensor& packed, const FrameConverter& out,
                                 StreamOptions options = {}, const std::string& model_dir = tiny_model_dir());

// A GstHarness around one flashvsr element (owned), with the element at hand.
class Harness {
 public:
  explicit Harness(const std::string& element_description);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  GstHarness* h() const { return h_; }
  GstElement* element() const { return element_; }
  // A bus set on the element on first use, for the messages it posts (errors, latency); owned.
  GstBus* bus();

  // Sets the input caps (pushes stream-start, caps, segment) and optionally restricts downstream caps.
  void set_caps(const std::string& in_caps, const std::string& downstream_caps = "");
  // Pushes RGB-or-other packed frames as buffers of the input caps, with PTS i*40ms (index from
  // `first`), DTS = PTS, duration 40 ms, offset i, offset end i + 1.
  GstFlowReturn push_packed(const at::Tensor& packed_frames, int64_t first = 0);
  GstFlowReturn push_rgb(const at::Tensor& rgb_frames, int64_t first = 0);
  GstFlowReturn push_eos();
  // Pulls every buffer that is queued at the harness sink.
  std::vector<GstBuffer*> pull_all();
  GstVideoInfo input_info() const { return in_info_; }
  // The caps negotiated on the element's src pad, as video info.
  GstVideoInfo output_info() const;

 private:
  GstHarness* h_ = nullptr;
  GstElement* element_ = nullptr;
  GstBus* bus_ = nullptr;
  GstVideoInfo in_info_;
};

// The packed planes of each buffer, stacked: uint8 [n, layout size]; unrefs the buffers.
at::Tensor packed_frames(const GstVideoInfo& info, std::vector<GstBuffer*>& buffers);

// The RGB output of a harness run, as uint8 [n, H, W, 3]; unrefs the buffers.
at::Tensor rgb_of(const GstVideoInfo& info, std::vector<GstBuffer*>& buffers);

// Frames equal to the byte (a failure names the largest difference).
void expect_equal_frames(const at::Tensor& got, const at::Tensor& want, const std::string& what);

// "message | debug" of an ERROR message, with its domain and code when asked for.
std::string error_text(GstMessage* msg, GQuark* domain = nullptr, int* code = nullptr);
// error_text of an ERROR message (not null), checked to be of `domain` and `code` (a test failure names
// what it was instead); unrefs the message.
std::string checked_error_text(GstMessage* msg, GQuark domain, int code);

// Runs a launch line to EOS (or error, or timeout); returns "" on EOS, else the error text.
std::string run_pipeline(GstElement* pipeline, GstClockTime timeout);

// The first ERROR message of taking `element` (in a pipeline of its own) to `state`, or nullptr
// when the state change succeeded. The caller frees the message.
GstMessage* error_reaching(GstElement* element, GstState state);

}  // namespace flashvsr::check
