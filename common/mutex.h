// absl::Mutex with ThreadSanitizer annotations: use it for every lock in dexec.
//
// Debian's Abseil is built without TSan annotations, so under --config=tsan
// TSan cannot see absl::Mutex order anything and reports every guarded field
// as racy. This wrapper tells TSan about each acquire and release (a no-op in
// other builds) and keeps absl's conditional waits. Remove once Abseil is
// built with TSan or we link an instrumented one.
//
// DEXEC_TSAN is defined by --config=tsan (.bazelrc), which undefines
// __SANITIZE_THREAD__ for the sake of the uninstrumented libraries' headers.
//
// Thread-safe.
#ifndef DEXEC_COMMON_MUTEX_H_
#define DEXEC_COMMON_MUTEX_H_

#include <cstdlib>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#if defined(DEXEC_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace dexec {

inline void TsanAcquire(const void* addr) {
#if defined(DEXEC_TSAN)
  __tsan_acquire(const_cast<void*>(addr));
#else
  (void)addr;
#endif
}

inline void TsanRelease(const void* addr) {
#if defined(DEXEC_TSAN)
  __tsan_release(const_cast<void*>(addr));
#else
  (void)addr;
#endif
}

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    TsanAcquire(this);
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
#if defined(DEXEC_TSAN)
    // Waiters re-check their predicate on their own thread (see
    // AwaitWithDeadline), so wake them whenever the state may have changed.
    if (waiters_ > 0) cv_.SignalAll();
#endif
    TsanRelease(this);
    mu_.Unlock();
  }

  // With the lock held: releases it until `pred()` holds or `deadline`
  // passes, and returns holding it again; true if `pred()` holds. `pred` is
  // evaluated with the lock held. In a normal build that is absl's
  // Condition: the thread that unlocks evaluates it and wakes the waiter
  // only when it holds, so a waiter costs no wake-up per unlock. Under TSan
  // it is evaluated on the calling thread instead, woken by every unlock:
  // TSan cannot see through Debian's uninstrumented Abseil evaluating it
  // elsewhere.
  template <typename Pred>
  bool AwaitWithDeadline(const Pred& pred, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
#if defined(DEXEC_TSAN)
    // Whoever holds the lock may have changed the state before waiting, and
    // its release inside the wait bypasses Unlock(): wake the others once.
    if (waiters_ > 0) cv_.SignalAll();
    while (!pred()) {
      ++waiters_;
      TsanRelease(this);
      const bool timed_out = cv_.WaitWithDeadline(&mu_, deadline);
      TsanAcquire(this);
      --waiters_;
      if (timed_out) return static_cast<bool>(pred());
    }
    return true;
#else
    return mu_.AwaitWithDeadline(absl::Condition(&pred), deadline);
#endif
  }
  template <typename Pred>
  void Await(const Pred& pred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    AwaitWithDeadline(pred, absl::InfiniteFuture());
  }

 private:
  absl::Mutex mu_;
#if defined(DEXEC_TSAN)
  absl::CondVar cv_;
  int waiters_ = 0;  // guarded by mu_
#endif
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};

// Debian's Abseil is built without NDEBUG, so every absl::Mutex acquisition
// in the process (ours and gRPC's) updates a global lock-order graph to
// detect deadlocks: ~4% of a round trip's CPU. Our binaries call this first
// thing in main to turn that off, except under tests (DEXEC_TEST set, see
// .bazelrc), where a lock-order inversion should still abort.
inline void SetMutexDeadlockDetectionForProcess() {
  if (std::getenv("DEXEC_TEST") == nullptr) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
}

}  // namespace dexec

#endif  // DEXEC_COMMON_MUTEX_H_
