// The live workers: what each offers, its capacity and the jobs it holds
// (credit-based flow control: a worker never holds more than threads +
// prefetch jobs), and when it was last heard from.
//
// Not thread-safe; owned by the broker loop.
#ifndef DEXEC_BROKER_WORKER_REGISTRY_H_
#define DEXEC_BROKER_WORKER_REGISTRY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "broker/job.h"
#include "protos/dexec.pb.h"
#include "protos/wire.pb.h"

namespace dexec::broker {

struct WorkerEntry {
  // ZeroMQ ROUTER identity: how frames reach it.
  std::string identity;
  // The CURVE public key (Z85) its connection authenticated with; empty on
  // an --insecure broker. Several workers may share one key.
  std::string key;
  std::string name;
  std::string host;
  int32_t pid = 0;
  int32_t threads = 1;
  int32_t prefetch = 0;
  std::vector<std::string> tasks;
  // The same, interned: a task a worker offers keeps its name (and its run
  // time statistics) while no job names it.
  std::vector<TaskName> task_names;
  bool draining = false;
  absl::Time registered_at;
  absl::Time last_heard;  // any frame from it
  absl::Time last_sent;   // any frame to it
  uint64_t done = 0;
  // Jobs dispatched to it and not answered: job id -> attempt number.
  absl::flat_hash_map<uint64_t, uint32_t> in_flight;
  // Coroutine tasks (Register.async_tasks): they hold no thread there, so
  // they count against `concurrency`, not threads + prefetch.
  // `thread_tasks` is `tasks` without them.
  int32_t concurrency = 0;
  std::vector<std::string> async_tasks;
  std::vector<std::string> thread_tasks;
  absl::flat_hash_set<std::string> async_task_set;
  // The jobs of in_flight that are coroutine tasks.
  absl::flat_hash_set<uint64_t> async_in_flight;

  // The most tasks it may hold: threads plus the prefetch it registered.
  // The broker prefetches fewer when tasks are long (see
  // BrokerCore::CreditFor).
  int32_t capacity() const { return threads + prefetch; }
  // Tasks holding one of its threads.
  int32_t busy() const {
    return static_cast<int32_t>(in_flight.size() - async_in_flight.size());
  }
  int32_t async_busy() const {
    return static_cast<int32_t>(async_in_flight.size());
  }
  // Records job `id` (attempt `attempt`, task `task`) as held here.
  void Hold(uint64_t id, uint32_t attempt, const std::string& task) {
    in_flight.emplace(id, attempt);
    if (async_task_set.contains(task)) async_in_flight.insert(id);
  }
  // Forgets a job of in_flight.
  void Release(absl::flat_hash_map<uint64_t, uint32_t>::iterator it) {
    async_in_flight.erase(it->first);
    in_flight.erase(it);
  }
};

class WorkerRegistry {
 public:
  // Adds a worker (replacing one with the same identity: its jobs must have
  // been released by the caller first).
  WorkerEntry& Add(const std::string& identity, const wire::Register& reg,
                   absl::Time now);

  // nullptr if unknown.
  WorkerEntry* Find(const std::string& identity);

  // Forgets the worker. The caller releases its in-flight jobs first.
  void Remove(const std::string& identity);

  // Stops counting the worker's tasks as offered; it gets no new jobs.
  void SetDraining(WorkerEntry& w);

  // Whether a live, non-draining worker offers `task`.
  bool Offers(const std::string& task) const;
  // How many live, non-draining workers offer `task`.
  int OfferCount(const std::string& task) const;

  // Workers in registration order (stable, so dispatch is round-robin
  // fair and tests are deterministic).
  std::vector<WorkerEntry*> All();

  size_t size() const { return workers_.size(); }
  int32_t total_threads() const {
    int32_t n = 0;
    for (const auto& [order, w] : workers_) n += w.threads;
    return n;
  }

 private:
  void CountTasks(const WorkerEntry& w, int delta);

  uint64_t next_order_ = 0;
  // identity -> registration order; order -> worker.
  absl::flat_hash_map<std::string, uint64_t> order_;
  std::map<uint64_t, WorkerEntry> workers_;
  // task -> live non-draining workers offering it.
  absl::flat_hash_map<std::string, int> offered_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_WORKER_REGISTRY_H_
