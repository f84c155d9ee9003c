// http.get's plain path: HTTP/1.1 over TCP to an address literal
// (http1.h says which requests), on the loop's own awaitables, with
// keep-alive connections pooled per loop thread. Beside curl, which takes
// every other request: a new connection through curl costs about 22
// syscalls and 40 us of its user time; here it is socket, connect, send
// (at once when the connect completed), recv, and two epoll_ctl of the
// loop's wait (bench/README.md, "The plain path").
//
// Not thread-safe: one PlainPool per loop thread, owned by http.get's
// per-loop state (http_task.cc).
#ifndef DEXEC_WORKER_PLAIN_HTTP_H_
#define DEXEC_WORKER_PLAIN_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "protos/tasks.pb.h"
#include "worker/http1.h"
#include "worker/task.h"
#include "worker/task_context.h"

namespace dexec::worker {

// The loop's connection slots, shared with curl's (http_task.cc).
class ConnectionBudget {
 public:
  // Takes one slot; false when none is left.
  virtual bool Take() = 0;
  virtual void Give() = 0;

 protected:
  ~ConnectionBudget() = default;
};

class PlainPool {
 public:
  // Idle connections older than this are closed, not reused (curl's
  // CURLOPT_MAXAGE_CONN default).
  static constexpr absl::Duration kMaxIdle = absl::Seconds(118);
  // Idle connections kept, at most: the most this loop had in use at once
  // (so a round of n requests finds its n connections in the next round,
  // as curl's caches do), and at least kMinIdleCap.
  static constexpr size_t kMinIdleCap = 256;

  PlainPool(TaskScheduler* scheduler, ConnectionBudget* budget)
      : scheduler_(scheduler), budget_(budget) {}
  ~PlainPool();  // closes the idle connections
  PlainPool(const PlainPool&) = delete;
  PlainPool& operator=(const PlainPool&) = delete;

  // A task's place in the queue for a slot, first come first served:
  // one per request, living as long as its PlainFetch (whose end or
  // destruction, Forget, takes it out).
  struct Waiter {
    explicit Waiter(TaskContext* c) : ctx(c) {}
    TaskContext* const ctx;
    bool queued = false;
    bool granted = false;  // woken for a freed slot, not yet served
    std::list<Waiter*>::iterator pos;
  };

  // A connection to `target`, for one request:
  //   fd >= 0: a kept one (reused) or a new socket whose connect started;
  //   fd == -1, wait: every slot is taken and some of ours will come back:
  //     `w` is queued; wait until woken, then ask again;
  //   fd == -1, !wait: no slot and none of ours to wait for (curl holds
  //     them): send the request through curl;
  //   fd == -2: socket() or connect() failed at once; error says why.
  struct Lease {
    int fd = -1;
    bool reused = false;
    bool wait = false;
    std::string error;
  };
  // `reuse` false: a new connection even if one is kept (a request's
  // second try, after a kept one died under it).
  Lease Acquire(const http1::Target& target, absl::Time now, Waiter& w,
                bool reuse = true);
  // Ends a lease: keeps the connection for the next request to `key` or
  // closes it; either way the first waiter is woken for the slot.
  void Release(const std::string& key, int fd, bool keep, absl::Time now);
  // Takes `w` out of the queue (passing a slot it was woken for on).
  void Forget(Waiter& w);

  // Idle connections kept now (for tests).
  size_t idle() const { return idle_count_; }

 private:
  struct Idle {
    int fd;
    absl::Time since;
  };
  // Closes the idle connections older than kMaxIdle (at most once a
  // second, from Release: O(idle)).
  void Sweep(absl::Time now);
  void Enqueue(Waiter& w);
  void GrantNext();
  bool CloseOneIdle();

  TaskScheduler* const scheduler_;
  ConnectionBudget* const budget_;
  absl::flat_hash_map<std::string, std::vector<Idle>> idle_;
  size_t idle_count_ = 0;
  size_t in_use_ = 0;
  size_t most_in_use_ = 0;
  absl::Time last_sweep_ = absl::InfinitePast();
  std::list<Waiter*> waiting_;  // queued, oldest first
  long grants_ = 0;             // waiters woken and not yet served
};

// Connections the plain path opened in this process so far.
uint64_t PlainConnectionsOpened();

// What a plain request ended in.
struct PlainOutcome {
  enum class Kind {
    kDone,       // response holds it (any status)
    kError,      // no answer: error says why ("http_error")
    kTooLarge,   // the body is over the limit
    kTimeout,    // `limit` came first
    kCancelled,  // the task was cancelled
    kUseCurl,    // no slot of ours: the caller sends it through curl
  };
  Kind kind = Kind::kError;
  std::string error;
  tasks::HttpResponse response;
};

// Sends `request` (http1::BuildRequest's) to `target` and reads the
// response, on the loop of `pool`, by `limit`. A kept connection that the
// server closed before any byte of the response is tried once more on a
// new one.
Task<PlainOutcome> PlainFetch(TaskContext& ctx, PlainPool& pool,
                              const http1::Target& target,
                              const std::string& request, bool head,
                              size_t max_body, absl::Time limit);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_PLAIN_HTTP_H_
