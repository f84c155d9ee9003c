// Starting sys.exec's command as a child process (exec_task.h): its pipes,
// its environment, the PATH lookup, and posix_spawn into a process group of
// its own with default signal dispositions and an empty signal mask.
//
// Thread-safe: every function is independent.
#ifndef DEXEC_WORKER_CHILD_PROCESS_H_
#define DEXEC_WORKER_CHILD_PROCESS_H_

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "protos/tasks.pb.h"

namespace dexec::worker {

// Owns one file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) : fd_(other.release()) {}
  Fd& operator=(Fd&& other) {
    reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A close-on-exec pipe whose ends are both >= 3, so that dup2() onto the
// child's 0, 1 and 2 never collides with them (the worker may run with a
// standard stream closed).
absl::Status MakePipe(Fd* read_end, Fd* write_end);

void SetNonBlocking(int fd);

// The worker's environment with the request's entries added or replaced.
std::vector<std::string> MergedEnvironment(const tasks::ExecRequest& req);

// Starts the command of `req` with the given pipe ends as its stdin, stdout
// and stderr, in a new process group (pgid = *pid). Returns 0 or an errno
// value (ENOENT: no such program on the child's PATH; a bad cwd's own).
int SpawnCommand(const tasks::ExecRequest& req,
                 const std::vector<std::string>& env, int child_in,
                 int child_out, int child_err, pid_t* pid);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_CHILD_PROCESS_H_
