// The shared state behind every Future<T>: one job's id, progress and
// outcome, as raw bytes (Future<T> decodes them). Internal to the client
// library; the executor's session completes it, tests drive it directly.
//
// A state moves kPending -> (id assigned) -> kRunning -> kDone; every step
// may be skipped, and the first completion wins (later ones are ignored, so a
// local cancel and the broker's CANCELLED event may race harmlessly).
//
// Thread-safe.
#ifndef DEXEC_CLIENT_FUTURE_STATE_H_
#define DEXEC_CLIENT_FUTURE_STATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/mutex.h"

namespace dexec {
namespace internal {

class FutureState;

// What a future needs from the component that completes it (the executor's
// session). Held weakly by each state: a future may outlive its executor.
class FutureHost {
 public:
  virtual ~FutureHost() = default;
  // Runs `fn` later on the host's callback thread, after earlier posts.
  virtual void Post(std::function<void()> fn) = 0;
  // Asks the broker to cancel `job_ids` (one RPC). On success, one bool per
  // id: true if that job was queued and is now cancelled.
  virtual absl::StatusOr<std::vector<bool>> CancelJobs(
      const std::vector<uint64_t>& job_ids) = 0;
  // Cancels, without asking the broker, those of `states` whose jobs were
  // never sent (still queued in the client, e.g. a Map chunk waiting for
  // room): completes them CANCELLED and returns true for each. The default
  // knows of no unsent jobs.
  virtual std::vector<bool> CancelUnsent(
      const std::vector<std::shared_ptr<FutureState>>& states) {
    return std::vector<bool>(states.size(), false);
  }
};

// Someone waiting on several futures at once (Wait, AsCompleted). A state
// calls Notify(tag) once, when it completes, with its own lock held: Notify
// must be quick and must not touch any FutureState.
class Waiter {
 public:
  virtual ~Waiter() = default;
  virtual void Notify(size_t tag, bool failed, bool cancelled) = 0;
};

// The remote-error mapping of the client (see future.h, ErrorKind): a
// JobError {kind, message} as an absl::Status with the kind attached under
// the payload URL error_kind::kStatusPayloadUrl (protos/error_kind.h).
absl::Status JobErrorToStatus(absl::string_view kind,
                              absl::string_view message);

class FutureState : public std::enable_shared_from_this<FutureState> {
 public:
  using Callback = std::function<void(const std::shared_ptr<FutureState>&)>;

  // `host` may be empty (then callbacks run in the completing thread and
  // Cancel only works on a done future).
  explicit FutureState(std::weak_ptr<FutureHost> host = {});
  FutureState(const FutureState&) = delete;
  FutureState& operator=(const FutureState&) = delete;

  // ---- Driven by the executor (or a test). ----

  // The broker acknowledged the job under `job_id`.
  void SetJobId(uint64_t job_id);
  // The job started on a worker. Ignored once done.
  void MarkRunning();
  // Finishes the future (must be owned by a shared_ptr). `status` OK means
  // succeeded. `result` is kept in both cases (an exit_code failure still
  // carries its output). Also resolves JobId() with `status` if no id was
  // assigned yet. Returns false if the future was already done (then nothing
  // changes). Done callbacks are posted to the host's callback thread in the
  // order they were added.
  bool Complete(absl::Status status, std::string result = {});

  // ---- Read by Future<T>. ----

  bool Done() const;
  bool Running() const;
  bool Cancelled() const;
  bool HasJobId() const;
  // Waits until done or `deadline`; true if done.
  bool WaitDone(absl::Time deadline) const;
  // Waits for the id; DEADLINE_EXCEEDED, or the failure that ended the
  // future before it got one (e.g. a rejected submit batch).
  absl::StatusOr<uint64_t> JobId(absl::Time deadline) const;
  // Requires Done(). The outcome; the result bytes (possibly empty).
  const absl::Status& status() const;
  const std::string& result() const;

  // Cancels the job if it has not finished (a running one is stopped at its
  // worker): true if it is cancelled now (or was already), false if it
  // finished. Waits for the job id first (bounded by the session: a lost
  // stream fails the future).
  bool Cancel(const std::shared_ptr<FutureState>& self);

  // Runs `fn(self)` at once in this thread if done, else on completion
  // through the host.
  void AddDoneCallback(const std::shared_ptr<FutureState>& self, Callback fn);

  // Registers `waiter` to be notified with `tag` on completion. Returns false
  // (and registers nothing) if already done. The waiter must call
  // RemoveWaiter before it is destroyed.
  bool AddWaiter(Waiter* waiter, size_t tag);
  void RemoveWaiter(Waiter* waiter);

 private:
  enum class Phase { kPending, kRunning, kDone };

  const std::weak_ptr<FutureHost> host_;

  // Guards everything below. Held only for field updates and Waiter::Notify,
  // never across I/O or user callbacks.
  mutable Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kPending;
  bool has_id_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t job_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Written once with phase_ = kDone; read without the lock afterwards
  // (status(), result()) since it never changes again.
  absl::Status status_;
  std::string result_;
  std::vector<Callback> callbacks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<Waiter*, size_t>> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace internal
}  // namespace dexec

#endif  // DEXEC_CLIENT_FUTURE_STATE_H_
