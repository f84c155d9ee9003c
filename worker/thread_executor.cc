#include "worker/thread_executor.h"

#include <pthread.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace dexec::worker {

ThreadExecutor::ThreadExecutor(const TaskRegistry* registry, int threads,
                               RunDone done)
    : registry_(registry), threads_(threads), done_(std::move(done)) {}

ThreadExecutor::~ThreadExecutor() { Shutdown(); }

absl::Status ThreadExecutor::Start() {
  for (int i = 0; i < threads_; ++i) {
    pool_.emplace_back([this, i] {
      pthread_setname_np(pthread_self(),
                         absl::StrCat("worker-pool-", i).substr(0, 15).c_str());
      PoolLoop();
    });
  }
  return absl::OkStatus();
}

void ThreadExecutor::Run(std::vector<std::shared_ptr<TaskRun>> runs) {
  if (runs.empty()) return;
  const size_t n = runs.size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    for (auto& r : runs) queue_.push_back(std::move(r));
  }
  if (n == 1) {
    ready_.notify_one();
  } else {
    ready_.notify_all();
  }
}

void ThreadExecutor::Cancel(const std::shared_ptr<TaskRun>& run) {
  // A queued run is reported cancelled when a thread takes it; a running
  // one sees its context.
  run->ctx.Cancel();
}

void ThreadExecutor::Shutdown() {
  std::deque<std::shared_ptr<TaskRun>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    dropped.swap(queue_);
  }
  ready_.notify_all();
  for (std::thread& t : pool_) {
    if (t.joinable()) t.join();
  }
  pool_.clear();
}

std::shared_ptr<TaskRun> ThreadExecutor::Pop() {
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [this] { return closed_ || !queue_.empty(); });
  if (closed_) return nullptr;
  std::shared_ptr<TaskRun> run = std::move(queue_.front());
  queue_.pop_front();
  return run;
}

void ThreadExecutor::PoolLoop() {
  while (std::shared_ptr<TaskRun> run = Pop()) {
    running_.fetch_add(1, std::memory_order_relaxed);
    const absl::Time started = absl::Now();
    std::string output;
    absl::Status status = CheckRunnable(*run, started);
    if (status.ok()) {
      status = registry_->Run(run->task.name(), run->ctx, run->task.payload(),
                              &output);
    }
    const absl::Time finished = absl::Now();
    running_.fetch_sub(1, std::memory_order_relaxed);
    FinishRun(*run, status, std::move(output), started, finished);
    done_(std::move(run));
  }
}

}  // namespace dexec::worker
