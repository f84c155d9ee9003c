#include "broker/job_table.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"

namespace dexec::broker {

Job& JobTable::Insert(Job job) {
  job.id = next_id_++;
  job.state = v1::Job::QUEUED;
  ++counts_[v1::Job::QUEUED];
  ++submitted_total_;
  task_metrics_.Submitted(job.task);
  if (!job.info().idempotency_key.empty()) by_key_[ScopedKey(job)] = job.id;
  auto [it, inserted] = jobs_.emplace(job.id, std::move(job));
  assert(inserted);
  return it->second;
}

void JobTable::Restore(Job job) {
  const uint64_t id = job.id;
  if (id >= next_id_) next_id_ = id + 1;
  if (submitted_total_ == 0) queued_scan_from_ = next_id_;
  ++counts_[job.state];
  task_metrics_.Restored(job.task, job.state);
  if (job.state == v1::Job::QUEUED) requeued_.push(id);
  if (!job.info().idempotency_key.empty()) by_key_[ScopedKey(job)] = id;
  if (IsTerminal(job.state)) {
    // Keep the retention deque in finishing order.
    auto pos = std::upper_bound(
        finished_.begin(), finished_.end(), job.info().finished_at,
        [](absl::Time t, const std::pair<absl::Time, uint64_t>& e) {
          return t < e.first;
        });
    finished_.insert(pos, {job.info().finished_at, id});
  }
  jobs_.insert_or_assign(id, std::move(job));
}

Job* JobTable::Find(uint64_t id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const Job* JobTable::Find(uint64_t id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

std::string JobTable::ScopedKey(absl::string_view owner,
                                absl::string_view key) {
  // The owner's name cannot contain NUL (token names are [A-Za-z0-9._-]).
  return absl::StrCat(owner, absl::string_view("\0", 1), key);
}

std::string JobTable::ScopedKey(const Job& job) {
  return ScopedKey(job.owner.str(), job.info().idempotency_key);
}

Job* JobTable::FindByKey(absl::string_view owner, absl::string_view key) {
  auto it = by_key_.find(ScopedKey(owner, key));
  return it == by_key_.end() ? nullptr : Find(it->second);
}

void JobTable::SetState(Job& job, JobState state, absl::Time now) {
  assert(!IsTerminal(job.state));  // a job completes exactly once
  --counts_[job.state];
  ++counts_[state];
  task_metrics_.Moved(job.task, job.state, state);
  if (state == v1::Job::QUEUED && job.state != v1::Job::QUEUED) {
    requeued_.push(job.id);
    if (requeued_.size() > 2 * counts_[v1::Job::QUEUED] + 1024) {
      // Mostly stale: keep the ids still queued.
      std::vector<uint64_t> live;
      while (!requeued_.empty()) {
        const Job* j = Find(requeued_.top());
        if (j != nullptr && j->state == v1::Job::QUEUED) {
          live.push_back(requeued_.top());
        }
        requeued_.pop();
      }
      live.push_back(job.id);
      for (uint64_t id : live) requeued_.push(id);
    }
  }
  job.state = state;
  if (IsTerminal(state)) {
    job.mutable_info().finished_at = now;
    ++finished_total_;
    ++finished_by_state_[state];
    finished_.emplace_back(now, job.id);
  }
}

void JobTable::Expire(absl::Time now, absl::Duration retention,
                      const std::function<void(uint64_t)>& on_erase,
                      const std::function<bool(uint64_t)>& keep) {
  while (!finished_.empty() && finished_.front().first + retention <= now) {
    uint64_t id = finished_.front().second;
    finished_.pop_front();
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    if (keep && keep(id)) {
      // Behind everything due by now, so this pass does not see it again.
      finished_.emplace_back(now, id);
      continue;
    }
    on_erase(id);
    --counts_[it->second.state];
    if (!it->second.info().idempotency_key.empty()) {
      by_key_.erase(ScopedKey(it->second));
    }
    jobs_.erase(it);
  }
}

const Job* JobTable::OldestQueued() {
  auto queued = [this](uint64_t id) -> const Job* {
    const Job* j = Find(id);
    return j != nullptr && j->state == v1::Job::QUEUED ? j : nullptr;
  };
  while (!requeued_.empty() && queued(requeued_.top()) == nullptr) {
    requeued_.pop();
  }
  // Past the heap's top there is nothing older to find.
  const uint64_t limit = requeued_.empty() ? next_id_ : requeued_.top();
  for (; queued_scan_from_ < limit; ++queued_scan_from_) {
    if (const Job* j = queued(queued_scan_from_)) return j;
  }
  return requeued_.empty() ? nullptr : Find(requeued_.top());
}

void JobTable::ForEachNewest(const std::function<bool(const Job&)>& fn,
                             uint64_t below_id) const {
  // Ids are dense from the oldest held job up, so walking down from the
  // newest id visits every job with few misses.
  size_t seen = 0;
  const uint64_t first =
      below_id == 0 ? next_id_ - 1 : std::min(next_id_, below_id) - 1;
  for (uint64_t id = first; id > 0 && seen < jobs_.size(); --id) {
    const Job* job = Find(id);
    if (job == nullptr) continue;
    ++seen;
    if (!fn(*job)) return;
  }
}

}  // namespace dexec::broker
