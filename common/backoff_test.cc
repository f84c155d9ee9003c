#include "common/backoff.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace dexec {
namespace {

TEST(Backoff, DoublesUpToTheCapWithJitterInTheUpperHalf) {
  Backoff backoff(absl::Milliseconds(50), absl::Seconds(2));
  absl::Duration expected = absl::Milliseconds(50);
  for (int i = 0; i < 12; ++i) {
    const absl::Duration d = backoff.Next();
    EXPECT_GE(d, expected / 2) << "attempt " << i;
    EXPECT_LE(d, expected) << "attempt " << i;
    expected = std::min(expected * 2, absl::Seconds(2));
  }
  EXPECT_EQ(backoff.current(), absl::Seconds(2));
}

TEST(Backoff, ResetStartsOverFromTheInitialDelay) {
  Backoff backoff(absl::Milliseconds(10), absl::Seconds(1));
  for (int i = 0; i < 5; ++i) backoff.Next();
  backoff.Reset();
  EXPECT_LE(backoff.Next(), absl::Milliseconds(10));
}

TEST(Backoff, DelaysOfTwoClientsDiffer) {
  Backoff a(absl::Seconds(1), absl::Seconds(1));
  Backoff b(absl::Seconds(1), absl::Seconds(1));
  bool differ = false;
  for (int i = 0; i < 10 && !differ; ++i) differ = a.Next() != b.Next();
  EXPECT_TRUE(differ) << "no jitter: clients would reconnect in lockstep";
}

}  // namespace
}  // namespace dexec
