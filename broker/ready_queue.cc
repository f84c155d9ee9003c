#include "broker/ready_queue.h"

#include <algorithm>

namespace dexec::broker {

void ReadyQueue::Push(const std::string& task, int32_t priority,
                      uint64_t id) {
  std::deque<uint64_t>& q = queues_[task][priority];
  if (q.empty() || q.back() < id) {
    q.push_back(id);  // the common case: a new job
  } else {
    // A requeued job: back in id order, ahead of jobs submitted after it.
    q.insert(std::lower_bound(q.begin(), q.end(), id), id);
  }
}

bool ReadyQueue::Head(PerPriority& q, const IsLive& is_live, int32_t* priority,
                      uint64_t* id) {
  while (!q.empty()) {
    auto it = q.begin();
    std::deque<uint64_t>& ids = it->second;
    while (!ids.empty() && !is_live(ids.front())) ids.pop_front();
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

uint64_t ReadyQueue::Pop(const std::vector<std::string>& tasks,
                         const IsLive& is_live) {
  PerPriority* best = nullptr;
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
      best_priority = priority;
      best_id = id;
    }
  }
  if (best == nullptr) return 0;
  auto level = best->begin();
  level->second.pop_front();
  if (level->second.empty()) best->erase(level);
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
