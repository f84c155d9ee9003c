#include "worker/task_context.h"

#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace dexec::worker {
namespace {

TEST(TaskContext, SleepForSleepsTheWholeDurationWhenUndisturbed) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  const absl::Time start = absl::Now();
  EXPECT_TRUE(ctx.SleepFor(absl::Milliseconds(20)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_FALSE(ctx.cancelled());
}

TEST(TaskContext, CancelWakesSleepForEarly) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  const absl::Time start = absl::Now();
  std::thread canceller([&] { ctx.Cancel(); });
  EXPECT_FALSE(ctx.SleepFor(absl::Seconds(30)));
  canceller.join();
  EXPECT_TRUE(ctx.cancelled());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(TaskContext, SleepForStopsAtTheDeadline) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(30);
  TaskContext ctx(7, 2, deadline);
  EXPECT_EQ(ctx.job_id(), 7u);
  EXPECT_EQ(ctx.attempt(), 2u);
  EXPECT_EQ(ctx.deadline(), deadline);
  EXPECT_FALSE(ctx.SleepFor(absl::Seconds(30)));
  EXPECT_GE(absl::Now(), deadline);
  EXPECT_FALSE(ctx.cancelled());
}

TEST(TaskContext, CancelTwiceIsHarmless) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  ctx.Cancel();
  ctx.Cancel();
  EXPECT_TRUE(ctx.cancelled());
  EXPECT_FALSE(ctx.SleepFor(absl::Seconds(1)));
}

}  // namespace
}  // namespace dexec::worker
