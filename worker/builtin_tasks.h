// The tasks every dexec-worker offers (README.md, "Built-in tasks"):
//
//   sys.echo    returns its payload.
//   sys.sleep   payload: milliseconds as decimal text. A coroutine task
//               (task.h): sleeping holds no thread; a cancel ends it at
//               once (kind "cancelled") and the job deadline too (kind
//               "timeout").
//   sys.fail    fails with kind "task_error" and the payload as message.
//   sys.exec    runs a command; see exec_task.h. Only with allow_exec: a
//               worker runs shell commands only when its operator says so
//               (dexec-worker --allow_exec).
//   http.get    an HTTP request; see http_task.h. Only with allow_http: it
//               reaches whatever this worker's network reaches
//               (dexec-worker --allow_http).
//   bench.spin  payload: microseconds as decimal text; keeps a CPU busy
//               that long (stopping early if cancelled) and returns "".
//
// Users' own worker binaries can offer them too, beside their own tasks.
#ifndef DEXEC_WORKER_BUILTIN_TASKS_H_
#define DEXEC_WORKER_BUILTIN_TASKS_H_

#include "absl/status/status.h"
#include "worker/http_task.h"
#include "worker/task_registry.h"

namespace dexec::worker {

struct BuiltinTaskOptions {
  // Offer sys.exec: anyone whose jobs reach this worker runs commands as its
  // user.
  bool allow_exec = false;
  // Offer http.get: jobs make HTTP requests from this worker's network.
  bool allow_http = false;
  // http.get's HttpTaskOptions::max_connections (0: from the fd limit).
  long http_max_connections = 0;
  // http.get's HttpTaskOptions::plain.
  bool http_plain = true;
};

// Registers the built-in tasks in `registry` (sys.exec only with
// options.allow_exec). Fails (ALREADY_EXISTS) if a name is taken.
absl::Status RegisterBuiltinTasks(TaskRegistry* registry,
                                  BuiltinTaskOptions options = {});

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_BUILTIN_TASKS_H_
