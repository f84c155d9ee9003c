// Runs tasks in child processes, one task per child at a time, so that a
// task that crashes (a segfault, an abort, killed for memory) fails its own
// job with kind "crashed" naming the signal while the worker and its other
// jobs live on. See task_executor.h and docs/DESIGN.md, "Process
// isolation".
//
// The children are forked by a zygote: a single-threaded process forked
// from the worker in Start(), before the worker starts any thread of its
// own, so each child is a clean copy of the program (registry included)
// with no lock held by a thread that does not exist in it. The zygote
// keeps `children` of them, passes each one's socket and pidfd back to the
// worker, and reports how each one ended. A child that dies is replaced; one
// that ran max_tasks_per_child tasks is retired and replaced. Cancel and
// timeout kill the child (SIGTERM, then SIGKILL after kill_grace).
//
// Thread "worker-procs" owns the children; Run and Cancel post to it.
// Thread-safe as task_executor.h says.
#ifndef DEXEC_WORKER_PROCESS_EXECUTOR_H_
#define DEXEC_WORKER_PROCESS_EXECUTOR_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mailbox.h"
#include "worker/task_executor.h"
#include "worker/task_registry.h"

namespace dexec::worker {

inline constexpr absl::string_view kCrashedKind = "crashed";

struct ProcessExecutorOptions {
  // Children kept running.
  int children = 1;
  // A child is replaced after this many tasks; 0 = never.
  int max_tasks_per_child = 0;
  // Address-space limit of each child (RLIMIT_AS), 0 = none. A child whose
  // allocation fails beyond it is killed (SIGKILL), as the kernel's OOM
  // killer would, and its task fails "crashed".
  int64_t memory_limit_bytes = 0;
  // Between SIGTERM and SIGKILL when a task is cancelled or times out.
  absl::Duration kill_grace = absl::Seconds(2);
};

class ProcessExecutor : public TaskExecutor {
 public:
  // `registry` is borrowed and must outlive the executor; the children run
  // its tasks.
  ProcessExecutor(const TaskRegistry* registry, ProcessExecutorOptions options,
                  RunDone done);
  ~ProcessExecutor() override;
  ProcessExecutor(const ProcessExecutor&) = delete;
  ProcessExecutor& operator=(const ProcessExecutor&) = delete;

  // Forks the zygote, then starts worker-procs. Call before the process
  // starts threads that children could inherit locked mutexes from.
  // INTERNAL if the zygote cannot be forked.
  absl::Status Start() override;
  void Run(std::vector<std::shared_ptr<TaskRun>> runs) override;
  void Cancel(const std::shared_ptr<TaskRun>& run) override;
  void Shutdown() override;
  int running() const override { return running_.load(); }

  // Children started so far, replacements included (for tests).
  int64_t TEST_children_started() const { return children_started_.load(); }

 private:
  struct Command;
  struct Child;
  class Loop;

  const TaskRegistry* const registry_;
  const ProcessExecutorOptions options_;
  const RunDone done_;
  std::atomic<int> running_{0};
  std::atomic<int64_t> children_started_{0};

  Mailbox<std::shared_ptr<Command>> commands_;
  pid_t zygote_pid_ = -1;
  int zygote_fd_ = -1;  // owned by worker-procs once it runs
  std::thread thread_;
  bool shut_down_ = false;  // worker-io only
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_PROCESS_EXECUTOR_H_
