#include "client/future_state.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "client/future.h"
#include "client/map_stream.h"
#include "protos/error_kind.h"

namespace dexec {
namespace internal {

absl::Status JobErrorToStatus(absl::string_view kind,
                              absl::string_view message) {
  absl::StatusCode code = absl::StatusCode::kUnknown;
  if (kind == error_kind::kTimeout) {
    code = absl::StatusCode::kDeadlineExceeded;
  } else if (kind == error_kind::kCancelled) {
    code = absl::StatusCode::kCancelled;
  } else if (kind == error_kind::kWorkerLost) {
    code = absl::StatusCode::kUnavailable;
  } else if (kind == error_kind::kBadPayload ||
             kind == error_kind::kUnknownTask) {
    code = absl::StatusCode::kInvalidArgument;
  } else if (kind == error_kind::kNotFound) {
    code = absl::StatusCode::kNotFound;
  }
  absl::Status status(code, absl::StrCat(kind, ": ", message));
  status.SetPayload(error_kind::kStatusPayloadUrl, absl::Cord(kind));
  return status;
}

FutureState::FutureState(std::weak_ptr<FutureHost> host)
    : host_(std::move(host)) {}

void FutureState::SetJobId(uint64_t job_id) {
  MutexLock lock(&mu_);
  if (has_id_) return;
  has_id_ = true;
  job_id_ = job_id;
}

void FutureState::MarkRunning() {
  MutexLock lock(&mu_);
  if (phase_ == Phase::kPending) phase_ = Phase::kRunning;
}

bool FutureState::Complete(absl::Status status, std::string result) {
  std::vector<Callback> callbacks;
  {
    MutexLock lock(&mu_);
    if (phase_ == Phase::kDone) return false;
    status_ = std::move(status);
    result_ = std::move(result);
    phase_ = Phase::kDone;
    const bool failed = !status_.ok();
    const bool cancelled = status_.code() == absl::StatusCode::kCancelled;
    for (const auto& [waiter, tag] : waiters_) {
      waiter->Notify(tag, failed, cancelled);
    }
    waiters_.clear();
    waiters_.shrink_to_fit();
    callbacks.swap(callbacks_);
  }
  if (callbacks.empty()) return true;
  std::shared_ptr<FutureState> self = shared_from_this();
  auto run = [self, callbacks = std::move(callbacks)]() {
    for (const Callback& fn : callbacks) fn(self);
  };
  if (std::shared_ptr<FutureHost> host = host_.lock()) {
    host->Post(std::move(run));
  } else {
    run();
  }
  return true;
}

bool FutureState::Done() const {
  MutexLock lock(&mu_);
  return phase_ == Phase::kDone;
}

bool FutureState::Running() const {
  MutexLock lock(&mu_);
  return phase_ == Phase::kRunning;
}

bool FutureState::Cancelled() const {
  MutexLock lock(&mu_);
  return phase_ == Phase::kDone &&
         status_.code() == absl::StatusCode::kCancelled;
}

bool FutureState::HasJobId() const {
  MutexLock lock(&mu_);
  return has_id_;
}

bool FutureState::WaitDone(absl::Time deadline) const {
  auto done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return phase_ == Phase::kDone;
  };
  MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(done, deadline);
}

absl::StatusOr<uint64_t> FutureState::JobId(absl::Time deadline) const {
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return has_id_ || phase_ == Phase::kDone;
  };
  MutexLock lock(&mu_);
  if (!mu_.AwaitWithDeadline(ready, deadline)) {
    return absl::DeadlineExceededError(
        "the broker has not acknowledged the submit yet");
  }
  if (has_id_) return job_id_;
  return status_;  // done without an id: the submit itself failed
}

const absl::Status& FutureState::status() const { return status_; }
const std::string& FutureState::result() const { return result_; }

bool FutureState::Cancel(const std::shared_ptr<FutureState>& self) {
  {
    MutexLock lock(&mu_);
    if (phase_ == Phase::kDone) {
      return status_.code() == absl::StatusCode::kCancelled;
    }
  }
  std::shared_ptr<FutureHost> host = host_.lock();
  if (!host) return false;
  return CancelStates(host.get(), {self})[0];
}

void FutureState::AddDoneCallback(const std::shared_ptr<FutureState>& self,
                                  Callback fn) {
  {
    MutexLock lock(&mu_);
    if (phase_ != Phase::kDone) {
      callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn(self);
}

bool FutureState::AddWaiter(Waiter* waiter, size_t tag) {
  MutexLock lock(&mu_);
  if (phase_ == Phase::kDone) return false;
  waiters_.emplace_back(waiter, tag);
  return true;
}

void FutureState::RemoveWaiter(Waiter* waiter) {
  MutexLock lock(&mu_);
  for (size_t i = 0; i < waiters_.size();) {
    if (waiters_[i].first == waiter) {
      waiters_[i] = waiters_.back();
      waiters_.pop_back();
    } else {
      ++i;
    }
  }
}

std::vector<bool> CancelStates(
    FutureHost* host, const std::vector<std::shared_ptr<FutureState>>& states,
    bool running_too) {
  // Jobs still in the client are withdrawn there: waiting for their ids
  // could take as long as the broker stays full or unreachable.
  std::vector<bool> outcome = host->CancelUnsent(states);
  outcome.resize(states.size(), false);
  std::vector<uint64_t> ids;
  std::vector<size_t> asked;  // index into states, parallel to ids
  for (size_t i = 0; i < states.size(); ++i) {
    if (outcome[i]) continue;
    // An unacknowledged submit has no id to cancel yet; its acknowledgement
    // (or the failure that ends it) is bounded by the session.
    absl::StatusOr<uint64_t> id = states[i]->JobId(absl::InfiniteFuture());
    if (states[i]->Done() || (!running_too && states[i]->Running()) ||
        !id.ok()) {
      outcome[i] = states[i]->Cancelled();
      continue;
    }
    ids.push_back(*id);
    asked.push_back(i);
  }
  if (ids.empty()) return outcome;
  absl::StatusOr<std::vector<bool>> cancelled = host->CancelJobs(ids);
  for (size_t k = 0; k < asked.size(); ++k) {
    const std::shared_ptr<FutureState>& s = states[asked[k]];
    if (cancelled.ok() && k < cancelled->size() && (*cancelled)[k]) {
      // The broker's CANCELLED event follows; whichever lands first wins.
      s->Complete(JobErrorToStatus("cancelled", "cancelled by the client"));
    }
    outcome[asked[k]] = s->Cancelled();
  }
  return outcome;
}

}  // namespace internal

std::string ErrorKind(const absl::Status& status) {
  auto kind = status.GetPayload(error_kind::kStatusPayloadUrl);
  return kind.has_value() ? std::string(*kind) : std::string();
}

}  // namespace dexec
