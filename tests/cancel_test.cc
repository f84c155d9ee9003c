// Cancelling and timing out jobs that are already RUNNING, against a real
// broker and a real one-thread worker: the job ends at once in the right
// state, the worker's thread is free for the next job, and a sys.exec
// command (and anything it started) is gone afterwards.
//
// Waits poll real state (the job's future, /proc) with a deadline; nothing
// sleeps in place of a signal.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/executor.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"
#include "protos/tasks.pb.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"
#include "tests/process.h"

namespace dexec {
namespace {

using ::dexec::testing::ProcessGone;
using ::dexec::testing::TestCluster;
using ::dexec::testing::WaitProcessGone;

constexpr absl::Duration kResultTimeout = absl::Seconds(60);
// How long a freed thread may take to finish the next (instant) job. The
// cancelled or timed-out job would have held it for a minute or more.
constexpr absl::Duration kNextJobWithin = absl::Seconds(10);

// A command started by a job, known by the PID it wrote to a file. The
// destructor SIGKILLs it if a failed test left it running: the test stops
// every process it caused, even one it did not fork itself.
class PidFile {
 public:
  explicit PidFile(absl::string_view name)
      : path_(absl::StrCat(::testing::TempDir(), "/", name, ".pid")) {
    std::remove(path_.c_str());
  }
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  ~PidFile() {
    if (pid_ > 0 && !ProcessGone(pid_)) ::kill(pid_, SIGKILL);
  }

  const std::string& path() const { return path_; }

  // The PID once the command has written a full line; 0 if it does not
  // within `timeout`.
  pid_t Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::ifstream in(path_);
      std::string text((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      int pid = 0;
      if (absl::EndsWith(text, "\n") &&
          absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) && pid > 0) {
        pid_ = pid;
        return pid_;
      }
      absl::SleepFor(absl::Milliseconds(10));  // written by another process
    }
    return 0;
  }

 private:
  std::string path_;
  pid_t pid_ = 0;
};

// sys.exec of `sh -c 'echo $$ > FILE; exec sleep 300'`: the command's PID
// (the shell becomes the sleep) is in FILE once it runs.
std::string SleepingCommand(const PidFile& pid_file) {
  tasks::ExecRequest req;
  req.add_argv("/bin/sh");
  req.add_argv("-c");
  req.add_argv("echo $$ > " + pid_file.path() + "; exec sleep 300");
  return req.SerializeAsString();
}

class CancelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok());
    // One thread, no prefetch: a job behind a stuck one waits for exactly
    // that thread.
    ASSERT_TRUE(cluster_.StartWorker(1, {"--prefetch=0"}).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
    absl::StatusOr<std::unique_ptr<Executor>> ex =
        Executor::Connect(cluster_.executor_options());
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
  }

  void TearDown() override {
    if (executor_) executor_->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
  }

  v1::Job GetJob(uint64_t id) {
    return ::dexec::testing::GetJob(cluster_.stub(), id);
  }

  // The Cancel RPC itself, for one job.
  v1::CancelResponse CancelByRpc(uint64_t id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::CancelRequest req;
    req.add_job_ids(id);
    v1::CancelResponse resp;
    grpc::Status s = cluster_.stub().Cancel(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // Waits until the broker reports the job RUNNING.
  ::testing::AssertionResult WaitRunning(const Future<std::string>& f) {
    absl::StatusOr<uint64_t> id = f.JobId(kResultTimeout);
    if (!id.ok()) {
      return ::testing::AssertionFailure() << "no job id: " << id.status();
    }
    const absl::Time deadline = absl::Now() + kResultTimeout;
    for (;;) {
      const v1::Job job = GetJob(*id);
      if (job.state() == v1::Job::RUNNING) return ::testing::AssertionSuccess();
      if (job.state() != v1::Job::QUEUED || absl::Now() >= deadline) {
        return ::testing::AssertionFailure()
               << "job " << *id << " is " << v1::Job::State_Name(job.state())
               << ", not RUNNING";
      }
      // The job's future says RUNNING too, but this is what the broker
      // believes, which is what Cancel acts on.
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  // The worker's only thread is free: an instant job completes promptly.
  ::testing::AssertionResult ThreadIsFree() {
    const absl::Time start = absl::Now();
    Future<std::string> next =
        executor_->Submit("sys.echo", std::string("next"));
    absl::StatusOr<std::string> r = next.Result(kNextJobWithin);
    if (!r.ok()) {
      return ::testing::AssertionFailure()
             << "the next job did not finish: " << r.status();
    }
    if (*r != "next") {
      return ::testing::AssertionFailure() << "unexpected result " << *r;
    }
    return ::testing::AssertionSuccess()
           << "next job took " << absl::Now() - start;
  }

  TestCluster cluster_;
  std::unique_ptr<Executor> executor_;
};

TEST_F(CancelTest, CancellingARunningSleepEndsItAndFreesTheThread) {
  Future<std::string> f = executor_->Submit("sys.sleep", std::string("60000"));
  ASSERT_TRUE(WaitRunning(f));
  const bool cancelled = f.Cancel();
  if (!cancelled) {
    // Do not leave a minute-long job for TearDown to wait on.
    CancelByRpc(*f.JobId());
  }
  ASSERT_TRUE(cancelled) << "Future::Cancel of a RUNNING job answered false";
  EXPECT_TRUE(f.Cancelled());
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_EQ(GetJob(*f.JobId()).state(), v1::Job::CANCELLED);
  EXPECT_TRUE(ThreadIsFree());
  // Cancelling again still answers true (as Python's Future.cancel()).
  EXPECT_TRUE(f.Cancel());
}

TEST_F(CancelTest, TheCancelRpcOfARunningSleepAnswersTrueAndFreesTheThread) {
  Future<std::string> f = executor_->Submit("sys.sleep", std::string("60000"));
  ASSERT_TRUE(WaitRunning(f));
  const v1::CancelResponse resp = CancelByRpc(*f.JobId());
  ASSERT_EQ(resp.cancelled_size(), 1);
  EXPECT_TRUE(resp.cancelled(0));
  ASSERT_EQ(resp.states_size(), 1);
  EXPECT_EQ(resp.states(0), v1::Job::CANCELLED);
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  const v1::Job job = GetJob(*f.JobId());
  EXPECT_EQ(job.state(), v1::Job::CANCELLED);
  ASSERT_EQ(job.attempt_log_size(), 1);
  EXPECT_EQ(job.attempt_log(0).outcome(), "cancelled");
  EXPECT_TRUE(ThreadIsFree());
}

TEST_F(CancelTest, CancellingARunningExecKillsTheCommand) {
  PidFile pid_file("cancel-exec");
  Future<std::string> f =
      executor_->Submit("sys.exec", SleepingCommand(pid_file));
  const pid_t pid = pid_file.Wait(kResultTimeout);
  ASSERT_GT(pid, 0) << "the command never wrote " << pid_file.path();
  ASSERT_TRUE(WaitRunning(f));

  // Through the RPC itself, to see what it answers.
  const v1::CancelResponse resp = CancelByRpc(*f.JobId());
  ASSERT_EQ(resp.cancelled_size(), 1);
  EXPECT_TRUE(resp.cancelled(0));
  ASSERT_EQ(resp.states_size(), 1);
  EXPECT_EQ(resp.states(0), v1::Job::CANCELLED);

  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_EQ(GetJob(*f.JobId()).state(), v1::Job::CANCELLED);
  // SIGTERM ends `sleep` at once; allow the SIGKILL grace and then some.
  EXPECT_TRUE(WaitProcessGone(pid, absl::Now() + absl::Seconds(10)))
      << "command " << pid << " still runs after its job was cancelled";
  EXPECT_TRUE(ThreadIsFree());
}

TEST_F(CancelTest, ASleepPastItsTimeoutFailsWithKindTimeout) {
  SubmitOptions options;
  options.timeout = absl::Seconds(1);
  const absl::Time start = absl::Now();
  Future<std::string> f =
      executor_->Submit("sys.sleep", std::string("60000"), options);
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_EQ(ErrorKind(r.status()), "timeout") << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  const v1::Job job = GetJob(*f.JobId());
  EXPECT_EQ(job.state(), v1::Job::FAILED);
  EXPECT_EQ(job.error().kind(), "timeout") << job.error().message();
  // A task's own timeout is not retried unless max_attempts was set.
  EXPECT_EQ(job.attempts(), 1);
  EXPECT_TRUE(ThreadIsFree());
}

TEST_F(CancelTest, AnExecPastItsTimeoutFailsWithKindTimeoutAndIsKilled) {
  PidFile pid_file("timeout-exec");
  SubmitOptions options;
  options.timeout = absl::Seconds(1);
  Future<std::string> f =
      executor_->Submit("sys.exec", SleepingCommand(pid_file), options);
  const pid_t pid = pid_file.Wait(kResultTimeout);
  ASSERT_GT(pid, 0) << "the command never wrote " << pid_file.path();
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_EQ(ErrorKind(r.status()), "timeout") << r.status();
  const v1::Job job = GetJob(*f.JobId());
  EXPECT_EQ(job.state(), v1::Job::FAILED);
  EXPECT_EQ(job.error().kind(), "timeout") << job.error().message();
  EXPECT_TRUE(WaitProcessGone(pid, absl::Now() + absl::Seconds(10)))
      << "command " << pid << " still runs after its job timed out";
  EXPECT_TRUE(ThreadIsFree());
}

}  // namespace
}  // namespace dexec
