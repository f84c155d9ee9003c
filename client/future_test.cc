#include "client/future.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/future_state.h"
#include "client/local_host.h"
#include "common/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dexec {
namespace {

using internal::FutureState;
using internal::LocalHost;
using internal::MakeFuture;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kBound = absl::Seconds(10);

class FutureTest : public ::testing::Test {
 protected:
  std::shared_ptr<LocalHost> host_ = std::make_shared<LocalHost>();
};

TEST_F(FutureTest, ResultTimesOutWhileNotDone) {
  Future<int> f = MakeFuture<int>(host_->NewAcknowledgedJob());
  absl::StatusOr<int> r = f.Result(absl::Milliseconds(5));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("job 1 not done"));
  EXPECT_FALSE(f.Done());
  EXPECT_EQ(f.Exception(absl::ZeroDuration()).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FutureTest, ResultDecodesTheValue) {
  auto state = host_->NewAcknowledgedJob();
  Future<int64_t> f = MakeFuture<int64_t>(state);
  state->Complete(absl::OkStatus(), "49");
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(f.Result(kBound).value(), 49);
  EXPECT_TRUE(f.Exception().ok());
  EXPECT_EQ(f.JobId(kBound).value(), 1u);
}

TEST_F(FutureTest, ResultWaitsForCompletionFromAnotherThread) {
  auto state = host_->NewAcknowledgedJob();
  Future<std::string> f = MakeFuture<std::string>(state);
  std::thread completer([state] { state->Complete(absl::OkStatus(), "hi"); });
  EXPECT_EQ(f.Result(kBound).value(), "hi");
  completer.join();
}

TEST_F(FutureTest, UndecodableResultIsInvalidArgumentNamingTheJob) {
  auto state = host_->NewAcknowledgedJob();
  state->Complete(absl::OkStatus(), "not a number");
  absl::StatusOr<int> r = MakeFuture<int>(state).Result();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("job 1"));
}

TEST_F(FutureTest, JobErrorKindsMapToCanonicalCodes) {
  struct Case {
    const char* kind;
    absl::StatusCode code;
  };
  for (const Case& c :
       std::vector<Case>{{"timeout", absl::StatusCode::kDeadlineExceeded},
                         {"cancelled", absl::StatusCode::kCancelled},
                         {"worker_lost", absl::StatusCode::kUnavailable},
                         {"bad_payload", absl::StatusCode::kInvalidArgument},
                         {"unknown_task", absl::StatusCode::kInvalidArgument},
                         {"not_found", absl::StatusCode::kNotFound},
                         {"task_error", absl::StatusCode::kUnknown},
                         {"exit_code", absl::StatusCode::kUnknown},
                         {"exception", absl::StatusCode::kUnknown}}) {
    absl::Status s = internal::JobErrorToStatus(c.kind, "boom");
    EXPECT_EQ(s.code(), c.code) << c.kind;
    EXPECT_EQ(s.message(), std::string(c.kind) + ": boom");
    EXPECT_EQ(ErrorKind(s), c.kind);
  }
  EXPECT_EQ(ErrorKind(absl::UnknownError("plain")), "");
}

TEST_F(FutureTest, FailedJobKeepsItsOutputAsRawResult) {
  auto state = host_->NewAcknowledgedJob();
  state->Complete(internal::JobErrorToStatus("exit_code", "exited with 3"),
                  "exec-result-bytes");
  Future<std::string> f = MakeFuture<std::string>(state);
  EXPECT_EQ(f.Result().status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(ErrorKind(f.Exception()), "exit_code");
  EXPECT_EQ(f.RawResult().value(), "exec-result-bytes");
}

TEST_F(FutureTest, RawResultOfFailureWithoutBytesIsTheError) {
  auto state = host_->NewAcknowledgedJob();
  state->Complete(internal::JobErrorToStatus("task_error", "nope"));
  EXPECT_EQ(MakeFuture<std::string>(state).RawResult().status().code(),
            absl::StatusCode::kUnknown);
}

TEST_F(FutureTest, JobIdWaitsForTheAcknowledgement) {
  auto state = host_->NewJob();
  Future<std::string> f = MakeFuture<std::string>(state);
  EXPECT_EQ(f.JobId(absl::ZeroDuration()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  std::thread acker([&] { host_->Acknowledge(state); });
  EXPECT_EQ(f.JobId(kBound).value(), 1u);
  acker.join();
}

TEST_F(FutureTest, JobIdOfRejectedSubmitIsTheRejection) {
  auto state = host_->NewJob();
  state->Complete(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(MakeFuture<std::string>(state).JobId(kBound).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(FutureTest, FirstCompletionWins) {
  auto state = host_->NewAcknowledgedJob();
  EXPECT_TRUE(state->Complete(absl::OkStatus(), "1"));
  EXPECT_FALSE(state->Complete(absl::CancelledError("late"), "2"));
  EXPECT_EQ(MakeFuture<int>(state).Result().value(), 1);
}

TEST_F(FutureTest, RunningThenDone) {
  auto state = host_->NewAcknowledgedJob();
  Future<std::string> f = MakeFuture<std::string>(state);
  EXPECT_FALSE(f.Running());
  state->MarkRunning();
  EXPECT_TRUE(f.Running());
  state->Complete(absl::OkStatus());
  EXPECT_FALSE(f.Running());
  EXPECT_TRUE(f.Done());
  state->MarkRunning();  // a late RUNNING event changes nothing
  EXPECT_TRUE(f.Done());
}

TEST_F(FutureTest, CallbacksRunInOrderOnTheCallbackThread) {
  auto state = host_->NewAcknowledgedJob();
  Future<int> f = MakeFuture<int>(state);
  Mutex mu;
  std::vector<int> order;
  bool all_on_callback_thread = true;
  for (int i = 0; i < 3; ++i) {
    f.AddDoneCallback([&, i](const Future<int>& g) {
      MutexLock lock(&mu);
      order.push_back(i);
      all_on_callback_thread &= host_->OnCallbackThread();
      EXPECT_EQ(g.Result(absl::ZeroDuration()).value(), 7);
    });
  }
  state->Complete(absl::OkStatus(), "7");
  MutexLock lock(&mu);
  ASSERT_TRUE(mu.AwaitWithDeadline([&] { return order.size() == 3; },
                                   absl::Now() + kBound))
      << "callbacks did not run";
  EXPECT_THAT(order, ElementsAre(0, 1, 2));
  EXPECT_TRUE(all_on_callback_thread);
}

TEST_F(FutureTest, CallbackRunsAtOnceInCallerThreadIfAlreadyDone) {
  auto state = host_->NewAcknowledgedJob();
  state->Complete(absl::OkStatus());
  Future<std::string> f = MakeFuture<std::string>(state);
  bool ran = false;
  f.AddDoneCallback([&](const Future<std::string>&) {
    ran = true;
    EXPECT_FALSE(host_->OnCallbackThread());
  });
  EXPECT_TRUE(ran);
}

TEST_F(FutureTest, CancelOfQueuedJobCancelsIt) {
  auto state = host_->NewAcknowledgedJob();
  Future<int> f = MakeFuture<int>(state);
  EXPECT_TRUE(f.Cancel());
  EXPECT_TRUE(f.Cancelled());
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(f.Result().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ErrorKind(f.Exception()), "cancelled");
  EXPECT_TRUE(f.Cancel());  // already cancelled: still true, no RPC
  EXPECT_EQ(host_->cancel_calls().size(), 1u);
}

TEST_F(FutureTest, CancelOfARunningJobAsksTheBrokerButOfAFinishedOneFails) {
  auto running = host_->NewAcknowledgedJob();
  running->MarkRunning();
  Future<int> f = MakeFuture<int>(running);
  EXPECT_TRUE(f.Cancel());
  EXPECT_TRUE(f.Cancelled());
  EXPECT_EQ(host_->cancel_calls().size(), 1u);
  auto finished = host_->NewAcknowledgedJob();
  finished->Complete(absl::OkStatus(), "1");
  EXPECT_FALSE(MakeFuture<int>(finished).Cancel());
  EXPECT_EQ(host_->cancel_calls().size(), 1u);  // decided locally
}

TEST_F(FutureTest, CancelWaitsForTheJobIdFirst) {
  auto state = host_->NewJob();
  Future<int> f = MakeFuture<int>(state);
  bool cancelled = false;
  std::thread canceller([&] { cancelled = f.Cancel(); });
  host_->Acknowledge(state);
  canceller.join();
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(host_->cancel_calls(), (std::vector<std::vector<uint64_t>>{{1}}));
}

TEST_F(FutureTest, EmptyFutureFailsPrecondition) {
  Future<int> f;
  EXPECT_FALSE(f.valid());
  EXPECT_EQ(f.Result().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(f.Done());
  EXPECT_FALSE(f.Cancel());
}

}  // namespace
}  // namespace dexec
