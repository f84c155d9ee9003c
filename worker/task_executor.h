// The interface every way of running tasks implements: a pool of threads
// (thread_executor.h), pre-forked child processes (process_executor.h) and
// an event loop of coroutines (coroutine_executor.h). The worker-io loop
// (worker.cc) hands each dispatched run to the executor its task is
// registered with, cancels runs through it, and takes finished runs back
// through the `RunDone` callback each executor is built with.
//
// Thread-safety: Start, Run, Cancel and Shutdown are called by worker-io
// only; running() from any thread; RunDone is called from the executor's
// own threads.
#ifndef DEXEC_WORKER_TASK_EXECUTOR_H_
#define DEXEC_WORKER_TASK_EXECUTOR_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "worker/task_run.h"

namespace dexec::worker {

// Takes a finished run (its result written). Thread-safe, never blocks.
using RunDone = std::function<void(std::shared_ptr<TaskRun>)>;

class TaskExecutor {
 public:
  virtual ~TaskExecutor() = default;

  // Starts the executor's threads (or children). An error leaves it
  // unusable.
  virtual absl::Status Start() = 0;

  // Runs these, each reported once through RunDone, in any order.
  virtual void Run(std::vector<std::shared_ptr<TaskRun>> runs) = 0;

  // Cancels `run` (its context, and whatever the executor holds for it: a
  // timer, a child process). It is still reported, normally soon, as
  // cancelled.
  virtual void Cancel(const std::shared_ptr<TaskRun>& run) = 0;

  // Cancels every run, drops those not started, and returns once the
  // executor's threads have ended; RunDone is not called after. A task that
  // ignores cancellation keeps this waiting (docs/DESIGN.md, "Shutdown").
  virtual void Shutdown() = 0;

  // Tasks running now (for Heartbeat.busy).
  virtual int running() const = 0;
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_EXECUTOR_H_
