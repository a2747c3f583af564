// SPDX-License-Identifier: LGPL-2.1-or-later
// What the flashvsr element measures, in one place: the counters of its read-only properties (frames in,
// frames out, frames dropped, chunks, mean chunk time, since READY -> PAUSED), the throughput it sustains
// (frames per second of its own work in steady chunks) and the latency it answers (the schedule's longest
// wait, 24 frames, plus processing: the slower of a stream's first chunk and the mean chunk; while inputs
// are dropped, at least the steady wait of a kept frame: 11 kept frames plus one chunk of work).
// Thread-safe: the streaming thread records, application threads and LATENCY queries read.
#pragma once

#include "frame_window.h"

#include <gst/gst.h>

#include <mutex>

namespace gstflashvsr {

class Measurements {
 public:
  struct Counters {
    guint64 frames_in = 0, frames_out = 0, chunks = 0;
    guint64 frames_dropped = 0;  // inputs dropped to hold real time (LivePacer)
    double mean_chunk_ms = 0.0;  // 0 before the first chunk
    // Frames per second the element sustains: 1 / (its own work per frame), the work being the pushes of a
    // chunk (mapping, upload, conversions, the chunk) over its frames plus the mean time of making an
    // output buffer; smoothed over steady chunks. Waiting downstream does not count. 0 until the stream's
    // first chunk ran; that chunk's figure (its 25 frames) is provisional, replaced by chunk 1's.
    double throughput = 0.0;
  };
  // What record() found.
  struct Recorded {
    bool latency_changed = false;      // the processing estimate moved by more than 20 % (post LATENCY)
    bool throughput_measured = false;  // a chunk gave a new throughput figure
    bool throughput_provisional = false;  // the figure is a stream's very first chunk's
  };

  // Starts afresh (READY -> PAUSED): no frames, no chunks, no framerate, no first-chunk time.
  void reset();
  // The negotiated input framerate (25 fps when 0/1 or invalid). Returns whether the latency changed.
  bool set_framerate(gint fps_n, gint fps_d);
  // A first chunk timed before the stream's own (flashvsr::time_first_chunk). Returns whether it changed.
  bool set_first_chunk_estimate(double ms);
  // Counts what a push or a drain did. latency_changed when the processing estimate moved by more than
  // 20 % from the last one announced (or none was): the caller posts a LATENCY message.
  Recorded record(const FrameWindow::Step& step);
  // Counts an output buffer made, which took `ms` of the element's time.
  void count_output(double ms);
  // Counts an input dropped before the engine.
  void count_dropped();
  // Forgets the throughput (a new video size or new settings: the old figure no longer applies).
  void reset_throughput();
  // The share of inputs kept (LivePacer; 1 when none is dropped). Returns whether the latency moved by
  // more than 20 % from the last one announced: the caller posts a LATENCY message.
  bool set_keep_ratio(double ratio);

  Counters counters() const;
  // The element's latency: kMaxOutputDelayFrames frame durations plus processing; while inputs are
  // dropped, at least a kept frame's steady wait (steady_wait_locked).
  GstClockTime latency() const;

 private:
  GstClockTime processing_locked() const;
  GstClockTime latency_locked() const;
  // The longest a kept frame waits in the steady state: the kept frames after it that its chunk needs (11:
  // model/schedule.h, chunk 1 emits frames 21..28 once frame 32 arrived) at 1 / keep_ratio frame
  // durations each, plus one chunk of the element's work (8 frames at the throughput). 0 when nothing is
  // dropped or no throughput is known.
  GstClockTime steady_wait_locked() const;

  mutable std::mutex lock_;
  Counters counters_;
  double chunk_ms_total_ = 0.0;
  // Throughput: the pushes since the last chunk ran (their time and frames), the mean output buffer time.
  double window_ms_ = 0.0;
  int64_t window_frames_ = 0;
  double output_ms_ = -1.0;  // smoothed; < 0 before the first output buffer
  bool throughput_provisional_ = false;  // the throughput is a first chunk's
  // The time of a stream's first (and slowest) chunk: timed on a scratch stream at negotiation when
  // upstream is live, then the measured first chunk of each stream. 0 while unknown.
  double first_chunk_ms_ = 0.0;
  GstClockTime frame_duration_ = GST_CLOCK_TIME_NONE;  // of the negotiated framerate
  GstClockTime announced_processing_ = 0;              // last processing estimate announced
  GstClockTime announced_latency_ = 0;                 // latency when the keep ratio was last announced
  double keep_ratio_ = 1.0;
};

}  // namespace gstflashvsr
