// One attempt of a task as the executors see it: the Task frame, its
// context, and the result the executor writes. Shared between the worker-io
// loop (which holds it from Dispatch until the result is taken) and the
// executor running it.
//
// Thread-safety: `result` is written by the executor before it hands the run
// back (through a mailbox, whose lock orders the two) and read by worker-io
// after; `ctx` is thread-safe; the rest is fixed at construction.
#ifndef DEXEC_WORKER_TASK_RUN_H_
#define DEXEC_WORKER_TASK_RUN_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "protos/wire.pb.h"
#include "worker/task_context.h"

namespace dexec::worker {

struct TaskRun {
  TaskRun(uint64_t id, wire::Task t, absl::Time deadline)
      : run_id(id),
        task(std::move(t)),
        ctx(task.job_id(), task.attempt(), deadline) {}
  TaskRun(const TaskRun&) = delete;
  TaskRun& operator=(const TaskRun&) = delete;

  // WorkerCore's name for this run (TaskStart::run_id).
  const uint64_t run_id;
  wire::Task task;
  TaskContext ctx;
  wire::TaskResult result;
};

// OK if `run` should start at `now`; otherwise the status to report
// instead: cancelled before it started, or its deadline passed while it
// waited.
absl::Status CheckRunnable(const TaskRun& run, absl::Time now);

// Fills run.result from what the task returned, and drops the payload (the
// run lives until its result is sent). A task that finished after its
// deadline is a timeout whatever it says (its output kept).
void FinishRun(TaskRun& run, const absl::Status& status, std::string output,
               absl::Time started, absl::Time finished);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_RUN_H_
