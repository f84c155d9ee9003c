// Waiting on many futures: Wait() and AsCompleted(), like Python's
// concurrent.futures.wait / as_completed.
//
//   WaitResult<int> r = Wait(futures, absl::Seconds(10),
//                            ReturnWhen::kFirstException);
//   for (absl::StatusOr<Future<int>> f : AsCompleted(futures)) {
//     if (!f.ok()) break;  // DEADLINE_EXCEEDED: overall timeout passed
//     Use(f->Result());
//   }
//
// Both cost one registration per future and no polling.
#ifndef DEXEC_CLIENT_WAIT_H_
#define DEXEC_CLIENT_WAIT_H_

#include <cstddef>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "client/future_state.h"
#include "client/next_iterator.h"
#include "common/mutex.h"

namespace dexec {

enum class ReturnWhen {
  kFirstCompleted,  // as soon as any future is done
  kFirstException,  // as soon as any future fails (not cancelled), or all done
  kAllCompleted,    // when all are done
};

template <typename T>
struct WaitResult {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace internal {

// Collects completions of the futures it is registered on. Thread-safe.
class CompletionQueue final : public Waiter {
 public:
  void Notify(size_t tag, bool failed, bool cancelled) override {
    MutexLock lock(&mu_);
    ready_.push_back(tag);
    ++completed_;
    if (failed && !cancelled) ++failed_;
  }
  void PushDone(size_t tag, bool failed, bool cancelled) {
    Notify(tag, failed, cancelled);
  }
  // Waits until `pred(completed, failed, ready_nonempty)` or `deadline`.
  template <typename Pred>
  bool Await(absl::Time deadline, Pred pred) {
    MutexLock lock(&mu_);
    auto cond = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return pred(completed_, failed_, !ready_.empty());
    };
    return mu_.AwaitWithDeadline(cond, deadline);
  }
  // Pops the oldest completion, if any.
  std::optional<size_t> Pop() {
    MutexLock lock(&mu_);
    if (ready_.empty()) return std::nullopt;
    size_t tag = ready_.front();
    ready_.pop_front();
    return tag;
  }

 private:
  Mutex mu_;
  std::deque<size_t> ready_ ABSL_GUARDED_BY(mu_);
  size_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace internal

// Waits until `when` holds for `fs` or `timeout` passes, and splits `fs`
// into done and not done (each in the order of `fs`). Never fails: on
// timeout, inspect not_done. Empty futures count as not done.
template <typename T>
WaitResult<T> Wait(const std::vector<Future<T>>& fs,
                   absl::Duration timeout = absl::InfiniteDuration(),
                   ReturnWhen when = ReturnWhen::kAllCompleted) {
  internal::CompletionQueue queue;
  size_t registered = 0;
  for (size_t i = 0; i < fs.size(); ++i) {
    const auto& s = internal::StateOf(fs[i]);
    if (!s) continue;
    ++registered;
    if (!s->AddWaiter(&queue, i)) {
      queue.PushDone(i, !s->status().ok(), s->Cancelled());
    }
  }
  queue.Await(internal::DeadlineFrom(timeout),
              [&](size_t completed, size_t failed, bool) {
                switch (when) {
                  case ReturnWhen::kFirstCompleted:
                    return completed > 0 || registered == 0;
                  case ReturnWhen::kFirstException:
                    return failed > 0 || completed == registered;
                  case ReturnWhen::kAllCompleted:
                    return completed == registered;
                }
                return true;
              });
  WaitResult<T> r;
  for (const Future<T>& f : fs) {
    const auto& s = internal::StateOf(f);
    if (s) s->RemoveWaiter(&queue);
    (f.Done() ? r.done : r.not_done).push_back(f);
  }
  return r;
}

// Yields futures as they complete: those already done first (in input
// order), then in completion order. Next() returns nullopt once every future
// was yielded, and DEADLINE_EXCEEDED once (then nullopt) if the overall
// timeout passes first. Range-for iterates absl::StatusOr<Future<T>>.
// Movable, not copyable; not thread-safe (one consumer).
template <typename T>
class AsCompletedIterator {
 public:
  AsCompletedIterator(std::vector<Future<T>> fs, absl::Duration timeout)
      : fs_(std::move(fs)),
        deadline_(internal::DeadlineFrom(timeout)),
        timeout_(timeout),
        queue_(std::make_unique<internal::CompletionQueue>()) {
    for (size_t i = 0; i < fs_.size(); ++i) {
      const auto& s = internal::StateOf(fs_[i]);
      if (!s) {
        // An empty future never completes: yield it at once, harmlessly.
        queue_->PushDone(i, true, false);
      } else if (!s->AddWaiter(queue_.get(), i)) {
        queue_->PushDone(i, false, false);
      }
    }
  }
  AsCompletedIterator(AsCompletedIterator&&) = default;
  AsCompletedIterator& operator=(AsCompletedIterator&&) = delete;
  ~AsCompletedIterator() { Unregister(); }

  std::optional<absl::StatusOr<Future<T>>> Next() {
    if (finished_ || yielded_ == fs_.size()) return std::nullopt;
    if (!queue_->Await(deadline_,
                       [](size_t, size_t, bool ready) { return ready; })) {
      finished_ = true;
      Unregister();
      return absl::StatusOr<Future<T>>(absl::DeadlineExceededError(absl::StrCat(
          fs_.size() - yielded_, " of ", fs_.size(), " futures not done after ",
          absl::FormatDuration(timeout_))));
    }
    ++yielded_;
    return absl::StatusOr<Future<T>>(fs_[*queue_->Pop()]);
  }

  using iterator =
      internal::NextIterator<AsCompletedIterator, absl::StatusOr<Future<T>>>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(nullptr); }

 private:
  void Unregister() {
    if (!queue_) return;  // moved from
    for (const Future<T>& f : fs_) {
      const auto& s = internal::StateOf(f);
      if (s) s->RemoveWaiter(queue_.get());
    }
  }

  std::vector<Future<T>> fs_;
  absl::Time deadline_;
  absl::Duration timeout_;
  // Heap-allocated: states hold its address while registered.
  std::unique_ptr<internal::CompletionQueue> queue_;
  size_t yielded_ = 0;
  bool finished_ = false;
};

template <typename T>
AsCompletedIterator<T> AsCompleted(
    std::vector<Future<T>> fs,
    absl::Duration timeout = absl::InfiniteDuration()) {
  return AsCompletedIterator<T>(std::move(fs), timeout);
}

}  // namespace dexec

#endif  // DEXEC_CLIENT_WAIT_H_
