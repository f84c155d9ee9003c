// Work of every shape (issue 12) against real dexec-broker and dexec-worker
// processes: commands that must not outlive a SIGKILLed worker, process
// isolation through the stock binary's flags.
//
// Waits poll real state (a file a command writes, /proc, the job's future)
// with a deadline; nothing sleeps in place of a signal.
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
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/executor.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"
#include "tests/cluster.h"
#include "tests/process.h"

namespace dexec {
namespace {

using ::dexec::testing::ProcessGone;
using ::dexec::testing::TestCluster;
using ::dexec::testing::WaitProcessGone;

constexpr absl::Duration kWait = absl::Seconds(30);

// PIDs a command wrote to a file, one per line, once the file holds
// `count` full lines. The destructor SIGKILLs any still running, so a
// failed test leaves nothing behind.
class PidList {
 public:
  explicit PidList(absl::string_view name)
      : path_(absl::StrCat(::testing::TempDir(), "/", name, ".pids")) {
    std::remove(path_.c_str());
  }
  PidList(const PidList&) = delete;
  PidList& operator=(const PidList&) = delete;
  ~PidList() {
    for (pid_t pid : pids_) {
      if (!ProcessGone(pid)) ::kill(pid, SIGKILL);
    }
  }

  const std::string& path() const { return path_; }

  std::vector<pid_t> Wait(size_t count, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::ifstream in(path_);
      std::string text((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      std::vector<pid_t> pids;
      for (absl::string_view line :
           absl::StrSplit(text, '\n', absl::SkipEmpty())) {
        int pid = 0;
        if (absl::SimpleAtoi(line, &pid) && pid > 0) pids.push_back(pid);
      }
      if (pids.size() >= count && absl::EndsWith(text, "\n")) {
        pids_ = pids;
        return pids;
      }
      absl::SleepFor(absl::Milliseconds(10));  // written by another process
    }
    return {};
  }

 private:
  std::string path_;
  std::vector<pid_t> pids_;
};

std::string Shell(const std::string& script) {
  tasks::ExecRequest req;
  req.add_argv("/bin/sh");
  req.add_argv("-c");
  req.add_argv(script);
  return req.SerializeAsString();
}

class WorkerShapesTest : public ::testing::Test {
 protected:
  void StartCluster(int threads, std::vector<std::string> worker_flags = {}) {
    ASSERT_TRUE(cluster_.StartBroker({"--in_memory"}).ok());
    ASSERT_TRUE(cluster_.StartWorker(threads, worker_flags).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
    absl::StatusOr<std::unique_ptr<Executor>> ex =
        Executor::Connect(cluster_.executor_options());
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
  }

  void TearDown() override {
    if (executor_) executor_->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
  }

  TestCluster cluster_;
  std::unique_ptr<Executor> executor_;
};

TEST_F(WorkerShapesTest, ExecCommandsDoNotOutliveASigkilledWorker) {
  StartCluster(2);
  // The shell and its background sleep, both in the command's process
  // group. (A process that leaves the group with setsid is beyond this
  // guard, as it is beyond the kill of a cancel.)
  PidList pids("exec-orphans");
  Future<std::string> job = executor_->Submit(
      "sys.exec",
      Shell(absl::StrCat("sleep 300 & echo $! > ", pids.path(),
                         ".tmp; echo $$ >> ", pids.path(), ".tmp; mv ",
                         pids.path(), ".tmp ", pids.path(), "; wait")));
  std::vector<pid_t> running = pids.Wait(2, kWait);
  ASSERT_EQ(running.size(), 2u) << "the command never started";
  for (pid_t pid : running) ASSERT_FALSE(ProcessGone(pid));

  cluster_.workers()[0]->Signal(SIGKILL);
  ASSERT_TRUE(cluster_.workers()[0]->Wait(kWait).ok());
  for (pid_t pid : running) {
    EXPECT_TRUE(WaitProcessGone(pid, absl::Now() + absl::Seconds(10)))
        << "pid " << pid << " outlived its SIGKILLed worker";
  }
  // Requeued at the broker, but its future still says RUNNING, which
  // Shutdown(cancel_futures) leaves alone: cancel it here.
  job.Cancel();
}

TEST_F(WorkerShapesTest, ProcessIsolatedWorkerRunsBuiltinsInChildren) {
  StartCluster(2, {"--isolation=process", "--max_tasks_per_child=3"});
  std::vector<Future<std::string>> jobs;
  for (int i = 0; i < 20; ++i) {
    jobs.push_back(executor_->Submit("sys.echo", absl::StrCat("x", i)));
  }
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> r = jobs[i].Result(kWait);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, absl::StrCat("x", i));
  }
  // A cancelled command in a child ends at once (the child is killed; its
  // exec guard kills the command), and the worker goes on.
  Future<std::string> sleep = executor_->Submit("sys.exec", Shell("sleep 60"));
  ASSERT_TRUE(sleep.JobId(kWait).ok());
  const absl::Time deadline = absl::Now() + kWait;
  while (!sleep.Running() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // the RUNNING event comes
  }
  ASSERT_TRUE(sleep.Cancel());
  EXPECT_EQ(sleep.Result(kWait).status().code(), absl::StatusCode::kCancelled);
  absl::StatusOr<std::string> after =
      executor_->Submit("sys.echo", std::string("after")).Result(kWait);
  ASSERT_TRUE(after.ok()) << after.status();
}

TEST_F(WorkerShapesTest, TenThousandSleepsOverlapOnATwoThreadWorker) {
  StartCluster(2);
  std::vector<std::string> inputs(10000, "1000");
  MapOptions options;
  options.window = 10000;
  options.jobs_per_message = 1000;
  const absl::Time start = absl::Now();
  size_t n = 0;
  for (absl::StatusOr<std::string>& r :
       executor_->Map("sys.sleep", inputs, options)) {
    ASSERT_TRUE(r.ok()) << r.status();
    ++n;
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(n, inputs.size());
  // On two threads, one at a time, this would take 5000 s: only 10,000
  // sleeps suspended at once finish this soon.
  EXPECT_LT(took, absl::Seconds(10)) << took;
  std::printf("10000 x sys.sleep 1000 via the broker, 2-thread worker: %s\n",
              absl::FormatDuration(took).c_str());
}

TEST_F(WorkerShapesTest, AChunkOfCoroutineTasksRunsItsItemsAtOnce) {
  StartCluster(2);
  // 20 jobs of 500 one-second sleeps: with its items one after another a
  // chunk would take 500 s; run at once, all 10,000 overlap.
  std::vector<std::string> inputs(10000, "1000");
  MapOptions options;
  options.chunksize = 500;
  const absl::Time start = absl::Now();
  size_t n = 0;
  for (absl::StatusOr<std::string>& r :
       executor_->Map("sys.sleep", inputs, options)) {
    ASSERT_TRUE(r.ok()) << r.status();
    ++n;
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(n, inputs.size());
  EXPECT_LT(took, absl::Seconds(30)) << took;
  std::printf("10000 x sys.sleep 1000 in chunks of 500, 2-thread worker: %s\n",
              absl::FormatDuration(took).c_str());
}

TEST_F(WorkerShapesTest, ChunkedMapSplitsResultsInOrderAndNamesAFailedItem) {
  StartCluster(2);
  std::vector<std::string> inputs;
  for (int i = 0; i < 20000; ++i) inputs.push_back(absl::StrCat(i));
  MapOptions options;
  options.chunksize = 1000;
  size_t n = 0;
  for (absl::StatusOr<std::string>& r :
       executor_->Map("sys.echo", inputs, options)) {
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(*r, inputs[n]);
    ++n;
  }
  EXPECT_EQ(n, inputs.size());
  // sys.sleep rejects item 1500 ("x"): the items before it come back, then
  // its error, naming it.
  std::vector<std::string> sleeps(3000, "0");
  sleeps[1500] = "x";
  options.chunksize = 500;
  MapResults<std::string> results =
      executor_->Map("sys.sleep", sleeps, options);
  for (int i = 0; i < 1500; ++i) {
    std::optional<absl::StatusOr<std::string>> r = results.Next();
    ASSERT_TRUE(r.has_value() && r->ok()) << i;
  }
  std::optional<absl::StatusOr<std::string>> failed = results.Next();
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(ErrorKind(failed->status()), "bad_payload") << failed->status();
  EXPECT_NE(failed->status().message().find("map item 1501"),
            absl::string_view::npos)
      << failed->status();
}

}  // namespace
}  // namespace dexec
