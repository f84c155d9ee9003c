// Runs coroutine tasks (worker/task.h) on event loops: `threads` loop
// threads ("worker-co-N"), each an epoll loop with a timer heap, taking
// runs round-robin. A suspended task holds no thread, only its coroutine
// frames and its TaskRun, so one worker keeps thousands in flight (the
// broker sends up to WorkerOptions::concurrency). Cancel and the deadline
// resume a suspended task at once. A chunked map's job of a coroutine
// task runs its items concurrently, each a coroutine of its own with at
// most `max_coroutines` in flight per executor (split between the loops):
// the broker counts a chunk as one of the worker's concurrency. See
// task_executor.h and docs/DESIGN.md, "Executors".
//
// Thread-safe as task_executor.h says. This header is C++17; its .cc is
// C++20.
#ifndef DEXEC_WORKER_COROUTINE_EXECUTOR_H_
#define DEXEC_WORKER_COROUTINE_EXECUTOR_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

#include "worker/task_executor.h"
#include "worker/task_registry.h"

namespace dexec::worker {

class CoroutineExecutor : public TaskExecutor {
 public:
  // `registry` is borrowed and must outlive the executor. `max_coroutines`
  // (WorkerOptions::concurrency) bounds the items of chunks in flight.
  CoroutineExecutor(const TaskRegistry* registry, int threads, RunDone done,
                    int max_coroutines = 10000);
  ~CoroutineExecutor() override;
  CoroutineExecutor(const CoroutineExecutor&) = delete;
  CoroutineExecutor& operator=(const CoroutineExecutor&) = delete;

  // INTERNAL if an epoll or eventfd cannot be made.
  absl::Status Start() override;
  void Run(std::vector<std::shared_ptr<TaskRun>> runs) override;
  void Cancel(const std::shared_ptr<TaskRun>& run) override;
  void Shutdown() override;
  int running() const override { return running_.load(); }

 private:
  class Loop;

  const TaskRegistry* const registry_;
  const int threads_;
  const RunDone done_;
  const int max_coroutines_;
  std::atomic<int> running_{0};  // runs (jobs), not a chunk's items
  std::vector<std::unique_ptr<Loop>> loops_;  // worker-io only
  size_t next_loop_ = 0;                      // worker-io only
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_COROUTINE_EXECUTOR_H_
