// A worker process's connection to the broker: receives tasks over ZeroMQ,
// runs them on a pool of threads with the tasks of a TaskRegistry, and
// sends their results back. The protocol is protos/wire.proto, described in
// docs/DESIGN.md, "Worker protocol".
//
//   TaskRegistry registry;
//   RETURN_IF_ERROR(RegisterBuiltinTasks(&registry));
//   WorkerOptions options;
//   options.broker = "tcp://broker.internal:50052";
//   Worker worker(options, &registry);
//   RETURN_IF_ERROR(worker.Start());
//   ...                 // on SIGTERM, from any thread: worker.Drain();
//   worker.Wait();      // returns once the worker has left the broker
//
// Threads: "worker-io" owns the socket for life and all connection state;
// "worker-pool-N" run tasks and hand results back through a mailbox;
// "worker-co-N" run coroutine tasks on event loops;
// with process isolation, "worker-procs" owns the child processes (forked
// by a zygote process that Start() forks first: call Start() before the
// program starts threads of its own, so children inherit no lock another
// thread held).
//
// Connection: the worker registers, adopts the heartbeat interval and
// liveness of the broker's Welcome, and sends a Heartbeat when it has sent
// nothing else for an interval. When nothing arrives from the broker for
// interval x liveness it presumes the broker dead, closes the socket, and
// after a backoff (250 ms doubling to 8 s, reset by a Welcome) connects a
// new one and registers again (zguide's Paranoid Pirate). Tasks keep
// running meanwhile; their results wait for the next Welcome. Every
// Register lists the attempts the worker still holds (running, queued, or
// finished with the result unsent, or sent so recently that a broker which
// crashed may have lost it; those are sent again after the Welcome), so a
// restarted broker keeps them here instead of running them again.
//
// Shutdown:
//   Drain(): tells the broker to send no more tasks, finishes every task
//     already received, sends their results, then leaves. Tasks still
//     running after drain_timeout are cancelled and the worker leaves
//     without their results (the broker requeues them).
//   Stop(): cancels every task at once, sends the results already finished,
//     and leaves. Tasks not yet started are dropped.
// Leaving = WorkerState{leaving} sent, socket closed. Pool threads are then
// joined; a task that ignores its context's cancellation keeps Wait() and
// the destructor waiting until it returns.
//
// Thread-safe.
#ifndef DEXEC_WORKER_WORKER_H_
#define DEXEC_WORKER_WORKER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/task_registry.h"

namespace dexec::worker {

struct WorkerOptions {
  // ZeroMQ endpoint of the broker's worker socket.
  std::string broker = "tcp://127.0.0.1:50052";
  // Pool threads, i.e. tasks run at once; 0 = the machine's hardware
  // threads.
  int threads = 0;
  // Most tasks accepted beyond `threads`, so a pool thread that finishes
  // finds the next task already here instead of waiting a round trip. The
  // broker adapts within it: many for tiny tasks, one for long ones;
  // -1 = max(256, 4 x threads).
  int prefetch = -1;
  // Shown by the broker and in logs; empty = "host:pid".
  std::string name;
  // How long Drain() lets running tasks finish before cancelling them.
  absl::Duration drain_timeout = absl::Seconds(30);
  // Used until the broker's Welcome says otherwise.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  int liveness = 3;
  // CURVE (docs/DESIGN.md, "Security"), all three Z85 keys or none: the
  // broker's public key, pinned (a broker without its secret key fails the
  // handshake and is never talked to), and this worker's keypair, which the
  // broker must admit. None: plain ZeroMQ, for a broker run with
  // --insecure.
  std::string curve_server_key;
  std::string curve_public_key;
  std::string curve_secret_key;

  // Coroutine tasks (task.h, e.g. sys.sleep) in flight at once, on
  // `threads` event-loop threads; the broker sends up to this many of them
  // (docs/DESIGN.md, "Credit").
  int concurrency = 10000;
  // Where tasks registered with Isolation::kDefault run (task_registry.h):
  // kThread on `threads` pool threads, or kProcess in `threads` child
  // processes, pre-forked at Start() and each replaced when it dies, so a
  // task that crashes fails its job with kind "crashed" and nothing else.
  Isolation isolation = Isolation::kThread;
  // Process isolation: a child is replaced after this many tasks (bounding
  // a task's leaks, as ProcessPoolExecutor's max_tasks_per_child); 0 =
  // never.
  int max_tasks_per_child = 0;
  // Process isolation: each child's address-space limit (RLIMIT_AS); an
  // allocation beyond it kills the child and fails its task "crashed".
  // 0 = none.
  int64_t child_memory_limit_bytes = 0;
};

// What the worker's /metrics shows (worker/worker_http.h), a snapshot.
struct WorkerMetrics {
  // Runs finished here since start, by task, for at most kMaxTaskSeries
  // names (a worker runs only the tasks it registered, but a broker could
  // send any name); the rest under "(other)", which comes last.
  struct TaskCounts {
    std::string task;
    uint64_t run = 0;     // finished, whatever the outcome
    uint64_t failed = 0;  // of those, not ok (the task's error, a timeout,
                          // a crash, a cancel)
  };
  static constexpr size_t kMaxTaskSeries = 1000;
  std::vector<TaskCounts> tasks;
  int threads = 0;
  // Thread and process tasks running now, and coroutine tasks in flight.
  int busy_threads = 0;
  int coroutines = 0;
  // Since the last frame from the broker (any frame counts as a
  // heartbeat), and whether the broker has welcomed this connection.
  absl::Duration heartbeat_age = absl::ZeroDuration();
  bool connected = false;
  absl::Duration uptime = absl::ZeroDuration();
};

class Worker {
 public:
  // `registry` is borrowed: it must outlive the Worker and not change once
  // Start() is called.
  Worker(WorkerOptions options, const TaskRegistry* registry);
  // Stops (as Stop()) and joins every thread.
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Validates the options, connects, and starts the threads; returns at
  // once (registration happens in the background). INVALID_ARGUMENT for
  // bad options or an endpoint ZeroMQ rejects, FAILED_PRECONDITION if
  // called twice.
  absl::Status Start();

  // Begins a graceful shutdown (see above) and returns at once. No-op if
  // not started or already stopping.
  void Drain();

  // Begins an immediate shutdown (see above) and returns at once. May
  // follow Drain() to cut it short.
  void Stop();

  // Blocks until the worker has left the broker and every pool thread has
  // returned. Returns at once if Start() was never called or failed.
  void Wait();

  // The worker's name as sent to the broker (options.name or "host:pid").
  const std::string& name() const;
  // Pool threads (options.threads, or the hardware threads if 0).
  int threads() const;
  // A snapshot for /metrics, as of worker-io's last loop iteration (at
  // most a second old; heartbeat_age and uptime as of now).
  WorkerMetrics Metrics() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_WORKER_H_
