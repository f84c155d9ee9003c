#include "worker/task_context.h"

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

}  // namespace dexec::worker
