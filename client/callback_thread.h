// A named thread that runs posted closures one at a time, in post order:
// where the client runs users' done callbacks (never on a gRPC thread).
//
// Thread-safe.
#ifndef DEXEC_CLIENT_CALLBACK_THREAD_H_
#define DEXEC_CLIENT_CALLBACK_THREAD_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace dexec {
namespace internal {

class CallbackThread {
 public:
  // Starts the thread, named `name` (at most 15 characters show in top -H).
  explicit CallbackThread(std::string name);
  CallbackThread(const CallbackThread&) = delete;
  CallbackThread& operator=(const CallbackThread&) = delete;
  // Stop().
  ~CallbackThread();

  // Queues `fn`. After Stop, runs nothing and drops `fn`.
  void Post(std::function<void()> fn);

  // Runs what is queued, then joins. Called from the thread itself (a
  // callback shutting its executor down), it only stops the loop; the
  // destructor then detaches. Idempotent.
  void Stop();

  // True when called from this thread.
  bool IsCurrent() const { return std::this_thread::get_id() == id_; }

 private:
  void Loop();

  Mutex mu_;  // guards the queue and the stop flag
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Serialises Stop's join against concurrent Stops.
  Mutex join_mu_;
  const std::string name_;
  std::thread thread_;
  std::thread::id id_;
};

}  // namespace internal
}  // namespace dexec

#endif  // DEXEC_CLIENT_CALLBACK_THREAD_H_
