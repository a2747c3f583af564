// SPDX-License-Identifier: LGPL-2.1-or-later
// The frame window of the flashvsr element: one video (from one reset to the next) through one engine
// Stream, with everything the element needs around it. Input buffers go in with push(), GAP events with
// push_gap(); pop() hands out, in input order, each upscaled frame (with the timestamps, offsets and flags
// of the input buffer it came from) and each GAP right after the outputs of the frames before it.
// drain() makes every pending frame ready (the engine's finish()), flush() drops them. The engine's
// temporal state (caches, pending LQ frames) lives in the Stream; this object holds what the element
// adds: the frame converters, the metadata of the frames inside the engine, the ready queue. It posts
// nothing and knows no element: errors are thrown (flashvsr::Error, c10::Error), the caller maps them.
//
//   buffer --read_planes--> packed [1, in size] (pinned on CUDA) --to_rgb--> Stream::push
//          --from_rgb--> packed [m, out size] on the device --> ready queue --pop()--> write():
//   (10/16-bit input: --to_rgb_float--> Stream::push_float; 10/16-bit output: the stream's float
//   frames --from_rgb_float-->, so the deep formats keep their precision through the engine;)
//          one copy into the mapped output buffer (straight from the device when the buffer's planes
//          are the packed layout, else through pinned memory)
#pragma once

#include "cuda_memory.h"
#include "properties.h"

#include "engine.h"
#include "frame_format.h"
#include "tiling.h"

#include <gst/video/video.h>

#include <deque>
#include <memory>
#include <optional>

namespace gstflashvsr {

struct EventUnref {
  void operator()(GstEvent* event) const { gst_event_unref(event); }
};
using EventPtr = std::unique_ptr<GstEvent, EventUnref>;

// What an output buffer takes over from its input buffer: PTS, duration, offsets and the flags but GAP
// (the output is not neutral data) and TAG_MEMORY (a property of the memory, not of the frame); DTS is
// not carried (GST_CLOCK_TIME_NONE).
struct FrameMeta {
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  GstClockTime duration = GST_CLOCK_TIME_NONE;
  guint64 offset = GST_BUFFER_OFFSET_NONE;
  guint64 offset_end = GST_BUFFER_OFFSET_NONE;
  guint flags = 0;

  static FrameMeta of(GstBuffer* input);
  void stamp(GstBuffer* output) const;
};

class FrameWindow {
 public:
  // What one push() or drain() did.
  struct Step {
    int64_t frames_in = 0;     // frames given to the engine
    int64_t frames_ready = 0;  // upscaled frames that became ready
    int64_t chunks = 0;        // engine chunks run
    // The stream's first chunk ran, alone, in a push: `ms` is a first chunk's time (the slowest chunk).
    bool first_chunk = false;
    double ms = 0.0;  // wall time from the upload until the frames were on the device, when chunks ran
    double busy_ms = 0.0;  // wall time of the whole push (mapping and reading the buffer included)
  };

  // The next thing to send downstream: a GAP event, or a frame.
  struct Output {
    EventPtr event;     // a GAP; null for a frame
    FrameMeta meta;     // of the frame's input buffer
    at::Tensor packed;  // the frame: uint8 [out layout size], on the engine's device
  };

  // Sets up the engine stream of `spec` (tiled as spec.tiling says, or as the memory model chooses for
  // spec.max_memory_gib) and the converters between the negotiated video and RGB on the model's device.
  // Throws what the engine throws (e.g. Error(BadSettings) for an attention that cannot run, a tiling
  // that does not fit, Error(BadFile) for a noise file without a usable 'noise' tensor).
  FrameWindow(std::shared_ptr<const flashvsr::Model> model, const StreamSpec& spec, const GstVideoInfo& in_info,
              const GstVideoInfo& out_info);

  const StreamSpec& spec() const { return spec_; }
  // The engine stream: one Stream, or one per tile when tiling is on (flashvsr::TiledStream).
  const flashvsr::TiledStream& stream() const { return stream_; }
  const GstVideoInfo& in_info() const { return in_info_; }
  const GstVideoInfo& out_info() const { return out_info_; }
  // Whether frames enter the engine as float RGB (10/16-bit input: Stream::push_float) and leave it as
  // float RGB (10/16-bit output: StreamOptions::float_output); else as 8-bit RGB.
  bool float_input() const { return float_input_; }
  bool float_output() const { return stream_.options().float_output; }
  // Frames given to the engine since the last reset.
  int64_t frames_in() const { return stream_.stats().frames_in; }
  // Frames inside the engine (pushed, not yet ready).
  size_t frames_pending() const;

  // Feeds one input buffer (borrowed) to the engine. Throws Error(BadInput) for a buffer smaller than its
  // caps, and what the engine throws.
  Step push(GstBuffer* input);
  // Queues a GAP behind the frames inside the engine and takes it; false (GAP not taken) when none is
  // inside: the caller forwards it at once.
  bool push_gap(GstEvent* gap);
  // The next output, in input order; nullopt when nothing is ready.
  std::optional<Output> pop();
  // Runs the engine's finish(): every frame inside becomes ready, followed by the GAPs queued after it.
  // The window takes no more frames until flush().
  Step drain();
  // Drops every pending and ready frame and GAP, and restarts the engine stream (the output after a flush
  // equals a fresh run); the next output is marked DISCONT.
  void flush();

  // Writes a frame (from pop()) into `buffer` of the output video and stamps its metadata. False when the
  // buffer cannot be mapped; throws what LibTorch throws copying from the device.
  bool write(const Output& frame, GstBuffer* buffer) const;

 private:
  // A frame inside the engine, or a GAP that arrived after it.
  struct Pending {
    EventPtr event;
    FrameMeta meta;
  };
  // Waits for the device after a chunk (wait_for_device) and releases the CUDA inputs held for their copies.
  void wait_for_engine();
  // Pairs the engine's frames (RGB on the device) with the oldest pending inputs, in the ready queue.
  void queue_outputs(const at::Tensor& rgb);
  // GAPs at the head of the pending queue (all frames before them out) go to the ready queue.
  void release_gaps();

  StreamSpec spec_;
  flashvsr::TiledStream stream_;
  flashvsr::FrameConverter in_conv_, out_conv_;
  GstVideoInfo in_info_, out_info_;
  bool float_input_ = false;
  std::deque<Pending> pending_;
  std::deque<Output> ready_;
  bool discont_next_ = true;  // mark the next input's output DISCONT (the first after a reset)
#ifdef FLASHVSR_GST_CUDA
  CudaInputHold input_hold_;  // CUDA inputs whose copies may still be running
#endif
};

}  // namespace gstflashvsr
