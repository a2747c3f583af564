// SPDX-License-Identifier: LGPL-2.1-or-later
// The flashvsr element's policy for a live source faster than the engine (docs/element.md, "Slower than a
// live source"): from the throughput the element measures (Measurements) and the framerate the source
// needs, it decides when the user is told (a report when the stream becomes slower than real time, again
// only when the throughput moved by more than 20 % from the last report, and when it is back to real time)
// and, with qos=true, which input frames are dropped before they reach the engine: an even spread keeping
// `keep_ratio` of the inputs (an accumulator, as Bresenham's line: never two drops where one would do).
// While the inputs arrive more than two chunks of work behind the clock (the backlog a first chunk leaves,
// or a stall), it keeps half as many, still evenly, until the backlog is gone.
// Pure: no clock, no GStreamer; the element measures the lag, posts the messages and drops the buffers.
#pragma once

#include <cstdint>

namespace gstflashvsr {

class LivePacer {
 public:
  // Share of what the engine sustains that the pacer lets through, so that a little slack remains for the
  // lag built up before the first measurement (first chunk) and for jitter: keep = kHeadroom * sustained
  // / needed. The stream counts as back to real time only when the engine sustains needed / kHeadroom.
  static constexpr double kHeadroom = 0.9;
  // A slow stream is reported again when its throughput moved by more than this share of the last report.
  static constexpr double kReportChange = 0.2;
  // The smallest share of inputs kept (1 in 1000), whatever the throughput.
  static constexpr double kMinKeepRatio = 0.001;
  // Share of keep_ratio kept while catching up with a backlog: the backlog shrinks by about one second of
  // source time per second of work.
  static constexpr double kCatchUp = 0.5;
  // A backlog is a lag beyond the work of this many frames at the sustained throughput: two chunks (an
  // input that waited for one chunk to finish is up to one chunk late without any backlog).
  static constexpr double kBacklogFrames = 16.0;

  enum class Report {
    None,      // nothing to tell
    Slow,      // slower than the source for the first time (or again after a recovery)
    Changed,   // still slow, throughput moved by more than kReportChange since the last report
    RealTime,  // back to real time after a Slow report
  };

  // A new video: the framerate it needs (fps; <= 0 when the caps carry none: never slow) and whether the
  // pipeline is live (the LATENCY query upstream says so; not live: never slow, never drops). Forgets
  // every earlier measurement and decision.
  void start(double needed_fps, bool live);
  // A new throughput measurement (fps the element sustains): what the user should be told. A provisional
  // figure (a first chunk's) starts the drops but is never reported: the first report waits for a steady
  // figure, and if that one keeps up, nothing is reported at all.
  Report observe(double sustained_fps, bool provisional = false);
  // Whether the next input frame goes to the engine (true) or is dropped (false). Drops only while slow
  // and `qos` (the element's qos property, read for each frame) is set. `lag_s`: how far the input is
  // behind the clock (seconds; its running time against the clock's, less upstream's latency), <= 0 when
  // on time or unknown.
  bool keep(bool qos, double lag_s = 0.0);

  bool live() const { return live_; }
  bool slow() const { return slow_; }
  // Whether keep() may drop now: slow and qos was set at the last keep().
  bool pacing() const { return pacing_; }
  double needed_fps() const { return needed_fps_; }
  // The last throughput observed (0 before any) and the one of the last report.
  double sustained_fps() const { return sustained_fps_; }
  double reported_fps() const { return reported_fps_; }
  // Share of inputs kept while pacing: kHeadroom * sustained / needed in [kMinKeepRatio, 1]; 1 when not slow.
  double keep_ratio() const { return slow_ ? keep_ratio_ : 1.0; }
  // The share the last keep() used: keep_ratio(), times kCatchUp when that input was behind by more than
  // kBacklogFrames of work.
  double applied_ratio() const { return applied_ratio_; }
  bool catching_up() const { return catching_up_; }
  // Inputs kept and dropped by keep() since start().
  uint64_t kept() const { return kept_; }
  uint64_t dropped() const { return dropped_; }

 private:
  double needed_fps_ = 0.0;
  bool live_ = false;
  bool slow_ = false;
  bool reported_ = false;  // slow_ was reported (a Slow report went out)
  bool pacing_ = false;
  double sustained_fps_ = 0.0, reported_fps_ = 0.0;
  double keep_ratio_ = 1.0, applied_ratio_ = 1.0;
  bool catching_up_ = false;
  // Credit of the even spread: each input adds keep_ratio, an input is kept when the credit reaches 1.
  double credit_ = 0.5;
  uint64_t kept_ = 0, dropped_ = 0;
};

}  // namespace gstflashvsr
