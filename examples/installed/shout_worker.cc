// A worker binary of your own, built against an installed dexec (see
// CMakeLists.txt): two tasks, "shout" (raw bytes, upper-cased) and "triple"
// (typed, int64 times 3), beside the built-in ones.
//
//   shout_worker BROKER_ENDPOINT WORKER_KEY_FILE
//
// It runs until killed. Prints "shout_worker started" once it has started.
#include <cctype>
#include <cstdint>
#include <iostream>
#include <string>

#include "auth/curve_keys.h"
#include "worker/builtin_tasks.h"
#include "worker/task_registry.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: shout_worker BROKER_ENDPOINT WORKER_KEY_FILE\n";
    return 2;
  }
  using dexec::worker::TaskContext;
  dexec::worker::TaskRegistry tasks;
  absl::Status s = dexec::worker::RegisterBuiltinTasks(&tasks);
  if (s.ok()) {
    s = tasks.Register(
        "shout", [](TaskContext&, absl::string_view in, std::string* out) {
          for (char c : in) out->push_back(std::toupper(c));
          return absl::OkStatus();
        });
  }
  if (s.ok()) {
    s = tasks.RegisterTyped<int64_t, int64_t>(
        "triple", [](TaskContext&, int64_t x) -> absl::StatusOr<int64_t> {
          return 3 * x;
        });
  }
  if (!s.ok()) {
    std::cerr << "shout_worker: " << s << "\n";
    return 1;
  }

  absl::StatusOr<dexec::auth::WorkerCredentials> creds =
      dexec::auth::ReadWorkerCredentials(argv[2]);
  if (!creds.ok()) {
    std::cerr << "shout_worker: " << creds.status().message() << "\n";
    return 1;
  }
  dexec::worker::WorkerOptions options;
  options.broker = argv[1];
  options.curve_server_key = creds->broker_public_z85;
  options.curve_public_key = creds->key.public_z85;
  options.curve_secret_key = creds->key.secret_z85;
  options.threads = 2;
  dexec::worker::Worker worker(options, &tasks);
  if (absl::Status started = worker.Start(); !started.ok()) {
    std::cerr << "shout_worker: " << started << "\n";
    return 1;
  }
  std::cout << "shout_worker started" << std::endl;
  worker.Wait();
  return 0;
}
