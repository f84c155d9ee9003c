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
// A coroutine task (worker/task.h) waits with co_await on the awaitables
// below instead, which hold no thread:
//
//   if (!co_await ctx.Sleep(absl::Seconds(1))) co_return "cancelled";
//   if (!co_await ctx.WaitReadable(fd)) ...   // cancelled or past deadline
//
// Thread-safe, except the awaitables: those are for the coroutine task's
// own loop thread.
#ifndef DEXEC_WORKER_TASK_CONTEXT_H_
#define DEXEC_WORKER_TASK_CONTEXT_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace dexec::worker {

class TaskContext;

// The event loop coroutine tasks suspend on (coroutine_executor.cc). Tasks
// never call it; the awaitables below do.
class TaskScheduler {
 public:
  // Readiness a coroutine waits for.
  static constexpr uint32_t kReadable = 1;
  static constexpr uint32_t kWritable = 2;

  // Resumes the coroutine whose std::coroutine_handle<>::address() is
  // `coroutine`, on the loop's thread, at the first of: `fd` ready for
  // `events` (fd -1: none), `when`, the task cancelled. Then sets
  // ctx.wait_ready() to whether the fd was ready.
  virtual void Suspend(TaskContext& ctx, int fd, uint32_t events,
                       absl::Time when, void* coroutine) = 0;

  // For a library that drives many sockets of its own for many tasks of
  // one loop (http.get's one curl multi handle per loop thread): loop
  // thread only.
  class FdWatcher {
   public:
    // `fd` is ready for some of `events` (kReadable/kWritable; level-
    // triggered: called again while it stays ready).
    virtual void OnFdReady(int fd, uint32_t events) = 0;

   protected:
    ~FdWatcher() = default;
  };
  // Calls `watcher` (borrowed; it outlives the watch) whenever `fd` is ready
  // for `events`; a second Watch of the same fd replaces the first.
  // INTERNAL if epoll refuses the fd.
  virtual absl::Status Watch(int fd, uint32_t events, FdWatcher* watcher) = 0;
  // Ends Watch(fd); no-op if it is not watched.
  virtual void Unwatch(int fd) = 0;
  // Ends ctx's wait soon (on the loop's next turn) as if its time were up:
  // the awaitable answers false. No-op if ctx's coroutine is not suspended
  // then; it may end a later wait of the same task, so the coroutine looks
  // at why it woke.
  virtual void Wake(TaskContext& ctx) = 0;
  // How many loop threads share the worker (to split a budget such as the
  // file descriptor limit between them).
  virtual int loop_count() const = 0;

 protected:
  ~TaskScheduler() = default;
};

// What co_await on TaskContext's Sleep/WaitReadable/WaitWritable gives:
// true when the sleep ran in full or the fd became ready; false, at once,
// when the task is cancelled or its deadline comes first.
class WaitAwaitable {
 public:
  WaitAwaitable(TaskContext* ctx, int fd, uint32_t events, absl::Time requested,
                absl::Time when)
      : ctx_(ctx),
        fd_(fd),
        events_(events),
        requested_(requested),
        when_(when) {}
  bool await_ready() const noexcept;
  template <typename Handle>
  void await_suspend(Handle h) {
    Suspend(h.address());
  }
  bool await_resume() const noexcept;

 private:
  void Suspend(void* coroutine);

  TaskContext* const ctx_;
  const int fd_;
  const uint32_t events_;
  const absl::Time requested_;  // the end of the sleep asked for
  const absl::Time when_;       // that or the deadline, if sooner
};

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

  // Coroutine tasks only (worker/task.h): suspend without a thread.
  WaitAwaitable Sleep(absl::Duration d);
  WaitAwaitable WaitReadable(int fd,
                             absl::Duration timeout = absl::InfiniteDuration());
  WaitAwaitable WaitWritable(int fd,
                             absl::Duration timeout = absl::InfiniteDuration());

  // Set by the coroutine executor before the task starts, and by its loop
  // when it resumes a wait (see TaskScheduler::Suspend).
  void set_scheduler(TaskScheduler* scheduler, uint64_t loop_key = 0) {
    scheduler_ = scheduler;
    loop_key_ = loop_key;
  }
  TaskScheduler* scheduler() const { return scheduler_; }
  // The scheduler's name for this task (its run id).
  uint64_t loop_key() const { return loop_key_; }
  void set_wait_ready(bool ready) { wait_ready_ = ready; }
  bool wait_ready() const { return wait_ready_; }

 private:
  const uint64_t job_id_;
  const uint32_t attempt_;
  const absl::Time deadline_;
  std::atomic<bool> cancel_requested_{false};
  absl::Notification cancelled_;
  // The loop thread's (coroutine tasks only).
  TaskScheduler* scheduler_ = nullptr;
  uint64_t loop_key_ = 0;
  bool wait_ready_ = false;
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_CONTEXT_H_
