// SPDX-License-Identifier: LGPL-2.1-or-later
#include "live_pacer.h"

#include <algorithm>
#include <cmath>

namespace gstflashvsr {

void LivePacer::start(double needed_fps, bool live) {
  *this = LivePacer();
  needed_fps_ = needed_fps > 0.0 ? needed_fps : 0.0;
  live_ = live;
}

LivePacer::Report LivePacer::observe(double sustained_fps, bool provisional) {
  if (!(sustained_fps > 0.0)) return Report::None;
  sustained_fps_ = sustained_fps;
  if (!live_ || needed_fps_ <= 0.0) return Report::None;
  keep_ratio_ = std::clamp(kHeadroom * sustained_fps / needed_fps_, kMinKeepRatio, 1.0);
  if (!reported_) {
    // Not slow, or slow on a provisional figure only.
    slow_ = sustained_fps < needed_fps_;
    if (!slow_ || provisional) return Report::None;
    reported_ = true;
    reported_fps_ = sustained_fps;
    return Report::Slow;
  }
  // Slow until the engine sustains the source with the headroom: in between, keep_ratio stays below 1.
  if (sustained_fps * kHeadroom >= needed_fps_) {
    slow_ = false;
    reported_ = false;
    reported_fps_ = sustained_fps;
    return Report::RealTime;
  }
  if (std::fabs(sustained_fps - reported_fps_) > kReportChange * reported_fps_) {
    reported_fps_ = sustained_fps;
    return Report::Changed;
  }
  return Report::None;
}

bool LivePacer::keep(bool qos, double lag_s) {
  pacing_ = slow_ && qos;
  if (!pacing_) {
    credit_ = 0.5;
    applied_ratio_ = 1.0;
    catching_up_ = false;
    kept_++;
    return true;
  }
  catching_up_ = lag_s > kBacklogFrames / sustained_fps_;
  applied_ratio_ = std::max(kMinKeepRatio, keep_ratio_ * (catching_up_ ? kCatchUp : 1.0));
  credit_ += applied_ratio_;
  if (credit_ >= 1.0) {
    credit_ -= 1.0;
    kept_++;
    return true;
  }
  dropped_++;
  return false;
}

}  // namespace gstflashvsr
