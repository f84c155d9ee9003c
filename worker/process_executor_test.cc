// ProcessExecutor with real child processes: crashes, memory, hangs,
// cancel, timeout and replacement, without a broker.
#include "worker/process_executor.h"

#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"
#include "worker/task_run.h"

#if defined(__SANITIZE_ADDRESS__) || defined(DEXEC_TSAN)
#define DEXEC_SANITIZED 1
#else
#define DEXEC_SANITIZED 0
#endif

namespace dexec::worker {
namespace {

constexpr absl::Duration kWait = absl::Seconds(20);

// Finished runs, as the executor hands them back.
class Collector {
 public:
  RunDone Callback() {
    return [this](std::shared_ptr<TaskRun> run) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(std::move(run));
      cv_.notify_all();
    };
  }

  // The first `n` finished runs, or fewer if they do not come in time.
  std::vector<std::shared_ptr<TaskRun>> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(kWait),
                 [&] { return done_.size() >= n; });
    return done_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<TaskRun>> done_;
};

TaskRegistry& Registry() {
  static TaskRegistry* registry = [] {
    auto* r = new TaskRegistry();
    auto ok = [](absl::Status s) { ASSERT_TRUE(s.ok()) << s; };
    ok(r->Register("test.pid",
                   [](TaskContext&, absl::string_view, std::string* out) {
                     *out = absl::StrCat(::getpid());
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.echo",
                   [](TaskContext&, absl::string_view in, std::string* out) {
                     out->assign(in.data(), in.size());
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.fail",
                   [](TaskContext&, absl::string_view, std::string* out) {
                     *out = "partial";
                     return TaskError("my_kind", "it failed");
                   }));
    ok(r->Register("test.segv",
                   [](TaskContext&, absl::string_view, std::string*) {
                     ::raise(SIGSEGV);
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.abort",
                   [](TaskContext&, absl::string_view, std::string*) {
                     ::abort();
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.alloc",
                   [](TaskContext&, absl::string_view, std::string*) {
                     // Until killed: every block touched, so it is really used.
                     std::vector<char*> blocks;
                     for (;;) {
                       char* block = new char[16 << 20];
                       memset(block, 1, 16 << 20);
                       blocks.push_back(block);
                     }
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.hang",
                   [](TaskContext&, absl::string_view, std::string*) {
                     for (;;)
                       ::pause();  // ignores its context: only a kill ends it
                     return absl::OkStatus();
                   }));
    ok(r->Register("test.stubborn",
                   [](TaskContext&, absl::string_view, std::string*) {
                     ::signal(SIGTERM, SIG_IGN);
                     for (;;) ::pause();
                     return absl::OkStatus();
                   }));
    return r;
  }();
  return *registry;
}

std::shared_ptr<TaskRun> MakeRun(uint64_t id, const std::string& task,
                                 const std::string& payload = "",
                                 absl::Time deadline = absl::InfiniteFuture()) {
  wire::Task t;
  t.set_job_id(id);
  t.set_attempt(1);
  t.set_name(task);
  t.set_payload(payload);
  return std::make_shared<TaskRun>(id, std::move(t), deadline);
}

class ProcessExecutorTest : public ::testing::Test {
 protected:
  void StartExecutor(ProcessExecutorOptions options) {
    executor_ = std::make_unique<ProcessExecutor>(&Registry(), options,
                                                  collector_.Callback());
    ASSERT_TRUE(executor_->Start().ok());
  }

  // Runs one task and waits for it: the `n`th finished run overall.
  std::shared_ptr<TaskRun> RunOne(std::shared_ptr<TaskRun> run, size_t n) {
    executor_->Run({run});
    std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(n);
    EXPECT_GE(done.size(), n)
        << "task " << run->task.name() << " did not finish in time";
    return done.size() >= n ? done[n - 1] : nullptr;
  }

  // Until the executor runs a task; fails the test after kWait.
  void WaitRunning() {
    const absl::Time deadline = absl::Now() + kWait;
    while (executor_->running() == 0) {
      ASSERT_LT(absl::Now(), deadline) << "the task never started";
      absl::SleepFor(absl::Milliseconds(1));  // a counter, not a signal
    }
  }

  void TearDown() override {
    if (executor_ != nullptr) executor_->Shutdown();
  }

  Collector collector_;
  std::unique_ptr<ProcessExecutor> executor_;
};

TEST_F(ProcessExecutorTest, RunsTasksInAChildProcessAndKeepsTheirResults) {
  StartExecutor({.children = 1});
  std::shared_ptr<TaskRun> pid = RunOne(MakeRun(1, "test.pid"), 1);
  ASSERT_NE(pid, nullptr);
  EXPECT_TRUE(pid->result.ok());
  int child = 0;
  ASSERT_TRUE(absl::SimpleAtoi(pid->result.output(), &child));
  EXPECT_NE(child, ::getpid());
  std::shared_ptr<TaskRun> failed = RunOne(MakeRun(2, "test.fail"), 2);
  ASSERT_NE(failed, nullptr);
  EXPECT_FALSE(failed->result.ok());
  EXPECT_EQ(failed->result.error_kind(), "my_kind");
  EXPECT_EQ(failed->result.error_message(), "it failed");
  EXPECT_EQ(failed->result.output(), "partial");
  std::shared_ptr<TaskRun> unknown = RunOne(MakeRun(3, "no.such"), 3);
  ASSERT_NE(unknown, nullptr);
  EXPECT_EQ(unknown->result.error_kind(), kUnknownTaskKind);
  EXPECT_EQ(executor_->TEST_children_started(), 1);
}

TEST_F(ProcessExecutorTest, ASegfaultFailsOnlyItsJobCrashedNamingTheSignal) {
  StartExecutor({.children = 1});
  std::shared_ptr<TaskRun> crashed = RunOne(MakeRun(1, "test.segv"), 1);
  ASSERT_NE(crashed, nullptr);
  EXPECT_EQ(crashed->result.error_kind(), kCrashedKind);
  if (!DEXEC_SANITIZED) {  // ASan turns a SEGV into its report and exit 1
    EXPECT_NE(crashed->result.error_message().find("SIGSEGV"),
              std::string::npos)
        << crashed->result.error_message();
  }
  // A new child takes the next task.
  std::shared_ptr<TaskRun> next = RunOne(MakeRun(2, "test.echo", "hi"), 2);
  ASSERT_NE(next, nullptr);
  EXPECT_TRUE(next->result.ok());
  EXPECT_EQ(next->result.output(), "hi");
  EXPECT_EQ(executor_->TEST_children_started(), 2);
}

TEST_F(ProcessExecutorTest, AnAbortIsCrashedWithSigabrt) {
  StartExecutor({.children = 1});
  std::shared_ptr<TaskRun> crashed = RunOne(MakeRun(1, "test.abort"), 1);
  ASSERT_NE(crashed, nullptr);
  EXPECT_EQ(crashed->result.error_kind(), kCrashedKind);
  EXPECT_NE(crashed->result.error_message().find("SIGABRT"), std::string::npos)
      << crashed->result.error_message();
}

TEST_F(ProcessExecutorTest, ATaskAllocatingUntilKilledFailsCrashed) {
  if (DEXEC_SANITIZED) {
    GTEST_SKIP() << "sanitizers reserve terabytes of address space, so an "
                    "RLIMIT_AS would stop the child before the task runs";
  }
  StartExecutor({.children = 1, .memory_limit_bytes = int64_t{256} << 20});
  std::shared_ptr<TaskRun> crashed = RunOne(MakeRun(1, "test.alloc"), 1);
  ASSERT_NE(crashed, nullptr);
  EXPECT_EQ(crashed->result.error_kind(), kCrashedKind);
  EXPECT_NE(crashed->result.error_message().find("SIGKILL"), std::string::npos)
      << crashed->result.error_message();
  std::shared_ptr<TaskRun> next = RunOne(MakeRun(2, "test.echo", "ok"), 2);
  ASSERT_NE(next, nullptr);
  EXPECT_TRUE(next->result.ok());
}

TEST_F(ProcessExecutorTest, CancelKillsTheChildOfAHangingTask) {
  StartExecutor({.children = 1});
  std::shared_ptr<TaskRun> hang = MakeRun(1, "test.hang");
  executor_->Run({hang});
  // Cancel once it runs: the echo behind it cannot start before.
  WaitRunning();
  const absl::Time cancelled_at = absl::Now();
  executor_->Cancel(hang);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]->result.error_kind(), kCancelledKind);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Seconds(1))
      << "SIGTERM ends it at once";
  std::shared_ptr<TaskRun> next = RunOne(MakeRun(2, "test.echo", "x"), 2);
  ASSERT_NE(next, nullptr);
  EXPECT_TRUE(next->result.ok());
}

TEST_F(ProcessExecutorTest, ATaskIgnoringSigtermIsKilledAfterTheGrace) {
  StartExecutor({.children = 1, .kill_grace = absl::Milliseconds(300)});
  std::shared_ptr<TaskRun> stubborn = MakeRun(1, "test.stubborn");
  executor_->Run({stubborn});
  WaitRunning();
  executor_->Cancel(stubborn);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]->result.error_kind(), kCancelledKind);
}

TEST_F(ProcessExecutorTest, TheDeadlineKillsTheChild) {
  StartExecutor({.children = 1});
  std::shared_ptr<TaskRun> hang = RunOne(
      MakeRun(1, "test.hang", "", absl::Now() + absl::Milliseconds(200)), 1);
  ASSERT_NE(hang, nullptr);
  EXPECT_EQ(hang->result.error_kind(), kTimeoutKind);
}

TEST_F(ProcessExecutorTest, AChildIsReplacedAfterMaxTasks) {
  StartExecutor({.children = 1, .max_tasks_per_child = 2});
  std::vector<std::string> pids;
  for (int i = 1; i <= 5; ++i) {
    std::shared_ptr<TaskRun> run = RunOne(MakeRun(i, "test.pid"), i);
    ASSERT_NE(run, nullptr);
    pids.push_back(run->result.output());
  }
  EXPECT_EQ(pids[0], pids[1]);
  EXPECT_NE(pids[1], pids[2]);
  EXPECT_EQ(pids[2], pids[3]);
  EXPECT_NE(pids[3], pids[4]);
}

TEST_F(ProcessExecutorTest, ManyTasksOnTwoChildrenAllReport) {
  StartExecutor({.children = 2});
  std::vector<std::shared_ptr<TaskRun>> runs;
  for (int i = 1; i <= 500; ++i) {
    runs.push_back(MakeRun(i, "test.echo", absl::StrCat(i)));
  }
  executor_->Run(runs);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(500);
  ASSERT_EQ(done.size(), 500u);
  for (const auto& run : done) {
    EXPECT_TRUE(run->result.ok());
    EXPECT_EQ(run->result.output(), absl::StrCat(run->task.job_id()));
  }
}

}  // namespace
}  // namespace dexec::worker
