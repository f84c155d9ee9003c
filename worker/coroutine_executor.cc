#include "worker/coroutine_executor.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <exception>
#include <queue>
#include <string>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/mailbox.h"
#include "protos/chunk.h"
#include "protos/tasks.pb.h"
#include "worker/task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

struct LoopCommand {
  enum Type { kRun, kCancel, kStop };
  Type type = kRun;
  std::vector<std::shared_ptr<TaskRun>> runs;  // kRun
  uint64_t run_id = 0;                         // kCancel
};

// A chunked map's job of a coroutine task: its items one after another
// (concurrency comes from many jobs; chunk coroutine tasks only to save
// dispatches).
Task<absl::StatusOr<std::string>> RunChunk(const AsyncTaskFn* fn,
                                           TaskContext& ctx,
                                           tasks::Chunk chunk) {
  chunk::ResultWriter results;
  for (std::string& item : *chunk.mutable_items()) {
    if (ctx.cancelled()) {
      co_return TaskError(kCancelledKind, "the chunk was cancelled");
    }
    if (absl::Now() >= ctx.deadline()) {
      co_return TaskError(kTimeoutKind, "the chunk's deadline passed");
    }
    absl::StatusOr<std::string> r;
    try {
      r = co_await (*fn)(ctx, std::move(item));
    } catch (const std::exception& e) {
      r = TaskError(kExceptionKind, absl::StrCat("the task threw: ", e.what()));
    }
    if (r.ok()) {
      results.AddOk(*r);
      continue;
    }
    absl::Status failed = r.status();
    const std::string output = TakeOutput(failed);
    results.AddError(output, ErrorKindOf(failed), failed.message());
    break;
  }
  co_return std::move(results).Finish();
}

}  // namespace

// One loop thread: owns its runs, their coroutines, an epoll set and a
// timer heap. Everything but Post() runs on that thread.
class CoroutineExecutor::Loop : public TaskScheduler {
 public:
  Loop(CoroutineExecutor* x, int index) : x_(*x), index_(index) {}
  ~Loop() {
    if (epoll_ >= 0) ::close(epoll_);
  }

  absl::Status Start() {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
      return absl::InternalError(
          absl::StrCat("epoll_create1 failed: ", strerror(errno)));
    }
    epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // the mailbox
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, inbox_.fd(), &ev) != 0) {
      return absl::InternalError(
          absl::StrCat("epoll_ctl failed: ", strerror(errno)));
    }
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(),
                         absl::StrCat("worker-co-", index_).c_str());
      Main();
    });
    return absl::OkStatus();
  }

  void Post(LoopCommand command) { inbox_.Post(std::move(command)); }

  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  void Suspend(TaskContext& ctx, int fd, uint32_t events, absl::Time when,
               void* coroutine) override;
  absl::Status Watch(int fd, uint32_t events, FdWatcher* watcher) override;
  void Unwatch(int fd) override;
  void Wake(TaskContext& ctx) override;
  int loop_count() const override { return x_.threads_; }

 private:
  // One run in flight.
  struct Active {
    std::shared_ptr<TaskRun> run;
    std::optional<Task<absl::StatusOr<std::string>>> task;
    absl::Time started;
    void* waiting = nullptr;  // the suspended coroutine, if any
    int fd = -1;              // registered in epoll_ while waiting
    uint64_t timer_seq = 0;   // its live timer entry, 0 if none
  };
  struct Timer {
    absl::Time when;
    uint64_t seq;
    uint64_t run_id;
    bool operator>(const Timer& o) const {
      return when != o.when ? when > o.when : seq > o.seq;
    }
  };

  void Main();
  void StartRun(std::shared_ptr<TaskRun> run, absl::Time now);
  // Resumes `a`'s waiting coroutine; `ready`: its fd became ready.
  void Wake(Active& a, bool ready);
  void Resume(Active& a, std::coroutine_handle<> h);
  void Finish(Active& a, absl::Status status, std::string output);
  void RunExpiredTimers(absl::Time now);
  void OnCommand(LoopCommand& c);
  // Starts up to kStartSlice of the runs waiting in to_start_.
  void StartSome();

  CoroutineExecutor& x_;
  const int index_;
  Mailbox<LoopCommand> inbox_;
  int epoll_ = -1;
  std::thread thread_;
  bool stopping_ = false;

  absl::flat_hash_map<uint64_t, std::unique_ptr<Active>> active_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t next_seq_ = 1;
  // The run whose coroutine is running now (Suspend is called from it).
  Active* current_ = nullptr;
  // Waits that are over as soon as they begin (an fd epoll refuses), or
  // ended by Wake().
  std::vector<uint64_t> ready_now_;
  // Watch()ed fds; their epoll key is kWatchKey | fd (run ids are small).
  static constexpr uint64_t kWatchKey = uint64_t{1} << 63;
  absl::flat_hash_map<int, FdWatcher*> watchers_;
  // Runs received and not yet started, oldest first: a burst is started a
  // slice per turn of the loop, with the fds polled between slices, so the
  // first tasks' IO goes on while the rest start (docs/DESIGN.md,
  // "Executors").
  static constexpr size_t kStartSlice = 256;
  std::deque<std::shared_ptr<TaskRun>> to_start_;
};

absl::Status CoroutineExecutor::Loop::Watch(int fd, uint32_t events,
                                            FdWatcher* watcher) {
  epoll_event ev = {};
  ev.events = ((events & kReadable) ? EPOLLIN : 0u) |
              ((events & kWritable) ? EPOLLOUT : 0u);
  ev.data.u64 = kWatchKey | static_cast<uint32_t>(fd);
  const bool known = watchers_.contains(fd);
  if (::epoll_ctl(epoll_, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) !=
      0) {
    return absl::InternalError(
        absl::StrCat("epoll_ctl of fd ", fd, " failed: ", strerror(errno)));
  }
  watchers_[fd] = watcher;
  return absl::OkStatus();
}

void CoroutineExecutor::Loop::Unwatch(int fd) {
  if (watchers_.erase(fd) == 0) return;
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
}

void CoroutineExecutor::Loop::Wake(TaskContext& ctx) {
  ready_now_.push_back(ctx.loop_key());
}

void CoroutineExecutor::Loop::Suspend(TaskContext&, int fd, uint32_t events,
                                      absl::Time when, void* coroutine) {
  Active& a = *current_;
  a.waiting = coroutine;
  if (fd >= 0) {
    epoll_event ev = {};
    ev.events = ((events & kReadable) ? EPOLLIN : 0u) |
                ((events & kWritable) ? EPOLLOUT : 0u);
    ev.data.u64 = a.run->run_id;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) == 0) {
      a.fd = fd;
    } else {
      // Not pollable (a regular file is always ready) or bad: over at once.
      a.run->ctx.set_wait_ready(errno == EPERM);
      ready_now_.push_back(a.run->run_id);
      return;
    }
  }
  if (when != absl::InfiniteFuture()) {
    a.timer_seq = next_seq_++;
    timers_.push(Timer{when, a.timer_seq, a.run->run_id});
  }
}

void CoroutineExecutor::Loop::Wake(Active& a, bool ready) {
  void* waiting = std::exchange(a.waiting, nullptr);
  if (waiting == nullptr) return;
  if (a.fd >= 0) {
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, a.fd, nullptr);
    a.fd = -1;
  }
  a.timer_seq = 0;
  if (ready) a.run->ctx.set_wait_ready(true);
  Resume(a, std::coroutine_handle<>::from_address(waiting));
}

void CoroutineExecutor::Loop::Resume(Active& a, std::coroutine_handle<> h) {
  current_ = &a;
  h.resume();
  current_ = nullptr;
  if (!a.task->done()) return;
  absl::StatusOr<std::string> result;
  try {
    result = a.task->await_resume();
  } catch (const std::exception& e) {
    result = TaskError(
        kExceptionKind,
        absl::StrCat("task '", a.run->task.name(), "' threw: ", e.what()));
  } catch (...) {
    result = TaskError(kExceptionKind,
                       absl::StrCat("task '", a.run->task.name(),
                                    "' threw something not derived from "
                                    "std::exception"));
  }
  if (result.ok()) {
    Finish(a, absl::OkStatus(), *std::move(result));
  } else {
    absl::Status failed = result.status();
    std::string output = TakeOutput(failed);
    Finish(a, failed, std::move(output));
  }
}

void CoroutineExecutor::Loop::Finish(Active& a, absl::Status status,
                                     std::string output) {
  std::shared_ptr<TaskRun> run = std::move(a.run);
  const uint64_t run_id = run->run_id;
  FinishRun(*run, status, std::move(output), a.started, absl::Now());
  x_.running_.fetch_sub(1, std::memory_order_relaxed);
  x_.done_(std::move(run));
  active_.erase(run_id);  // destroys the coroutine frames
}

void CoroutineExecutor::Loop::StartRun(std::shared_ptr<TaskRun> run,
                                       absl::Time now) {
  absl::Status runnable = CheckRunnable(*run, now);
  const AsyncTaskFn* fn = x_.registry_->AsyncTask(run->task.name());
  if (runnable.ok() && fn == nullptr) {
    runnable = TaskError(kUnknownTaskKind,
                         absl::StrCat("this worker has no coroutine task "
                                      "named '",
                                      run->task.name(), "'"));
  }
  if (!runnable.ok()) {
    FinishRun(*run, runnable, "", now, now);
    x_.done_(std::move(run));
    return;
  }
  const uint64_t run_id = run->run_id;
  auto owned = std::make_unique<Active>();
  Active& a = *owned;
  if (!active_.emplace(run_id, std::move(owned)).second) return;
  x_.running_.fetch_add(1, std::memory_order_relaxed);
  a.run = std::move(run);
  a.started = now;
  a.run->ctx.set_scheduler(this, run_id);
  std::string payload = std::move(*a.run->task.mutable_payload());
  if (chunk::IsChunk(payload)) {
    absl::StatusOr<tasks::Chunk> items = chunk::Decode(payload);
    if (!items.ok()) {
      Finish(a, TaskError(kBadPayloadKind, items.status().message()), "");
      return;
    }
    a.task.emplace(RunChunk(fn, a.run->ctx, *std::move(items)));
  } else {
    a.task.emplace((*fn)(a.run->ctx, std::move(payload)));
  }
  Resume(a, a.task->handle());
}

void CoroutineExecutor::Loop::StartSome() {
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < kStartSlice && !to_start_.empty(); ++i) {
    std::shared_ptr<TaskRun> run = std::move(to_start_.front());
    to_start_.pop_front();
    StartRun(std::move(run), now);
  }
}

void CoroutineExecutor::Loop::RunExpiredTimers(absl::Time now) {
  while (!timers_.empty() && timers_.top().when <= now) {
    const Timer t = timers_.top();
    timers_.pop();
    auto it = active_.find(t.run_id);
    if (it == active_.end() || it->second->timer_seq != t.seq) continue;
    Wake(*it->second, /*ready=*/false);
  }
}

void CoroutineExecutor::Loop::OnCommand(LoopCommand& c) {
  switch (c.type) {
    case LoopCommand::kRun:
      for (auto& run : c.runs) to_start_.push_back(std::move(run));
      break;
    case LoopCommand::kCancel: {
      auto it = active_.find(c.run_id);
      if (it != active_.end()) Wake(*it->second, /*ready=*/false);
      break;
    }
    case LoopCommand::kStop:
      stopping_ = true;
      break;
  }
}

void CoroutineExecutor::Loop::Main() {
  constexpr int kMaxEvents = 1024;
  epoll_event events[kMaxEvents];
  while (!stopping_) {
    absl::Time now = absl::Now();
    RunExpiredTimers(now);
    while (!ready_now_.empty()) {
      std::vector<uint64_t> ready;
      ready.swap(ready_now_);
      for (uint64_t id : ready) {
        auto it = active_.find(id);
        if (it != active_.end()) {
          const bool was_ready = it->second->run->ctx.wait_ready();
          Wake(*it->second, was_ready);
        }
      }
    }
    StartSome();
    int timeout_ms = -1;
    if (!ready_now_.empty() || !to_start_.empty()) {
      timeout_ms = 0;  // woken while the last batch ran, or more to start
    } else if (!timers_.empty()) {
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(
              absl::Ceil(timers_.top().when - now, absl::Milliseconds(1))),
          0, 60'000));
    }
    const int n = ::epoll_wait(epoll_, events, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == 0) {
        for (LoopCommand& c : inbox_.Drain()) OnCommand(c);
        continue;
      }
      if (id & kWatchKey) {
        const int fd = static_cast<int>(id & ~kWatchKey);
        auto w = watchers_.find(fd);
        if (w == watchers_.end()) continue;  // unwatched in this batch
        const uint32_t got =
            ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? kReadable
                                                                  : 0u) |
            ((events[i].events & (EPOLLOUT | EPOLLERR)) ? kWritable : 0u);
        w->second->OnFdReady(fd, got);
        continue;
      }
      auto it = active_.find(id);
      if (it != active_.end()) Wake(*it->second, /*ready=*/true);
    }
  }
  // Shutdown: the frames are destroyed unresumed; no result is reported.
  x_.running_.fetch_sub(static_cast<int>(active_.size()));
  active_.clear();
}

CoroutineExecutor::CoroutineExecutor(const TaskRegistry* registry, int threads,
                                     RunDone done)
    : registry_(registry), threads_(threads), done_(std::move(done)) {}

CoroutineExecutor::~CoroutineExecutor() { Shutdown(); }

absl::Status CoroutineExecutor::Start() {
  for (int i = 0; i < threads_; ++i) {
    loops_.push_back(std::make_unique<Loop>(this, i));
    absl::Status started = loops_.back()->Start();
    if (!started.ok()) return started;
  }
  return absl::OkStatus();
}

void CoroutineExecutor::Run(std::vector<std::shared_ptr<TaskRun>> runs) {
  if (loops_.empty() || runs.empty()) return;
  // Round-robin, in slices, so a burst spreads over the loops.
  std::vector<LoopCommand> per_loop(loops_.size());
  for (std::shared_ptr<TaskRun>& run : runs) {
    per_loop[next_loop_].runs.push_back(std::move(run));
    next_loop_ = (next_loop_ + 1) % loops_.size();
  }
  for (size_t i = 0; i < loops_.size(); ++i) {
    if (!per_loop[i].runs.empty()) loops_[i]->Post(std::move(per_loop[i]));
  }
}

void CoroutineExecutor::Cancel(const std::shared_ptr<TaskRun>& run) {
  run->ctx.Cancel();
  // The run's loop is not recorded; loops are few.
  for (auto& loop : loops_) {
    LoopCommand c;
    c.type = LoopCommand::kCancel;
    c.run_id = run->run_id;
    loop->Post(std::move(c));
  }
}

void CoroutineExecutor::Shutdown() {
  for (auto& loop : loops_) {
    LoopCommand c;
    c.type = LoopCommand::kStop;
    loop->Post(std::move(c));
  }
  for (auto& loop : loops_) loop->Join();
  loops_.clear();
}

}  // namespace dexec::worker
