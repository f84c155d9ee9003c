#include "worker/task_run.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/task_error.h"

namespace dexec::worker {

absl::Status CheckRunnable(const TaskRun& run, absl::Time now) {
  if (run.ctx.cancelled()) {
    return TaskError(kCancelledKind, "cancelled before it started");
  }
  if (now >= run.ctx.deadline()) {
    return TaskError(kTimeoutKind,
                     "the job's deadline passed while the task waited for "
                     "a free worker thread");
  }
  return absl::OkStatus();
}

void FinishRun(TaskRun& run, const absl::Status& status, std::string output,
               absl::Time started, absl::Time finished) {
  run.task.clear_payload();  // may be large; the run lives until reported
  wire::TaskResult& r = run.result;
  r.set_job_id(run.task.job_id());
  r.set_attempt(run.task.attempt());
  r.set_started_at_us(absl::ToUnixMicros(started));
  r.set_finished_at_us(absl::ToUnixMicros(finished));
  r.set_output(std::move(output));
  if (finished > run.ctx.deadline()) {
    // Late is a timeout whatever the task says: the job asked for an answer
    // by the deadline.
    r.set_ok(false);
    r.set_error_kind(std::string(kTimeoutKind));
    r.set_error_message(
        ErrorKindOf(status) == kTimeoutKind
            ? std::string(status.message())
            : absl::StrCat("task '", run.task.name(),
                           "' ran past its deadline (timeout_ms=",
                           run.task.timeout_ms(), ")"));
    return;
  }
  r.set_ok(status.ok());
  if (!status.ok()) {
    r.set_error_kind(ErrorKindOf(status));
    r.set_error_message(std::string(status.message()));
  }
}

}  // namespace dexec::worker
