// Every job the broker knows, by id: the live ones and the finished ones
// until their retention ends. Keeps the per-state counts, hands out ids
// (unique, never reused) and maps idempotency keys to jobs.
//
// Not thread-safe; owned by the broker loop.
#ifndef DEXEC_BROKER_JOB_TABLE_H_
#define DEXEC_BROKER_JOB_TABLE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <queue>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "broker/job.h"
#include "broker/task_metrics.h"

namespace dexec::broker {

// Gives a hash table's memory back once it holds far fewer entries than it
// has room for (absl's tables never shrink on erase): after a burst of a
// million jobs, the table of a few would keep the million's slots.
template <typename Table>
void ShrinkIfSparse(Table& table) {
  if (table.bucket_count() > 1024 && table.size() * 8 < table.bucket_count()) {
    table.rehash(0);
  }
}

class JobTable {
 public:
  // `first_id` is the first id handed out (a restarted broker passes one past
  // the largest id it ever used).
  // `max_task_series`: task names with metrics series of their own (see
  // task_metrics.h).
  explicit JobTable(uint64_t first_id = 1,
                    size_t max_task_series = TaskMetrics::kDefaultCap)
      : next_id_(first_id),
        queued_scan_from_(first_id),
        task_metrics_(max_task_series) {}
  JobTable(const JobTable&) = delete;
  JobTable& operator=(const JobTable&) = delete;

  // Adds `job` (its id is assigned here) in state QUEUED. Returns it.
  Job& Insert(Job job);

  // Puts back a job recovered from the journal, with its id and state.
  // Call in id order before any Insert; terminal jobs keep their
  // finished_at for retention.
  void Restore(Job job);

  // Ids handed out from here on start at least at `next_id`.
  void AdvanceNextId(uint64_t next_id) {
    if (next_id > next_id_) next_id_ = next_id;
    if (submitted_total_ == 0) queued_scan_from_ = next_id_;
  }

  // nullptr if unknown (never existed, or retention ended).
  Job* Find(uint64_t id);
  const Job* Find(uint64_t id) const;

  // The job `owner` submitted with this idempotency key, if it is still
  // held. Keys are scoped to their owner: another token's key is another
  // key.
  Job* FindByKey(absl::string_view owner, absl::string_view key);

  // Moves a job to `state`, keeping the counts right. Terminal states also
  // start the job's retention clock at `now`.
  void SetState(Job& job, JobState state, absl::Time now);

  // Forgets finished jobs whose retention ended by `now`; calls `on_erase`
  // with each id before it goes. A job for which `keep` (if given) says
  // true is kept for another `retention` from now (an event of it is still
  // owed to a client).
  void Expire(absl::Time now, absl::Duration retention,
              const std::function<void(uint64_t)>& on_erase,
              const std::function<bool(uint64_t)>& keep = nullptr);

  // Calls `fn` with jobs from the newest down (those with ids below
  // `below_id` only, if it is not 0) until it returns false.
  void ForEachNewest(const std::function<bool(const Job&)>& fn,
                     uint64_t below_id = 0) const;

  // Gives memory back if the table is mostly empty (see ShrinkIfSparse).
  void ShrinkIfSparse() {
    broker::ShrinkIfSparse(jobs_);
    broker::ShrinkIfSparse(by_key_);
  }

  uint64_t count(JobState s) const { return counts_[s]; }
  size_t size() const { return jobs_.size(); }
  uint64_t submitted_total() const { return submitted_total_; }
  uint64_t finished_total() const { return finished_total_; }
  // Jobs that reached terminal state `s` since the broker started.
  uint64_t finished_total(JobState s) const { return finished_by_state_[s]; }
  uint64_t next_id() const { return next_id_; }

  // The queued job with the smallest id (the longest in the broker), or
  // null if none is queued. Amortised O(1): it resumes a scan over ids that
  // only moves forward (new jobs get larger ids), and requeued jobs, which
  // go back to QUEUED with old ids, wait in a heap of their own.
  const Job* OldestQueued();
  const TaskMetrics& task_metrics() const { return task_metrics_; }

 private:
  uint64_t next_id_;
  absl::flat_hash_map<uint64_t, Job> jobs_;
  static std::string ScopedKey(absl::string_view owner, absl::string_view key);
  static std::string ScopedKey(const Job& job);

  // (owner, idempotency key) -> job id.
  absl::flat_hash_map<std::string, uint64_t> by_key_;
  // Finished jobs in finishing order, for retention.
  std::deque<std::pair<absl::Time, uint64_t>> finished_;
  uint64_t counts_[v1::Job::State_ARRAYSIZE] = {};
  uint64_t submitted_total_ = 0;
  uint64_t finished_total_ = 0;
  uint64_t finished_by_state_[v1::Job::State_ARRAYSIZE] = {};
  // For OldestQueued: every QUEUED job has an id >= queued_scan_from_ or is
  // in requeued_ (ids of jobs that went back to QUEUED; stale entries are
  // dropped when they reach the top, or all at once when they outnumber
  // the queued jobs).
  uint64_t queued_scan_from_;
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>>
      requeued_;
  TaskMetrics task_metrics_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_JOB_TABLE_H_
