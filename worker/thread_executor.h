// Runs tasks on a pool of threads ("worker-pool-N"), one task per thread at
// a time, in the order they arrive: the executor for ordinary (blocking)
// tasks. See task_executor.h.
//
// Thread-safe as task_executor.h says.
#ifndef DEXEC_WORKER_THREAD_EXECUTOR_H_
#define DEXEC_WORKER_THREAD_EXECUTOR_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/task_executor.h"
#include "worker/task_registry.h"

namespace dexec::worker {

class ThreadExecutor : public TaskExecutor {
 public:
  // `registry` is borrowed and must outlive the executor.
  ThreadExecutor(const TaskRegistry* registry, int threads, RunDone done);
  ~ThreadExecutor() override;
  ThreadExecutor(const ThreadExecutor&) = delete;
  ThreadExecutor& operator=(const ThreadExecutor&) = delete;

  absl::Status Start() override;
  void Run(std::vector<std::shared_ptr<TaskRun>> runs) override;
  void Cancel(const std::shared_ptr<TaskRun>& run) override;
  void Shutdown() override;
  int running() const override { return running_.load(); }

 private:
  void PoolLoop();
  // Blocks until a run is queued (returns it) or the pool is closed (null).
  std::shared_ptr<TaskRun> Pop();

  const TaskRegistry* const registry_;
  const int threads_;
  const RunDone done_;
  std::atomic<int> running_{0};

  // Guards the queue between worker-io (pushes) and the pool (pops).
  // std::mutex rather than absl::Mutex: Debian's Abseil is built without
  // ThreadSanitizer annotations, so TSan cannot see absl::Mutex order
  // threads and would report every hand-off through this queue as a race.
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::shared_ptr<TaskRun>> queue_;  // guarded by mu_
  bool closed_ = false;                         // guarded by mu_

  std::vector<std::thread> pool_;  // worker-io only
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_THREAD_EXECUTOR_H_
