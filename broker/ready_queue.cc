#include "broker/ready_queue.h"

#include <algorithm>

namespace dexec::broker {
namespace {

// Below this many dead entries a queue is not compacted (unless none of it
// lives): compaction walks the whole queue.
constexpr size_t kMinDeadToCompact = 1024;

void Decrement(size_t* n) {
  if (*n > 0) --*n;
}

}  // namespace

void ReadyQueue::Push(const std::string& task, int32_t priority, uint64_t id) {
  TaskQueue& tq = queues_[task];
  ++tq.live;
  std::deque<uint64_t>& q = tq.levels[priority];
  if (q.empty() || q.back() < id) {
    q.push_back(id);  // the common case: a new job
  } else {
    // A requeued job: back in id order, ahead of jobs submitted after it.
    q.insert(std::lower_bound(q.begin(), q.end(), id), id);
  }
}

bool ReadyQueue::Head(TaskQueue& tq, const IsLive& is_live, int32_t* priority,
                      uint64_t* id) {
  PerPriority& q = tq.levels;
  while (!q.empty()) {
    auto it = q.begin();
    std::deque<uint64_t>& ids = it->second;
    while (!ids.empty() && !is_live(ids.front())) {
      ids.pop_front();
      if (tq.dead > 0) {
        --tq.dead;
      } else {
        Decrement(&tq.live);
      }
    }
    if (ids.empty()) {
      q.erase(it);
      continue;
    }
    *priority = it->first;
    *id = ids.front();
    return true;
  }
  return false;
}

size_t ReadyQueue::Compact(TaskQueue& tq, const IsLive& is_live) {
  size_t live = 0;
  for (auto it = tq.levels.begin(); it != tq.levels.end();) {
    std::deque<uint64_t> kept;
    for (uint64_t id : it->second) {
      if (is_live(id)) kept.push_back(id);
    }
    live += kept.size();
    if (kept.empty()) {
      it = tq.levels.erase(it);
    } else {
      it->second.swap(kept);  // a fresh deque: the old one's blocks go
      ++it;
    }
  }
  tq.live = live;
  tq.dead = 0;
  return live;
}

void ReadyQueue::Forget(const std::string& task, const IsLive& is_live) {
  auto it = queues_.find(task);
  if (it == queues_.end()) return;
  TaskQueue& tq = it->second;
  Decrement(&tq.live);
  ++tq.dead;
  if (tq.live > 0 && (tq.dead < tq.live || tq.dead < kMinDeadToCompact)) {
    return;
  }
  if (Compact(tq, is_live) == 0) queues_.erase(it);
}

size_t ReadyQueue::entries() const {
  size_t n = 0;
  for (const auto& [task, tq] : queues_) {
    for (const auto& [priority, ids] : tq.levels) n += ids.size();
  }
  return n;
}

uint64_t ReadyQueue::Pop(const std::vector<std::string>& tasks,
                         const IsLive& is_live) {
  TaskQueue* best = nullptr;
  const std::string* best_task = nullptr;
  int32_t best_priority = 0;
  uint64_t best_id = 0;
  for (const std::string& task : tasks) {
    auto it = queues_.find(task);
    if (it == queues_.end()) continue;
    int32_t priority;
    uint64_t id;
    if (!Head(it->second, is_live, &priority, &id)) {
      queues_.erase(it);
      continue;
    }
    if (best == nullptr || priority > best_priority ||
        (priority == best_priority && id < best_id)) {
      best = &it->second;
      best_task = &task;
      best_priority = priority;
      best_id = id;
    }
  }
  if (best == nullptr) return 0;
  auto level = best->levels.begin();
  level->second.pop_front();
  Decrement(&best->live);
  if (level->second.empty()) best->levels.erase(level);
  // An empty queue goes at once: no name is kept for a task with no job.
  if (best->levels.empty()) queues_.erase(*best_task);
  return best_id;
}

bool ReadyQueue::HasWork(const std::string& task, const IsLive& is_live) {
  auto it = queues_.find(task);
  if (it == queues_.end()) return false;
  int32_t priority;
  uint64_t id;
  return Head(it->second, is_live, &priority, &id);
}

}  // namespace dexec::broker
