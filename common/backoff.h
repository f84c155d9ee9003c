// Jittered exponential backoff: how long to wait before the next attempt
// (to reach the broker again with a new Session stream or a retried RPC, to
// offer a Map chunk the broker had no room for).
//
//   Backoff backoff(absl::Milliseconds(50), absl::Seconds(2));
//   while (!TryOnce()) absl::SleepFor(backoff.Next());
//
// The n-th delay is drawn uniformly from [d/2, d] with d = initial * 2^n
// capped at `max`: the jitter keeps clients that lost the same broker from
// coming back in lockstep, and the floor of d/2 keeps the growth.
//
// Not thread-safe; each retrying thread owns its own.
#ifndef DEXEC_COMMON_BACKOFF_H_
#define DEXEC_COMMON_BACKOFF_H_

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace dexec {

class Backoff {
 public:
  // Delays start at `initial` and double up to `max` (both positive).
  Backoff(absl::Duration initial, absl::Duration max);

  // The next delay, jittered; advances the exponent.
  absl::Duration Next();
  // The next attempt starts again from `initial` (call after a success).
  void Reset() { current_ = initial_; }
  // The un-jittered delay Next() draws from now.
  absl::Duration current() const { return current_; }

 private:
  const absl::Duration initial_;
  const absl::Duration max_;
  absl::Duration current_;
  std::mt19937_64 random_;
};

}  // namespace dexec

#endif  // DEXEC_COMMON_BACKOFF_H_
