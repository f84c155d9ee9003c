// Per-task job counts for /metrics (docs/DESIGN.md, "Metrics"): jobs
// submitted and finished by outcome (counters) and jobs queued and running
// (gauges), for at most `cap` task names; every other name is counted
// under "(other)".
//
// Task names come from clients, so the names kept are bounded: a name gets
// a series of its own while fewer than `cap` are kept, and keeps it — at 0
// too, so a series does not vanish when its queue drains — until a new name
// needs the place. The place goes to the new name if some kept name has no
// queued or running job: the least recently submitted such name, whose
// counters fold into "(other)" (so no counter goes backwards; the name, if
// it comes back, starts again at 0). If every kept name has live jobs, the
// new name's jobs count under "(other)" until it has no live job left.
// Memory: `cap` names, plus one small entry per name with live jobs
// counted under "(other)" (those jobs hold the name anyway).
//
// Not thread-safe; owned by the broker loop (inside JobTable).
#ifndef DEXEC_BROKER_TASK_METRICS_H_
#define DEXEC_BROKER_TASK_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "broker/job.h"

namespace dexec::broker {

// One task's series (a snapshot).
struct TaskSeries {
  std::string task;  // or "(other)"
  uint64_t submitted = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t cancelled = 0;
  uint64_t queued = 0;
  uint64_t running = 0;
};

class TaskMetrics {
 public:
  static constexpr size_t kDefaultCap = 1000;
  static constexpr absl::string_view kOther = "(other)";

  explicit TaskMetrics(size_t cap = kDefaultCap) : cap_(cap) {}
  TaskMetrics(const TaskMetrics&) = delete;
  TaskMetrics& operator=(const TaskMetrics&) = delete;

  // A job of `task` was submitted (it is QUEUED).
  void Submitted(const TaskName& task);
  // A job of `task` came back from the journal in `state` (not counted as
  // submitted: counters start at 0 with the process).
  void Restored(const TaskName& task, JobState state);
  // A job of `task` went from `from` to `to`.
  void Moved(const TaskName& task, JobState from, JobState to);

  // The kept names' series (in no particular order), then "(other)".
  std::vector<TaskSeries> Snapshot() const;
  // Names with a series of their own now.
  size_t kept() const { return slot_names_.size(); }

 private:
  struct Counts {
    uint64_t submitted = 0;
    uint64_t finished[3] = {};  // succeeded, failed, cancelled
    uint64_t queued = 0;
    uint64_t running = 0;
  };
  struct Name {
    TaskName name;            // holds the string the map's key views
    int32_t slot = -1;        // index into slots_; -1: counted under (other)
    uint64_t other_live = 0;  // slot -1: its live jobs counted in other_
  };
  // The entry of `task`, made if missing (a slot if one can be had).
  Name& Get(const TaskName& task);
  Counts& CountsOf(const Name& n) {
    return n.slot < 0 ? other_ : slots_[n.slot];
  }
  void Enter(Name& n, JobState state);

  const size_t cap_;
  // Keys view the names' interned strings, which the entries hold.
  absl::flat_hash_map<absl::string_view, Name> names_;
  std::vector<Counts> slots_;
  std::vector<absl::string_view> slot_names_;
  // Last submit per slot (a tick of submit_clock_), for eviction.
  std::vector<uint64_t> last_submit_;
  uint64_t submit_clock_ = 0;
  Counts other_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_TASK_METRICS_H_
