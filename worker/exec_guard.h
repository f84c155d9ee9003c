// Keeps sys.exec's commands from outliving their worker. A worker killed
// with SIGKILL cannot kill its commands' process groups, and a command left
// running would do its side effects twice when the broker runs the job
// again elsewhere. So the first sys.exec forks a guard: a tiny process that
// holds the read end of a pipe whose only write end this process holds,
// and a list of the process groups of the commands running now. When the
// pipe reports EOF (this process exited, however it died) the guard
// SIGKILLs every group still listed, then exits. docs/DESIGN.md, "sys.exec
// and the worker's death".
//
//   ExecGuard::Get().Watch(pgid);    // right after spawning the command
//   ...
//   ExecGuard::Get().Unwatch(pgid);  // before reaping it (pid not reused)
//
// The guard runs only async-signal-safe code (it is forked from a
// multi-threaded process and never execs), in a process group of its own so
// that a signal to the worker's group does not take it first.
//
// Thread-safe.
#ifndef DEXEC_WORKER_EXEC_GUARD_H_
#define DEXEC_WORKER_EXEC_GUARD_H_

#include <sys/types.h>

namespace dexec::worker {

class ExecGuard {
 public:
  // The process's guard, forked on first use. If it cannot be forked,
  // Watch/Unwatch do nothing (logged once): commands then behave as
  // before, dying with the worker only if they notice it.
  static ExecGuard& Get();

  ExecGuard(const ExecGuard&) = delete;
  ExecGuard& operator=(const ExecGuard&) = delete;

  // Kill process group `pgid` if this process dies while it is watched.
  void Watch(pid_t pgid);
  void Unwatch(pid_t pgid);

  // The guard's pid, -1 if none (for tests).
  pid_t pid() const { return pid_; }

 private:
  ExecGuard();

  int fd_ = -1;  // write end of the life pipe
  pid_t pid_ = -1;
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_EXEC_GUARD_H_
