// Issue 12's workloads against a running broker (bench/shapes_bench.sh
// starts it, one worker and the HTTP server): RESULT lines on stdout.
//
//   shapes_bench --broker=127.0.0.1:50051 --workload=sleeps --n=10000
//   shapes_bench --workload=http --n=20000 --url=http://127.0.0.1:8080/
//   shapes_bench --workload=chunked_map --n=2000000 --chunksize=1000
//   shapes_bench --workload=memory --n=10000 --worker_pid=PID
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/executor.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:50051", "broker gRPC address");
ABSL_FLAG(std::string, workload, "sleeps",
          "sleeps | http | chunked_map | memory");
ABSL_FLAG(int64_t, n, 10000, "jobs (sleeps, http, memory) or items");
ABSL_FLAG(int64_t, chunksize, 0,
          "items per job (0: the workload's own, 1000 for chunked_map, 1 "
          "for sleeps and http)");
ABSL_FLAG(int64_t, window, 0, "Map window; 0 = n (or 64 chunks)");
ABSL_FLAG(std::string, url, "",
          "http: comma-separated URLs; job i gets URL i % count");
ABSL_FLAG(int64_t, worker_pid, 0, "memory: the worker to measure");
ABSL_FLAG(std::string, label, "dexec", "system= of the RESULT line");

namespace {

int64_t RssBytes(int64_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::vector<std::string> parts =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      int64_t kib = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) {
        return kib * 1024;
      }
    }
  }
  return -1;
}

// Maps `task` over `inputs`; returns the wall time, or a negative one on
// the first error (printed).
absl::Duration RunMap(dexec::Executor& ex, const std::string& task,
                      const std::vector<std::string>& inputs,
                      dexec::MapOptions options) {
  const absl::Time start = absl::Now();
  size_t n = 0;
  for (absl::StatusOr<std::string>& r : ex.Map(task, inputs, options)) {
    if (!r.ok()) {
      std::fprintf(stderr, "shapes_bench: item %zu: %s\n", n,
                   std::string(r.status().message()).c_str());
      return -absl::Seconds(1);
    }
    ++n;
  }
  return absl::Now() - start;
}

int Main() {
  dexec::ExecutorOptions eo;
  eo.broker = absl::GetFlag(FLAGS_broker);
  absl::StatusOr<std::unique_ptr<dexec::Executor>> ex =
      dexec::Executor::Connect(eo);
  if (!ex.ok()) {
    std::fprintf(stderr, "shapes_bench: %s\n",
                 std::string(ex.status().message()).c_str());
    return 1;
  }
  const std::string workload = absl::GetFlag(FLAGS_workload);
  const int64_t n = absl::GetFlag(FLAGS_n);
  const std::string label = absl::GetFlag(FLAGS_label);
  dexec::MapOptions options;
  options.jobs_per_message = 1000;
  if (workload == "sleeps" || workload == "http") {
    std::vector<std::string> inputs(n, "1000");
    if (workload == "http") {
      const std::vector<std::string> urls =
          absl::StrSplit(absl::GetFlag(FLAGS_url), ',', absl::SkipEmpty());
      if (urls.empty()) {
        std::fprintf(stderr, "shapes_bench: --url is empty\n");
        return 2;
      }
      for (int64_t i = 0; i < n; ++i) inputs[i] = urls[i % urls.size()];
    }
    options.window = absl::GetFlag(FLAGS_window) > 0
                         ? absl::GetFlag(FLAGS_window)
                         : static_cast<size_t>(n);
    options.chunksize = std::max<int64_t>(1, absl::GetFlag(FLAGS_chunksize));
    const absl::Duration took = RunMap(
        **ex, workload == "sleeps" ? "sys.sleep" : "http.get", inputs, options);
    if (took < absl::ZeroDuration()) return 1;
    std::printf("RESULT system=%s measure=%s_%lld unit=s value=%.3f%s\n",
                label.c_str(), workload.c_str(), static_cast<long long>(n),
                absl::ToDoubleSeconds(took),
                options.chunksize > 1
                    ? absl::StrCat(" chunksize=", options.chunksize).c_str()
                    : "");
    return 0;
  }
  if (workload == "chunked_map") {
    const int64_t chunksize = absl::GetFlag(FLAGS_chunksize) > 0
                                  ? absl::GetFlag(FLAGS_chunksize)
                                  : 1000;
    std::vector<std::string> inputs(n, std::string());
    options.chunksize = chunksize;
    options.jobs_per_message = 16;
    options.window = absl::GetFlag(FLAGS_window) > 0
                         ? absl::GetFlag(FLAGS_window)
                         : static_cast<size_t>(chunksize * 64);
    const absl::Duration took = RunMap(**ex, "sys.echo", inputs, options);
    if (took < absl::ZeroDuration()) return 1;
    std::printf(
        "RESULT system=%s measure=chunked_map unit=items/s value=%.0f "
        "n=%lld chunksize=%lld\n",
        label.c_str(), n / absl::ToDoubleSeconds(took),
        static_cast<long long>(n), static_cast<long long>(chunksize));
    return 0;
  }
  if (workload == "memory") {
    const int64_t pid = absl::GetFlag(FLAGS_worker_pid);
    const int64_t before = RssBytes(pid);
    std::vector<dexec::Future<std::string>> futures;
    futures.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      futures.push_back((*ex)->Submit("sys.sleep", std::string("6000")));
    }
    // Until every one runs (suspended at the worker), then measure.
    for (auto& f : futures) {
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      while (!f.Running() && !f.Done() && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(5));  // the RUNNING event comes
      }
    }
    const int64_t during = RssBytes(pid);
    for (auto& f : futures) (void)f.Result(absl::Seconds(60));
    std::printf(
        "RESULT system=%s measure=memory_per_suspended_task unit=bytes "
        "value=%lld n=%lld rss_before=%lld rss_during=%lld\n",
        label.c_str(), static_cast<long long>((during - before) / n),
        static_cast<long long>(n), static_cast<long long>(before),
        static_cast<long long>(during));
    return 0;
  }
  std::fprintf(stderr, "shapes_bench: unknown --workload=%s\n",
               workload.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return Main();
}
