// dexec_bench: runs one benchmark workload against a running dexec broker
// and prints RESULT lines in the format of the peer benchmarks
// (/work/shared/bench-peers/common.py), so bench/report.py can put dexec and
// the peers in one table. bench/run.sh starts the broker and the workers;
// this binary only measures. See bench/README.md for what each workload is.
//
//   dexec_bench --broker=127.0.0.1:50051 --workload=noop_map --n=100000
//
// Exit code 0 on success; 1 (with a message on stderr) if the broker is not
// reachable or a job fails.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/executor.h"
#include "client/future.h"
#include "client/options.h"
#include "grpcpp/grpcpp.h"
#include "protos/dexec.grpc.pb.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:50051", "host:port of the broker");
ABSL_FLAG(std::string, workload, "",
          "noop_map | noop_submit | latency | sleep | cpu | queue_memory | "
          "wait_workers");
ABSL_FLAG(int64_t, n, -1,
          "jobs per run; -1 means the workload's default (noop_*: 100000, "
          "latency: 10000, sleep: 10, queue_memory: 1000000; wait_workers: "
          "the number of workers to wait for)");
ABSL_FLAG(int, runs, 3, "repetitions; RESULT reports median/min/max");
ABSL_FLAG(int, ms, 1000, "sleep: milliseconds per sys.sleep job");
ABSL_FLAG(int, warmup, 1000, "no-op jobs run before timing");
ABSL_FLAG(int64_t, window, 10000, "noop_map: MapOptions::window");
ABSL_FLAG(int64_t, chunksize, 256, "noop_map: MapOptions::chunksize");
ABSL_FLAG(int64_t, batch, 1000, "queue_memory: jobs per Submit RPC");
ABSL_FLAG(int, broker_pid, 0, "queue_memory: PID of the broker (for VmRSS)");
ABSL_FLAG(std::string, label, "dexec", "system= field of the RESULT lines");
ABSL_FLAG(std::string, extra, "",
          "extra key=value fields appended to every RESULT line");
ABSL_FLAG(int, timeout_s, 120, "wait_workers / per-run result deadline");

namespace dexec::bench {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t k = v.size();
  if (k == 0) return NAN;
  return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

// Linear interpolation between closest ranks, as common.percentile().
double Percentile(std::vector<double> s, double p) {
  if (s.empty()) return NAN;
  std::sort(s.begin(), s.end());
  const double k = (s.size() - 1) * p / 100.0;
  const size_t lo = static_cast<size_t>(k);
  const size_t hi = std::min(lo + 1, s.size() - 1);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
}

void PrintResult(absl::string_view measure, absl::string_view unit,
                 const std::vector<double>& vals,
                 const std::string& extra = "") {
  const double med = Median(vals);
  // One format for every field of a line, chosen by the median like the
  // peers do, so a line reads consistently.
  auto fmt = [med](double v) {
    return med >= 1000 ? absl::StrFormat("%.0f", v)
                       : absl::StrFormat("%.3f", v);
  };
  std::vector<std::string> runs;
  for (double v : vals) runs.push_back(fmt(v));
  std::string line = absl::StrCat(
      "RESULT system=", absl::GetFlag(FLAGS_label), " measure=", measure,
      " unit=", unit, " median=", fmt(med),
      " min=", fmt(*std::min_element(vals.begin(), vals.end())),
      " max=", fmt(*std::max_element(vals.begin(), vals.end())),
      " runs=", absl::StrJoin(runs, ","));
  if (!extra.empty()) absl::StrAppend(&line, " ", extra);
  if (!absl::GetFlag(FLAGS_extra).empty()) {
    absl::StrAppend(&line, " ", absl::GetFlag(FLAGS_extra));
  }
  std::cout << line << std::endl;
}

int64_t NOr(int64_t dflt) {
  const int64_t n = absl::GetFlag(FLAGS_n);
  return n > 0 ? n : dflt;
}

// "noop_100k", the peers' name for a no-op run of n tasks.
std::string NoopMeasure(int64_t n) {
  return n % 1000 == 0 ? absl::StrCat("noop_", n / 1000, "k")
                       : absl::StrCat("noop_", n);
}

double Seconds(absl::Time t0) { return absl::ToDoubleSeconds(absl::Now() - t0); }

// Runs `count` no-ops through Map so workers, connections and allocators are
// warm before the clock starts (the peers warm up too).
absl::Status Warmup(Executor& ex, int count) {
  if (count <= 0) return absl::OkStatus();
  std::vector<std::string> in(count, "w");
  for (absl::StatusOr<std::string> r : ex.Map("sys.echo", in)) {
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

absl::Status NoopMap(Executor& ex, int64_t n) {
  std::vector<std::string> inputs;
  inputs.reserve(n);
  for (int64_t i = 0; i < n; ++i) inputs.push_back(absl::StrCat(i));
  MapOptions opts;
  opts.window = absl::GetFlag(FLAGS_window);
  opts.chunksize = absl::GetFlag(FLAGS_chunksize);
  std::vector<double> vals;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    const absl::Time t0 = absl::Now();
    int64_t got = 0;
    for (absl::StatusOr<std::string> r : ex.Map("sys.echo", inputs, opts)) {
      if (!r.ok()) return r.status();
      ++got;
    }
    const double dt = Seconds(t0);
    if (got != n) {
      return absl::InternalError(absl::StrCat("map yielded ", got, " of ", n));
    }
    vals.push_back(n / dt);
  }
  PrintResult(NoopMeasure(n), "tasks/s", vals,
              absl::StrCat("api=map window=", opts.window,
                           " chunksize=", opts.chunksize));
  return absl::OkStatus();
}

absl::Status NoopSubmit(Executor& ex, int64_t n) {
  std::vector<double> vals;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    std::vector<Future<std::string>> futures;
    futures.reserve(n);
    const absl::Time t0 = absl::Now();
    for (int64_t i = 0; i < n; ++i) {
      futures.push_back(ex.Submit("sys.echo", absl::StrCat(i)));
    }
    for (auto& f : futures) {
      absl::StatusOr<std::string> r = f.Result();
      if (!r.ok()) return r.status();
    }
    vals.push_back(n / Seconds(t0));
  }
  PrintResult(NoopMeasure(n), "tasks/s", vals, "api=submit");
  return absl::OkStatus();
}

absl::Status Latency(Executor& ex, int64_t n) {
  std::vector<double> p50s, p99s;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    std::vector<double> samples;
    samples.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      const absl::Time t0 = absl::Now();
      absl::StatusOr<std::string> r =
          ex.Submit("sys.echo", absl::StrCat(i)).Result();
      samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
      if (!r.ok()) return r.status();
    }
    p50s.push_back(Percentile(samples, 50));
    p99s.push_back(Percentile(samples, 99));
  }
  const std::string extra = absl::StrCat("samples_per_run=", n);
  PrintResult("latency_p50", "us", p50s, extra);
  PrintResult("latency_p99", "us", p99s, extra);
  return absl::OkStatus();
}

// Submits `n` jobs of `task` with `payload` and waits for all; seconds.
absl::StatusOr<double> Makespan(Executor& ex, absl::string_view task,
                                const std::string& payload, int64_t n) {
  std::vector<Future<std::string>> futures;
  futures.reserve(n);
  const absl::Time t0 = absl::Now();
  for (int64_t i = 0; i < n; ++i) futures.push_back(ex.Submit(task, payload));
  for (auto& f : futures) {
    absl::StatusOr<std::string> r = f.Result();
    if (!r.ok()) return r.status();
  }
  return Seconds(t0);
}

absl::Status Sleep(Executor& ex, int64_t n) {
  const int ms = absl::GetFlag(FLAGS_ms);
  std::vector<double> vals;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    absl::StatusOr<double> s = Makespan(ex, "sys.sleep", absl::StrCat(ms), n);
    if (!s.ok()) return s.status();
    vals.push_back(*s);
  }
  // The peers' names: sleep_10x1s, sleep_1000x0.1s.
  const std::string secs = ms % 1000 == 0 ? absl::StrCat(ms / 1000)
                                          : absl::StrCat(ms / 1000.0);
  PrintResult(absl::StrCat("sleep_", n, "x", secs, "s"), "s", vals);
  return absl::OkStatus();
}

absl::Status Cpu(Executor& ex) {
  constexpr int kJobs = 16;
  constexpr int kSpinUs = 250000;
  std::vector<double> walls, speedups;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    absl::StatusOr<double> s =
        Makespan(ex, "bench.spin", absl::StrCat(kSpinUs), kJobs);
    if (!s.ok()) return s.status();
    walls.push_back(*s);
    speedups.push_back(kJobs * kSpinUs / 1e6 / *s);
  }
  std::vector<std::string> sp;
  for (double v : speedups) sp.push_back(absl::StrFormat("%.2f", v));
  PrintResult("cpu_16x0.25s", "s", walls,
              absl::StrFormat("serial_s_median=%.3f speedup_median=%.2f "
                              "speedup_min=%.2f speedup_max=%.2f "
                              "speedup_runs=%s",
                              kJobs * kSpinUs / 1e6, Median(speedups),
                              *std::min_element(speedups.begin(),
                                                speedups.end()),
                              *std::max_element(speedups.begin(),
                                                speedups.end()),
                              absl::StrJoin(sp, ",")));
  return absl::OkStatus();
}

// VmRSS of `pid` in bytes, from /proc/<pid>/status.
absl::StatusOr<int64_t> RssBytes(int pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    int64_t kb = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits.push_back(c);
    }
    if (!absl::SimpleAtoi(digits, &kb)) break;
    return kb * 1024;
  }
  return absl::InternalError(absl::StrCat("no VmRSS line in ", path));
}

// Queues `n` sys.sleep jobs with no worker connected, through the unary
// Submit RPC in batches (no futures held, so the client costs nothing per
// job), and reports the submit time and the broker's RSS growth per job.
// Runs accumulate: run k measures the growth from k*n to (k+1)*n queued.
absl::Status QueueMemory(const std::string& broker, int64_t n) {
  const int pid = absl::GetFlag(FLAGS_broker_pid);
  if (pid <= 0) {
    return absl::InvalidArgumentError(
        "queue_memory needs --broker_pid=<PID of dexec-broker>");
  }
  std::unique_ptr<v1::Broker::Stub> stub = v1::Broker::NewStub(
      grpc::CreateChannel(broker, grpc::InsecureChannelCredentials()));
  const int64_t batch = std::max<int64_t>(1, absl::GetFlag(FLAGS_batch));
  std::vector<double> secs, per_job;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    absl::StatusOr<int64_t> before = RssBytes(pid);
    if (!before.ok()) return before.status();
    const absl::Time t0 = absl::Now();
    for (int64_t done = 0; done < n; done += batch) {
      v1::SubmitRequest req;
      for (int64_t i = done; i < std::min(n, done + batch); ++i) {
        v1::JobSpec* job = req.add_jobs();
        job->set_task("sys.sleep");
        job->set_payload("1000");
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
      v1::SubmitResponse resp;
      grpc::Status s = stub->Submit(&ctx, req, &resp);
      if (!s.ok()) {
        return absl::UnavailableError(absl::StrCat(
            "Submit RPC failed after ", done, " jobs: ", s.error_message()));
      }
    }
    secs.push_back(Seconds(t0));
    absl::StatusOr<int64_t> after = RssBytes(pid);
    if (!after.ok()) return after.status();
    per_job.push_back(static_cast<double>(*after - *before) / n);
  }
  const std::string tag = n % 1000 == 0 ? absl::StrCat(n / 1000, "k")
                                        : absl::StrCat(n);
  PrintResult(absl::StrCat("submit_", tag, "_queued"), "s", secs,
              absl::StrCat("batch=", batch));
  PrintResult(absl::StrCat("mem_", tag, "_queued"), "bytes/task", per_job,
              "of=broker_rss");
  return absl::OkStatus();
}

// Polls ListWorkers until the broker lists `n` workers (readiness for
// bench/run.sh; registration is not something a client can subscribe to).
absl::Status WaitWorkers(const std::string& broker, int64_t n) {
  std::unique_ptr<v1::Broker::Stub> stub = v1::Broker::NewStub(
      grpc::CreateChannel(broker, grpc::InsecureChannelCredentials()));
  const absl::Time deadline =
      absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  int seen = -1;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListWorkersResponse resp;
    grpc::Status s = stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    seen = s.ok() ? resp.workers_size() : -1;
    if (seen >= n) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("broker ", broker, " lists ", seen, " workers, expected ",
                   n, " within ", absl::GetFlag(FLAGS_timeout_s), " s"));
}

absl::Status Run() {
  const std::string broker = absl::GetFlag(FLAGS_broker);
  const std::string workload = absl::GetFlag(FLAGS_workload);
  if (workload == "wait_workers") return WaitWorkers(broker, NOr(1));
  if (workload == "queue_memory") return QueueMemory(broker, NOr(1000000));

  ExecutorOptions options;
  options.broker = broker;
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
  if (!ex.ok()) return ex.status();
  absl::Status s = Warmup(**ex, absl::GetFlag(FLAGS_warmup));
  if (!s.ok()) return s;
  if (workload == "noop_map") return NoopMap(**ex, NOr(100000));
  if (workload == "noop_submit") return NoopSubmit(**ex, NOr(100000));
  if (workload == "latency") return Latency(**ex, NOr(10000));
  if (workload == "sleep") return Sleep(**ex, NOr(10));
  if (workload == "cpu") return Cpu(**ex);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown --workload='", workload,
      "'; one of noop_map, noop_submit, latency, sleep, cpu, queue_memory, "
      "wait_workers"));
}

}  // namespace
}  // namespace dexec::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs one benchmark workload against a running dexec broker and prints "
      "RESULT lines. See bench/README.md.");
  absl::ParseCommandLine(argc, argv);
  absl::Status s = dexec::bench::Run();
  if (!s.ok()) {
    std::cerr << "dexec_bench: " << s << std::endl;
    return 1;
  }
  return 0;
}
