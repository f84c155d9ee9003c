// The tasks every dexec-worker offers (README.md, "Built-in tasks"):
//
//   sys.echo    returns its payload.
//   sys.sleep   payload: milliseconds as decimal text. Sleeps through the
//               task context, so a cancel ends it at once (kind
//               "cancelled") and the job deadline too (kind "timeout").
//   sys.fail    fails with kind "task_error" and the payload as message.
//   sys.exec    runs a command; see exec_task.h.
//   bench.spin  payload: microseconds as decimal text; keeps a CPU busy
//               that long (stopping early if cancelled) and returns "".
//
// Users' own worker binaries can offer them too, beside their own tasks.
#ifndef DEXEC_WORKER_BUILTIN_TASKS_H_
#define DEXEC_WORKER_BUILTIN_TASKS_H_

#include "absl/status/status.h"
#include "worker/task_registry.h"

namespace dexec::worker {

// Registers every built-in task in `registry`. Fails (ALREADY_EXISTS) if a
// name is taken.
absl::Status RegisterBuiltinTasks(TaskRegistry* registry);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_BUILTIN_TASKS_H_
