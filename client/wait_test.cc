#include "client/wait.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "client/future_state.h"
#include "client/local_host.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dexec {
namespace {

using internal::FutureState;
using internal::LocalHost;
using internal::MakeFuture;

constexpr absl::Duration kBound = absl::Seconds(10);

class WaitTest : public ::testing::Test {
 protected:
  // `n` acknowledged, unfinished futures and their states.
  void Make(int n) {
    for (int i = 0; i < n; ++i) {
      states_.push_back(host_->NewAcknowledgedJob());
      futures_.push_back(MakeFuture<int>(states_.back()));
    }
  }
  void Succeed(int i) { states_[i]->Complete(absl::OkStatus(), "1"); }
  void Fail(int i) {
    states_[i]->Complete(internal::JobErrorToStatus("task_error", "x"));
  }
  void Cancel(int i) {
    states_[i]->Complete(internal::JobErrorToStatus("cancelled", "x"));
  }
  // Job ids (1-based) of a list of futures, to compare with expectations.
  static std::vector<uint64_t> Ids(const std::vector<Future<int>>& fs) {
    std::vector<uint64_t> ids;
    for (const Future<int>& f : fs) ids.push_back(f.JobId(kBound).value());
    return ids;
  }

  std::shared_ptr<LocalHost> host_ = std::make_shared<LocalHost>();
  std::vector<std::shared_ptr<FutureState>> states_;
  std::vector<Future<int>> futures_;
};

TEST_F(WaitTest, AllCompletedWaitsForEveryFuture) {
  Make(3);
  Succeed(0);
  std::thread completer([this] {
    Fail(1);
    Succeed(2);
  });
  WaitResult<int> r = Wait(futures_, kBound, ReturnWhen::kAllCompleted);
  completer.join();
  EXPECT_EQ(Ids(r.done), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(r.not_done.empty());
}

TEST_F(WaitTest, FirstCompletedReturnsAfterOne) {
  Make(3);
  std::thread completer([this] { Succeed(1); });
  WaitResult<int> r = Wait(futures_, kBound, ReturnWhen::kFirstCompleted);
  completer.join();
  EXPECT_EQ(Ids(r.done), (std::vector<uint64_t>{2}));
  EXPECT_EQ(Ids(r.not_done), (std::vector<uint64_t>{1, 3}));
}

TEST_F(WaitTest, FirstExceptionReturnsOnFailureButNotOnCancel) {
  Make(4);
  Succeed(0);
  Cancel(1);
  std::thread completer([this] { Fail(3); });
  WaitResult<int> r = Wait(futures_, kBound, ReturnWhen::kFirstException);
  completer.join();
  EXPECT_EQ(Ids(r.done), (std::vector<uint64_t>{1, 2, 4}));
  EXPECT_EQ(Ids(r.not_done), (std::vector<uint64_t>{3}));
}

TEST_F(WaitTest, FirstExceptionWithoutFailuresWaitsForAll) {
  Make(2);
  Succeed(0);
  Succeed(1);
  WaitResult<int> r = Wait(futures_, kBound, ReturnWhen::kFirstException);
  EXPECT_EQ(r.done.size(), 2u);
}

TEST_F(WaitTest, TimeoutSplitsDoneAndNotDone) {
  Make(3);
  Succeed(2);
  WaitResult<int> r =
      Wait(futures_, absl::Milliseconds(20), ReturnWhen::kAllCompleted);
  EXPECT_EQ(Ids(r.done), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Ids(r.not_done), (std::vector<uint64_t>{1, 2}));
  // The waiter unregistered itself: completing now touches nothing freed
  // (ASan would say so).
  Succeed(0);
}

TEST_F(WaitTest, EmptyListReturnsAtOnce) {
  WaitResult<int> r =
      Wait(std::vector<Future<int>>{}, kBound, ReturnWhen::kFirstCompleted);
  EXPECT_TRUE(r.done.empty());
  EXPECT_TRUE(r.not_done.empty());
}

TEST_F(WaitTest, AsCompletedYieldsDoneFirstThenInCompletionOrder) {
  Make(4);
  Succeed(2);
  Succeed(0);
  AsCompletedIterator<int> it = AsCompleted(futures_, kBound);
  // Already done: input order.
  EXPECT_EQ(it.Next()->value().JobId().value(), 1u);
  EXPECT_EQ(it.Next()->value().JobId().value(), 3u);
  Fail(3);
  EXPECT_EQ(it.Next()->value().JobId().value(), 4u);
  std::thread completer([this] { Succeed(1); });
  EXPECT_EQ(it.Next()->value().JobId().value(), 2u);
  completer.join();
  EXPECT_FALSE(it.Next().has_value());
}

TEST_F(WaitTest, AsCompletedTimesOutOnceThenEnds) {
  Make(2);
  Succeed(1);
  AsCompletedIterator<int> it = AsCompleted(futures_, absl::Milliseconds(20));
  EXPECT_EQ(it.Next()->value().JobId().value(), 2u);
  std::optional<absl::StatusOr<Future<int>>> timeout = it.Next();
  ASSERT_TRUE(timeout.has_value());
  EXPECT_EQ(timeout->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(it.Next().has_value());
  Succeed(0);  // after unregistering: harmless
}

TEST_F(WaitTest, AsCompletedWorksInRangeFor) {
  Make(5);
  std::thread completer([this] {
    for (int i = 4; i >= 0; --i) Succeed(i);
  });
  std::vector<uint64_t> seen;
  for (absl::StatusOr<Future<int>> f : AsCompleted(futures_, kBound)) {
    ASSERT_TRUE(f.ok()) << f.status();
    seen.push_back(f->JobId().value());
  }
  completer.join();
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_THAT(seen, ::testing::UnorderedElementsAre(1, 2, 3, 4, 5));
}

TEST_F(WaitTest, AsCompletedDestroyedEarlyUnregisters) {
  Make(2);
  { AsCompletedIterator<int> it = AsCompleted(futures_, kBound); }
  Succeed(0);  // must not notify the destroyed iterator
  Succeed(1);
}

}  // namespace
}  // namespace dexec
