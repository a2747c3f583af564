// SPDX-License-Identifier: LGPL-2.1-or-later
// The live pacer alone (gst/live_pacer.h): which inputs it drops for a given throughput and framerate,
// and when it tells the user. Expectations come from the rules (keep = 0.9 x sustained / needed,
// evenly spread; a report when slower, again after a change of more than 20 %, and on recovery), not from
// the pacer's code.
#include "live_pacer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

using gstflashvsr::LivePacer;
using Report = LivePacer::Report;

namespace {

// keep() over n inputs: true for each input kept.
std::vector<bool> decisions(LivePacer& pacer, int n, bool qos = true) {
  std::vector<bool> kept;
  for (int i = 0; i < n; ++i) kept.push_back(pacer.keep(qos));
  return kept;
}

int count_kept(const std::vector<bool>& kept, size_t begin = 0, size_t end = SIZE_MAX) {
  int n = 0;
  for (size_t i = begin; i < std::min(end, kept.size()); ++i) n += kept[i] ? 1 : 0;
  return n;
}

// The longest run of consecutive drops.
int longest_drop_run(const std::vector<bool>& kept) {
  int longest = 0, run = 0;
  for (bool k : kept) {
    run = k ? 0 : run + 1;
    longest = std::max(longest, run);
  }
  return longest;
}

}  // namespace

TEST(LivePacer, KeepsEveryFrameUntilAThroughputBelowTheFramerateIsMeasured) {
  LivePacer pacer;
  pacer.start(30.0, true);
  EXPECT_EQ(count_kept(decisions(pacer, 100)), 100);
  EXPECT_EQ(pacer.observe(45.0), Report::None);  // faster than needed
  EXPECT_EQ(count_kept(decisions(pacer, 100)), 100);
  EXPECT_FALSE(pacer.slow());
  EXPECT_EQ(pacer.dropped(), 0u);
}

TEST(LivePacer, KeepRatioIsNinetyPercentOfSustainedOverNeeded) {
  for (double sustained : {3.0, 10.0, 21.4, 26.0}) {
    LivePacer pacer;
    pacer.start(30.0, true);
    EXPECT_EQ(pacer.observe(sustained), Report::Slow) << sustained;
    const double ratio = 0.9 * sustained / 30.0;
    EXPECT_NEAR(pacer.keep_ratio(), ratio, 1e-9);
    const int n = 3000;
    const int kept = count_kept(decisions(pacer, n));
    // An even spread keeps n * ratio frames, give or take one.
    EXPECT_NEAR(kept, n * ratio, 1.0) << sustained;
    EXPECT_EQ(pacer.kept() + pacer.dropped(), static_cast<uint64_t>(n));
    EXPECT_EQ(pacer.dropped(), static_cast<uint64_t>(n - kept));
  }
}

TEST(LivePacer, DropsAreSpreadEvenlyWithoutBursts) {
  for (double sustained : {2.0, 7.5, 15.0, 24.3, 29.0}) {
    LivePacer pacer;
    pacer.start(30.0, true);
    pacer.observe(sustained);
    const double ratio = 0.9 * sustained / 30.0;
    const std::vector<bool> kept = decisions(pacer, 2000);
    // Never more consecutive drops than one kept frame per 1/ratio inputs allows.
    EXPECT_LE(longest_drop_run(kept), static_cast<int>(std::ceil(1.0 / ratio)) - 1) << sustained;
    // Every window of w inputs keeps w * ratio frames, give or take one: no bursts of drops or of keeps.
    for (size_t w : {10u, 30u, 100u})
      for (size_t begin = 0; begin + w <= kept.size(); begin += 7)
        ASSERT_NEAR(count_kept(kept, begin, begin + w), w * ratio, 1.0 + 1e-9)
            << "sustained " << sustained << ", window of " << w << " from " << begin;
  }
}

TEST(LivePacer, RatioFollowsANewMeasurementWithoutABurst) {
  LivePacer pacer;
  pacer.start(30.0, true);
  pacer.observe(20.0);  // keep 0.6
  std::vector<bool> kept = decisions(pacer, 500);
  pacer.observe(10.0);  // keep 0.3
  const std::vector<bool> after = decisions(pacer, 500);
  EXPECT_NEAR(count_kept(after), 500 * 0.3, 1.0);
  kept.insert(kept.end(), after.begin(), after.end());
  // Across the change, drops stay spread for the lower ratio.
  EXPECT_LE(longest_drop_run(kept), static_cast<int>(std::ceil(1.0 / 0.3)) - 1);
}

TEST(LivePacer, QosOffOrNotLiveOrNoFramerateNeverDrops) {
  LivePacer qos_off;
  qos_off.start(30.0, true);
  EXPECT_EQ(qos_off.observe(10.0), Report::Slow);  // the user is told all the same
  EXPECT_EQ(count_kept(decisions(qos_off, 300, false)), 300);
  EXPECT_FALSE(qos_off.pacing());

  LivePacer not_live;
  not_live.start(30.0, false);
  EXPECT_EQ(not_live.observe(10.0), Report::None);
  EXPECT_EQ(count_kept(decisions(not_live, 300)), 300);
  EXPECT_EQ(not_live.sustained_fps(), 10.0);

  LivePacer no_rate;
  no_rate.start(0.0, true);
  EXPECT_EQ(no_rate.observe(10.0), Report::None);
  EXPECT_EQ(count_kept(decisions(no_rate, 300)), 300);
}

TEST(LivePacer, QosTurnedOnMidStreamStartsDroppingAtTheRatio) {
  LivePacer pacer;
  pacer.start(30.0, true);
  pacer.observe(15.0);  // keep 0.45
  EXPECT_EQ(count_kept(decisions(pacer, 100, false)), 100);
  EXPECT_NEAR(count_kept(decisions(pacer, 1000, true)), 450.0, 1.0);
  EXPECT_TRUE(pacer.pacing());
}

TEST(LivePacer, ReportsOnceThenOnlyChangesOfMoreThanTwentyPercent) {
  LivePacer pacer;
  pacer.start(30.0, true);
  EXPECT_EQ(pacer.observe(20.0), Report::Slow);
  EXPECT_EQ(pacer.reported_fps(), 20.0);
  // Within 20 % of the last report: nothing, however many measurements.
  for (double fps : {21.0, 19.0, 23.9, 16.1, 20.5, 23.0})
    EXPECT_EQ(pacer.observe(fps), Report::None) << fps;
  EXPECT_EQ(pacer.reported_fps(), 20.0);
  EXPECT_EQ(pacer.observe(15.9), Report::Changed);  // -20.5 %
  EXPECT_EQ(pacer.reported_fps(), 15.9);
  EXPECT_EQ(pacer.observe(18.5), Report::None);  // +16 % of the new reference
  EXPECT_EQ(pacer.observe(19.5), Report::Changed);  // +22.6 %
  EXPECT_NEAR(pacer.keep_ratio(), 0.9 * 19.5 / 30.0, 1e-9);
}

TEST(LivePacer, RecoveryIsReportedOnceTheEngineSustainsTheSourceWithHeadroom) {
  LivePacer pacer;
  pacer.start(30.0, true);
  EXPECT_EQ(pacer.observe(20.0), Report::Slow);
  // Faster than the source, but not by the headroom: still slow (some drops), and not reported (< 20 %).
  EXPECT_EQ(pacer.observe(23.0), Report::None);
  EXPECT_EQ(pacer.observe(31.0), Report::Changed);  // +55 %: reported, still slow
  EXPECT_TRUE(pacer.slow());
  EXPECT_NEAR(pacer.keep_ratio(), 0.9 * 31.0 / 30.0, 1e-9);
  EXPECT_LT(count_kept(decisions(pacer, 1000)), 1000);
  EXPECT_EQ(pacer.observe(34.0), Report::RealTime);  // 0.9 x 34 >= 30
  EXPECT_FALSE(pacer.slow());
  EXPECT_EQ(count_kept(decisions(pacer, 300)), 300);
  EXPECT_EQ(pacer.observe(40.0), Report::None);
  // Slower again: a new first report.
  EXPECT_EQ(pacer.observe(25.0), Report::Slow);
}

TEST(LivePacer, AProvisionalFigureStartsTheDropsButOnlyASteadyFigureIsReported) {
  LivePacer pacer;
  pacer.start(30.0, true);
  EXPECT_EQ(pacer.observe(14.0, true), Report::None);  // a first chunk's figure
  EXPECT_TRUE(pacer.slow());
  EXPECT_NEAR(count_kept(decisions(pacer, 1000)), 1000 * 0.9 * 14.0 / 30.0, 1.0);
  EXPECT_EQ(pacer.observe(10.0), Report::Slow);  // the first steady figure: reported with its number
  EXPECT_EQ(pacer.reported_fps(), 10.0);
  EXPECT_EQ(pacer.observe(11.0), Report::None);

  // A provisional figure below the framerate, then a steady one that keeps up: nothing is ever reported,
  // and the drops stop.
  LivePacer keeps_up;
  keeps_up.start(30.0, true);
  EXPECT_EQ(keeps_up.observe(28.0, true), Report::None);
  EXPECT_LT(count_kept(decisions(keeps_up, 100)), 100);
  EXPECT_EQ(keeps_up.observe(31.0), Report::None);
  EXPECT_FALSE(keeps_up.slow());
  EXPECT_EQ(count_kept(decisions(keeps_up, 100)), 100);
}

TEST(LivePacer, InputsBehindByMoreThanTwoChunksOfWorkAreKeptHalfAsOftenStillEvenly) {
  LivePacer pacer;
  pacer.start(30.0, true);
  pacer.observe(12.0);  // keep 0.36; one chunk of work: 8 / 12 s
  const double chunk_s = 8.0 / 12.0;
  // Up to one chunk late is what waiting for a chunk to finish gives: no backlog.
  for (int i = 0; i < 100; ++i) pacer.keep(true, 0.99 * chunk_s);
  EXPECT_FALSE(pacer.catching_up());
  std::vector<bool> kept;
  for (int i = 0; i < 1000; ++i) kept.push_back(pacer.keep(true, 0.0));
  EXPECT_NEAR(count_kept(kept), 360.0, 1.0);
  std::vector<bool> behind;
  for (int i = 0; i < 1000; ++i) behind.push_back(pacer.keep(true, 2.5 * chunk_s));
  EXPECT_TRUE(pacer.catching_up());
  EXPECT_NEAR(pacer.applied_ratio(), 0.18, 1e-9);
  EXPECT_NEAR(count_kept(behind), 180.0, 1.0);
  EXPECT_LE(longest_drop_run(behind), static_cast<int>(std::ceil(1.0 / 0.18)) - 1);
  // Less than two chunks behind: the plain ratio again.
  std::vector<bool> caught_up;
  for (int i = 0; i < 1000; ++i) caught_up.push_back(pacer.keep(true, 1.5 * chunk_s));
  EXPECT_FALSE(pacer.catching_up());
  EXPECT_NEAR(count_kept(caught_up), 360.0, 1.0);
}

TEST(LivePacer, StartForgetsTheEarlierVideo) {
  LivePacer pacer;
  pacer.start(30.0, true);
  pacer.observe(10.0);
  decisions(pacer, 100);
  pacer.start(25.0, true);
  EXPECT_FALSE(pacer.slow());
  EXPECT_EQ(pacer.dropped(), 0u);
  EXPECT_EQ(pacer.kept(), 0u);
  EXPECT_EQ(pacer.needed_fps(), 25.0);
  EXPECT_EQ(pacer.sustained_fps(), 0.0);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
