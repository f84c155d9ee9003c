// A worker whose only task kills it: for tests of jobs that crash their
// worker every time (tests/failure_test.cc).
//
//   crash_worker tcp://127.0.0.1:50052 crash-0
//
// Offers one task, "test.crash", which raises SIGKILL in the worker process,
// as a task with a fatal bug (a segfault, an abort in a library) would. It
// never reports a result: the broker sees the worker vanish mid-attempt.
#include <signal.h>

#include <iostream>

#include "worker/task_registry.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: crash_worker BROKER_ENDPOINT NAME\n";
    return 2;
  }
  dexec::worker::TaskRegistry tasks;
  absl::Status s = tasks.Register(
      "test.crash",
      [](dexec::worker::TaskContext&, absl::string_view, std::string*) {
        // SIGKILL rather than abort(): no core dump, no handler, no chance
        // for the worker to say goodbye.
        raise(SIGKILL);
        return absl::OkStatus();
      });
  if (!s.ok()) {
    std::cerr << "crash_worker: " << s << "\n";
    return 1;
  }
  dexec::worker::WorkerOptions options;
  options.broker = argv[1];
  options.name = argv[2];
  options.threads = 1;
  dexec::worker::Worker worker(options, &tasks);
  if (absl::Status started = worker.Start(); !started.ok()) {
    std::cerr << "crash_worker: " << started << "\n";
    return 1;
  }
  worker.Wait();
  return 0;
}
