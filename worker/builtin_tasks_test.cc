#include "worker/builtin_tasks.h"

#include <signal.h>

#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"
#include "worker/exec_task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"

namespace dexec::worker {
namespace {

class BuiltinTasks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(&registry_, {.allow_exec = true}).ok());
  }

  absl::Status Run(absl::string_view name, absl::string_view payload,
                   std::string* output,
                   absl::Time deadline = absl::InfiniteFuture()) {
    TaskContext ctx(1, 1, deadline);
    return registry_.Run(name, ctx, payload, output);
  }

  // Runs sys.exec and decodes its ExecResult.
  absl::Status Exec(const tasks::ExecRequest& req, tasks::ExecResult* result,
                    absl::Time deadline = absl::InfiniteFuture()) {
    std::string output;
    absl::Status status =
        Run("sys.exec", req.SerializeAsString(), &output, deadline);
    EXPECT_TRUE(result->ParseFromString(output))
        << "sys.exec output is not an ExecResult: " << status;
    return status;
  }

  static tasks::ExecRequest Shell(absl::string_view script) {
    tasks::ExecRequest req;
    req.add_argv("/bin/sh");
    req.add_argv("-c");
    req.add_argv(std::string(script));
    return req;
  }

  TaskRegistry registry_;
};

TEST_F(BuiltinTasks, EchoReturnsItsPayload) {
  std::string output;
  ASSERT_TRUE(Run("sys.echo", std::string("a\0b", 3), &output).ok());
  EXPECT_EQ(output, std::string("a\0b", 3));
}

TEST_F(BuiltinTasks, FailFailsWithItsPayloadAsMessage) {
  std::string output;
  absl::Status status = Run("sys.fail", "disk on fire", &output);
  EXPECT_EQ(ErrorKindOf(status), "task_error");
  EXPECT_EQ(status.message(), "disk on fire");
}

TEST_F(BuiltinTasks, SleepSleeps) {
  std::string output;
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Run("sys.sleep", "20", &output).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
  EXPECT_EQ(ErrorKindOf(Run("sys.sleep", "soon", &output)), "bad_payload");
}

TEST_F(BuiltinTasks, SleepStopsEarlyWhenCancelled) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  absl::Notification done;
  absl::Status status;
  std::thread task([&] {
    std::string output;
    status = registry_.Run("sys.sleep", ctx, "60000", &output);
    done.Notify();
  });
  const absl::Time start = absl::Now();
  ctx.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "sys.sleep did not return after its context was cancelled";
  task.join();
  EXPECT_EQ(ErrorKindOf(status), "cancelled");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(BuiltinTasks, SleepStopsAtTheDeadlineWithTimeout) {
  std::string output;
  absl::Status status =
      Run("sys.sleep", "60000", &output, absl::Now() + absl::Milliseconds(30));
  EXPECT_EQ(ErrorKindOf(status), "timeout");
}

TEST_F(BuiltinTasks, SpinReturnsEmptyAfterItsDuration) {
  std::string output = "x";
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Run("bench.spin", "2000", &output).ok());
  EXPECT_GE(absl::Now() - start, absl::Microseconds(2000));
}

TEST_F(BuiltinTasks, ExecCapturesStdoutAndSucceedsOnExitZero) {
  tasks::ExecResult result;
  absl::Status status = Exec(Shell("echo hello"), &result);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(result.exit_code(), 0);
  EXPECT_EQ(result.stdout(), "hello\n");
  EXPECT_FALSE(result.timed_out());
}

TEST_F(BuiltinTasks, ExecNonZeroExitFailsButKeepsOutput) {
  tasks::ExecResult result;
  absl::Status status = Exec(Shell("echo out; echo err >&2; exit 3"), &result);
  EXPECT_EQ(ErrorKindOf(status), "exit_code");
  EXPECT_EQ(result.exit_code(), 3);
  EXPECT_EQ(result.stdout(), "out\n");
  EXPECT_EQ(result.stderr(), "err\n");
}

TEST_F(BuiltinTasks, ExecTimeoutKillsTheCommandQuickly) {
  tasks::ExecRequest req = Shell("sleep 30; echo never");
  req.set_timeout_ms(200);
  tasks::ExecResult result;
  const absl::Time start = absl::Now();
  absl::Status status = Exec(req, &result);
  // SIGTERM ends sh and its sleep at once; the 2 s SIGKILL grace is not
  // needed.
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(ErrorKindOf(status), "timeout");
  EXPECT_TRUE(result.timed_out());
  EXPECT_EQ(result.signal(), SIGTERM);
  EXPECT_EQ(result.stdout(), "");
}

TEST_F(BuiltinTasks, ExecJobDeadlineKillsTheCommand) {
  tasks::ExecRequest req;
  req.add_argv("sleep");
  req.add_argv("30");
  tasks::ExecResult result;
  const absl::Time start = absl::Now();
  absl::Status status =
      Exec(req, &result, absl::Now() + absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(ErrorKindOf(status), "timeout");
}

TEST_F(BuiltinTasks, ExecSigkillsACommandThatIgnoresSigterm) {
  tasks::ExecRequest req =
      Shell("trap '' TERM; echo ready; while :; do :; done");
  req.set_timeout_ms(100);
  tasks::ExecResult result;
  const absl::Time start = absl::Now();
  absl::Status status = Exec(req, &result);
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, kExecKillGrace);
  EXPECT_LT(took, absl::Seconds(10));
  EXPECT_EQ(ErrorKindOf(status), "timeout");
  EXPECT_EQ(result.signal(), SIGKILL);
}

TEST_F(BuiltinTasks, ExecOfAMissingBinaryExits127) {
  tasks::ExecRequest req;
  req.add_argv("dexec-no-such-binary");
  tasks::ExecResult result;
  absl::Status status = Exec(req, &result);
  EXPECT_EQ(ErrorKindOf(status), "exit_code");
  EXPECT_EQ(result.exit_code(), 127);
  EXPECT_NE(result.stderr().find("dexec-no-such-binary"), std::string::npos);
  EXPECT_NE(status.message().find("No such file"), absl::string_view::npos)
      << status;
}

TEST_F(BuiltinTasks, ExecPassesStdinEnvAndCwd) {
  tasks::ExecRequest req = Shell("cat; echo \"$DEXEC_GREETING\"; pwd");
  req.set_stdin("from stdin\n");
  (*req.mutable_env())["DEXEC_GREETING"] = "hi there";
  req.set_cwd("/tmp");
  tasks::ExecResult result;
  absl::Status status = Exec(req, &result);
  ASSERT_TRUE(status.ok()) << status << " stderr=" << result.stderr();
  EXPECT_EQ(result.stdout(), "from stdin\nhi there\n/tmp\n");
}

TEST_F(BuiltinTasks, ExecKeepsInheritedEnvironment) {
  tasks::ExecRequest req = Shell("echo \"$PATH\"");
  tasks::ExecResult result;
  ASSERT_TRUE(Exec(req, &result).ok());
  EXPECT_NE(result.stdout(), "\n");
}

TEST_F(BuiltinTasks, ExecLargeOutputAndInputDoNotDeadlock) {
  // 4 MiB both ways: far beyond a pipe buffer, so a loop that wrote all of
  // stdin before reading stdout would hang here.
  tasks::ExecRequest req;
  req.add_argv("cat");
  req.set_stdin(std::string(4 << 20, 'x'));
  tasks::ExecResult result;
  absl::Status status = Exec(req, &result);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(result.stdout().size(), size_t{4 << 20});
}

TEST_F(BuiltinTasks, ExecStopsWhenCancelled) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  tasks::ExecRequest req;
  req.add_argv("sleep");
  req.add_argv("30");
  absl::Notification done;
  absl::Status status;
  std::string output;
  std::thread task([&] {
    status = registry_.Run("sys.exec", ctx, req.SerializeAsString(), &output);
    done.Notify();
  });
  ctx.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "sys.exec did not return after its context was cancelled";
  task.join();
  EXPECT_EQ(ErrorKindOf(status), "cancelled");
}

TEST_F(BuiltinTasks, ExecRejectsBadRequests) {
  std::string output;
  EXPECT_EQ(ErrorKindOf(Run("sys.exec", "\xff\xff\xff", &output)),
            "bad_payload");
  EXPECT_EQ(ErrorKindOf(Run("sys.exec", "", &output)), "bad_payload");
}

}  // namespace
}  // namespace dexec::worker
