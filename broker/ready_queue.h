// The queued jobs of each task name, highest priority first and FIFO (by
// job id, which only grows) within one priority.
//
// Entries are ids only. Cancelling a queued job does not search the queue:
// the caller changes the job's state, tells Forget(), and Pop() skips ids
// that `is_live` rejects (lazy deletion), so cancel is O(1) and the queue
// costs 8 bytes per job. Dead entries are not left to pile up in a queue
// nobody pops (a task no worker offers): once they are as many as the live
// ones the queue is compacted, and a queue with no live entry is freed
// with its name.
//
// Not thread-safe; owned by the broker loop.
#ifndef DEXEC_BROKER_READY_QUEUE_H_
#define DEXEC_BROKER_READY_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace dexec::broker {

class ReadyQueue {
 public:
  // Whether an id popped from a queue is still waiting to run.
  using IsLive = std::function<bool(uint64_t id)>;

  // Adds `id` behind the ids of its priority (ids must grow per priority for
  // FIFO order; a requeued job goes back by its id, ahead of newer jobs).
  void Push(const std::string& task, int32_t priority, uint64_t id);

  // Removes and returns the best live id among `tasks`' queues: highest
  // priority, then lowest id. 0 if none.
  uint64_t Pop(const std::vector<std::string>& tasks, const IsLive& is_live);

  // Whether any live id waits for `task`.
  bool HasWork(const std::string& task, const IsLive& is_live);

  // An id pushed for `task` is dead now without having been popped (its job
  // was cancelled). Compacts the task's queue when half of it is dead, and
  // frees it when none of it lives.
  void Forget(const std::string& task, const IsLive& is_live);

  // Task queues held, and entries in them (live or not yet dropped).
  size_t tasks() const { return queues_.size(); }
  size_t entries() const;

 private:
  // Per priority, ids in order. A requeued id is inserted in order.
  using PerPriority = std::map<int32_t, std::deque<uint64_t>, std::greater<>>;
  struct TaskQueue {
    PerPriority levels;
    // Entries not known to be dead, and entries Forget() declared dead
    // that are still in `levels`. About right: exact after Compact.
    size_t live = 0;
    size_t dead = 0;
  };

  // Drops dead ids from the front of `q`'s best priority; returns the head
  // (priority, id) or nullptr-ish (false) if empty.
  bool Head(TaskQueue& q, const IsLive& is_live, int32_t* priority,
            uint64_t* id);
  // Keeps only live ids; returns how many.
  static size_t Compact(TaskQueue& q, const IsLive& is_live);

  absl::flat_hash_map<std::string, TaskQueue> queues_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_READY_QUEUE_H_
