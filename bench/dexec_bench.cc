// dexec_bench: runs one benchmark workload against a running dexec broker
// and prints RESULT lines in the format of the peer benchmarks
// (/work/shared/bench-peers/common.py), so bench/report.py can put dexec and
// the peers in one table. bench/run.sh starts the broker and the workers;
// this binary only measures. See bench/README.md for what each workload is.
//
//   dexec_bench --broker=127.0.0.1:50051 --workload=noop_map --n=100000
//
// Credentials: every call carries the broker's bearer token (--token_file,
// else the client library's lookup: $DEXEC_TOKEN, $DEXEC_TOKEN_FILE,
// ./dexec-data/client.token), over TLS if --tls_ca is given; an --insecure
// broker ignores the token.
//
//   dexec_bench --token_file=DIR/client.token --workload=latency
//
// Two workloads start brokers themselves, given --broker_bin: `restart`
// (it needs the broker's exact start time and its stdout) and
// `queue_memory` (a fresh broker per run). They give the broker an
// --auth_dir (--auth_dir, or a fresh directory of their own) and read its
// client.token once it is listening; with --insecure the broker runs
// --insecure instead. The broker runs as this process's child, is stopped
// by PID, and dies with it (PR_SET_PDEATHSIG) if this process is killed.
//
// Exit code 0 on success; 1 (with a message on stderr) if the broker is not
// reachable or a job fails.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/client_credentials.h"
#include "client/executor.h"
#include "client/future.h"
#include "client/options.h"
#include "common/mutex.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "protos/dexec.grpc.pb.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:50051", "host:port of the broker");
ABSL_FLAG(std::string, workload, "",
          "noop_map | noop_submit | latency | sleep | cpu | queue_memory | "
          "restart | wait_workers");
ABSL_FLAG(int64_t, n, -1,
          "jobs per run; -1 means the workload's default (noop_*: 100000, "
          "latency: 10000, sleep: 10, queue_memory and restart: 1000000; "
          "wait_workers: the number of workers to wait for)");
ABSL_FLAG(int, runs, 3, "repetitions; RESULT reports median/min/max");
ABSL_FLAG(int, ms, 1000, "sleep: milliseconds per sys.sleep job");
ABSL_FLAG(int, warmup, 1000, "no-op jobs run before timing");
ABSL_FLAG(int64_t, window, 10000, "noop_map: MapOptions::window");
ABSL_FLAG(int64_t, chunksize, 256,
          "noop_map: jobs per submit message (MapOptions::jobs_per_message)");
ABSL_FLAG(int64_t, batch, 1000, "queue_memory: jobs per Submit RPC");
ABSL_FLAG(int, broker_pid, 0,
          "queue_memory without --broker_bin: PID of --broker (for VmRSS)");
ABSL_FLAG(std::string, label, "dexec", "system= field of the RESULT lines");
ABSL_FLAG(std::string, extra, "",
          "extra key=value fields appended to every RESULT line");
ABSL_FLAG(int, timeout_s, 120,
          "wait_workers, restart, queue_memory: deadline of each wait, in "
          "seconds");
ABSL_FLAG(std::string, broker_bin, "",
          "restart, queue_memory: the dexec-broker binary to start (restart: "
          "durable, on --data_dir; queue_memory: a fresh --in_memory broker "
          "per run)");
ABSL_FLAG(std::string, data_dir, "",
          "restart: the broker's --data_dir; must not hold a journal yet");
ABSL_FLAG(std::string, broker_log, "/dev/null",
          "restart, queue_memory: file the started broker's stderr is "
          "appended to");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token of --broker (a broker writes its "
          "admin token to <auth_dir>/client.token); empty = $DEXEC_TOKEN, "
          "$DEXEC_TOKEN_FILE, then ./dexec-data/client.token");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA of --broker's TLS certificate (<auth_dir>/tls/ca.pem for "
          "a broker's generated one); empty = $DEXEC_TLS_CA, else plaintext");
ABSL_FLAG(std::string, auth_dir, "",
          "restart, queue_memory: --auth_dir of the brokers started; empty = "
          "a fresh directory under /tmp, removed at exit");
ABSL_FLAG(bool, insecure, false,
          "restart, queue_memory: start the brokers with --insecure (no "
          "token, no CURVE)");

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
  std::string line =
      absl::StrCat("RESULT system=", absl::GetFlag(FLAGS_label),
                   " measure=", measure, " unit=", unit, " median=", fmt(med),
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

double Seconds(absl::Time t0) {
  return absl::ToDoubleSeconds(absl::Now() - t0);
}

// How this process reaches --broker: the token file and CA of the flags.
auth::ClientAuthOptions FlagAuth() {
  auth::ClientAuthOptions auth;
  auth.token_file = absl::GetFlag(FLAGS_token_file);
  auth.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  return auth;
}

// A raw stub for the calls the Executor does not offer (GetJobs,
// ListWorkers, GetStats, unary Submit), with the same credentials.
absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> NewBrokerStub(
    const std::string& address, const auth::ClientAuthOptions& auth) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      auth::MakeBrokerChannel(address, auth, grpc::ChannelArguments());
  if (!channel.ok()) return channel.status();
  return v1::Broker::NewStub(*channel);
}

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
  opts.jobs_per_message = absl::GetFlag(FLAGS_chunksize);
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
                           " chunksize=", opts.jobs_per_message));
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

// Where a round trip's time goes, from the job records of one latency run:
// client Submit -> the broker took the job (its submitted_at), -> the worker
// started it, -> the worker finished it (the run), -> the client had the
// result. Every clock is this host's: the workload runs on one machine.
struct RoundTripParts {
  std::vector<double> submit, dispatch, run, ret;  // microseconds
};

absl::Status AddRoundTripParts(v1::Broker::Stub& stub,
                               const std::vector<uint64_t>& ids,
                               const std::vector<absl::Time>& sent,
                               const std::vector<absl::Time>& done,
                               RoundTripParts* parts) {
  constexpr size_t kChunk = 1000;
  for (size_t i = 0; i < ids.size(); i += kChunk) {
    v1::GetJobsRequest req;
    for (size_t j = i; j < std::min(ids.size(), i + kChunk); ++j) {
      req.add_job_ids(ids[j]);
    }
    v1::GetJobsResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    grpc::Status s = stub.GetJobs(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "GetJobs for the latency breakdown: ", s.error_message()));
    }
    for (int k = 0; k < resp.jobs_size(); ++k) {
      const v1::Job& job = resp.jobs(k);
      if (job.attempt_log_size() != 1) continue;  // retried: not a clean trip
      const size_t j = i + static_cast<size_t>(k);
      const absl::Time accepted = FromProto(job.submitted_at());
      const absl::Time started = FromProto(job.attempt_log(0).started_at());
      const absl::Time ended = FromProto(job.attempt_log(0).ended_at());
      parts->submit.push_back(absl::ToDoubleMicroseconds(accepted - sent[j]));
      parts->dispatch.push_back(absl::ToDoubleMicroseconds(started - accepted));
      parts->run.push_back(absl::ToDoubleMicroseconds(ended - started));
      parts->ret.push_back(absl::ToDoubleMicroseconds(done[j] - ended));
    }
  }
  return absl::OkStatus();
}

absl::Status Latency(Executor& ex, int64_t n) {
  absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> stub =
      NewBrokerStub(absl::GetFlag(FLAGS_broker), FlagAuth());
  if (!stub.ok()) return stub.status();
  std::vector<double> p50s, p99s;
  std::vector<double> submit50s, dispatch50s, run50s, return50s;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    std::vector<double> samples;
    std::vector<uint64_t> ids;
    std::vector<absl::Time> sent, done;
    samples.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      const absl::Time t0 = absl::Now();
      Future<std::string> f = ex.Submit("sys.echo", absl::StrCat(i));
      absl::StatusOr<std::string> r = f.Result();
      const absl::Time t1 = absl::Now();
      samples.push_back(absl::ToDoubleMicroseconds(t1 - t0));
      if (!r.ok()) return r.status();
      absl::StatusOr<uint64_t> id = f.JobId();
      if (!id.ok()) return id.status();
      ids.push_back(*id);
      sent.push_back(t0);
      done.push_back(t1);
    }
    p50s.push_back(Percentile(samples, 50));
    p99s.push_back(Percentile(samples, 99));
    // After the timed loop: the queries cost the round trips nothing.
    RoundTripParts parts;
    absl::Status s = AddRoundTripParts(**stub, ids, sent, done, &parts);
    if (!s.ok()) return s;
    if (parts.submit.empty()) continue;
    submit50s.push_back(Percentile(parts.submit, 50));
    dispatch50s.push_back(Percentile(parts.dispatch, 50));
    run50s.push_back(Percentile(parts.run, 50));
    return50s.push_back(Percentile(parts.ret, 50));
  }
  const std::string extra = absl::StrCat("samples_per_run=", n);
  PrintResult("latency_p50", "us", p50s, extra);
  PrintResult("latency_p99", "us", p99s, extra);
  // The p50 of each part, per run (parts' medians need not add up to the
  // round trip's median exactly).
  if (!submit50s.empty()) {
    PrintResult("latency_part_submit_p50", "us", submit50s,
                "what=client_Submit_to_broker_accepted");
    PrintResult("latency_part_dispatch_p50", "us", dispatch50s,
                "what=broker_accepted_to_worker_started");
    PrintResult("latency_part_run_p50", "us", run50s,
                "what=worker_started_to_finished");
    PrintResult("latency_part_return_p50", "us", return50s,
                "what=worker_finished_to_client_has_result");
  }
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
  const std::string secs =
      ms % 1000 == 0 ? absl::StrCat(ms / 1000) : absl::StrCat(ms / 1000.0);
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
  PrintResult(
      "cpu_16x0.25s", "s", walls,
      absl::StrFormat("serial_s_median=%.3f speedup_median=%.2f "
                      "speedup_min=%.2f speedup_max=%.2f "
                      "speedup_runs=%s",
                      kJobs * kSpinUs / 1e6, Median(speedups),
                      *std::min_element(speedups.begin(), speedups.end()),
                      *std::max_element(speedups.begin(), speedups.end()),
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

// Submits `n` sys.sleep jobs (1 s, so that they stay queued if a worker
// shows up) through the unary Submit RPC in batches of `batch`.
absl::Status SubmitQueued(v1::Broker::Stub& stub, int64_t n, int64_t batch) {
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
    grpc::Status s = stub.Submit(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "Submit RPC failed after ", done, " jobs: ", s.error_message()));
    }
  }
  return absl::OkStatus();
}

// A dexec-broker run as this process's child, for the restart workload:
// started with its stdout on a pipe (to see the "listening" line the moment
// it is printed) and stopped by PID. The destructor SIGKILLs and reaps it if
// Stop() was not called; PR_SET_PDEATHSIG does the same if we die.
class ChildBroker {
 public:
  ChildBroker() = default;
  ChildBroker(const ChildBroker&) = delete;
  ChildBroker& operator=(const ChildBroker&) = delete;
  ~ChildBroker() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }

  // Forks and execs `argv` (argv[0] is the binary), stderr appended to
  // `log_path`.
  absl::Status Start(const std::vector<std::string>& argv,
                     const std::string& log_path) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
      return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
    }
    const int log_fd =
        open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      close(pipe_fds[0]);
      close(pipe_fds[1]);
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot open --broker_log=", log_path, ": ", strerror(errno)));
    }
    // Everything the child needs is prepared before fork: between fork and
    // exec a multi-threaded process may only make async-signal-safe calls.
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(pipe_fds[0]);
      close(pipe_fds[1]);
      close(log_fd);
      return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      dup2(pipe_fds[1], STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    close(pipe_fds[1]);
    close(log_fd);
    pid_ = pid;
    out_fd_ = pipe_fds[0];
    return absl::OkStatus();
  }

  // Reads the broker's stdout until its "dexec-broker listening" line;
  // returns the gRPC address from it.
  absl::StatusOr<std::string> WaitListening(absl::Time deadline) {
    std::string buf;
    while (true) {
      const size_t nl = buf.find('\n');
      if (nl != std::string::npos) {
        const std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        constexpr absl::string_view kPrefix = "dexec-broker listening grpc=";
        if (absl::StartsWith(line, kPrefix)) {
          std::string addr(line.substr(kPrefix.size()));
          return addr.substr(0, addr.find(' '));
        }
        continue;
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(
            "the broker printed no 'dexec-broker listening' line in time "
            "(see --broker_log)");
      }
      pollfd p = {out_fd_, POLLIN, 0};
      const int ready =
          poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (ready < 0 && errno != EINTR) {
        return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
      }
      if (ready <= 0) continue;
      char chunk[4096];
      const ssize_t got = read(out_fd_, chunk, sizeof(chunk));
      if (got == 0) {
        return absl::UnavailableError(
            "the broker exited before it was listening (see --broker_log)");
      }
      if (got > 0) buf.append(chunk, got);
    }
  }

  // SIGTERM, then waits for the exit (SIGKILL after `grace`). OK if the
  // broker exited 0 within the grace.
  absl::Status Stop(absl::Duration grace) {
    if (pid_ <= 0) return absl::OkStatus();
    // A pidfd becomes readable when the process exits: the wait ends at the
    // exit, not at the next poll of waitpid.
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + grace;
    int status = 0;
    pid_t r = 0;
    while ((r = waitpid(pid_, &status, WNOHANG)) == 0 &&
           absl::Now() < deadline) {
      if (pidfd >= 0) {
        pollfd p = {pidfd, POLLIN, 0};
        poll(&p, 1,
             static_cast<int>(
                 absl::ToInt64Milliseconds(deadline - absl::Now())) +
                 1);
      } else {
        absl::SleepFor(absl::Milliseconds(1));  // kernel without pidfd_open
      }
    }
    if (pidfd >= 0) close(pidfd);
    if (r == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = 0;
      return absl::DeadlineExceededError(
          absl::StrCat("the broker did not exit within ",
                       absl::FormatDuration(grace), " of SIGTERM; killed it"));
    }
    pid_ = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat("the broker exited with status ",
                                              status, " after SIGTERM"));
    }
    return absl::OkStatus();
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = 0;
  int out_fd_ = -1;
};

// The credentials of the brokers this process starts (restart,
// queue_memory): --insecure, or an --auth_dir whose client.token is read
// once the broker is listening (the broker writes it before that). A
// directory made here because --auth_dir was empty is removed by the
// destructor. Not thread-safe; one per workload.
class ChildBrokerAuth {
 public:
  ChildBrokerAuth() = default;
  ChildBrokerAuth(const ChildBrokerAuth&) = delete;
  ChildBrokerAuth& operator=(const ChildBrokerAuth&) = delete;
  ~ChildBrokerAuth() {
    if (scratch_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(scratch_, ignored);
  }

  // Reads --insecure and --auth_dir; makes the scratch directory if needed.
  absl::Status Init() {
    insecure_ = absl::GetFlag(FLAGS_insecure);
    if (insecure_) return absl::OkStatus();
    dir_ = absl::GetFlag(FLAGS_auth_dir);
    if (!dir_.empty()) return absl::OkStatus();
    std::string tmpl = "/tmp/dexec-bench-auth.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      return absl::InternalError(
          absl::StrCat("cannot make a directory for the broker's --auth_dir (",
                       tmpl, "): ", strerror(errno), "; pass --auth_dir"));
    }
    dir_ = scratch_ = tmpl;
    return absl::OkStatus();
  }

  // The broker flags: --insecure or --auth_dir=DIR.
  std::string BrokerFlag() const {
    return insecure_ ? "--insecure" : absl::StrCat("--auth_dir=", dir_);
  }

  // How to call the broker once it is listening.
  auth::ClientAuthOptions ClientAuth() const {
    auth::ClientAuthOptions auth;
    if (!insecure_) auth.token_file = absl::StrCat(dir_, "/client.token");
    return auth;
  }

 private:
  bool insecure_ = false;
  std::string dir_;
  std::string scratch_;  // made by Init, removed by the destructor
};

// Polls GetStats until it answers with at least `n` queued jobs; returns
// the number seen last.
absl::StatusOr<uint64_t> WaitQueued(const std::string& broker,
                                    const auth::ClientAuthOptions& auth,
                                    uint64_t n, absl::Time deadline) {
  ASSIGN_OR_RETURN(std::unique_ptr<v1::Broker::Stub> stub,
                   NewBrokerStub(broker, auth));
  uint64_t queued = 0;
  std::string last_error = "no answer yet";
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::Stats stats;
    grpc::Status s = stub->GetStats(&ctx, v1::GetStatsRequest(), &stats);
    if (s.ok()) {
      queued = stats.queued();
      if (queued >= n) return queued;
      last_error = absl::StrCat("GetStats shows ", queued, " queued");
    } else {
      last_error = s.error_message();
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("broker ", broker, " did not show ", n,
                   " queued jobs in time; last: ", last_error));
}

// e. Queues `n` sys.sleep jobs with no worker connected, through the unary
// Submit RPC in batches (no futures held, so the client costs nothing per
// job), and reports the submit time and the broker's RSS growth per job.
// With --broker_bin every run starts its own fresh in-memory broker (as
// ChildBroker), so runs do not share an allocator's history; without it,
// runs go to the running --broker (--broker_pid) and accumulate: run k
// measures the growth from k*n to (k+1)*n queued.
absl::Status QueueMemory(const std::string& broker, int64_t n) {
  const std::string bin = absl::GetFlag(FLAGS_broker_bin);
  if (bin.empty() && absl::GetFlag(FLAGS_broker_pid) <= 0) {
    return absl::InvalidArgumentError(
        "queue_memory needs --broker_bin=<dexec-broker> (a fresh broker per "
        "run) or --broker_pid=<PID of the running --broker>");
  }
  const absl::Duration wait = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  const int64_t batch = std::max<int64_t>(1, absl::GetFlag(FLAGS_batch));
  ChildBrokerAuth child_auth;
  if (!bin.empty()) RETURN_IF_ERROR(child_auth.Init());
  std::vector<double> secs, per_job;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    std::optional<ChildBroker> child;
    std::string addr = broker;
    auth::ClientAuthOptions auth = FlagAuth();
    int pid = absl::GetFlag(FLAGS_broker_pid);
    if (!bin.empty()) {
      child.emplace();
      absl::Status s = child->Start(
          {bin, "--listen=127.0.0.1:0", "--http_listen=127.0.0.1:0",
           "--worker_listen=tcp://127.0.0.1:*", "--in_memory",
           child_auth.BrokerFlag()},
          absl::GetFlag(FLAGS_broker_log));
      if (!s.ok()) return s;
      absl::StatusOr<std::string> a = child->WaitListening(absl::Now() + wait);
      if (!a.ok()) return a.status();
      addr = *a;
      auth = child_auth.ClientAuth();
      pid = child->pid();
      // Serving (one GetStats answered) before the baseline is taken.
      absl::StatusOr<uint64_t> q =
          WaitQueued(addr, auth, 0, absl::Now() + wait);
      if (!q.ok()) return q.status();
    }
    absl::StatusOr<int64_t> before = RssBytes(pid);
    if (!before.ok()) return before.status();
    const absl::Time t0 = absl::Now();
    absl::Status s;
    {
      // Closed before Stop: an open connection holds the broker's shutdown
      // for its 2 s grace.
      absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> stub =
          NewBrokerStub(addr, auth);
      if (!stub.ok()) return stub.status();
      s = SubmitQueued(**stub, n, batch);
    }
    if (!s.ok()) return s;
    secs.push_back(Seconds(t0));
    absl::StatusOr<int64_t> after = RssBytes(pid);
    if (!after.ok()) return after.status();
    per_job.push_back(static_cast<double>(*after - *before) / n);
    if (child.has_value()) {
      s = child->Stop(wait);
      if (!s.ok()) return s;
    }
  }
  const std::string tag =
      n % 1000 == 0 ? absl::StrCat(n / 1000, "k") : absl::StrCat(n);
  const std::string fresh = bin.empty() ? " broker=shared" : " broker=fresh";
  PrintResult(absl::StrCat("submit_", tag, "_queued"), "s", secs,
              absl::StrCat("batch=", batch, fresh));
  PrintResult(absl::StrCat("mem_", tag, "_queued"), "bytes/task", per_job,
              absl::StrCat("of=broker_rss", fresh));
  return absl::OkStatus();
}

// g. Restart time with `n` journaled jobs. Starts a durable broker on an
// empty --data_dir, queues `n` jobs with no worker (submit time and RSS per
// job of a durable broker are reported too), SIGTERMs it; then --runs times:
// starts it again on the same journal and times, from just before fork,
// the "listening" line and the first GetStats that shows all `n` queued;
// SIGTERM again (its exit time is reported as well).
absl::Status Restart(int64_t n) {
  const std::string bin = absl::GetFlag(FLAGS_broker_bin);
  const std::string dir = absl::GetFlag(FLAGS_data_dir);
  if (bin.empty() || dir.empty()) {
    return absl::InvalidArgumentError(
        "restart needs --broker_bin=<dexec-broker> and --data_dir=<empty dir>");
  }
  // One --auth_dir for the first broker and every restart: the restarted
  // broker reads the credentials the first one made.
  ChildBrokerAuth child_auth;
  RETURN_IF_ERROR(child_auth.Init());
  const auth::ClientAuthOptions auth = child_auth.ClientAuth();
  const std::vector<std::string> argv = {bin,
                                         "--listen=127.0.0.1:0",
                                         "--http_listen=127.0.0.1:0",
                                         "--worker_listen=tcp://127.0.0.1:*",
                                         absl::StrCat("--data_dir=", dir),
                                         child_auth.BrokerFlag()};
  const std::string log = absl::GetFlag(FLAGS_broker_log);
  const absl::Duration wait = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  const std::string tag =
      n % 1000 == 0 ? absl::StrCat(n / 1000, "k") : absl::StrCat(n);

  {
    ChildBroker broker;
    absl::Status s = broker.Start(argv, log);
    if (!s.ok()) return s;
    absl::StatusOr<std::string> addr = broker.WaitListening(absl::Now() + wait);
    if (!addr.ok()) return addr.status();
    absl::StatusOr<uint64_t> already =
        WaitQueued(*addr, auth, 0, absl::Now() + wait);
    if (!already.ok()) return already.status();
    if (*already != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("--data_dir=", dir, " already holds ", *already,
                       " queued jobs; restart needs an empty journal"));
    }
    absl::StatusOr<int64_t> before = RssBytes(broker.pid());
    if (!before.ok()) return before.status();
    const absl::Time t0 = absl::Now();
    {
      // Closed before the SIGTERM below: an open client connection holds
      // the broker's shutdown for its 2 s grace, which is not what the
      // shutdown figure is about.
      absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> stub =
          NewBrokerStub(*addr, auth);
      if (!stub.ok()) return stub.status();
      s = SubmitQueued(**stub, n,
                       std::max<int64_t>(1, absl::GetFlag(FLAGS_batch)));
      if (!s.ok()) return s;
    }
    const double submit_s = Seconds(t0);
    absl::StatusOr<int64_t> after = RssBytes(broker.pid());
    if (!after.ok()) return after.status();
    const absl::Time t_stop = absl::Now();
    s = broker.Stop(wait);
    if (!s.ok()) return s;
    const double stop_s = Seconds(t_stop);
    PrintResult(
        absl::StrCat("submit_", tag, "_durable"), "s", {submit_s},
        absl::StrCat("batch=", absl::GetFlag(FLAGS_batch), " note=single_run"));
    PrintResult(absl::StrCat("mem_", tag, "_queued_durable"), "bytes/task",
                {static_cast<double>(*after - *before) / n},
                "of=broker_rss note=single_run");
    PrintResult(absl::StrCat("shutdown_", tag, "_queued"), "s", {stop_s},
                "note=single_run what=SIGTERM_to_exit");
  }

  std::vector<double> listening, ready, stops;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    ChildBroker broker;
    const absl::Time t0 = absl::Now();
    absl::Status s = broker.Start(argv, log);
    if (!s.ok()) return s;
    absl::StatusOr<std::string> addr = broker.WaitListening(t0 + wait);
    if (!addr.ok()) return addr.status();
    listening.push_back(Seconds(t0));
    absl::StatusOr<uint64_t> queued = WaitQueued(*addr, auth, n, t0 + wait);
    if (!queued.ok()) return queued.status();
    ready.push_back(Seconds(t0));
    if (*queued != static_cast<uint64_t>(n)) {
      return absl::InternalError(
          absl::StrCat("after the restart GetStats shows ", *queued,
                       " queued jobs, not ", n));
    }
    const absl::Time t_stop = absl::Now();
    s = broker.Stop(wait);
    if (!s.ok()) return s;
    stops.push_back(Seconds(t_stop));
  }
  PrintResult(absl::StrCat("restart_", tag, "_listening"), "s", listening,
              "from=fork");
  PrintResult(absl::StrCat("restart_", tag, "_ready"), "s", ready,
              "from=fork what=first_GetStats_with_all_queued");
  PrintResult(absl::StrCat("shutdown_", tag, "_replayed"), "s", stops,
              "what=SIGTERM_to_exit");
  return absl::OkStatus();
}

// Polls ListWorkers until the broker lists `n` workers (readiness for
// bench/run.sh; registration is not something a client can subscribe to).
absl::Status WaitWorkers(const std::string& broker, int64_t n) {
  ASSIGN_OR_RETURN(std::unique_ptr<v1::Broker::Stub> stub,
                   NewBrokerStub(broker, FlagAuth()));
  const absl::Time deadline =
      absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  int seen = 0;
  std::string last = "no answer yet";
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListWorkersResponse resp;
    grpc::Status s = stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    // A refused token will not get better by waiting.
    if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      return absl::UnauthenticatedError(absl::StrCat(
          "broker ", broker, " refused ListWorkers: ", s.error_message(),
          " (--token_file)"));
    }
    if (s.ok()) {
      seen = resp.workers_size();
      if (seen >= n) return absl::OkStatus();
      last = absl::StrCat("lists ", seen, " workers");
    } else {
      // E.g. a TLS broker called without --tls_ca: UNAVAILABLE, say why.
      last = absl::StrCat("ListWorkers failed: ", s.error_message());
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("broker ", broker, " did not list ", n, " workers within ",
                   absl::GetFlag(FLAGS_timeout_s), " s; last: ", last));
}

absl::Status Run() {
  const std::string broker = absl::GetFlag(FLAGS_broker);
  const std::string workload = absl::GetFlag(FLAGS_workload);
  if (workload == "wait_workers") return WaitWorkers(broker, NOr(1));
  if (workload == "queue_memory") return QueueMemory(broker, NOr(1000000));
  if (workload == "restart") return Restart(NOr(1000000));

  ExecutorOptions options;
  options.broker = broker;
  options.token_file = absl::GetFlag(FLAGS_token_file);
  options.tls_ca = absl::GetFlag(FLAGS_tls_ca);
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
      "restart, wait_workers"));
}

}  // namespace
}  // namespace dexec::bench

int main(int argc, char** argv) {
  dexec::SetMutexDeadlockDetectionForProcess();
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
