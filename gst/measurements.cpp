// SPDX-License-Identifier: LGPL-2.1-or-later
#include "measurements.h"

#include "schedule.h"

#include <algorithm>
#include <cmath>

namespace gstflashvsr {

namespace {

// The frame duration of the latency when the caps carry no framerate (0/1, variable): 25 fps.
constexpr gint kFallbackFpsN = 25, kFallbackFpsD = 1;
// A new processing estimate is announced (LATENCY message) when it moved by more than this fraction.
constexpr double kLatencyChangeRatio = 0.2;
// Weight of a new steady chunk in the throughput, and of a new output buffer in its mean time: a figure that
// follows a lasting change within a few chunks, not one slow chunk.
constexpr double kThroughputWeight = 0.3;
constexpr double kOutputWeight = 0.1;

GstClockTime duration_of_fps(gint fps_n, gint fps_d) {
  if (fps_n <= 0 || fps_d <= 0) {
    fps_n = kFallbackFpsN;
    fps_d = kFallbackFpsD;
  }
  return gst_util_uint64_scale_int(GST_SECOND, fps_d, fps_n);
}

}  // namespace

void Measurements::reset() {
  std::lock_guard<std::mutex> guard(lock_);
  counters_ = Counters();
  chunk_ms_total_ = 0.0;
  first_chunk_ms_ = 0.0;
  frame_duration_ = GST_CLOCK_TIME_NONE;
  announced_processing_ = 0;
  window_ms_ = 0.0;
  window_frames_ = 0;
  output_ms_ = -1.0;
  throughput_provisional_ = false;
  announced_latency_ = 0;
  keep_ratio_ = 1.0;
}

void Measurements::reset_throughput() {
  std::lock_guard<std::mutex> guard(lock_);
  counters_.throughput = 0.0;
  window_ms_ = 0.0;
  window_frames_ = 0;
  output_ms_ = -1.0;
  throughput_provisional_ = false;
  keep_ratio_ = 1.0;
}

bool Measurements::set_keep_ratio(double ratio) {
  std::lock_guard<std::mutex> guard(lock_);
  keep_ratio_ = std::clamp(ratio, 1e-3, 1.0);
  const GstClockTime now = latency_locked();
  // Nothing announced through here yet: the answers so far had no steady wait in them.
  const GstClockTime frame =
      GST_CLOCK_TIME_IS_VALID(frame_duration_) ? frame_duration_ : duration_of_fps(kFallbackFpsN, kFallbackFpsD);
  const double before = static_cast<double>(
      announced_latency_ != 0 ? announced_latency_
                              : static_cast<GstClockTime>(flashvsr::kMaxOutputDelayFrames) * frame + processing_locked());
  if (std::fabs(static_cast<double>(now) - before) <= kLatencyChangeRatio * before) return false;
  announced_latency_ = now;
  return true;
}

bool Measurements::set_framerate(gint fps_n, gint fps_d) {
  const GstClockTime frame = duration_of_fps(fps_n, fps_d);
  std::lock_guard<std::mutex> guard(lock_);
  const bool changed = frame_duration_ != frame;
  frame_duration_ = frame;
  return changed;
}

bool Measurements::set_first_chunk_estimate(double ms) {
  std::lock_guard<std::mutex> guard(lock_);
  const bool changed = ms != first_chunk_ms_;
  first_chunk_ms_ = ms;
  return changed;
}

Measurements::Recorded Measurements::record(const FrameWindow::Step& step) {
  std::lock_guard<std::mutex> guard(lock_);
  Recorded recorded;
  counters_.frames_in += static_cast<guint64>(step.frames_in);
  window_ms_ += step.busy_ms;
  window_frames_ += step.frames_in;
  if (step.chunks <= 0) return recorded;
  counters_.chunks += static_cast<guint64>(step.chunks);
  chunk_ms_total_ += step.ms;
  counters_.mean_chunk_ms = chunk_ms_total_ / static_cast<double>(counters_.chunks);
  if (step.first_chunk) first_chunk_ms_ = step.ms;

  // A chunk run by a push closes the window of pushes that made its frames. A first chunk's window (its 25
  // frames; no output buffer made yet) gives a provisional figure, so that a live stream learns early how
  // far behind it is; the first steady chunk's figure replaces it, later ones are smoothed in. A drain's
  // window (the padded tail) gives none.
  if (step.frames_in > 0 && step.chunks == 1 && window_frames_ > 0 && (step.first_chunk || output_ms_ >= 0.0)) {
    const double ms_per_frame = window_ms_ / static_cast<double>(window_frames_) + std::max(output_ms_, 0.0);
    if (ms_per_frame > 0.0) {
      const double fps = 1000.0 / ms_per_frame;
      const bool first_figure = counters_.throughput <= 0.0;
      counters_.throughput = !first_figure && !throughput_provisional_
                                 ? kThroughputWeight * fps + (1.0 - kThroughputWeight) * counters_.throughput
                                 : fps;
      throughput_provisional_ = step.first_chunk && first_figure;
      recorded.throughput_measured = true;
      recorded.throughput_provisional = throughput_provisional_;
    }
  }
  window_ms_ = 0.0;
  window_frames_ = 0;

  const GstClockTime processing = processing_locked();
  const double before = static_cast<double>(announced_processing_);
  if (before != 0.0 && std::fabs(static_cast<double>(processing) - before) <= kLatencyChangeRatio * before)
    return recorded;
  announced_processing_ = processing;
  announced_latency_ = latency_locked();
  recorded.latency_changed = true;
  return recorded;
}

void Measurements::count_output(double ms) {
  std::lock_guard<std::mutex> guard(lock_);
  counters_.frames_out++;
  output_ms_ = output_ms_ < 0.0 ? ms : kOutputWeight * ms + (1.0 - kOutputWeight) * output_ms_;
}

void Measurements::count_dropped() {
  std::lock_guard<std::mutex> guard(lock_);
  counters_.frames_dropped++;
}

Measurements::Counters Measurements::counters() const {
  std::lock_guard<std::mutex> guard(lock_);
  return counters_;
}

GstClockTime Measurements::processing_locked() const {
  return static_cast<GstClockTime>(std::max(first_chunk_ms_, counters_.mean_chunk_ms) * GST_MSECOND);
}

GstClockTime Measurements::steady_wait_locked() const {
  if (keep_ratio_ >= 1.0 || counters_.throughput <= 0.0) return 0;
  const flashvsr::ChunkPlan chunk1 = flashvsr::plan_chunk(1);
  const int64_t later_frames = chunk1.frames_needed - 1 - chunk1.output.begin;  // 11
  const double frame_s =
      static_cast<double>(GST_CLOCK_TIME_IS_VALID(frame_duration_) ? frame_duration_
                                                                    : duration_of_fps(kFallbackFpsN, kFallbackFpsD)) /
      GST_SECOND;
  const double wait_s = static_cast<double>(later_frames) * frame_s / keep_ratio_ +
                        static_cast<double>(flashvsr::kChunkFrames) / counters_.throughput;
  return static_cast<GstClockTime>(wait_s * GST_SECOND);
}

GstClockTime Measurements::latency_locked() const {
  const GstClockTime frame =
      GST_CLOCK_TIME_IS_VALID(frame_duration_) ? frame_duration_ : duration_of_fps(kFallbackFpsN, kFallbackFpsD);
  return std::max(static_cast<GstClockTime>(flashvsr::kMaxOutputDelayFrames) * frame + processing_locked(),
                  steady_wait_locked());
}

GstClockTime Measurements::latency() const {
  std::lock_guard<std::mutex> guard(lock_);
  return latency_locked();
}

}  // namespace gstflashvsr
