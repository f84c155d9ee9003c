#include "worker/task_context.h"

#include <errno.h>
#include <poll.h>

#include <algorithm>

namespace dexec::worker {

bool TaskContext::SleepFor(absl::Duration d) {
  const absl::Time wake = absl::Now() + d;
  if (wake > deadline_) {
    // The deadline comes first: wait for it (or a cancel), then report that
    // the full sleep did not happen.
    cancelled_.WaitForNotificationWithDeadline(deadline_);
    return false;
  }
  return !cancelled_.WaitForNotificationWithDeadline(wake);
}

void TaskContext::Cancel() {
  // absl::Notification::Notify() must run at most once; the exchange makes
  // concurrent or repeated cancels safe.
  if (!cancel_requested_.exchange(true)) cancelled_.Notify();
}

WaitAwaitable TaskContext::Sleep(absl::Duration d) {
  const absl::Time requested = absl::Now() + d;
  return WaitAwaitable(this, -1, 0, requested, std::min(requested, deadline_));
}

WaitAwaitable TaskContext::WaitReadable(int fd, absl::Duration timeout) {
  const absl::Time requested = absl::Now() + timeout;
  return WaitAwaitable(this, fd, TaskScheduler::kReadable, requested,
                       std::min(requested, deadline_));
}

WaitAwaitable TaskContext::WaitWritable(int fd, absl::Duration timeout) {
  const absl::Time requested = absl::Now() + timeout;
  return WaitAwaitable(this, fd, TaskScheduler::kWritable, requested,
                       std::min(requested, deadline_));
}

bool WaitAwaitable::await_ready() const noexcept {
  if (ctx_->cancelled()) return true;
  if (ctx_->scheduler() != nullptr) return false;
  // No loop: the coroutine task runs on a thread (TaskRegistry::Run, as in
  // a process-isolated child or a test), so wait here, blocking.
  if (fd_ < 0) {
    ctx_->SleepFor(when_ - absl::Now());
    return true;
  }
  ctx_->set_wait_ready(false);
  for (;;) {
    const absl::Time now = absl::Now();
    if (ctx_->cancelled() || now >= when_) return true;
    // Look at cancelled() at least this often.
    const absl::Duration slice = std::min(when_ - now, absl::Milliseconds(50));
    pollfd p{fd_,
             static_cast<short>(
                 ((events_ & TaskScheduler::kReadable) ? POLLIN : 0) |
                 ((events_ & TaskScheduler::kWritable) ? POLLOUT : 0)),
             0};
    const int n = ::poll(&p, 1,
                         static_cast<int>(absl::ToInt64Milliseconds(
                             absl::Ceil(slice, absl::Milliseconds(1)))));
    if (n > 0) {
      ctx_->set_wait_ready(true);
      return true;
    }
    if (n < 0 && errno != EINTR) return true;
  }
}

void WaitAwaitable::Suspend(void* coroutine) {
  ctx_->set_wait_ready(false);
  ctx_->scheduler()->Suspend(*ctx_, fd_, events_, when_, coroutine);
}

bool WaitAwaitable::await_resume() const noexcept {
  if (ctx_->cancelled()) return false;
  if (fd_ >= 0) return ctx_->wait_ready();
  // A sleep: in full only if the deadline did not cut it short.
  return when_ == requested_ && absl::Now() >= when_;
}

}  // namespace dexec::worker
