// A worker binary of your own: the stock built-in tasks plus "square".
//
//   bazel-bin/examples/square_worker tcp://127.0.0.1:50052
//   [dexec-data/worker.key] dexec submit --wait square 7        # prints 49
//
// It joins with the credentials the broker wrote on first start
// (./dexec-data/worker.key, or the file named second).
#include <cstdint>
#include <iostream>

#include "auth/curve_keys.h"
#include "worker/builtin_tasks.h"
#include "worker/task_registry.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  dexec::worker::TaskRegistry tasks;
  absl::Status s = dexec::worker::RegisterBuiltinTasks(&tasks);
  if (s.ok()) {
    s = tasks.RegisterTyped<int64_t, int64_t>(
        "square",
        [](dexec::worker::TaskContext&, int64_t x) -> absl::StatusOr<int64_t> {
          return x * x;
        });
  }
  if (!s.ok()) {
    std::cerr << "square_worker: " << s << "\n";
    return 1;
  }
  absl::StatusOr<dexec::auth::WorkerCredentials> creds =
      dexec::auth::ReadWorkerCredentials(argc > 2 ? argv[2]
                                                  : "dexec-data/worker.key");
  if (!creds.ok()) {
    std::cerr << "square_worker: " << creds.status().message() << "\n";
    return 1;
  }
  dexec::worker::WorkerOptions options;
  options.broker = argc > 1 ? argv[1] : "tcp://127.0.0.1:50052";
  options.curve_server_key = creds->broker_public_z85;
  options.curve_public_key = creds->key.public_z85;
  options.curve_secret_key = creds->key.secret_z85;
  options.threads = 4;
  dexec::worker::Worker worker(options, &tasks);
  if (absl::Status started = worker.Start(); !started.ok()) {
    std::cerr << "square_worker: " << started << "\n";
    return 1;
  }
  worker.Wait();
  return 0;
}
