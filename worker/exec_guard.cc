#include "worker/exec_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

#include "common/log.h"

namespace dexec::worker {
namespace {

// One record on the life pipe: smaller than PIPE_BUF, so writes from
// several threads never interleave.
struct Record {
  int32_t op;  // kWatch or kUnwatch
  int32_t pgid;
};
constexpr int32_t kWatch = 1;
constexpr int32_t kUnwatch = 2;

// The guard's list. Static storage: the guard must not allocate (it is a
// fork of a multi-threaded process). Bounded by the most commands a worker
// runs at once (--threads <= 100000).
constexpr int kMaxGroups = 1 << 17;
pid_t g_groups[kMaxGroups];

[[noreturn]] void GuardMain(int fd) {
  ::prctl(PR_SET_NAME, "dexec-execguard");
  ::setpgid(0, 0);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  if (fd != 3) {
    ::dup2(fd, 3);
    fd = 3;
  }
  // Hold nothing else of the worker's, not even its standard streams: no
  // pipe or socket whose EOF someone waits for.
  const int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    for (int std_fd = 0; std_fd < 3; ++std_fd) ::dup2(null, std_fd);
  }
  ::syscall(SYS_close_range, 4U, ~0U, 0U);
  int count = 0;
  for (;;) {
    Record r;
    const ssize_t n = ::read(fd, &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(r))) break;  // EOF: the worker died
    if (r.op == kWatch && count < kMaxGroups) {
      g_groups[count++] = r.pgid;
    } else if (r.op == kUnwatch) {
      for (int i = 0; i < count; ++i) {
        if (g_groups[i] == r.pgid) {
          g_groups[i] = g_groups[--count];
          break;
        }
      }
    }
  }
  for (int i = 0; i < count; ++i) ::kill(-g_groups[i], SIGKILL);
  ::_exit(0);
}

}  // namespace

ExecGuard& ExecGuard::Get() {
  static ExecGuard* guard = new ExecGuard();  // never destroyed: see the .h
  return *guard;
}

ExecGuard::ExecGuard() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    DEXEC_LOG(WARNING) << "sys.exec guard not started; commands may outlive "
                          "a killed worker error=\""
                       << strerror(errno) << "\"";
    return;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[1]);
    GuardMain(fds[0]);
  }
  ::close(fds[0]);
  if (pid < 0) {
    ::close(fds[1]);
    DEXEC_LOG(WARNING) << "sys.exec guard not started; commands may outlive "
                          "a killed worker error=\""
                       << strerror(errno) << "\"";
    return;
  }
  fd_ = fds[1];
  pid_ = pid;
}

void ExecGuard::Watch(pid_t pgid) {
  if (fd_ < 0) return;
  const Record r{kWatch, static_cast<int32_t>(pgid)};
  while (::write(fd_, &r, sizeof(r)) < 0 && errno == EINTR) {
  }
}

void ExecGuard::Unwatch(pid_t pgid) {
  if (fd_ < 0) return;
  const Record r{kUnwatch, static_cast<int32_t>(pgid)};
  while (::write(fd_, &r, sizeof(r)) < 0 && errno == EINTR) {
  }
}

}  // namespace dexec::worker
