// What /metrics shows of the journal (journal.h): per round that wrote
// anything, how long its writes and its one sync took, and how many
// records it wrote. A plain value: the journal keeps one under its lock and
// hands out copies.
#ifndef DEXEC_BROKER_JOURNAL_METRICS_H_
#define DEXEC_BROKER_JOURNAL_METRICS_H_

#include "common/histogram.h"

namespace dexec::broker {

struct JournalMetrics {
  Histogram commit_seconds{kLatencyBoundsSeconds};
  Histogram round_records{kCountBounds};
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_JOURNAL_METRICS_H_
