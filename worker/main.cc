// dexec-worker: runs the built-in tasks (builtin_tasks.h) for a broker.
// See README.md and docs/DESIGN.md.
//
// Prints one line when started, then works until a signal:
//   dexec-worker started name=host:42 broker=tcp://127.0.0.1:50052 threads=8
//     curve=on isolation=thread http=off (http=HOST:PORT with --http_listen)
// SIGTERM or SIGINT: drain (finish received tasks, up to --drain_timeout),
// then exit 0. A second signal: stop at once (cancel running tasks). A
// third: exit immediately, for tasks that ignore cancellation.
//
// Exit codes: 0 after a drain or stop, 1 if the worker cannot start,
// 2 for bad flags or arguments.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "common/flag_check.h"
#include "common/flag_help.h"
#include "common/http_listener.h"
#include "common/log.h"
#include "common/loopback.h"
#include "common/mutex.h"
#include "worker/builtin_tasks.h"
#include "worker/task_registry.h"
#include "worker/worker.h"
#include "worker/worker_http.h"

ABSL_FLAG(std::string, broker, "tcp://127.0.0.1:50052",
          "ZeroMQ endpoint of the broker's worker socket");
ABSL_FLAG(int32_t, threads, 0,
          "tasks run at once; 0 = one per hardware thread");
ABSL_FLAG(int32_t, prefetch, -1,
          "most tasks accepted beyond --threads (the broker sends fewer "
          "when tasks are long); -1 = max(256, 4 x threads)");
ABSL_FLAG(std::string, name, "",
          "worker name shown by the broker; "
          "empty = host:pid");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long running tasks may finish before they are "
          "cancelled");
ABSL_FLAG(std::string, auth_dir, "./dexec-data",
          "directory holding this worker's credentials, worker.key (the "
          "broker writes one in its own --auth_dir on first start)");
ABSL_FLAG(std::string, worker_key, "",
          "credentials file (worker keypair and the broker's public key); "
          "empty = --auth_dir/worker.key");
ABSL_FLAG(bool, insecure, false,
          "plain ZeroMQ without CURVE, for a broker run with --insecure");
ABSL_FLAG(std::string, isolation, "thread",
          "where tasks run: thread (pool threads of this process) or "
          "process (--threads pre-forked child processes, each replaced "
          "when it dies; a crashing task fails its job with kind crashed)");
ABSL_FLAG(int32_t, max_tasks_per_child, 0,
          "--isolation=process: replace a child after this many tasks "
          "(bounds a task's leaks); 0 = never");
ABSL_FLAG(int64_t, child_memory_mb, 0,
          "--isolation=process: each child's address-space limit in MiB; a "
          "task allocating beyond it fails with kind crashed; 0 = none");
ABSL_FLAG(int32_t, concurrency, 10000,
          "coroutine tasks (sys.sleep, http.get) in flight at once, on "
          "--threads event loops; the broker sends up to this many");
ABSL_FLAG(bool, allow_http, false,
          "offer http.get: make the HTTP requests that jobs send, from this "
          "worker's network");
ABSL_FLAG(int64_t, http_max_connections, 0,
          "--allow_http: the most connections http.get opens at once (the "
          "requests beyond wait for one); 0: as many as the file "
          "descriptor limit holds, less a reserve");
ABSL_FLAG(bool, http_plain, true,
          "--allow_http: send http:// requests to an address literal over "
          "dexec's own keep-alive connections rather than through curl "
          "(the same requests and results, less CPU per connection)");
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT for /metrics (no token; loopback only unless "
          "--insecure); port 0 picks one, shown as http= on the started "
          "line; empty: off");
ABSL_FLAG(bool, allow_exec, false,
          "offer sys.exec: run the shell commands that jobs send, as this "
          "worker's user");

namespace dexec::worker {
namespace {

constexpr int kUsageError = 2;

// Takes SIGTERM/SIGINT for the whole process (all threads block them, see
// Main) and turns them into Worker calls, on a thread of its own: nothing
// runs in an asynchronous signal handler.
class SignalWatcher {
 public:
  explicit SignalWatcher(Worker* worker) : worker_(worker) {
    thread_ = std::thread([this] { Run(); });
  }
  ~SignalWatcher() {
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }

  // Every signal the watcher takes; block them before starting threads.
  static sigset_t Signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);  // our own wake-up at exit
    return set;
  }

 private:
  void Run() {
    pthread_setname_np(pthread_self(), "worker-signals");
    const sigset_t set = Signals();
    int received = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR1) {
        if (done_.load()) return;
        continue;
      }
      ++received;
      if (received == 1) {
        DEXEC_LOG(INFO) << "signal received, draining signal=" << sig;
        worker_->Drain();
      } else if (received == 2) {
        DEXEC_LOG(INFO) << "second signal received, stopping signal=" << sig;
        worker_->Stop();
      } else {
        DEXEC_LOG(WARNING) << "third signal received, exiting now; tasks "
                              "that ignored cancellation are abandoned";
        _exit(1);
      }
    }
  }

  Worker* const worker_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

int Main(int argc, char** argv) {
  SetLogComponent("worker");
  absl::SetProgramUsageMessage(
      "Runs dexec's built-in tasks for a broker.\n"
      "Usage: dexec-worker [--broker=tcp://HOST:PORT] [--threads=N] ...");
  if (PrintHelpIfRequested(
          argc, argv,
          {.program = "dexec-worker",
           .summary = "runs dexec's built-in tasks for a broker.",
           .groups = {{"Broker", {"broker", "name"}},
                      {"Capacity",
                       {"threads", "prefetch", "concurrency", "drain_timeout"}},
                      {"Isolation",
                       {"isolation", "max_tasks_per_child", "child_memory_mb"}},
                      {"Security", {"auth_dir", "worker_key", "insecure"}},
                      {"Monitoring", {"http_listen"}},
                      {"Tasks",
                       {"allow_exec", "allow_http", "http_max_connections",
                        "http_plain"}}}})) {
    return 0;
  }
  if (!CheckFlagArguments(argc, argv, "dexec-worker", std::cerr)) {
    return kUsageError;
  }
  absl::ParseCommandLine(argc, argv);

  WorkerOptions options;
  options.broker = absl::GetFlag(FLAGS_broker);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.prefetch = absl::GetFlag(FLAGS_prefetch);
  options.name = absl::GetFlag(FLAGS_name);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  const std::string isolation = absl::GetFlag(FLAGS_isolation);
  if (isolation == "thread") {
    options.isolation = Isolation::kThread;
  } else if (isolation == "process") {
    options.isolation = Isolation::kProcess;
  } else {
    std::cerr << "dexec-worker: bad value '" << isolation
              << "' for --isolation: use thread or process\n";
    return kUsageError;
  }
  options.max_tasks_per_child = absl::GetFlag(FLAGS_max_tasks_per_child);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.child_memory_limit_bytes = absl::GetFlag(FLAGS_child_memory_mb) << 20;
  if (absl::GetFlag(FLAGS_http_max_connections) < 0) {
    std::cerr << "dexec-worker: bad value "
              << absl::GetFlag(FLAGS_http_max_connections)
              << " for --http_max_connections: use a count of connections, "
                 "or 0 for as many as the file descriptor limit holds\n";
    return kUsageError;
  }

  // The metrics listener is plaintext and unauthenticated: loopback only
  // unless the operator says otherwise, as for the broker's.
  const std::string http_listen = absl::GetFlag(FLAGS_http_listen);
  if (!http_listen.empty() && !absl::GetFlag(FLAGS_insecure) &&
      !IsLoopbackHostPort(http_listen)) {
    std::cerr << "dexec-worker: refusing to serve /metrics without a token "
                 "on --http_listen="
              << http_listen
              << ": use a loopback address (127.0.0.1:PORT) or pass "
                 "--insecure\n";
    return kUsageError;
  }

  if (!absl::GetFlag(FLAGS_insecure)) {
    std::string path = absl::GetFlag(FLAGS_worker_key);
    if (path.empty()) path = absl::GetFlag(FLAGS_auth_dir) + "/worker.key";
    absl::StatusOr<auth::WorkerCredentials> credentials =
        auth::ReadWorkerCredentials(path);
    if (!credentials.ok()) {
      std::cerr << "dexec-worker: " << credentials.status().message() << "\n";
      return 1;
    }
    options.curve_server_key = credentials->broker_public_z85;
    options.curve_public_key = credentials->key.public_z85;
    options.curve_secret_key = credentials->key.secret_z85;
  }

  TaskRegistry registry;
  absl::Status registered = RegisterBuiltinTasks(
      &registry,
      {.allow_exec = absl::GetFlag(FLAGS_allow_exec),
       .allow_http = absl::GetFlag(FLAGS_allow_http),
       .http_max_connections = absl::GetFlag(FLAGS_http_max_connections),
       .http_plain = absl::GetFlag(FLAGS_http_plain)});
  if (!registered.ok()) {
    std::cerr << "dexec-worker: " << registered.message() << "\n";
    return 1;
  }

  // Before any thread exists, so that every thread inherits the mask and
  // only the watcher's sigwait sees these signals. A child that sys.exec
  // starts gets its mask reset (exec_task.cc).
  const sigset_t signals = SignalWatcher::Signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A write to a closed pipe or socket must fail with EPIPE, not kill us.
  signal(SIGPIPE, SIG_IGN);
  // Thousands of coroutine tasks may each hold a socket: take every file
  // descriptor allowed (as root, up to 1M; else the hard limit).
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    const struct rlimit more = {1 << 20, 1 << 20};
    if (files.rlim_max >= more.rlim_max ||
        setrlimit(RLIMIT_NOFILE, &more) != 0) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
  }

  Worker worker(options, &registry);
  absl::Status started = worker.Start();
  if (!started.ok()) {
    std::cerr << "dexec-worker: " << started.message() << "\n";
    return absl::IsInvalidArgument(started) ? kUsageError : 1;
  }
  SignalWatcher watcher(&worker);
  // After Start: the zygote is forked before any thread of ours exists.
  std::unique_ptr<http::HttpListener> http_listener;
  std::string http_shown = "off";
  if (!http_listen.empty()) {
    http::HttpListener::Options http_options;
    http_options.name = "worker";
    absl::StatusOr<std::unique_ptr<http::HttpListener>> listening =
        http::HttpListener::Start(http_listen, http_options,
                                  [&worker](const http::Request& r) {
                                    return ServeWorkerHttp(r, worker);
                                  });
    if (!listening.ok()) {
      std::cerr << "dexec-worker: " << listening.status().message()
                << " (--http_listen)\n";
      worker.Stop();
      worker.Wait();
      return 1;
    }
    http_listener = std::move(*listening);
    http_shown = absl::StrCat(http_listen.substr(0, http_listen.rfind(':')),
                              ":", http_listener->port());
  }
  std::printf(
      "dexec-worker started name=%s broker=%s threads=%d curve=%s "
      "isolation=%s http=%s\n",
      worker.name().c_str(), options.broker.c_str(), worker.threads(),
      options.curve_server_key.empty() ? "off" : "on", isolation.c_str(),
      http_shown.c_str());
  std::fflush(stdout);

  worker.Wait();
  http_listener.reset();  // before the worker it reads goes
  return 0;
}

}  // namespace
}  // namespace dexec::worker

int main(int argc, char** argv) {
  dexec::SetMutexDeadlockDetectionForProcess();
  return dexec::worker::Main(argc, argv);
}
