#include "common/backoff.h"

#include <algorithm>

namespace dexec {

Backoff::Backoff(absl::Duration initial, absl::Duration max)
    : initial_(initial),
      max_(std::max(initial, max)),
      current_(initial),
      random_(std::random_device{}()) {}

absl::Duration Backoff::Next() {
  const absl::Duration d = current_;
  current_ = std::min(current_ * 2, max_);
  std::uniform_real_distribution<double> half_to_one(0.5, 1.0);
  return d * half_to_one(random_);
}

}  // namespace dexec
