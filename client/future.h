// Future<T>: the eventual result of one job, like Python's
// concurrent.futures.Future. Obtained from Executor::Submit / Attach.
//
//   dexec::Future<int64_t> f = executor->Submit<int64_t>("square", 7);
//   absl::StatusOr<int64_t> v = f.Result(absl::Seconds(30));
//   if (!v.ok()) std::cerr << v.status() << " kind=" << ErrorKind(v.status());
//
// A Future is a cheap copyable handle to shared state; copies see the same
// job. Thread-safe.
//
// Remote errors become an absl::Status by the job's JobError.kind:
//   timeout -> DEADLINE_EXCEEDED, cancelled -> CANCELLED,
//   worker_lost -> UNAVAILABLE, bad_payload / unknown_task ->
//   INVALID_ARGUMENT, not_found -> NOT_FOUND, anything else (task_error,
//   exit_code, exception, ...) -> UNKNOWN,
// with the message "<kind>: <message>" and the kind attached as the status
// payload "type.dexec/error_kind" (read it back with ErrorKind()).
// A lost broker connection fails outstanding futures with UNAVAILABLE.
#ifndef DEXEC_CLIENT_FUTURE_H_
#define DEXEC_CLIENT_FUTURE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/future_state.h"
#include "common/codec.h"

namespace dexec {

// The JobError.kind attached to a status produced from a remote job error
// ("task_error", "timeout", "exit_code", ...), or "" if there is none.
std::string ErrorKind(const absl::Status& status);

template <typename T>
class Future;

namespace internal {
// Turns an absl::Duration timeout into a deadline (infinite stays infinite).
inline absl::Time DeadlineFrom(absl::Duration timeout) {
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                             : absl::Now() + timeout;
}
template <typename T>
Future<T> MakeFuture(std::shared_ptr<FutureState> state);
template <typename T>
const std::shared_ptr<FutureState>& StateOf(const Future<T>& f);

// `bytes` (a result of `state`'s job: all of it, or a chunked map item's
// part) decoded with Codec<T>; INVALID_ARGUMENT naming the job if they do
// not decode as T.
template <typename T>
absl::StatusOr<T> DecodeResult(const FutureState& state,
                               absl::string_view bytes) {
  absl::StatusOr<T> v = Codec<T>::Decode(bytes);
  if (!v.ok()) {
    absl::StatusOr<uint64_t> id = state.JobId(absl::InfinitePast());
    return absl::InvalidArgumentError(absl::StrCat(
        "result of job ", id.ok() ? absl::StrCat(*id) : "?",
        " does not decode as the requested type: ", v.status().message()));
  }
  return v;
}
}  // namespace internal

template <typename T = std::string>
class Future {
 public:
  // An empty future: every call fails with FAILED_PRECONDITION / false.
  Future() = default;

  bool valid() const { return state_ != nullptr; }

  // The decoded result. Waits up to `timeout`: DEADLINE_EXCEEDED if the job
  // is not done by then; CANCELLED if cancelled; the remote error if it
  // failed; INVALID_ARGUMENT naming the job if the bytes don't decode as T.
  absl::StatusOr<T> Result(
      absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!state_) return Invalid();
    if (!state_->WaitDone(internal::DeadlineFrom(timeout))) {
      return NotDone(timeout);
    }
    if (!state_->status().ok()) return state_->status();
    return internal::DecodeResult<T>(*state_, state_->result());
  }

  // The raw result bytes as the worker returned them, also when the job
  // failed (an exit_code failure of sys.exec still carries its ExecResult).
  // DEADLINE_EXCEEDED if not done in time; the job's error if it failed
  // without any result bytes.
  absl::StatusOr<std::string> RawResult(
      absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!state_) return Invalid();
    if (!state_->WaitDone(internal::DeadlineFrom(timeout))) {
      return NotDone(timeout);
    }
    if (!state_->status().ok() && state_->result().empty()) {
      return state_->status();
    }
    return state_->result();
  }

  // The broker's job id; waits for its acknowledgement of the submit.
  // DEADLINE_EXCEEDED if not acknowledged in time; the submit's failure if
  // the broker rejected it or the connection was lost first.
  absl::StatusOr<uint64_t> JobId(
      absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!state_) return Invalid();
    return state_->JobId(internal::DeadlineFrom(timeout));
  }

  bool Done() const { return state_ && state_->Done(); }
  bool Running() const { return state_ && state_->Running(); }
  bool Cancelled() const { return state_ && state_->Cancelled(); }

  // Cancels the job if it has not finished (one unary Cancel RPC; waits for
  // the job id first if the submit is not acknowledged yet). A running job
  // is stopped at its worker: cooperatively for C++ tasks (ctx.cancelled()),
  // at once for sys.sleep and sys.exec. True if it is cancelled now or was
  // already — the job will produce no result; false if it finished. Unlike
  // Python's Future.cancel(), a running job can be cancelled.
  bool Cancel() { return state_ && state_->Cancel(state_); }

  // Calls `fn(*this)` once the future is done: at once in this thread if it
  // already is, otherwise on the executor's `client-callbacks` thread (never
  // a gRPC thread). Callbacks run in the order they were added. `fn` must
  // not block for long: it delays every other callback of the executor.
  void AddDoneCallback(std::function<void(const Future<T>&)> fn) {
    if (!state_) return;
    state_->AddDoneCallback(
        state_,
        [fn = std::move(fn)](const std::shared_ptr<internal::FutureState>& s) {
          fn(Future<T>(s));
        });
  }

  // OK if the job succeeded, else its error (as Result() would return it,
  // decoding aside). DEADLINE_EXCEEDED if not done in time.
  absl::Status Exception(
      absl::Duration timeout = absl::InfiniteDuration()) const {
    if (!state_) return Invalid();
    if (!state_->WaitDone(internal::DeadlineFrom(timeout))) {
      return NotDone(timeout);
    }
    return state_->status();
  }

  // Same job (same shared state).
  friend bool operator==(const Future& a, const Future& b) {
    return a.state_ == b.state_;
  }
  friend bool operator!=(const Future& a, const Future& b) { return !(a == b); }

 private:
  explicit Future(std::shared_ptr<internal::FutureState> state)
      : state_(std::move(state)) {}

  static absl::Status Invalid() {
    return absl::FailedPreconditionError("empty dexec::Future");
  }
  absl::Status NotDone(absl::Duration timeout) const {
    absl::StatusOr<uint64_t> id = state_->JobId(absl::InfinitePast());
    return absl::DeadlineExceededError(absl::StrCat(
        "job ", id.ok() ? absl::StrCat(*id) : "(not yet acknowledged)",
        " not done after ", absl::FormatDuration(timeout)));
  }

  template <typename U>
  friend Future<U> internal::MakeFuture(
      std::shared_ptr<internal::FutureState> state);
  template <typename U>
  friend const std::shared_ptr<internal::FutureState>& internal::StateOf(
      const Future<U>& f);

  std::shared_ptr<internal::FutureState> state_;
};

namespace internal {
template <typename T>
Future<T> MakeFuture(std::shared_ptr<FutureState> state) {
  return Future<T>(std::move(state));
}
template <typename T>
const std::shared_ptr<FutureState>& StateOf(const Future<T>& f) {
  return f.state_;
}
}  // namespace internal

}  // namespace dexec

#endif  // DEXEC_CLIENT_FUTURE_H_
