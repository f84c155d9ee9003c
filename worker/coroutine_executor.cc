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
#include <optional>
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
  // A chunked map's job of a coroutine task: its items, each run as a
  // coroutine of its own (an Active with its own TaskContext), started in
  // order while the loop's share of max_coroutines allows.
  struct ChunkItems {
    const AsyncTaskFn* fn = nullptr;
    tasks::Chunk items;  // each payload moved out as its item starts
    std::vector<std::optional<absl::StatusOr<std::string>>> results;
    std::vector<uint64_t> keys;  // a running item's key, else 0
    size_t next = 0;             // the next item to start
    size_t end = 0;      // items reported: all, or to the first failure's
    size_t running = 0;  // items started and not yet ended
  };
  // One run in flight, or one item of a chunk.
  struct Active {
    uint64_t key = 0;  // in active_: the run id, or kItemKey | a sequence
    std::shared_ptr<TaskRun> run;  // an item's: its chunk's run
    // An item: its own context (its waits and its cancel are its own).
    // Declared before `task`, so a frame destroyed unfinished (shutdown)
    // still sees it.
    std::unique_ptr<TaskContext> item_ctx;
    std::optional<Task<absl::StatusOr<std::string>>> task;
    absl::Time started;
    void* waiting = nullptr;  // the suspended coroutine, if any
    int fd = -1;              // registered in epoll_ while waiting
    uint64_t timer_seq = 0;   // its live timer entry, 0 if none
    // An item: its chunk's key and its index there.
    uint64_t chunk_key = 0;
    size_t item = 0;
    // A chunk, which has no coroutine of its own: its items.
    std::unique_ptr<ChunkItems> chunk;

    TaskContext& ctx() { return item_ctx != nullptr ? *item_ctx : run->ctx; }
  };
  struct Timer {
    absl::Time when;
    uint64_t seq;
    uint64_t key;  // its Active's
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
  // Starts up to kStartSlice items of the chunks in chunks_to_start_, as
  // far as max_items_ allows.
  void StartItems();
  void StartItem(Active& chunk, size_t i, absl::Time now);
  // Ends item `a` with `result` (erasing it), and its chunk once every
  // item it reports has ended.
  void FinishItem(Active& a, absl::StatusOr<std::string> result);
  // Reports no item from `from` on: cancels those running.
  void StopItemsFrom(ChunkItems& c, size_t from);
  void FinishChunk(Active& chunk);
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
  // Chunks with items left to start, oldest first (keys; a finished one is
  // skipped), and the items' coroutines in flight, at most max_items_.
  static constexpr uint64_t kItemKey = uint64_t{1} << 62;
  std::deque<uint64_t> chunks_to_start_;
  uint64_t next_item_ = 1;
  int items_in_flight_ = 0;
  const int max_items_ = std::max(1, x_.max_coroutines_ / x_.threads_);
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
    ev.data.u64 = a.key;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) == 0) {
      a.fd = fd;
    } else {
      // Not pollable (a regular file is always ready) or bad: over at once.
      a.ctx().set_wait_ready(errno == EPERM);
      ready_now_.push_back(a.key);
      return;
    }
  }
  if (when != absl::InfiniteFuture()) {
    a.timer_seq = next_seq_++;
    timers_.push(Timer{when, a.timer_seq, a.key});
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
  if (ready) a.ctx().set_wait_ready(true);
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
  if (a.item_ctx != nullptr) {
    FinishItem(a, std::move(result));
  } else if (result.ok()) {
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
  a.key = run_id;
  a.run = std::move(run);
  a.started = now;
  a.run->ctx.set_scheduler(this, run_id);
  std::string payload = std::move(*a.run->task.mutable_payload());
  if (!chunk::IsChunk(payload)) {
    a.task.emplace((*fn)(a.run->ctx, std::move(payload)));
    Resume(a, a.task->handle());
    return;
  }
  // A chunk: its items run concurrently, as coroutines of their own
  // (StartItems), and are reported in order.
  absl::StatusOr<tasks::Chunk> items = chunk::Decode(payload);
  if (!items.ok()) {
    Finish(a, TaskError(kBadPayloadKind, items.status().message()), "");
    return;
  }
  a.chunk = std::make_unique<ChunkItems>();
  ChunkItems& c = *a.chunk;
  c.fn = fn;
  c.items = *std::move(items);
  const size_t n = static_cast<size_t>(c.items.items_size());
  c.results.resize(n);
  c.keys.assign(n, 0);
  c.end = n;
  if (n == 0) {
    FinishChunk(a);
    return;
  }
  chunks_to_start_.push_back(run_id);
}

void CoroutineExecutor::Loop::StartItems() {
  const absl::Time now = absl::Now();
  size_t started = 0;
  while (!chunks_to_start_.empty() && started < kStartSlice &&
         items_in_flight_ < max_items_) {
    auto it = active_.find(chunks_to_start_.front());
    if (it == active_.end() ||
        it->second->chunk->next >= it->second->chunk->end) {
      chunks_to_start_.pop_front();  // finished, stopped or all started
      continue;
    }
    Active& chunk = *it->second;
    // May end the item, and the chunk with it, before it returns.
    StartItem(chunk, chunk.chunk->next++, now);
    ++started;
  }
}

void CoroutineExecutor::Loop::StartItem(Active& chunk, size_t i,
                                        absl::Time now) {
  ChunkItems& c = *chunk.chunk;
  const uint64_t key = kItemKey | next_item_++;
  auto owned = std::make_unique<Active>();
  Active& a = *owned;
  active_.emplace(key, std::move(owned));
  a.key = key;
  a.run = chunk.run;
  a.started = now;
  a.chunk_key = chunk.key;
  a.item = i;
  const TaskContext& job = chunk.run->ctx;
  a.item_ctx = std::make_unique<TaskContext>(job.job_id(), job.attempt(),
                                             job.deadline());
  a.item_ctx->set_scheduler(this, key);
  c.keys[i] = key;
  ++c.running;
  ++items_in_flight_;
  if (now >= job.deadline()) {
    FinishItem(a, TaskError(kTimeoutKind,
                            "the chunk's deadline passed before this item "
                            "started"));
    return;
  }
  a.task.emplace((*c.fn)(
      *a.item_ctx, std::move(*c.items.mutable_items(static_cast<int>(i)))));
  Resume(a, a.task->handle());
}

void CoroutineExecutor::Loop::FinishItem(Active& a,
                                         absl::StatusOr<std::string> result) {
  const uint64_t key = a.key;
  const uint64_t chunk_key = a.chunk_key;
  const size_t i = a.item;
  --items_in_flight_;
  active_.erase(key);  // destroys its coroutine frames; `a` is gone
  auto it = active_.find(chunk_key);
  if (it == active_.end()) return;
  Active& chunk = *it->second;
  ChunkItems& c = *chunk.chunk;
  c.keys[i] = 0;
  --c.running;
  // As an unchunked map: the first failure (in input order) is the last
  // item reported; the ones after it are cancelled.
  if (!result.ok() && i < c.end) StopItemsFrom(c, i + 1);
  c.results[i] = std::move(result);
  if (c.running == 0 && c.next >= c.end) FinishChunk(chunk);
}

void CoroutineExecutor::Loop::StopItemsFrom(ChunkItems& c, size_t from) {
  for (size_t j = from; j < c.end; ++j) {
    if (c.keys[j] == 0) continue;
    auto it = active_.find(c.keys[j]);
    if (it == active_.end()) continue;
    it->second->item_ctx->Cancel();
    ready_now_.push_back(c.keys[j]);  // resumed on the loop's next turn
  }
  c.end = std::min(c.end, from);
}

void CoroutineExecutor::Loop::FinishChunk(Active& chunk) {
  if (chunk.run->ctx.cancelled()) {
    Finish(chunk, TaskError(kCancelledKind, "the chunk was cancelled"), "");
    return;
  }
  ChunkItems& c = *chunk.chunk;
  chunk::ResultWriter results;
  for (size_t i = 0; i < c.end; ++i) {
    absl::StatusOr<std::string>& r = *c.results[i];
    if (r.ok()) {
      results.AddOk(*r);
      continue;
    }
    absl::Status failed = r.status();
    const std::string output = TakeOutput(failed);
    results.AddError(output, ErrorKindOf(failed), failed.message());
    break;
  }
  Finish(chunk, absl::OkStatus(), std::move(results).Finish());
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
    auto it = active_.find(t.key);
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
      if (it == active_.end()) break;
      Active& a = *it->second;
      if (a.chunk == nullptr) {
        Wake(a, /*ready=*/false);
        break;
      }
      // A chunk: its running items end cancelled, no other starts.
      StopItemsFrom(*a.chunk, 0);
      if (a.chunk->running == 0) FinishChunk(a);
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
          const bool was_ready = it->second->ctx().wait_ready();
          Wake(*it->second, was_ready);
        }
      }
    }
    StartSome();
    StartItems();
    int timeout_ms = -1;
    if (!ready_now_.empty() || !to_start_.empty() ||
        (!chunks_to_start_.empty() && items_in_flight_ < max_items_)) {
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
  int runs = 0;
  for (const auto& [key, a] : active_) runs += a->item_ctx == nullptr;
  x_.running_.fetch_sub(runs);
  active_.clear();
}

CoroutineExecutor::CoroutineExecutor(const TaskRegistry* registry, int threads,
                                     RunDone done, int max_coroutines)
    : registry_(registry),
      threads_(threads),
      done_(std::move(done)),
      max_coroutines_(max_coroutines) {}

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
