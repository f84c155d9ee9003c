#include "broker/task_metrics.h"

namespace dexec::broker {
namespace {

int OutcomeIndex(JobState s) {
  switch (s) {
    case v1::Job::SUCCEEDED:
      return 0;
    case v1::Job::FAILED:
      return 1;
    default:
      return 2;
  }
}

}  // namespace

TaskMetrics::Name& TaskMetrics::Get(const TaskName& task) {
  auto it = names_.find(task.str());
  if (it != names_.end()) return it->second;
  Name n;
  n.name = task;
  if (slot_names_.size() < cap_) {
    n.slot = static_cast<int32_t>(slots_.size());
    slots_.emplace_back();
    slot_names_.push_back(n.name.str());
    last_submit_.push_back(0);
  } else {
    // The least recently submitted kept name with nothing live, if any.
    // O(cap) for each new name once the cap is reached.
    int32_t victim = -1;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Counts& c = slots_[i];
      if (c.queued + c.running != 0) continue;
      if (victim < 0 || last_submit_[i] < last_submit_[victim]) {
        victim = static_cast<int32_t>(i);
      }
    }
    if (victim >= 0) {
      const Counts& old = slots_[victim];
      other_.submitted += old.submitted;
      for (int i = 0; i < 3; ++i) other_.finished[i] += old.finished[i];
      names_.erase(slot_names_[victim]);
      slots_[victim] = Counts();
      slot_names_[victim] = n.name.str();
      last_submit_[victim] = 0;
      n.slot = victim;
    }
  }
  const absl::string_view key = n.name.str();
  return names_.emplace(key, std::move(n)).first->second;
}

void TaskMetrics::Enter(Name& n, JobState state) {
  Counts& c = CountsOf(n);
  if (state == v1::Job::QUEUED) ++c.queued;
  if (state == v1::Job::RUNNING) ++c.running;
  if (n.slot < 0) ++n.other_live;
}

void TaskMetrics::Submitted(const TaskName& task) {
  Name& n = Get(task);
  ++CountsOf(n).submitted;
  if (n.slot >= 0) last_submit_[n.slot] = ++submit_clock_;
  Enter(n, v1::Job::QUEUED);
}

void TaskMetrics::Restored(const TaskName& task, JobState state) {
  if (IsTerminal(state)) return;
  Enter(Get(task), state);
}

void TaskMetrics::Moved(const TaskName& task, JobState from, JobState to) {
  auto it = names_.find(task.str());
  if (it == names_.end() || from == to) return;
  Name& n = it->second;
  Counts& c = CountsOf(n);
  if (from == v1::Job::QUEUED && c.queued > 0) --c.queued;
  if (from == v1::Job::RUNNING && c.running > 0) --c.running;
  if (to == v1::Job::QUEUED) ++c.queued;
  if (to == v1::Job::RUNNING) ++c.running;
  if (IsTerminal(to)) {
    ++c.finished[OutcomeIndex(to)];
    if (n.slot < 0 && --n.other_live == 0) names_.erase(it);
  }
}

std::vector<TaskSeries> TaskMetrics::Snapshot() const {
  std::vector<TaskSeries> out;
  out.reserve(slots_.size() + 1);
  auto add = [&out](absl::string_view name, const Counts& c) {
    TaskSeries s;
    s.task = std::string(name);
    s.submitted = c.submitted;
    s.succeeded = c.finished[0];
    s.failed = c.finished[1];
    s.cancelled = c.finished[2];
    s.queued = c.queued;
    s.running = c.running;
    out.push_back(std::move(s));
  };
  for (size_t i = 0; i < slots_.size(); ++i) add(slot_names_[i], slots_[i]);
  add(kOther, other_);
  return out;
}

}  // namespace dexec::broker
