#include "client/callback_thread.h"

#include <pthread.h>

#include <utility>

namespace dexec {
namespace internal {

CallbackThread::CallbackThread(std::string name) : name_(std::move(name)) {
  thread_ = std::thread([this] { Loop(); });
  id_ = thread_.get_id();
}

CallbackThread::~CallbackThread() {
  Stop();
  if (thread_.joinable()) thread_.detach();  // Stop ran on this very thread
}

void CallbackThread::Post(std::function<void()> fn) {
  MutexLock lock(&mu_);
  if (stopping_) return;
  queue_.push_back(std::move(fn));
}

void CallbackThread::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (IsCurrent()) return;
  MutexLock lock(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

void CallbackThread::Loop() {
  pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
  std::deque<std::function<void()>> batch;
  for (;;) {
    {
      MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(ready);
      if (queue_.empty()) return;  // stopping, and everything ran
      batch.swap(queue_);
    }
    // Outside the lock: callbacks are user code and may post more.
    for (std::function<void()>& fn : batch) fn();
    batch.clear();
  }
}

}  // namespace internal
}  // namespace dexec
