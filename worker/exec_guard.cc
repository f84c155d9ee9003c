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

// Raw system calls only, no libc wrappers: the guard is forked from a
// threaded process, and under a sanitizer the wrappers are interceptors
// that may take the runtime's locks (prctl(PR_SET_NAME) names the thread in
// ASan's registry), which another thread may have held at the fork. A
// precaution: the failure seen under ASan (issue 12) was the fork's own
// delay, see ExecTask.
long Sys(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
  return ::syscall(nr, a, b, c, d);
}

[[noreturn]] void GuardMain(int fd) {
  static const char kName[] = "dexec-execguard";
  Sys(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(kName));
  Sys(SYS_setpgid, 0, 0);
  // Blocked rather than ignored (rt_sigaction's kernel struct differs from
  // libc's): a blocked signal stays pending and never ends the guard.
  const uint64_t blocked = (uint64_t{1} << (SIGINT - 1)) |
                           (uint64_t{1} << (SIGTERM - 1)) |
                           (uint64_t{1} << (SIGHUP - 1));
  Sys(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&blocked), 0,
      sizeof(blocked));
  if (fd != 3) {
    Sys(SYS_dup3, fd, 3, 0);
    fd = 3;
  }
  // Hold nothing else of the worker's, not even its standard streams: no
  // pipe or socket whose EOF someone waits for.
  static const char kNull[] = "/dev/null";
  const long null =
      Sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>(kNull), O_RDWR);
  if (null >= 0) {
    for (int std_fd = 0; std_fd < 3; ++std_fd) {
      if (null != std_fd) Sys(SYS_dup3, null, std_fd, 0);
    }
  }
  Sys(SYS_close_range, 4U, ~0U, 0U);
  int count = 0;
  for (;;) {
    Record r;
    const long n = Sys(SYS_read, fd, reinterpret_cast<long>(&r), sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<long>(sizeof(r))) break;  // EOF: the worker died
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
  for (int i = 0; i < count; ++i) Sys(SYS_kill, -g_groups[i], SIGKILL);
  for (;;) Sys(SYS_exit_group, 0);
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
