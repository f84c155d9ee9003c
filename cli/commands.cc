#include "cli/commands.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/secret_file.h"
#include "cli/render.h"
#include "cli/table.h"
#include "client/executor.h"
#include "common/backoff.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "protos/error_kind.h"
#include "protos/tasks.pb.h"

namespace dexec::cli {
namespace {

// Unary calls answer from the broker's loop at once; this only bounds a
// broker that accepted the connection and then hung.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
// Longest error text in a table cell; `status --json` has the whole text.
constexpr size_t kMaxCellChars = 100;
// Queries over a broker restart: delays between attempts to reach it again.
constexpr absl::Duration kReconnectInitial = absl::Milliseconds(50);
constexpr absl::Duration kReconnectMax = absl::Seconds(2);

// The state as printed; an id the broker does not know has no state.
std::string StateName(v1::Job::State s) {
  if (s == v1::Job::STATE_UNSPECIFIED) return "NOT_FOUND";
  return v1::Job::State_Name(s);
}

std::string Truncate(std::string s, size_t max) {
  if (s.size() > max) {
    s.resize(max - 3);
    s += "...";
  }
  return s;
}

std::string ErrorText(const v1::JobError& e) {
  if (e.kind().empty()) return e.message();
  return absl::StrCat(e.kind(), ": ", e.message());
}

// Today's times as 15:04:05.123, older ones with their date.
std::string FormatTime(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  const absl::Time t = FromProto(ts);
  const absl::TimeZone tz = absl::LocalTimeZone();
  if (absl::FormatTime("%Y-%m-%d", t, tz) ==
      absl::FormatTime("%Y-%m-%d", now, tz)) {
    return absl::FormatTime("%H:%M:%E3S", t, tz);
  }
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", t, tz);
}

// "0.4s ago", "42s ago", "3m5s ago", "2h10m ago".
std::string FormatAge(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  absl::Duration age = now - FromProto(ts);
  if (age < absl::ZeroDuration()) age = absl::ZeroDuration();
  if (age < absl::Seconds(10)) {
    return absl::StrFormat("%.1fs ago", absl::ToDoubleSeconds(age));
  }
  const int64_t s = absl::ToInt64Seconds(age);
  if (s < 60) return absl::StrCat(s, "s ago");
  if (s < 3600) return absl::StrCat(s / 60, "m", s % 60, "s ago");
  return absl::StrCat(s / 3600, "h", (s % 3600) / 60, "m ago");
}

void PrintJson(const google::protobuf::Message& m, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = false;
  std::string line;
  // Our own messages always convert; a failure would be our bug.
  (void)google::protobuf::util::MessageToJsonString(m, &line, options);
  out << line << '\n';
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// Reports a failed call to the broker: exit 2 if the broker went away
// (usage-level trouble: nothing about the jobs is known), else 1.
int RpcFailed(const ParsedCommand& cmd, absl::string_view what,
              const grpc::Status& s, std::ostream& err) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    err << "dexec: cannot reach broker at " << cmd.broker << ": "
        << s.error_message() << "\n";
    return kExitUsage;
  }
  if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    // Credentials are usage-level trouble: nothing about the jobs is known.
    err << "dexec: " << what << " refused: " << s.error_message() << "\n";
    return kExitUsage;
  }
  err << "dexec: " << what << " failed: " << s.error_message() << "\n";
  return kExitFailed;
}

absl::StatusOr<std::string> ReadAll(std::istream& in) {
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError("read error");
  return data;
}

absl::StatusOr<std::string> ReadPayloadFile(const std::string& path,
                                            std::istream& in) {
  if (path == "-") return ReadAll(in);
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("cannot read --payload_file '", path, "'"));
  }
  return ReadAll(file);
}

v1::JobSpec SpecOf(const ParsedCommand& cmd, std::string task,
                   std::string payload) {
  v1::JobSpec spec;
  spec.set_task(std::move(task));
  spec.set_payload(std::move(payload));
  spec.set_priority(cmd.priority);
  if (cmd.timeout.has_value()) ToProto(*cmd.timeout, spec.mutable_timeout());
  spec.set_max_attempts(cmd.max_attempts);
  spec.set_idempotency_key(cmd.idempotency_key);
  return spec;
}

// Submits one job with the unary RPC. On failure, reports it on `err` and
// returns the exit code in the error's place.
std::variant<uint64_t, int> SubmitOne(const ParsedCommand& cmd,
                                      v1::Broker::Stub& broker,
                                      v1::JobSpec spec, std::ostream& err) {
  v1::SubmitRequest req;
  *req.add_jobs() = std::move(spec);
  v1::SubmitResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  grpc::Status s = broker.Submit(&ctx, req, &resp);
  if (!s.ok()) return RpcFailed(cmd, "submit", s, err);
  if (resp.job_ids_size() != 1) {
    err << "dexec: the broker answered the submit without a job id\n";
    return kExitFailed;
  }
  return resp.job_ids(0);
}

grpc::Status GaveUp(absl::Time outage_start, absl::Duration reconnect_timeout,
                    const grpc::Status& last) {
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      absl::StrCat(
          "the broker was unreachable for ",
          absl::FormatDuration(
              absl::Trunc(absl::Now() - outage_start, absl::Milliseconds(1))),
          "; gave up after --reconnect_timeout=",
          absl::FormatDuration(reconnect_timeout), " (last error: ",
          last.ok() ? "the broker ended the session" : last.error_message(),
          ")"));
}

// Jobs by id, in order, over as many GetJobs calls as the broker's
// response budget needs (it answers a prefix and sets `truncated`).
grpc::Status GetAllJobs(
    v1::Broker::Stub& broker, const std::vector<uint64_t>& ids,
    bool include_result,
    const std::function<grpc::Status(
        const std::function<grpc::Status(grpc::ClientContext*)>&)>& call,
    std::vector<v1::Job>* jobs) {
  size_t next = 0;
  do {
    v1::GetJobsRequest req;
    req.set_include_result(include_result);
    req.mutable_job_ids()->Add(ids.begin() + next, ids.end());
    v1::GetJobsResponse resp;
    grpc::Status s = call([&](grpc::ClientContext* ctx) {
      resp.Clear();
      return broker.GetJobs(ctx, req, &resp);
    });
    if (!s.ok()) return s;
    if (resp.jobs_size() == 0 && next < ids.size()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "the broker answered GetJobs without any job");
    }
    next += resp.jobs_size();
    for (v1::Job& j : *resp.mutable_jobs()) jobs->push_back(std::move(j));
  } while (next < ids.size());
  return grpc::Status::OK;
}

// Runs a read-only unary call, again with backoff while the broker is
// unreachable, for up to `reconnect_timeout`. Only for calls that are safe
// to repeat (queries), never for Submit.
grpc::Status CallRetryingUnavailable(
    absl::Duration reconnect_timeout,
    const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  dexec::Backoff backoff(kReconnectInitial, kReconnectMax);
  const absl::Time start = absl::Now();
  for (;;) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kRpcTimeout);
    grpc::Status s = call(&ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
    const absl::Time now = absl::Now();
    if (now - start >= reconnect_timeout) {
      return GaveUp(start, reconnect_timeout, s);
    }
    absl::SleepFor(std::min(backoff.Next(), start + reconnect_timeout - now));
  }
}

// An Executor's error as the CLI reports it: the library names its option,
// the user set the flag.
grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(
      static_cast<grpc::StatusCode>(s.code()),
      absl::StrReplaceAll(s.message(), {{"ExecutorOptions::reconnect_timeout",
                                         "--reconnect_timeout"}}));
}

ExecutorOptions ExecutorOptionsFor(const ParsedCommand& cmd,
                                   absl::Duration connect_timeout) {
  ExecutorOptions options;
  options.broker = cmd.broker;
  options.token = cmd.auth.token;
  options.token_file = cmd.auth.token_file;
  options.tls_ca = cmd.auth.tls_ca;
  options.tls_cert = cmd.auth.tls_cert;
  options.tls_key = cmd.auth.tls_key;
  options.tls_server_name = cmd.auth.tls_server_name;
  options.connect_timeout = connect_timeout;
  options.reconnect_timeout = cmd.reconnect_timeout;
  return options;
}

// Jobs waited on through the client library: Executor::Attach, then Wait.
// The Session stream, its reconnects over a broker restart (with backoff,
// for up to --reconnect_timeout) and the re-watching of unfinished ids are
// the Executor's (client/session.h), as for `map`. Closing does not wait
// for futures still pending (after --timeout); the Executor's destructor
// alone would.
class Waiter {
 public:
  // main() has just reached the broker; one that went away since is waited
  // for like a restart.
  static absl::StatusOr<Waiter> Connect(const ParsedCommand& cmd) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<Executor> executor,
        Executor::Connect(ExecutorOptionsFor(
            cmd, std::max(kConnectTimeout, cmd.reconnect_timeout))));
    return Waiter(std::move(executor));
  }
  Waiter(Waiter&&) = default;
  ~Waiter() {
    if (executor_ != nullptr) executor_->Shutdown(/*wait=*/false);
  }

  Future<std::string> Attach(uint64_t id) { return executor_->Attach(id); }

 private:
  explicit Waiter(std::unique_ptr<Executor> executor)
      : executor_(std::move(executor)) {}
  std::unique_ptr<Executor> executor_;
};

// A done future's failure that says nothing about the job (no error kind):
// the broker stayed away past --reconnect_timeout, or refused the token.
bool IsConnectionFailure(const absl::Status& s) {
  return !s.ok() && ErrorKind(s).empty();
}

// The state `wait` prints: the outcome once done, else what the broker
// pushed last (RUNNING), or QUEUED before any event.
v1::Job::State StateOf(const Future<std::string>& f) {
  if (!f.Done()) return f.Running() ? v1::Job::RUNNING : v1::Job::QUEUED;
  const absl::Status s = f.Exception(absl::ZeroDuration());
  if (s.ok()) return v1::Job::SUCCEEDED;
  const std::string kind = ErrorKind(s);
  if (kind == error_kind::kCancelled) return v1::Job::CANCELLED;
  // Unknown to the broker, or lost by one restarted without its journal.
  if (kind == error_kind::kNotFound) return v1::Job::STATE_UNSPECIFIED;
  return v1::Job::FAILED;
}

// How one job ended: OK, or its error ("<kind>: <message>"), and whatever
// result bytes it left (a failed sys.exec keeps its ExecResult).
struct Finished {
  absl::Status status;
  std::string result;
};

// Waits for one job; on trouble reports it and returns the exit code.
std::variant<Finished, int> WaitForOne(const ParsedCommand& cmd, uint64_t id,
                                       std::ostream& err) {
  absl::StatusOr<Waiter> waiter = Waiter::Connect(cmd);
  if (!waiter.ok()) {
    return RpcFailed(cmd, "waiting for the job", ToGrpcStatus(waiter.status()),
                     err);
  }
  Future<std::string> f = waiter->Attach(id);
  Finished done{f.Exception(), ""};
  if (IsConnectionFailure(done.status)) {
    return RpcFailed(cmd, "waiting for the job", ToGrpcStatus(done.status),
                     err);
  }
  absl::StatusOr<std::string> raw = f.RawResult(absl::ZeroDuration());
  if (raw.ok()) done.result = *std::move(raw);
  return done;
}

void PrintJobError(const absl::Status& s, std::ostream& err) {
  err << "error: " << s.message() << "\n";
}

// The table of `status` and `list`.
void PrintJobTable(const std::vector<const v1::Job*>& jobs, std::ostream& out) {
  const absl::Time now = absl::Now();
  Table t({"ID", "STATE", "TASK", "ATTEMPTS", "WORKER", "SUBMITTED", "STARTED",
           "FINISHED", "ERROR/WAITING"});
  for (const v1::Job* j : jobs) {
    std::string why;
    if (j->has_error()) {
      why = ErrorText(j->error());
    } else if (!j->waiting_reason().empty()) {
      why = j->waiting_reason();
    }
    if (j->state() == v1::Job::STATE_UNSPECIFIED) {
      t.AddRow({absl::StrCat(j->id()), StateName(j->state()), "", "", "", "",
                "", "", Truncate(why, kMaxCellChars)});
      continue;
    }
    t.AddRow({absl::StrCat(j->id()), StateName(j->state()), j->task(),
              j->max_attempts() > 0
                  ? absl::StrCat(j->attempts(), "/", j->max_attempts())
                  : absl::StrCat(j->attempts()),
              j->worker().empty() ? "-" : j->worker(),
              FormatTime(j->submitted_at(), now),
              FormatTime(j->started_at(), now),
              FormatTime(j->finished_at(), now), Truncate(why, kMaxCellChars)});
  }
  t.Print(out);
}

void PrintAttemptLog(const v1::Job& j, std::ostream& out) {
  const absl::Time now = absl::Now();
  out << "\nattempts of job " << j.id() << ":\n";
  Table t({"#", "WORKER", "STARTED", "ENDED", "OUTCOME"});
  for (const v1::Attempt& a : j.attempt_log()) {
    t.AddRow({absl::StrCat(a.number()), a.worker(),
              FormatTime(a.started_at(), now), FormatTime(a.ended_at(), now),
              a.outcome().empty() ? "(running)" : a.outcome()});
  }
  t.Print(out);
}

// Job ids of a `map`'s input lines, read lazily: std::getline on demand, so
// a map over millions of lines never holds them all.
class LineRange {
 public:
  // `in` and `lines_read` are borrowed and must outlive the range.
  LineRange(std::istream& in, size_t* lines_read)
      : in_(&in), lines_read_(lines_read) {}

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string*;
    using reference = const std::string&;

    iterator() = default;  // The end.
    const std::string& operator*() const { return line_; }
    iterator& operator++() {
      Read();
      return *this;
    }
    friend bool operator==(const iterator& a, const iterator& b) {
      return a.range_ == nullptr && b.range_ == nullptr;
    }
    friend bool operator!=(const iterator& a, const iterator& b) {
      return !(a == b);
    }

   private:
    friend class LineRange;
    explicit iterator(LineRange* range) : range_(range) { Read(); }
    void Read() {
      if (range_ == nullptr) return;
      if (std::getline(*range_->in_, line_)) {
        ++*range_->lines_read_;
      } else {
        range_ = nullptr;
      }
    }
    LineRange* range_ = nullptr;
    std::string line_;
  };

  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  std::istream* in_;
  size_t* lines_read_;
};

// A one-line progress display on a terminal's stderr, redrawn at most ten
// times a second.
class Progress {
 public:
  Progress(std::ostream& err, bool enabled) : err_(err), enabled_(enabled) {}
  ~Progress() { Clear(); }

  void Update(size_t done, size_t read) {
    if (!enabled_) return;
    const absl::Time now = absl::Now();
    if (now - last_draw_ < absl::Milliseconds(100)) return;
    last_draw_ = now;
    const double secs = absl::ToDoubleSeconds(now - start_);
    err_ << absl::StrFormat("\r\033[Kmap: %d done, %d in flight, %.0f/s", done,
                            read - done, secs > 0 ? done / secs : 0.0)
         << std::flush;
    drawn_ = true;
  }

  void Clear() {
    if (drawn_) err_ << "\r\033[K" << std::flush;
    drawn_ = false;
  }

 private:
  std::ostream& err_;
  const bool enabled_;
  const absl::Time start_ = absl::Now();
  absl::Time last_draw_ = absl::InfinitePast();
  bool drawn_ = false;
};

sigset_t InterruptSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// While alive, takes SIGINT/SIGTERM (blocked by BlockInterruptSignals) on its
// `cli-signals` thread: cancels the executor's queued jobs, so an abandoned
// map does not keep the cluster busy, and exits 130 like a shell would.
// Running jobs are left to finish; waiting for them would make Ctrl-C slow.
class InterruptCancelsMap {
 public:
  // `executor` and `err` are borrowed and outlive this object.
  InterruptCancelsMap(Executor* executor, std::ostream& err, bool err_is_tty)
      : thread_([this, executor, &err, err_is_tty] {
          pthread_setname_np(pthread_self(), "cli-signals");
          sigset_t set = InterruptSignals();
          sigaddset(&set, SIGUSR2);  // Our own wake-up from the destructor.
          int sig = 0;
          sigwait(&set, &sig);
          if (done_.load()) return;
          // Erase a half-drawn progress line first.
          if (err_is_tty) err << "\r\033[K";
          err << "dexec: interrupted; cancelling the queued jobs\n"
              << std::flush;
          executor->Shutdown(/*wait=*/false, /*cancel_futures=*/true);
          std::_Exit(128 + sig);
        }) {}
  InterruptCancelsMap(const InterruptCancelsMap&) = delete;
  InterruptCancelsMap& operator=(const InterruptCancelsMap&) = delete;
  ~InterruptCancelsMap() {
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

void BlockInterruptSignals() {
  sigset_t set = InterruptSignals();
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> ConnectToBroker(
    const std::string& broker, const auth::ClientAuthOptions& auth,
    absl::Duration timeout) {
  grpc::ChannelArguments args;
  // Results and payloads can be up to the broker's limit (64 MiB by
  // default), far past gRPC's 4 MiB default.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // gRPC's own reconnect backoff (1 s growing to 120 s) would keep a
  // waiting command away from a restarted broker; keep it within ours.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(kReconnectInitial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(kReconnectMax)));
  absl::StatusOr<std::shared_ptr<grpc::Channel>> made =
      auth::MakeBrokerChannel(broker, auth, args);
  if (!made.ok()) return made.status();
  std::shared_ptr<grpc::Channel> channel = *std::move(made);
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    // A refused or unresolvable address shows up as TRANSIENT_FAILURE after
    // the first attempt: fail now rather than retrying until the deadline.
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(absl::StrCat(
          "cannot reach broker at ", broker,
          ": connection failed (is dexec-broker running there? set --broker "
          "or DEXEC_BROKER)"));
    }
    if (!channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          absl::StrCat("cannot reach broker at ", broker, ": no answer within ",
                       absl::FormatDuration(timeout)));
    }
    state = channel->GetState(/*try_to_connect=*/true);
  }
  std::unique_ptr<v1::Broker::Stub> stub = v1::Broker::NewStub(channel);
  // One cheap call, so a missing or refused token is one clear line here
  // instead of a verb's failure later.
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  v1::Stats stats;
  const grpc::Status probe =
      stub->GetStats(&ctx, v1::GetStatsRequest(), &stats);
  if (probe.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      probe.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    absl::StatusOr<auth::FoundToken> found = auth::FindClientToken(auth);
    return absl::Status(
        static_cast<absl::StatusCode>(probe.error_code()),
        found.ok()
            ? absl::StrCat("the broker at ", broker, " refused the token from ",
                           found->source, ": ", probe.error_message())
            : std::string(found.status().message()));
  }
  return stub;
}

int Submit(const ParsedCommand& cmd, v1::Broker::Stub& broker, Terminal& term) {
  std::string payload = cmd.payload.value_or("");
  if (cmd.payload_file.has_value()) {
    absl::StatusOr<std::string> data =
        ReadPayloadFile(*cmd.payload_file, term.in);
    if (!data.ok()) {
      term.err << "dexec: " << data.status().message() << "\n";
      return kExitUsage;
    }
    payload = *std::move(data);
  }
  std::variant<uint64_t, int> id = SubmitOne(
      cmd, broker, SpecOf(cmd, cmd.task, std::move(payload)), term.err);
  if (std::holds_alternative<int>(id)) return std::get<int>(id);
  const uint64_t job_id = std::get<uint64_t>(id);
  if (!cmd.wait) {
    term.out << job_id << "\n";
    return kExitOk;
  }
  std::variant<Finished, int> done = WaitForOne(cmd, job_id, term.err);
  if (std::holds_alternative<int>(done)) return std::get<int>(done);
  const Finished& e = std::get<Finished>(done);
  if (!e.status.ok()) {
    PrintJobError(e.status, term.err);
    return kExitFailed;
  }
  term.out << ResultText(cmd.task, e.result) << std::flush;
  return kExitOk;
}

int Exec(const ParsedCommand& cmd, v1::Broker::Stub& broker, Terminal& term) {
  tasks::ExecRequest request;
  request.mutable_argv()->Add(cmd.argv.begin(), cmd.argv.end());
  if (cmd.forward_stdin) {
    absl::StatusOr<std::string> in = ReadAll(term.in);
    if (!in.ok()) {
      term.err << "dexec: cannot read stdin: " << in.status().message() << "\n";
      return kExitUsage;
    }
    request.set_stdin(*std::move(in));
  }
  std::variant<uint64_t, int> id =
      SubmitOne(cmd, broker,
                SpecOf(cmd, "sys.exec", request.SerializeAsString()), term.err);
  if (std::holds_alternative<int>(id)) return std::get<int>(id);
  const uint64_t job_id = std::get<uint64_t>(id);
  if (!cmd.wait) {
    term.out << job_id << "\n";
    return kExitOk;
  }
  std::variant<Finished, int> done = WaitForOne(cmd, job_id, term.err);
  if (std::holds_alternative<int>(done)) return std::get<int>(done);
  const Finished& e = std::get<Finished>(done);

  // A non-zero exit fails the job with kind "exit_code" but keeps the
  // ExecResult as its result, so the output is shown either way.
  tasks::ExecResult result;
  const bool have_result =
      !e.result.empty() && result.ParseFromString(e.result);
  if (have_result) {
    term.out << result.stdout() << std::flush;
    term.err << result.stderr() << std::flush;
  }
  if (e.status.ok()) {
    return have_result ? result.exit_code() : kExitOk;
  }
  if (have_result && ErrorKind(e.status) == error_kind::kExitCode &&
      result.exit_code() != 0) {
    return result.exit_code();
  }
  PrintJobError(e.status, term.err);
  return kExitFailed;
}

int Map(const ParsedCommand& cmd, Terminal& term) {
  absl::StatusOr<std::unique_ptr<Executor>> executor =
      Executor::Connect(ExecutorOptionsFor(cmd, kConnectTimeout));
  if (!executor.ok()) {
    term.err << "dexec: cannot reach broker at " << cmd.broker << ": "
             << executor.status().message() << "\n";
    return kExitUsage;
  }
  MapOptions map_options;
  map_options.submit.priority = cmd.priority;
  map_options.submit.timeout = cmd.timeout.value_or(absl::ZeroDuration());
  map_options.submit.max_attempts = cmd.max_attempts;
  map_options.chunksize = static_cast<size_t>(cmd.chunksize);

  size_t lines_read = 0;
  size_t done = 0;
  LineRange lines(term.in, &lines_read);
  Progress progress(term.err, term.err_is_tty);
  int exit_code = kExitOk;
  {
    InterruptCancelsMap interrupt(executor->get(), term.err, term.err_is_tty);
    MapResults<std::string> results =
        (*executor)->Map<std::string>(cmd.task, lines, map_options);
    while (std::optional<absl::StatusOr<std::string>> r = results.Next()) {
      if (!r->ok()) {
        progress.Clear();
        term.err << "error: line " << done + 1 << ": " << r->status().message()
                 << "\n";
        exit_code = kExitFailed;
        break;
      }
      ++done;
      // Flush per line so results stream out as they arrive, also into a
      // pipe: a consumer may be waiting on the first lines.
      term.out << ResultLine(cmd.task, std::move(**r)) << '\n' << std::flush;
      if (!term.out) {
        // The reader went away (e.g. `| head`); leaving `results` cancels
        // the jobs still queued.
        progress.Clear();
        term.err << "dexec: cannot write the results (stdout closed); "
                    "cancelled the remaining jobs\n";
        exit_code = kExitFailed;
        break;
      }
      progress.Update(done, lines_read);
    }
  }
  progress.Clear();
  if (term.in.bad()) {
    term.err << "dexec: error reading stdin after line " << lines_read << "\n";
    return kExitFailed;
  }
  return exit_code;
}

int Status(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err) {
  std::vector<v1::Job> all;
  grpc::Status s = GetAllJobs(
      broker, cmd.job_ids, /*include_result=*/false,
      [](const std::function<grpc::Status(grpc::ClientContext*)>& call) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, kRpcTimeout);
        return call(&ctx);
      },
      &all);
  if (!s.ok()) return RpcFailed(cmd, "status", s, err);
  bool all_found = true;
  std::vector<const v1::Job*> jobs;
  for (const v1::Job& j : all) {
    if (j.state() == v1::Job::STATE_UNSPECIFIED) all_found = false;
    jobs.push_back(&j);
  }
  if (cmd.json) {
    for (const v1::Job* j : jobs) PrintJson(*j, out);
  } else {
    PrintJobTable(jobs, out);
    for (const v1::Job* j : jobs) {
      if (j->attempt_log_size() > 1) PrintAttemptLog(*j, out);
    }
  }
  return all_found ? kExitOk : kExitFailed;
}

int Wait(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
         std::ostream& err) {
  absl::StatusOr<Waiter> waiter = Waiter::Connect(cmd);
  if (!waiter.ok()) {
    return RpcFailed(cmd, "wait", ToGrpcStatus(waiter.status()), err);
  }
  std::vector<Future<std::string>> futures;
  futures.reserve(cmd.job_ids.size());
  for (uint64_t id : cmd.job_ids) futures.push_back(waiter->Attach(id));
  ::dexec::Wait(futures, cmd.timeout.value_or(absl::InfiniteDuration()),
                ReturnWhen::kAllCompleted);
  bool all_succeeded = true;
  size_t unfinished = 0;
  std::vector<v1::Job::State> states;
  for (const Future<std::string>& f : futures) {
    const absl::Status s = f.Done() ? f.Exception() : absl::OkStatus();
    if (IsConnectionFailure(s)) {
      return RpcFailed(cmd, "wait", ToGrpcStatus(s), err);
    }
    states.push_back(StateOf(f));
    if (states.back() != v1::Job::SUCCEEDED) all_succeeded = false;
    if (!f.Done()) ++unfinished;
  }
  const bool timed_out = unfinished > 0;
  if (!cmd.json) {
    for (size_t i = 0; i < cmd.job_ids.size(); ++i) {
      out << cmd.job_ids[i] << " " << StateName(states[i]) << "\n";
    }
  }
  if (cmd.json) {
    // One Job per line, as `status --json` prints them.
    std::vector<v1::Job> jobs;
    grpc::Status s = GetAllJobs(
        broker, cmd.job_ids, /*include_result=*/false,
        [&](const std::function<grpc::Status(grpc::ClientContext*)>& call) {
          return CallRetryingUnavailable(cmd.reconnect_timeout, call);
        },
        &jobs);
    if (!s.ok()) return RpcFailed(cmd, "wait", s, err);
    for (const v1::Job& j : jobs) PrintJson(j, out);
  }
  if (timed_out) {
    err << "dexec: " << unfinished << " of " << cmd.job_ids.size()
        << " jobs not finished after "
        << absl::FormatDuration(cmd.timeout.value_or(absl::ZeroDuration()))
        << "\n";
    return kExitFailed;
  }
  return all_succeeded ? kExitOk : kExitFailed;
}

int Result(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err) {
  v1::GetJobsRequest req;
  req.add_job_ids(cmd.job_ids.front());
  req.set_include_result(true);
  v1::GetJobsResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  grpc::Status s = broker.GetJobs(&ctx, req, &resp);
  if (!s.ok()) return RpcFailed(cmd, "result", s, err);
  if (resp.jobs_size() != 1) {
    err << "dexec: the broker answered without the job\n";
    return kExitFailed;
  }
  const v1::Job& j = resp.jobs(0);
  if (cmd.json) PrintJson(j, out);
  switch (j.state()) {
    case v1::Job::SUCCEEDED:
      if (!cmd.json) out << ResultText(j.task(), j.result()) << std::flush;
      return kExitOk;
    case v1::Job::FAILED:
    case v1::Job::CANCELLED:
      err << "error: " << ErrorText(j.error()) << "\n";
      return kExitFailed;
    case v1::Job::STATE_UNSPECIFIED:
      err << "dexec: " << j.error().message() << "\n";
      return kExitFailed;
    default:
      err << "dexec: job " << j.id() << " is " << StateName(j.state())
          << "; no result yet (run 'dexec wait " << j.id() << "' first)\n";
      return kExitFailed;
  }
}

int Cancel(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err) {
  v1::CancelRequest req;
  req.mutable_job_ids()->Add(cmd.job_ids.begin(), cmd.job_ids.end());
  v1::CancelResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  grpc::Status s = broker.Cancel(&ctx, req, &resp);
  if (!s.ok()) return RpcFailed(cmd, "cancel", s, err);
  if (resp.cancelled_size() != req.job_ids_size() ||
      resp.states_size() != req.job_ids_size()) {
    err << "dexec: the broker's cancel answer does not match the request\n";
    return kExitFailed;
  }
  if (cmd.json) {
    PrintJson(resp, out);
  }
  bool all = true;
  for (int i = 0; i < req.job_ids_size(); ++i) {
    if (!resp.cancelled(i)) all = false;
    if (cmd.json) continue;
    out << req.job_ids(i)
        << (resp.cancelled(i)
                ? " cancelled"
                : absl::StrCat(
                      " not cancelled (",
                      StateName(static_cast<v1::Job::State>(resp.states(i))),
                      ")"))
        << "\n";
  }
  return all ? kExitOk : kExitFailed;
}

int List(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
         std::ostream& err) {
  // Pages: the broker cuts an answer at its response budget.
  const int32_t limit = cmd.limit > 0 ? cmd.limit : 100;
  v1::ListJobsResponse all;
  for (;;) {
    v1::ListJobsRequest req;
    req.set_state(cmd.state_filter);
    req.set_limit(limit - all.jobs_size());
    if (all.jobs_size() > 0) {
      req.set_before_id(all.jobs(all.jobs_size() - 1).id());
    }
    v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kRpcTimeout);
    grpc::Status s = broker.ListJobs(&ctx, req, &resp);
    if (!s.ok()) return RpcFailed(cmd, "list", s, err);
    for (v1::Job& j : *resp.mutable_jobs()) *all.add_jobs() = std::move(j);
    if (!resp.truncated() || resp.jobs_size() == 0 ||
        all.jobs_size() >= limit) {
      break;
    }
  }
  if (cmd.json) {
    for (const v1::Job& j : all.jobs()) PrintJson(j, out);
    return kExitOk;
  }
  std::vector<const v1::Job*> jobs;
  for (const v1::Job& j : all.jobs()) jobs.push_back(&j);
  PrintJobTable(jobs, out);
  return kExitOk;
}

int Workers(const ParsedCommand& cmd, v1::Broker::Stub& broker,
            std::ostream& out, std::ostream& err) {
  v1::ListWorkersResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  grpc::Status s = broker.ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
  if (!s.ok()) return RpcFailed(cmd, "workers", s, err);
  if (cmd.json) {
    for (const v1::WorkerInfo& w : resp.workers()) PrintJson(w, out);
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table t(
      {"NAME", "HOST", "THREADS", "BUSY", "DONE", "STATE", "LAST-HEARTBEAT"});
  for (const v1::WorkerInfo& w : resp.workers()) {
    t.AddRow({w.name(), w.host(), absl::StrCat(w.threads()),
              absl::StrCat(w.busy()), absl::StrCat(w.done()),
              v1::WorkerInfo::State_Name(w.state()),
              FormatAge(w.last_heartbeat(), now)});
  }
  t.Print(out);
  return kExitOk;
}

int Stats(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
          std::ostream& err) {
  v1::Stats st;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kRpcTimeout);
  grpc::Status s = broker.GetStats(&ctx, v1::GetStatsRequest(), &st);
  if (!s.ok()) return RpcFailed(cmd, "stats", s, err);
  if (cmd.json) {
    PrintJson(st, out);
    return kExitOk;
  }
  Table t({});
  t.AddRow({"queued", absl::StrCat(st.queued())});
  t.AddRow({"running", absl::StrCat(st.running())});
  t.AddRow({"succeeded", absl::StrCat(st.succeeded())});
  t.AddRow({"failed", absl::StrCat(st.failed())});
  t.AddRow({"cancelled", absl::StrCat(st.cancelled())});
  t.AddRow({"submitted", absl::StrCat(st.submitted_total())});
  t.AddRow({"finished", absl::StrCat(st.finished_total())});
  t.AddRow({"finish rate", absl::StrFormat("%.1f/s", st.finish_rate())});
  t.AddRow({"workers", absl::StrCat(st.workers())});
  t.AddRow({"threads", absl::StrCat(st.threads())});
  t.AddRow(
      {"auth failures", absl::StrCat("client ", st.client_auth_failures(),
                                     ", worker ", st.worker_auth_failures())});
  // Of the jobs dispatched in the last 60 s (at most 4096 of them).
  t.AddRow({"queue wait",
            st.wait_samples() == 0
                ? std::string("- (no job dispatched in the last 60 s)")
                : absl::StrCat(
                      "p50 ", absl::FormatDuration(FromProto(st.wait_p50())),
                      ", p99 ", absl::FormatDuration(FromProto(st.wait_p99())),
                      " (", st.wait_samples(), " jobs, last 60 s)")});
  t.AddRow({"forged results", absl::StrCat(st.forged_results())});
  t.AddRow({"bad result pieces", absl::StrCat(st.bad_result_pieces())});
  t.AddRow({"uptime", absl::FormatDuration(absl::Trunc(FromProto(st.uptime()),
                                                       absl::Seconds(1)))});
  t.Print(out);
  return kExitOk;
}

int Token(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
          std::ostream& err) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(30));
  if (cmd.action == "create") {
    v1::CreateTokenRequest req;
    req.set_name(cmd.name);
    req.set_role(cmd.role);
    v1::CreateTokenResponse resp;
    grpc::Status s = broker.CreateToken(&ctx, req, &resp);
    if (!s.ok()) return RpcFailed(cmd, "token create", s, err);
    if (cmd.json) {
      PrintJson(resp, out);
    } else {
      // The secret alone on stdout, so `dexec token create ... > f` works;
      // it is shown this once.
      out << resp.token() << "\n";
      err << "token '" << resp.info().name() << "' (role " << resp.info().role()
          << ") created; its secret was printed once: keep it (mode 0600)\n";
    }
    return kExitOk;
  }
  if (cmd.action == "revoke") {
    v1::RevokeTokenRequest req;
    req.set_name(cmd.name);
    v1::RevokeTokenResponse resp;
    grpc::Status s = broker.RevokeToken(&ctx, req, &resp);
    if (!s.ok()) return RpcFailed(cmd, "token revoke", s, err);
    err << "token '" << cmd.name << "' revoked\n";
    return kExitOk;
  }
  v1::ListTokensResponse resp;
  grpc::Status s = broker.ListTokens(&ctx, v1::ListTokensRequest(), &resp);
  if (!s.ok()) return RpcFailed(cmd, "token list", s, err);
  if (cmd.json) {
    for (const v1::TokenInfo& t : resp.tokens()) PrintJson(t, out);
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table t({"NAME", "ROLE", "CREATED"});
  for (const v1::TokenInfo& tok : resp.tokens()) {
    t.AddRow({tok.name(), tok.role(), FormatTime(tok.created_at(), now)});
  }
  t.Print(out);
  return kExitOk;
}

int WorkerKey(const ParsedCommand& cmd, v1::Broker::Stub& broker,
              std::ostream& out, std::ostream& err) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(30));
  if (cmd.action == "create") {
    v1::CreateWorkerKeyRequest req;
    req.set_name(cmd.name);
    v1::CreateWorkerKeyResponse resp;
    grpc::Status s = broker.CreateWorkerKey(&ctx, req, &resp);
    if (!s.ok()) return RpcFailed(cmd, "worker-key create", s, err);
    if (cmd.out_file.empty()) {
      out << resp.credentials();
    } else {
      absl::Status written =
          auth::CreateFileExclusive(cmd.out_file, resp.credentials(), 0600);
      if (!written.ok()) {
        err << "dexec: the key was created at the broker but not written: "
            << written.message() << "; revoke it (dexec worker-key revoke "
            << cmd.name << ") and create another\n";
        return kExitFailed;
      }
      err << "worker key '" << cmd.name << "' admitted; credentials in "
          << cmd.out_file
          << ": copy it to the worker's host as dexec-data/worker.key (or "
             "pass --worker_key=FILE)\n";
    }
    return kExitOk;
  }
  if (cmd.action == "revoke") {
    v1::RevokeWorkerKeyRequest req;
    req.set_name(cmd.name);
    v1::RevokeWorkerKeyResponse resp;
    grpc::Status s = broker.RevokeWorkerKey(&ctx, req, &resp);
    if (!s.ok()) return RpcFailed(cmd, "worker-key revoke", s, err);
    err << "worker key '" << cmd.name << "' revoked\n";
    return kExitOk;
  }
  v1::ListWorkerKeysResponse resp;
  grpc::Status s =
      broker.ListWorkerKeys(&ctx, v1::ListWorkerKeysRequest(), &resp);
  if (!s.ok()) return RpcFailed(cmd, "worker-key list", s, err);
  if (cmd.json) {
    for (const v1::WorkerKeyInfo& k : resp.keys()) PrintJson(k, out);
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  Table t({"NAME", "PUBLIC KEY", "CREATED"});
  for (const v1::WorkerKeyInfo& k : resp.keys()) {
    t.AddRow({k.name(), k.public_key(), FormatTime(k.created_at(), now)});
  }
  t.Print(out);
  return kExitOk;
}

int RunCommand(const ParsedCommand& cmd, v1::Broker::Stub& broker,
               Terminal& term) {
  switch (cmd.verb) {
    case Verb::kToken:
      return Token(cmd, broker, term.out, term.err);
    case Verb::kWorkerKey:
      return WorkerKey(cmd, broker, term.out, term.err);
    case Verb::kSubmit:
      return Submit(cmd, broker, term);
    case Verb::kExec:
      return Exec(cmd, broker, term);
    case Verb::kMap:
      return Map(cmd, term);
    case Verb::kStatus:
      return Status(cmd, broker, term.out, term.err);
    case Verb::kWait:
      return Wait(cmd, broker, term.out, term.err);
    case Verb::kResult:
      return Result(cmd, broker, term.out, term.err);
    case Verb::kCancel:
      return Cancel(cmd, broker, term.out, term.err);
    case Verb::kList:
      return List(cmd, broker, term.out, term.err);
    case Verb::kWorkers:
      return Workers(cmd, broker, term.out, term.err);
    case Verb::kStats:
      return Stats(cmd, broker, term.out, term.err);
    case Verb::kHelp:
      term.out << UsageText();
      return kExitOk;
  }
  return kExitUsage;
}

}  // namespace dexec::cli
