// A real in-process alternative to the executor's session for unit tests of
// futures, Wait/AsCompleted and MapStream: it hands out job ids, keeps the
// jobs, runs callbacks on a real `client-callbacks` thread, and cancels
// jobs that are neither running nor done, like the broker does. Tests
// complete jobs by driving the FutureState directly.
//
// Thread-safe. Create with std::make_shared (states hold it weakly).
#ifndef DEXEC_CLIENT_LOCAL_HOST_H_
#define DEXEC_CLIENT_LOCAL_HOST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "client/callback_thread.h"
#include "client/future_state.h"
#include "client/map_stream.h"
#include "common/mutex.h"

namespace dexec {
namespace internal {

class LocalHost final : public BatchSubmitter,
                        public std::enable_shared_from_this<LocalHost> {
 public:
  // Called for each submitted job, outside the host's lock; may complete it.
  using OnSubmit = std::function<void(
      const std::string& payload, const std::shared_ptr<FutureState>& state)>;

  LocalHost() : callbacks_("client-callbacks") {}
  ~LocalHost() override { callbacks_.Stop(); }

  // A job not yet acknowledged (no id).
  std::shared_ptr<FutureState> NewJob() {
    return std::make_shared<FutureState>(weak_from_this());
  }
  // Acknowledges `state` with the next id and returns the id.
  uint64_t Acknowledge(const std::shared_ptr<FutureState>& state) {
    uint64_t id;
    {
      MutexLock lock(&mu_);
      id = ++last_id_;
      jobs_.push_back(state);
    }
    state->SetJobId(id);
    return id;
  }
  // A job acknowledged at once.
  std::shared_ptr<FutureState> NewAcknowledgedJob() {
    std::shared_ptr<FutureState> state = NewJob();
    Acknowledge(state);
    return state;
  }

  void set_on_submit(OnSubmit fn) {
    MutexLock lock(&mu_);
    on_submit_ = std::move(fn);
  }

  void SubmitBatch(absl::string_view task, const SubmitOptions& options,
                   std::vector<std::string> payloads,
                   std::vector<std::shared_ptr<FutureState>>* states) override {
    OnSubmit on_submit;
    {
      MutexLock lock(&mu_);
      batch_sizes_.push_back(payloads.size());
      on_submit = on_submit_;
    }
    for (const std::string& payload : payloads) {
      std::shared_ptr<FutureState> state = NewAcknowledgedJob();
      states->push_back(state);
      if (on_submit) on_submit(payload, state);
    }
  }

  void Post(std::function<void()> fn) override {
    callbacks_.Post(std::move(fn));
  }

  absl::StatusOr<std::vector<bool>> CancelJobs(
      const std::vector<uint64_t>& job_ids) override {
    std::vector<bool> out;
    MutexLock lock(&mu_);
    cancel_calls_.push_back(job_ids);
    for (uint64_t id : job_ids) {
      const std::shared_ptr<FutureState>& s = jobs_.at(id - 1);
      // As the broker: anything not finished can be cancelled.
      out.push_back(!s->Done() || s->Cancelled());
    }
    return out;
  }

  bool OnCallbackThread() const { return callbacks_.IsCurrent(); }

  std::vector<size_t> batch_sizes() const {
    MutexLock lock(&mu_);
    return batch_sizes_;
  }
  std::vector<std::vector<uint64_t>> cancel_calls() const {
    MutexLock lock(&mu_);
    return cancel_calls_;
  }
  size_t jobs_submitted() const {
    MutexLock lock(&mu_);
    return jobs_.size();
  }

 private:
  mutable Mutex mu_;  // guards every field below
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<FutureState>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<uint64_t>> cancel_calls_ ABSL_GUARDED_BY(mu_);
  OnSubmit on_submit_ ABSL_GUARDED_BY(mu_);
  CallbackThread callbacks_;
};

}  // namespace internal
}  // namespace dexec

#endif  // DEXEC_CLIENT_LOCAL_HOST_H_
