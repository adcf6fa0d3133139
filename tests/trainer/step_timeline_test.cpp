// trainer/step_timeline: the engine's schedule replayed on hand-worked steps (the expected times
// are worked out in the comments from the engine's rules).
#include <gtest/gtest.h>

#include "trainer/step_timeline.h"

namespace lookahead::trainer {
namespace {

TimedCall call(const std::string& unit, int branch, double forward, double gather, bool with_grad = false,
               double backward = 0, double reduce = 0) {
  TimedCall c;
  c.unit = unit;
  c.branch = branch;
  c.with_grad = with_grad;
  c.forward_s = forward;
  c.backward_s = backward;
  c.gather_s = gather;
  c.reduce_s = reduce;
  return c;
}

TEST(StepTimeline, PrefetchHidesEveryGatherButTheFirstWhenComputeIsLonger) {
  // Gathers take 1, computes 2. A: gathered 0-1, runs 1-3 while B gathers 1-2; B runs 3-5 while
  // C gathers 3-4; C runs 5-7.
  const std::vector<TimedCall> calls{call("a", 0, 2, 1), call("b", 0, 2, 1), call("c", 0, 2, 1)};
  const Timeline t = simulate_step(calls, {});
  EXPECT_DOUBLE_EQ(t.step, 7);
  EXPECT_DOUBLE_EQ(t.compute, 6);
  EXPECT_DOUBLE_EQ(t.gather, 3);
  EXPECT_DOUBLE_EQ(t.gather_wait, 1);
  EXPECT_DOUBLE_EQ(t.exposed_first, 1);
  EXPECT_NEAR(t.hidden_fraction(), 2.0 / 3.0, 1e-12);

  TimelineOptions off;
  off.prefetch = false;
  EXPECT_DOUBLE_EQ(simulate_step(calls, off).step, 9);  // the sum
}

TEST(StepTimeline, CommunicationBoundStepFollowsTheChannel) {
  // Gathers take 2, computes 1: A 0-2 | runs 2-3, B gathers 2-4 | B runs 4-5, C gathers 4-6 | C runs 6-7.
  const std::vector<TimedCall> calls{call("a", 0, 1, 2), call("b", 0, 1, 2), call("c", 0, 1, 2)};
  const Timeline t = simulate_step(calls, {});
  EXPECT_DOUBLE_EQ(t.step, 7);
  EXPECT_DOUBLE_EQ(t.gather_wait, 4);
}

TEST(StepTimeline, BackwardGathersAgainAndReductionsQueueOnTheChannel) {
  // Branch 1: A, B with a backward (forward 1, backward 2, gather 1, reduce 1).
  // Forward: A gathers 0-1, runs 1-2 (B prefetched 1-2); B runs 2-3. Backward, B first: gathered
  // again 3-4 (waited for), A prefetched 4-5; B runs 4-6, its reduction 6-7; A runs 6-8, its
  // reduction 8-9; the optimizer waits for it: the step ends at 9.
  const std::vector<TimedCall> calls{call("a", 1, 1, 1, true, 2, 1), call("b", 1, 1, 1, true, 2, 1)};
  const Timeline t = simulate_step(calls, {});
  EXPECT_DOUBLE_EQ(t.step, 9);
  EXPECT_DOUBLE_EQ(t.compute, 6);
  EXPECT_EQ(t.gathers, 4);
  EXPECT_DOUBLE_EQ(t.gather_wait, 2);
  EXPECT_DOUBLE_EQ(t.reduce, 2);
  EXPECT_DOUBLE_EQ(t.reduce_wait, 1);

  // Kept gathered from forward to backward: no second gathers. B's backward starts at 3, A's at 5;
  // reductions 5-6 and 7-8: the step ends at 8.
  TimelineOptions keep;
  keep.keep_gathered = true;
  const Timeline k = simulate_step(calls, keep);
  EXPECT_EQ(k.gathers, 2);
  EXPECT_DOUBLE_EQ(k.step, 8);
}

TEST(StepTimeline, WholeUnitsNeverWaitAndBranchesRunInTrainStateOrder) {
  // No gathers: the step is its compute; branch 2 runs after branch 1's backward, and the
  // reference identity (branch 0) first, whatever the order of the list.
  std::vector<TimedCall> calls{call("r", 0, 0.5, 0), call("a", 1, 1, 0, true, 2), call("b", 2, 1, 0, true, 3)};
  const Timeline t = simulate_step(calls, {});
  EXPECT_DOUBLE_EQ(t.step, 7.5);
  EXPECT_DOUBLE_EQ(t.gather_wait + t.reduce_wait, 0);
  EXPECT_DOUBLE_EQ(t.hidden_fraction(), 1);
}

}  // namespace
}  // namespace lookahead::trainer
