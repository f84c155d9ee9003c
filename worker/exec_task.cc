#include "worker/exec_task.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "protos/tasks.pb.h"
#include "worker/task_error.h"

extern char** environ;

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
absl::Status MakePipe(Fd* read_end, Fd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pipe2 failed: ", strerror(errno)));
  }
  for (int i = 0; i < 2; ++i) {
    if (fds[i] < 3) {
      int moved = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
      ::close(fds[i]);
      fds[i] = moved;
    }
  }
  read_end->reset(fds[0]);
  write_end->reset(fds[1]);
  if (!read_end->valid() || !write_end->valid()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("fcntl failed: ", strerror(errno)));
  }
  return absl::OkStatus();
}

void SetNonBlocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// The worker's environment with the request's entries added or replaced.
std::vector<std::string> MergedEnvironment(const tasks::ExecRequest& req) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    absl::string_view key = entry.substr(0, entry.find('='));
    if (req.env().count(std::string(key)) == 0) env.emplace_back(entry);
  }
  for (const auto& [key, value] : req.env()) {
    env.push_back(absl::StrCat(key, "=", value));
  }
  return env;
}

// Resolves argv[0] against PATH of the *child's* environment, as a shell
// started with that environment would. Returns "" if nothing matches.
std::string ResolveProgram(const std::string& name,
                           const std::vector<std::string>& env) {
  if (name.find('/') != std::string::npos) return name;
  absl::string_view path = "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& e : env) {
    if (absl::StartsWith(e, "PATH=")) path = absl::string_view(e).substr(5);
  }
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string candidate =
        absl::StrCat(dir.empty() ? "." : dir, "/", name);
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

// Starts the child with the given pipe ends as its stdin/stdout/stderr.
// Returns 0 or an errno value.
int Spawn(const tasks::ExecRequest& req, const std::vector<std::string>& env,
          int child_in, int child_out, int child_err, pid_t* pid) {
  const std::string program = ResolveProgram(req.argv(0), env);
  if (program.empty()) return ENOENT;
  if (!req.cwd().empty()) {
    // posix_spawn would report a missing cwd as ENOENT too; check first so
    // the message names the right culprit.
    struct stat st;
    if (::stat(req.cwd().c_str(), &st) != 0) return errno;
    if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  }

  std::vector<char*> argv;
  for (const std::string& a : req.argv()) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_in, 0);
  posix_spawn_file_actions_adddup2(&actions, child_out, 1);
  posix_spawn_file_actions_adddup2(&actions, child_err, 2);
  if (!req.cwd().empty()) {
    posix_spawn_file_actions_addchdir_np(&actions, req.cwd().c_str());
  }

  // The worker blocks SIGTERM/SIGINT for sigwait and may ignore SIGPIPE;
  // both would otherwise be inherited and make the child unkillable by
  // SIGTERM or deaf to a closed pipe.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1,
                  SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // Own process group: a timeout kills the command and everything it
  // started, not just a wrapping shell.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);

  int rc = posix_spawn(pid, program.c_str(), &actions, &attr, argv.data(),
                       envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return rc;
}

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
            n, kExecMaxStreamBytes - std::min(kExecMaxStreamBytes, data->size()));
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
  return static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))));
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

  pid_t pid = -1;
  const std::vector<std::string> env = MergedEnvironment(req);
  const int spawn_error =
      Spawn(req, env, in_r.get(), out_w.get(), err_w.get(), &pid);
  if (spawn_error != 0) {
    // What a shell does for a command it cannot run.
    const std::string why =
        absl::StrCat("cannot run '", req.argv(0), "'",
                     req.cwd().empty() ? "" : absl::StrCat(" in '", req.cwd(), "'"),
                     ": ", strerror(spawn_error));
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
        ::waitpid(pid, &wait_status, 0);
        exited = true;
      } else if (rc != 0 && errno == ECHILD) {
        // The embedding program ignores SIGCHLD, so the kernel reaped the
        // child itself and its exit status is gone.
        status_lost = true;
        exited = true;
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
    if (out.fd.valid()) { out_i = n; fds[n++] = {out.fd.get(), POLLIN, 0}; }
    if (err.fd.valid()) { err_i = n; fds[n++] = {err.fd.get(), POLLIN, 0}; }
    if (in_w.valid()) { in_i = n; fds[n++] = {in_w.get(), POLLOUT, 0}; }
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
          : absl::StrCat(" (output truncated: ", out.dropped,
                         " stdout and ", err.dropped,
                         " stderr bytes beyond the limit of ",
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
    return TaskError(kExitCodeKind,
                     absl::StrCat("command '", req.argv(0),
                                  "' was killed by signal ", result.signal(),
                                  truncated));
  }
  if (result.exit_code() != 0) {
    return TaskError(kExitCodeKind,
                     absl::StrCat("command '", req.argv(0),
                                  "' exited with code ", result.exit_code(),
                                  truncated));
  }
  return absl::OkStatus();
}

}  // namespace dexec::worker
