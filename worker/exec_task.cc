#include "worker/exec_task.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "protos/tasks.pb.h"
#include "worker/child_process.h"
#include "worker/exec_guard.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

// The context offers no file descriptor to poll, so the I/O loop wakes this
// often to look at cancelled(). 50 ms is invisible next to process start-up.
constexpr absl::Duration kCancelCheckEvery = absl::Milliseconds(50);
// Without pidfd_open (kernels before 5.3) child exit is polled this often.
constexpr absl::Duration kExitCheckEvery = absl::Milliseconds(10);
// After the child exits, a grandchild may still hold the pipes open (a
// daemon the command started). Collect what is buffered, but give EOF only
// this long before returning.
constexpr absl::Duration kOutputGraceAfterExit = absl::Milliseconds(100);
constexpr size_t kChunk = 64 << 10;

// One output pipe of the child.
struct OutputStream {
  Fd fd;
  std::string* data;
  size_t dropped = 0;

  // Reads what is available; closes the fd on EOF or error.
  void Read() {
    char buf[kChunk];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof(buf));
      if (n > 0) {
        size_t keep = std::min<size_t>(
            n,
            kExecMaxStreamBytes - std::min(kExecMaxStreamBytes, data->size()));
        data->append(buf, keep);
        dropped += n - keep;
        if (static_cast<size_t>(n) < sizeof(buf)) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      fd.reset();  // EOF or a real error: either way nothing more comes.
      return;
    }
  }
};

// Blocks SIGPIPE on this thread while it writes to the child's stdin, so a
// child that exits without reading gives EPIPE instead of killing the
// worker. A SIGPIPE raised meanwhile is consumed before unblocking.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~ScopedSigpipeBlock() {
    const struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_;
  sigset_t old_;
};

int PollTimeoutMs(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(
      absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))));
}

enum class StopReason { kNone, kTimeout, kCancelled };

}  // namespace

absl::Status ExecTask(TaskContext& ctx, absl::string_view payload,
                      std::string* output) {
  tasks::ExecRequest req;
  if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return TaskError(kBadPayloadKind,
                     "sys.exec payload is not a dexec.tasks.ExecRequest");
  }
  if (req.argv_size() == 0 || req.argv(0).empty()) {
    return TaskError(kBadPayloadKind,
                     "sys.exec request has no argv[0] (the command to run)");
  }
  if (req.timeout_ms() < 0) {
    return TaskError(kBadPayloadKind, "sys.exec timeout_ms is negative");
  }

  tasks::ExecResult result;
  const absl::Time start = absl::Now();
  absl::Time limit = ctx.deadline();
  if (req.timeout_ms() > 0) {
    limit = std::min(limit, start + absl::Milliseconds(req.timeout_ms()));
  }

  Fd in_r, in_w, out_r, out_w, err_r, err_w;
  absl::Status piped = MakePipe(&in_r, &in_w);
  if (piped.ok()) piped = MakePipe(&out_r, &out_w);
  if (piped.ok()) piped = MakePipe(&err_r, &err_w);
  if (!piped.ok()) return TaskError(kTaskErrorKind, piped.message());

  // Forked before the first command, not after it: forking the guard of a
  // large process (ASan's) takes milliseconds, a window in which a worker
  // SIGKILLed had no guard yet and its first command outlived it.
  ExecGuard& guard = ExecGuard::Get();
  pid_t pid = -1;
  const std::vector<std::string> env = MergedEnvironment(req);
  const int spawn_error =
      SpawnCommand(req, env, in_r.get(), out_w.get(), err_w.get(), &pid);
  // Should this worker die (even by SIGKILL), its guard kills the group.
  if (spawn_error == 0) guard.Watch(pid);
  if (spawn_error != 0) {
    // What a shell does for a command it cannot run.
    const std::string why = absl::StrCat(
        "cannot run '", req.argv(0), "'",
        req.cwd().empty() ? "" : absl::StrCat(" in '", req.cwd(), "'"), ": ",
        strerror(spawn_error));
    result.set_exit_code(127);
    result.set_stderr(absl::StrCat("dexec: ", why, "\n"));
    *output = result.SerializeAsString();
    return TaskError(kExitCodeKind, why);
  }
  in_r.reset();
  out_w.reset();
  err_w.reset();

  OutputStream out{std::move(out_r), result.mutable_stdout()};
  OutputStream err{std::move(err_r), result.mutable_stderr()};
  SetNonBlocking(out.fd.get());
  SetNonBlocking(err.fd.get());
  SetNonBlocking(in_w.get());
  size_t stdin_written = 0;
  if (req.stdin().empty()) in_w.reset();  // the child sees EOF at once

  // Readable when the child exits, so the loop needs no periodic waitpid.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  ScopedSigpipeBlock no_sigpipe;
  StopReason reason = StopReason::kNone;
  absl::Time kill_at = absl::InfiniteFuture();
  bool exited = false;
  absl::Time exited_at;
  int wait_status = 0;
  bool status_lost = false;

  for (;;) {
    absl::Time now = absl::Now();
    if (!exited) {
      // WNOWAIT leaves the child a zombie, so its pid (= our process group
      // id) cannot be reused before the group is SIGKILLed below.
      siginfo_t info{};
      const int rc = ::waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT);
      if (rc == 0 && info.si_pid == pid) {
        if (reason != StopReason::kNone) ::kill(-pid, SIGKILL);
        // Before reaping: until then the pid (= the group id) is not reused.
        ExecGuard::Get().Unwatch(pid);
        ::waitpid(pid, &wait_status, 0);
        exited = true;
      } else if (rc != 0 && errno == ECHILD) {
        // The embedding program ignores SIGCHLD, so the kernel reaped the
        // child itself and its exit status is gone.
        status_lost = true;
        exited = true;
        ExecGuard::Get().Unwatch(pid);
      }
      if (exited) {
        exited_at = now;
        pidfd.reset();
      }
    }
    if (!exited && reason == StopReason::kNone) {
      if (ctx.cancelled()) {
        reason = StopReason::kCancelled;
      } else if (now >= limit) {
        reason = StopReason::kTimeout;
      }
      if (reason != StopReason::kNone) {
        ::kill(-pid, SIGTERM);
        kill_at = now + kExecKillGrace;
      }
    }
    if (!exited && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      kill_at = absl::InfiniteFuture();
    }
    if (exited && (!out.fd.valid() && !err.fd.valid())) break;
    if (exited && now - exited_at >= kOutputGraceAfterExit) break;

    pollfd fds[4];
    int n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out.fd.valid()) {
      out_i = n;
      fds[n++] = {out.fd.get(), POLLIN, 0};
    }
    if (err.fd.valid()) {
      err_i = n;
      fds[n++] = {err.fd.get(), POLLIN, 0};
    }
    if (in_w.valid()) {
      in_i = n;
      fds[n++] = {in_w.get(), POLLOUT, 0};
    }
    if (!exited && pidfd.valid()) fds[n++] = {pidfd.get(), POLLIN, 0};

    absl::Duration wait = kCancelCheckEvery;
    if (reason == StopReason::kNone) wait = std::min(wait, limit - now);
    wait = std::min(wait, kill_at - now);
    if (exited) wait = std::min(wait, exited_at + kOutputGraceAfterExit - now);
    if (!exited && !pidfd.valid()) wait = std::min(wait, kExitCheckEvery);
    if (::poll(fds, n, PollTimeoutMs(wait)) < 0 && errno != EINTR) break;

    if (out_i >= 0 && fds[out_i].revents != 0) out.Read();
    if (err_i >= 0 && fds[err_i].revents != 0) err.Read();
    if (in_i >= 0 && fds[in_i].revents != 0) {
      const std::string& data = req.stdin();
      ssize_t w = ::write(in_w.get(), data.data() + stdin_written,
                          std::min(kChunk, data.size() - stdin_written));
      if (w > 0) stdin_written += w;
      if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
          stdin_written == data.size()) {
        in_w.reset();  // done, or the child closed its stdin (EPIPE)
      }
    }
  }
  if (!exited) {
    // poll failed unexpectedly: do not leave a child behind.
    ::kill(-pid, SIGKILL);
    ExecGuard::Get().Unwatch(pid);
    ::waitpid(pid, &wait_status, 0);
  }

  if (WIFEXITED(wait_status)) {
    result.set_exit_code(WEXITSTATUS(wait_status));
  } else if (WIFSIGNALED(wait_status)) {
    result.set_signal(WTERMSIG(wait_status));
    result.set_exit_code(128 + WTERMSIG(wait_status));
  }
  result.set_timed_out(reason == StopReason::kTimeout);
  *output = result.SerializeAsString();

  const std::string truncated =
      out.dropped + err.dropped == 0
          ? ""
          : absl::StrCat(" (output truncated: ", out.dropped, " stdout and ",
                         err.dropped, " stderr bytes beyond the limit of ",
                         kExecMaxStreamBytes, " were dropped)");
  switch (reason) {
    case StopReason::kTimeout:
      return TaskError(
          kTimeoutKind,
          absl::StrCat("command '", req.argv(0), "' was still running after ",
                       absl::FormatDuration(limit - start), "; killed",
                       truncated));
    case StopReason::kCancelled:
      return TaskError(kCancelledKind,
                       absl::StrCat("command '", req.argv(0),
                                    "' was killed because the job was "
                                    "cancelled",
                                    truncated));
    case StopReason::kNone:
      break;
  }
  if (status_lost) {
    result.set_exit_code(255);
    *output = result.SerializeAsString();
    return TaskError(kExitCodeKind,
                     absl::StrCat("the exit status of '", req.argv(0),
                                  "' is unknown: this process ignores "
                                  "SIGCHLD, so the kernel discarded it"));
  }
  if (result.signal() != 0) {
    return TaskError(kExitCodeKind, absl::StrCat("command '", req.argv(0),
                                                 "' was killed by signal ",
                                                 result.signal(), truncated));
  }
  if (result.exit_code() != 0) {
    return TaskError(
        kExitCodeKind,
        absl::StrCat("command '", req.argv(0), "' exited with code ",
                     result.exit_code(), truncated));
  }
  return absl::OkStatus();
}

}  // namespace dexec::worker
