// A Prometheus histogram's state: fixed upper bounds, one counter per
// bucket (not cumulative here; the exposition adds them up), the sum and
// the count of what was observed.
//
//   Histogram h(kLatencyBoundsSeconds);
//   h.Observe(0.0032);     // one array increment after a binary search
//   text.AddHistogram("dexec_queue_wait_seconds", "...", h);
//
// Observe costs a binary search over the bounds (about 5 comparisons for
// the 24 latency bounds) and three additions: cheap enough for the broker
// loop's hot path. Copyable, so an owner can hand a snapshot to another
// thread.
//
// Not thread-safe; one owner thread (or a lock the owner names).
#ifndef DEXEC_COMMON_HISTOGRAM_H_
#define DEXEC_COMMON_HISTOGRAM_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace dexec {

// Seconds, from 100 µs to 1 h (docs/DESIGN.md, "Metrics"): a job's queue
// wait or run time may be anything from a microsecond task on an idle
// cluster to an hour-long job behind a backlog.
inline constexpr double kLatencyBoundsSeconds[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10,
    30,     60,      120,    300,   600,    1200,  1800, 3600};

// Counts (records in a journal round), 1 to 65,536 by powers of 4.
inline constexpr double kCountBounds[] = {1,    4,    16,    64,   256,
                                          1024, 4096, 16384, 65536};

class Histogram {
 public:
  // `bounds`: ascending upper bounds ("le"), in static storage.
  explicit Histogram(absl::Span<const double> bounds)
      : bounds_(bounds), counts_(bounds.size() + 1, 0) {}

  // Counts `v` in the first bucket whose bound is >= v (+Inf beyond the
  // last).
  void Observe(double v) {
    const size_t i = static_cast<size_t>(
        std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    ++counts_[i];
    sum_ += v;
    ++count_;
  }

  absl::Span<const double> bounds() const { return bounds_; }
  // Observations per bucket, not cumulative; the last is above every bound.
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  absl::Span<const double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace dexec

#endif  // DEXEC_COMMON_HISTOGRAM_H_
