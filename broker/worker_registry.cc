#include "broker/worker_registry.h"

#include <algorithm>

namespace dexec::broker {

WorkerEntry& WorkerRegistry::Add(const std::string& identity,
                                 const wire::Register& reg, absl::Time now) {
  Remove(identity);
  uint64_t order = next_order_++;
  order_[identity] = order;
  WorkerEntry& w = workers_[order];
  w.identity = identity;
  w.name = reg.name();
  w.host = reg.host();
  w.pid = reg.pid();
  w.threads = reg.threads();
  w.prefetch = reg.prefetch();
  w.tasks.assign(reg.tasks().begin(), reg.tasks().end());
  w.concurrency = reg.concurrency();
  w.async_tasks.assign(reg.async_tasks().begin(), reg.async_tasks().end());
  w.async_task_set = absl::flat_hash_set<std::string>(w.async_tasks.begin(),
                                                      w.async_tasks.end());
  w.thread_tasks.clear();
  for (const std::string& t : w.tasks) {
    if (!w.async_task_set.contains(t)) w.thread_tasks.push_back(t);
  }
  w.async_in_flight.clear();
  w.task_names.clear();
  for (const std::string& t : w.tasks)
    w.task_names.push_back(TaskName::Intern(t));
  w.registered_at = now;
  w.last_heard = now;
  w.last_sent = absl::InfinitePast();
  CountTasks(w, +1);
  return w;
}

WorkerEntry* WorkerRegistry::Find(const std::string& identity) {
  auto it = order_.find(identity);
  if (it == order_.end()) return nullptr;
  return &workers_.at(it->second);
}

void WorkerRegistry::Remove(const std::string& identity) {
  auto it = order_.find(identity);
  if (it == order_.end()) return;
  auto w = workers_.find(it->second);
  if (!w->second.draining) CountTasks(w->second, -1);
  workers_.erase(w);
  order_.erase(it);
}

void WorkerRegistry::SetDraining(WorkerEntry& w) {
  if (w.draining) return;
  w.draining = true;
  CountTasks(w, -1);
}

bool WorkerRegistry::Offers(const std::string& task) const {
  auto it = offered_.find(task);
  return it != offered_.end() && it->second > 0;
}

int WorkerRegistry::OfferCount(const std::string& task) const {
  auto it = offered_.find(task);
  return it == offered_.end() ? 0 : static_cast<int>(it->second);
}

std::vector<WorkerEntry*> WorkerRegistry::All() {
  std::vector<WorkerEntry*> out;
  out.reserve(workers_.size());
  for (auto& [order, w] : workers_) out.push_back(&w);
  return out;
}

void WorkerRegistry::CountTasks(const WorkerEntry& w, int delta) {
  for (const std::string& t : w.tasks) {
    int& n = offered_[t];
    n += delta;
    if (n <= 0) offered_.erase(t);
  }
}

}  // namespace dexec::broker
