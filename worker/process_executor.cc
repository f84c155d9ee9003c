#include "worker/process_executor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <new>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "protos/wire.pb.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

// Zygote -> worker messages on the control socket (SOCK_SEQPACKET).
struct ZygoteMessage {
  char type;  // 'C': a new child (fds: its socket, its pidfd); 'X': one ended
  int32_t pid;
  int32_t wait_status;
};

// A request or a reply between the worker and a child: a 4-byte length,
// then a serialized wire::Task (request) or wire::TaskResult (reply).
constexpr size_t kMaxMessageBytes = size_t{1} << 30;

bool WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n =
        ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool WriteMessage(int fd, const std::string& body) {
  const uint32_t len = static_cast<uint32_t>(body.size());
  std::string frame(reinterpret_cast<const char*>(&len), sizeof(len));
  frame += body;
  return WriteAll(fd, frame);
}

// Takes one complete message off the front of `buffer` into `body`.
bool TakeMessage(std::string* buffer, std::string* body) {
  if (buffer->size() < sizeof(uint32_t)) return false;
  uint32_t len;
  memcpy(&len, buffer->data(), sizeof(len));
  if (buffer->size() < sizeof(len) + len) return false;
  body->assign(*buffer, sizeof(len), len);
  buffer->erase(0, sizeof(len) + len);
  return true;
}

// Blocking read of one message; false on EOF or error.
bool ReadMessage(int fd, std::string* body) {
  uint32_t len;
  size_t got = 0;
  char* p = reinterpret_cast<char*>(&len);
  while (got < sizeof(len)) {
    ssize_t n = ::read(fd, p + got, sizeof(len) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  if (len > kMaxMessageBytes) return false;
  body->resize(len);
  got = 0;
  while (got < len) {
    ssize_t n = ::read(fd, body->data() + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

void OutOfMemory() {
  // What the kernel's OOM killer would do, minus the wait: the task fails
  // "crashed" (SIGKILL) and the child is replaced.
  ::raise(SIGKILL);
}

// A child: runs one task per request until the worker closes the socket.
[[noreturn]] void ChildMain(int fd, const TaskRegistry* registry,
                            const ProcessExecutorOptions& options) {
  ::prctl(PR_SET_NAME, "dexec-child");
  // The worker blocks SIGTERM/SIGINT for its sigwait thread; a child must
  // die of the SIGTERM that cancel sends.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  if (options.memory_limit_bytes > 0) {
    struct rlimit limit;
    limit.rlim_cur = limit.rlim_max =
        static_cast<rlim_t>(options.memory_limit_bytes);
    ::setrlimit(RLIMIT_AS, &limit);
  }
  std::set_new_handler(OutOfMemory);
  std::string request;
  while (ReadMessage(fd, &request)) {
    wire::Task task;
    if (!task.ParseFromString(request)) break;
    const absl::Time started = absl::Now();
    const absl::Time deadline =
        task.timeout_ms() > 0 ? started + absl::Milliseconds(task.timeout_ms())
                              : absl::InfiniteFuture();
    TaskContext ctx(task.job_id(), task.attempt(), deadline);
    std::string output;
    const absl::Status status =
        registry->Run(task.name(), ctx, task.payload(), &output);
    wire::TaskResult result;
    result.set_ok(status.ok());
    result.set_output(std::move(output));
    if (!status.ok()) {
      result.set_error_kind(ErrorKindOf(status));
      result.set_error_message(std::string(status.message()));
    }
    result.set_started_at_us(absl::ToUnixMicros(started));
    result.set_finished_at_us(absl::ToUnixMicros(absl::Now()));
    if (!WriteMessage(fd, result.SerializeAsString())) break;
  }
  ::_exit(0);
}

void SendToWorker(int ctl, const ZygoteMessage& message, const int* fds,
                  int nfds) {
  struct iovec iov;
  iov.iov_base = const_cast<ZygoteMessage*>(&message);
  iov.iov_len = sizeof(message);
  alignas(struct cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
  }
  while (::sendmsg(ctl, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

// The zygote: forks children on request and reports how they end. Single
// threaded; exits (killing its children) when the worker closes `ctl` or
// dies.
[[noreturn]] void ZygoteMain(int ctl, pid_t worker,
                             const TaskRegistry* registry,
                             const ProcessExecutorOptions& options) {
  ::prctl(PR_SET_NAME, "dexec-zygote");
  // No PR_SET_PDEATHSIG: it fires when the *thread* that forked us ends,
  // which need not be the worker's end. The worker's death closes `ctl`
  // (nothing else holds its end), and that ends us.
  if (::getppid() != worker) ::_exit(0);
  // Terminal signals to the worker's process group must not reach the
  // children: the worker decides what happens to their tasks.
  ::setpgid(0, 0);
  // Only the control socket: the children must not hold the worker's
  // sockets and files open.
  if (ctl != 3) {
    ::dup2(ctl, 3);
    ctl = 3;
  }
  ::syscall(SYS_close_range, 4U, ~0U, 0U);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  const pid_t self = ::getpid();
  std::vector<pid_t> children;
  for (;;) {
    pollfd fds[2] = {{ctl, POLLIN, 0}, {sfd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) {
      signalfd_siginfo info;
      while (::read(sfd, &info, sizeof(info)) > 0) {
      }
      int status;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        children.erase(std::remove(children.begin(), children.end(), pid),
                       children.end());
        SendToWorker(ctl, ZygoteMessage{'X', pid, status}, nullptr, 0);
      }
    }
    if (fds[0].revents == 0) continue;
    char request = 0;
    const ssize_t n = ::recv(ctl, &request, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the worker closed the socket, or died
    if (request != 'S') continue;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      SendToWorker(ctl, ZygoteMessage{'X', -1, errno}, nullptr, 0);
      continue;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ctl);
      ::close(sfd);
      ::close(pair[0]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != self) ::_exit(0);
      ChildMain(pair[1], registry, options);
    }
    ::close(pair[1]);
    if (pid < 0) {
      ::close(pair[0]);
      SendToWorker(ctl, ZygoteMessage{'X', -1, errno}, nullptr, 0);
      continue;
    }
    children.push_back(pid);
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    const int fds_out[2] = {pair[0], pidfd};
    SendToWorker(ctl, ZygoteMessage{'C', pid, 0}, fds_out, pidfd >= 0 ? 2 : 1);
    ::close(pair[0]);
    if (pidfd >= 0) ::close(pidfd);
  }
  for (pid_t pid : children) ::kill(pid, SIGKILL);
  ::_exit(0);
}

std::string DescribeEnd(int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    const char* abbrev = ::sigabbrev_np(sig);
    const char* description = ::sigdescr_np(sig);
    return absl::StrCat("was killed by signal ", sig, " (SIG",
                        abbrev != nullptr ? abbrev : "?", ": ",
                        description != nullptr ? description : "unknown", ")");
  }
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with code ", WEXITSTATUS(wait_status),
                        " in the middle of the task");
  }
  return "ended";
}

}  // namespace

struct ProcessExecutor::Command {
  enum Type { kRun, kCancel, kStop };
  Type type;
  std::vector<std::shared_ptr<TaskRun>> runs;  // kRun
  std::shared_ptr<TaskRun> run;                // kCancel
};

struct ProcessExecutor::Child {
  enum class Stop { kNone, kCancelled, kTimeout };
  pid_t pid = -1;
  int socket = -1;  // -1 once closed (EOF seen, or retired)
  int pidfd = -1;
  std::shared_ptr<TaskRun> run;  // null while idle
  int tasks_run = 0;
  Stop stop = Stop::kNone;
  absl::Time kill_at = absl::InfiniteFuture();
  std::string buffer;  // reply bytes read so far

  bool idle() const {
    return run == nullptr && socket >= 0 && stop == Stop::kNone;
  }
  void Signal(int sig) const {
    if (pidfd >= 0) {
      ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0);
    } else {
      ::kill(pid, sig);
    }
  }
  void CloseSocket() {
    if (socket >= 0) ::close(socket);
    socket = -1;
  }
};

// The worker-procs thread's state and work. Everything here is owned by
// that thread.
class ProcessExecutor::Loop {
 public:
  explicit Loop(ProcessExecutor* owner) : x_(*owner) {}
  void Run();

 private:
  void RequestChild();
  void OnZygote();
  void OnChildReadable(Child& child);
  void OnChildEnded(pid_t pid, int wait_status);
  bool TakeReply(Child& child);
  void Report(Child& child, const absl::Status& status, std::string output,
              absl::Time started, absl::Time finished);
  void Assign(absl::Time now);
  void CheckTimers(absl::Time now);
  void Kill(Child& child, Child::Stop why, absl::Time now);
  void OnCommand(Command& command, absl::Time now);
  void KillAll();
  // Fails every run held or queued (the zygote is gone).
  void FailAll(absl::Time now);

  ProcessExecutor& x_;
  bool zygote_lost_ = false;
  std::deque<std::shared_ptr<TaskRun>> queue_;
  absl::flat_hash_map<pid_t, std::unique_ptr<Child>> children_;
  int pending_children_ = 0;
  bool stopping_ = false;
};

void ProcessExecutor::Loop::RequestChild() {
  const char request = 'S';
  if (::send(x_.zygote_fd_, &request, 1, MSG_NOSIGNAL) == 1) {
    ++pending_children_;
  }
}

void ProcessExecutor::Loop::OnZygote() {
  for (;;) {
    ZygoteMessage message;
    struct iovec iov = {&message, sizeof(message)};
    alignas(struct cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n =
        ::recvmsg(x_.zygote_fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    int fds[2] = {-1, -1};
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        memcpy(fds, CMSG_DATA(c), std::min<size_t>(count, 2) * sizeof(int));
      }
    }
    if (message.type == 'C') {
      --pending_children_;
      auto child = std::make_unique<Child>();
      child->pid = message.pid;
      child->socket = fds[0];
      child->pidfd = fds[1];
      x_.children_started_.fetch_add(1, std::memory_order_relaxed);
      if (stopping_) child->Signal(SIGKILL);
      children_[message.pid] = std::move(child);
    } else if (message.type == 'X' && message.pid < 0) {
      // The zygote could not fork (message.wait_status is the errno).
      --pending_children_;
    } else if (message.type == 'X') {
      OnChildEnded(message.pid, message.wait_status);
    }
  }
}

bool ProcessExecutor::Loop::TakeReply(Child& child) {
  std::string body;
  if (!TakeMessage(&child.buffer, &body)) return false;
  wire::TaskResult reply;
  std::shared_ptr<TaskRun> run = child.run;
  if (run == nullptr) return true;  // nothing asked: ignore
  if (child.stop != Child::Stop::kNone) {
    // Being killed: the end of the process reports the run.
    return true;
  }
  if (!reply.ParseFromString(body)) {
    child.CloseSocket();  // garbage from our own child: retire it
    return true;
  }
  ++child.tasks_run;
  absl::Status status =
      reply.ok() ? absl::OkStatus()
                 : TaskError(reply.error_kind(), reply.error_message());
  Report(child, status, std::move(*reply.mutable_output()),
         absl::FromUnixMicros(reply.started_at_us()),
         absl::FromUnixMicros(reply.finished_at_us()));
  if (x_.options_.max_tasks_per_child > 0 &&
      child.tasks_run >= x_.options_.max_tasks_per_child) {
    // Retire it: on EOF it exits; a fresh one takes its place.
    child.CloseSocket();
    if (!stopping_) RequestChild();
  }
  return true;
}

void ProcessExecutor::Loop::Report(Child& child, const absl::Status& status,
                                   std::string output, absl::Time started,
                                   absl::Time finished) {
  std::shared_ptr<TaskRun> run = std::move(child.run);
  child.run = nullptr;
  x_.running_.fetch_sub(1, std::memory_order_relaxed);
  FinishRun(*run, status, std::move(output), started, finished);
  x_.done_(std::move(run));
}

void ProcessExecutor::Loop::OnChildReadable(Child& child) {
  char buf[64 << 10];
  for (;;) {
    const ssize_t n = ::recv(child.socket, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      child.buffer.append(buf, static_cast<size_t>(n));
      while (child.socket >= 0 && TakeReply(child)) {
      }
      if (child.socket < 0) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    // EOF: the child is ending; the zygote reports how.
    child.CloseSocket();
    return;
  }
}

void ProcessExecutor::Loop::OnChildEnded(pid_t pid, int wait_status) {
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  Child& child = *it->second;
  if (child.socket >= 0) OnChildReadable(child);  // a last reply?
  if (child.run != nullptr) {
    const TaskRun& run = *child.run;
    const absl::Time now = absl::Now();
    const absl::Time started = absl::FromUnixMicros(run.result.started_at_us());
    switch (child.stop) {
      case Child::Stop::kCancelled:
        Report(child,
               TaskError(kCancelledKind,
                         absl::StrCat("task '", run.task.name(),
                                      "' was cancelled; its child process "
                                      "(pid ",
                                      pid, ") was killed")),
               "", started, now);
        break;
      case Child::Stop::kTimeout:
        Report(child,
               TaskError(kTimeoutKind,
                         absl::StrCat("task '", run.task.name(),
                                      "' was still running at the job's "
                                      "deadline; its child process (pid ",
                                      pid, ") was killed")),
               "", started, now);
        break;
      case Child::Stop::kNone:
        Report(child,
               TaskError(kCrashedKind,
                         absl::StrCat("task '", run.task.name(),
                                      "' crashed: its child process (pid ", pid,
                                      ") ", DescribeEnd(wait_status))),
               "", started, now);
        break;
    }
  }
  const bool retired = x_.options_.max_tasks_per_child > 0 &&
                       child.tasks_run >= x_.options_.max_tasks_per_child &&
                       child.stop == Child::Stop::kNone;
  child.CloseSocket();
  if (child.pidfd >= 0) ::close(child.pidfd);
  children_.erase(it);
  // A retired child's replacement was asked for when it was retired.
  if (!stopping_ && !retired &&
      static_cast<int>(children_.size()) + pending_children_ <
          x_.options_.children) {
    RequestChild();
  }
}

void ProcessExecutor::Loop::Assign(absl::Time now) {
  if (queue_.empty()) return;
  for (auto& [pid, child] : children_) {
    while (child->idle() && !queue_.empty()) {
      std::shared_ptr<TaskRun> run = std::move(queue_.front());
      queue_.pop_front();
      absl::Status runnable = CheckRunnable(*run, now);
      if (!runnable.ok()) {
        FinishRun(*run, runnable, "", now, now);
        x_.done_(std::move(run));
        continue;
      }
      wire::Task request = run->task;
      if (run->ctx.deadline() != absl::InfiniteFuture()) {
        request.set_timeout_ms(std::max<int64_t>(
            1, absl::ToInt64Milliseconds(absl::Ceil(run->ctx.deadline() - now,
                                                    absl::Milliseconds(1)))));
      } else {
        request.set_timeout_ms(0);
      }
      if (!WriteMessage(child->socket, request.SerializeAsString())) {
        // It died under us: the zygote will say so. Someone else runs it.
        child->CloseSocket();
        queue_.push_front(std::move(run));
        break;
      }
      run->result.set_started_at_us(absl::ToUnixMicros(now));
      child->run = std::move(run);
      x_.running_.fetch_add(1, std::memory_order_relaxed);
    }
    if (queue_.empty()) return;
  }
}

void ProcessExecutor::Loop::Kill(Child& child, Child::Stop why,
                                 absl::Time now) {
  if (child.stop != Child::Stop::kNone) return;
  child.stop = why;
  child.Signal(SIGTERM);
  child.kill_at = now + x_.options_.kill_grace;
}

void ProcessExecutor::Loop::CheckTimers(absl::Time now) {
  for (auto& [pid, child] : children_) {
    if (child->run != nullptr && child->stop == Child::Stop::kNone &&
        now >= child->run->ctx.deadline()) {
      Kill(*child, Child::Stop::kTimeout, now);
    }
    if (now >= child->kill_at) {
      child->Signal(SIGKILL);
      child->kill_at = absl::InfiniteFuture();
    }
  }
}

void ProcessExecutor::Loop::OnCommand(Command& command, absl::Time now) {
  switch (command.type) {
    case Command::kRun:
      for (auto& run : command.runs) queue_.push_back(std::move(run));
      break;
    case Command::kCancel: {
      for (auto& [pid, child] : children_) {
        if (child->run == command.run) {
          Kill(*child, Child::Stop::kCancelled, now);
          return;
        }
      }
      auto queued = std::find(queue_.begin(), queue_.end(), command.run);
      if (queued != queue_.end()) {
        std::shared_ptr<TaskRun> run = std::move(*queued);
        queue_.erase(queued);
        FinishRun(*run, CheckRunnable(*run, now), "", now, now);
        x_.done_(std::move(run));
      }
      break;
    }
    case Command::kStop:
      stopping_ = true;
      break;
  }
}

void ProcessExecutor::Loop::KillAll() {
  for (auto& [pid, child] : children_) {
    child->Signal(SIGKILL);
    child->CloseSocket();
    if (child->pidfd >= 0) ::close(child->pidfd);
  }
  children_.clear();
  queue_.clear();
}

void ProcessExecutor::Loop::FailAll(absl::Time now) {
  const absl::Status lost =
      TaskError(kCrashedKind,
                "the worker's zygote process, which starts the child "
                "processes tasks run in, is gone");
  for (auto& [pid, child] : children_) {
    if (child->run != nullptr) Report(*child, lost, "", now, now);
  }
  for (std::shared_ptr<TaskRun>& run : queue_) {
    FinishRun(*run, lost, "", now, now);
    x_.done_(std::move(run));
  }
  KillAll();
}

void ProcessExecutor::Loop::Run() {
  for (int i = 0; i < x_.options_.children; ++i) RequestChild();
  std::vector<pollfd> fds;
  std::vector<Child*> polled;
  while (!stopping_) {
    absl::Time now = absl::Now();
    CheckTimers(now);
    Assign(now);
    absl::Time next = absl::InfiniteFuture();
    fds.clear();
    polled.clear();
    fds.push_back({x_.commands_.fd(), POLLIN, 0});
    fds.push_back({zygote_lost_ ? -1 : x_.zygote_fd_, POLLIN, 0});
    for (auto& [pid, child] : children_) {
      if (child->run != nullptr && child->stop == Child::Stop::kNone) {
        next = std::min(next, child->run->ctx.deadline());
      }
      next = std::min(next, child->kill_at);
      if (child->socket < 0) continue;
      fds.push_back({child->socket, POLLIN, 0});
      polled.push_back(child.get());
    }
    int timeout_ms = -1;
    if (next != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(
          std::clamp<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(
                                  next - now, absl::Milliseconds(1))),
                              0, 60'000));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      break;
    }
    now = absl::Now();
    for (size_t i = 0; i < polled.size(); ++i) {
      if (fds[i + 2].revents != 0 && polled[i]->socket >= 0) {
        OnChildReadable(*polled[i]);
      }
    }
    if (fds[1].revents != 0) OnZygote();
    if (fds[1].revents & (POLLHUP | POLLERR)) {
      // The zygote died (killed by hand?): no child can be started or
      // reported any more, and its children die with it (PDEATHSIG).
      DEXEC_LOG(ERROR) << "zygote process lost; tasks isolated in processes "
                          "fail from now on pid="
                       << x_.zygote_pid_;
      zygote_lost_ = true;
    }
    if (fds[0].revents != 0) {
      for (std::shared_ptr<Command>& c : x_.commands_.Drain()) {
        OnCommand(*c, now);
      }
    }
    if (zygote_lost_) FailAll(now);
  }
  KillAll();
}

ProcessExecutor::ProcessExecutor(const TaskRegistry* registry,
                                 ProcessExecutorOptions options, RunDone done)
    : registry_(registry), options_(options), done_(std::move(done)) {}

ProcessExecutor::~ProcessExecutor() { Shutdown(); }

absl::Status ProcessExecutor::Start() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return absl::InternalError(
        absl::StrCat("socketpair for the zygote failed: ", strerror(errno)));
  }
  const pid_t worker = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pair[0]);
    ZygoteMain(pair[1], worker, registry_, options_);
  }
  ::close(pair[1]);
  if (pid < 0) {
    ::close(pair[0]);
    return absl::InternalError(
        absl::StrCat("cannot fork the zygote process: ", strerror(errno)));
  }
  zygote_pid_ = pid;
  zygote_fd_ = pair[0];
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "worker-procs");
    Loop(this).Run();
  });
  return absl::OkStatus();
}

void ProcessExecutor::Run(std::vector<std::shared_ptr<TaskRun>> runs) {
  if (runs.empty()) return;
  auto command = std::make_shared<Command>();
  command->type = Command::kRun;
  command->runs = std::move(runs);
  commands_.Post(std::move(command));
}

void ProcessExecutor::Cancel(const std::shared_ptr<TaskRun>& run) {
  run->ctx.Cancel();
  auto command = std::make_shared<Command>();
  command->type = Command::kCancel;
  command->run = run;
  commands_.Post(std::move(command));
}

void ProcessExecutor::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (thread_.joinable()) {
    auto command = std::make_shared<Command>();
    command->type = Command::kStop;
    commands_.Post(std::move(command));
    thread_.join();
  }
  if (zygote_fd_ >= 0) {
    ::close(zygote_fd_);  // the zygote kills what is left and exits
    zygote_fd_ = -1;
  }
  if (zygote_pid_ > 0) {
    int status;
    while (::waitpid(zygote_pid_, &status, 0) < 0 && errno == EINTR) {
    }
    zygote_pid_ = -1;
  }
}

}  // namespace dexec::worker
