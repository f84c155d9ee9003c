// sys.exec: runs a command as a child process (protos/tasks.proto).
//
// The payload is a dexec.tasks.ExecRequest; the output is always a
// dexec.tasks.ExecResult with the command's exit code, stdout and stderr:
//   - exit code 0: the task succeeds;
//   - another exit code: kind "exit_code" (the result is still the output);
//   - the request's timeout_ms or the job's deadline passed: the process
//     group gets SIGTERM, then SIGKILL after a 2 s grace; kind "timeout";
//   - the job was cancelled: the same kill sequence; kind "cancelled";
//   - the command cannot be started (not found, not executable, bad cwd):
//     exit code 127, the reason in stderr, kind "exit_code".
//
// The child runs in its own process group (so a shell's children are
// killed with it), with default signal dispositions and an empty signal
// mask, its environment being the worker's merged with the request's env.
//
// Thread-safe: each call is independent.
#ifndef DEXEC_WORKER_EXEC_TASK_H_
#define DEXEC_WORKER_EXEC_TASK_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/task_context.h"

namespace dexec::worker {

// Grace between SIGTERM and SIGKILL.
inline constexpr absl::Duration kExecKillGrace = absl::Seconds(2);

// Each of stdout and stderr keeps at most this many bytes; the rest is read
// and discarded (so the child never blocks on a full pipe).
inline constexpr size_t kExecMaxStreamBytes = 64 << 20;

// A RawTaskFn (task_registry.h).
absl::Status ExecTask(TaskContext& ctx, absl::string_view payload,
                      std::string* output);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_EXEC_TASK_H_
