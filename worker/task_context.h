// What a running task knows about its job, and how it learns that it
// should stop. The worker creates one TaskContext per task attempt and
// passes it to the task function (see task_registry.h).
//
// Long-running tasks should look at their context: stop when cancelled()
// turns true or deadline() passes, and wait with SleepFor() rather than
// sleeping, so that a cancel wakes them at once.
//
//   for (const Chunk& c : chunks) {
//     if (ctx.cancelled()) return TaskError(kCancelledKind, "cancelled");
//     Process(c);
//   }
//
// Thread-safe.
#ifndef DEXEC_WORKER_TASK_CONTEXT_H_
#define DEXEC_WORKER_TASK_CONTEXT_H_

#include <atomic>
#include <cstdint>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace dexec::worker {

class TaskContext {
 public:
  // `deadline` is absl::InfiniteFuture() when the job has no timeout.
  TaskContext(uint64_t job_id, uint32_t attempt, absl::Time deadline)
      : job_id_(job_id), attempt_(attempt), deadline_(deadline) {}
  TaskContext(const TaskContext&) = delete;
  TaskContext& operator=(const TaskContext&) = delete;

  uint64_t job_id() const { return job_id_; }
  // 1 for the first attempt; a retry of the same job has a larger number.
  uint32_t attempt() const { return attempt_; }
  // When the job times out; absl::InfiniteFuture() if it never does.
  absl::Time deadline() const { return deadline_; }

  // True once the task should stop: the broker cancelled or abandoned the
  // attempt, or the worker is shutting down. Never turns false again.
  bool cancelled() const { return cancelled_.HasBeenNotified(); }

  // Waits up to `d`. Returns true if the whole of `d` passed; false as soon
  // as the task is cancelled or its deadline comes first.
  bool SleepFor(absl::Duration d);

  // Marks the task cancelled and wakes SleepFor(). Idempotent. Called by
  // the worker; tasks have no reason to call it.
  void Cancel();

 private:
  const uint64_t job_id_;
  const uint32_t attempt_;
  const absl::Time deadline_;
  std::atomic<bool> cancel_requested_{false};
  absl::Notification cancelled_;
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_CONTEXT_H_
