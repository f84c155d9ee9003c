// A worker whose only task kills it: for tests of jobs that crash their
// worker every time (tests/failure_test.cc).
//
//   crash_worker tcp://127.0.0.1:50052 crash-0 AUTH_DIR/worker.key
//
// Offers one task, "test.crash", which raises SIGKILL in the worker process,
// as a task with a fatal bug (a segfault, an abort in a library) would. It
// never reports a result: the broker sees the worker vanish mid-attempt.
#include <signal.h>

#include <iostream>

#include "auth/curve_keys.h"
#include "worker/task_registry.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: crash_worker BROKER_ENDPOINT NAME WORKER_KEY\n";
    return 2;
  }
  absl::StatusOr<dexec::auth::WorkerCredentials> creds =
      dexec::auth::ReadWorkerCredentials(argv[3]);
  if (!creds.ok()) {
    std::cerr << "crash_worker: " << creds.status() << "\n";
    return 1;
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
  options.curve_server_key = creds->broker_public_z85;
  options.curve_public_key = creds->key.public_z85;
  options.curve_secret_key = creds->key.secret_z85;
  dexec::worker::Worker worker(options, &tasks);
  if (absl::Status started = worker.Start(); !started.ok()) {
    std::cerr << "crash_worker: " << started << "\n";
    return 1;
  }
  worker.Wait();
  return 0;
}
