// libFuzzer target: BrokerCore (broker/broker_core.h) driven by a sequence
// of operations read from the input: worker frames (raw bytes through
// wire::DecodeFrame, as the broker loop does, or built from a few fields so
// the fuzzer reaches deep states fast), submits, cancels, watches, queries,
// time advances, Schedule and Tick. After each step the core's invariants
// are checked; a violation aborts, so libFuzzer keeps the input.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "broker/broker_core.h"
#include "protos/wire.h"

namespace dexec::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "broker_core_fuzz: invariant broken: %s\n", why.c_str());
  std::abort();
}

const char* const kTasks[] = {"a", "b", "c"};
const char* const kIdentities[] = {"w0", "w1", "w2"};
const char* const kKeys[] = {"", "k0", "k1"};

// Sessions 1..3 belong to one caller each; 0 is "no session".
Caller SessionCaller(SessionId s) {
  switch (s) {
    case 2:
      return Caller{"alice", Caller::kSubmit};
    case 3:
      return Caller{"bob", Caller::kSubmit};
    default:
      return Caller{};
  }
}

class Driver {
 public:
  Driver(FuzzedDataProvider& in, BrokerOptions options)
      : in_(in), core_(options, kT0), now_(kT0) {}

  void Run() {
    while (in_.remaining_bytes() > 0) {
      Step(in_.ConsumeIntegralInRange<int>(0, 13));
      Check();
    }
  }

 private:
  void Step(int op) {
    watch_op_ = false;
    switch (op) {
      case 0:
        RawFrame();
        break;
      case 1:
        Register();
        break;
      case 2:
        Result();
        break;
      case 3:
        Submit();
        break;
      case 4:
        Cancel();
        break;
      case 5:
        Watch();
        break;
      case 6:
        now_ += absl::Milliseconds(in_.ConsumeIntegralInRange<int>(0, 5000));
        break;
      case 7:
        core_.Schedule(now_, &out_);
        break;
      case 8:
        core_.Tick(now_, &out_);
        break;
      case 9:
        core_.OnWorkerUnreachable(Identity(), now_, &out_);
        break;
      case 10:
        HeartbeatOrState();
        break;
      case 11:
        Query();
        break;
      case 12: {
        SessionId s = in_.ConsumeIntegralInRange<SessionId>(1, 3);
        core_.CloseSession(s);
        closed_.insert(s);
        break;
      }
      case 13:
        core_.DropWorkersWithKey(Key(), now_, &out_);
        break;
    }
    if (core_.options().journal) core_.TakeChanges();
    CheckOutbox();
  }

  std::string Identity() {
    return kIdentities[in_.ConsumeIntegralInRange<int>(0, 2)];
  }
  std::string Key() { return kKeys[in_.ConsumeIntegralInRange<int>(0, 2)]; }

  void Frame(const wire::Frame& frame) {
    std::string identity = Identity();
    core_.OnWorkerFrame(identity, Key(), frame, now_, &out_);
  }

  // Bytes as a peer sends them: only what DecodeFrame accepts gets in.
  void RawFrame() {
    std::string bytes =
        in_.ConsumeBytesAsString(in_.ConsumeIntegralInRange<size_t>(0, 512));
    absl::StatusOr<wire::Frame> frame = wire::DecodeFrame(bytes);
    if (frame.ok()) Frame(*frame);
  }

  void Register() {
    wire::Frame f;
    f.set_version(wire::kProtocolVersion);
    wire::Register* r = f.mutable_register_();
    r->set_name(absl::StrCat("n", in_.ConsumeIntegralInRange<int>(0, 2)));
    r->set_threads(in_.ConsumeIntegralInRange<int>(1, 4));
    r->set_prefetch(in_.ConsumeIntegralInRange<int>(0, 3));
    int mask = in_.ConsumeIntegralInRange<int>(1, 7);
    for (int i = 0; i < 3; ++i) {
      if (mask & (1 << i)) r->add_tasks(kTasks[i]);
    }
    // Claims of attempts seen dispatched (a worker reconnecting).
    int held = in_.ConsumeIntegralInRange<int>(0, 2);
    for (int i = 0; i < held && !dispatched_.empty(); ++i) {
      const auto& d = dispatched_[in_.ConsumeIntegralInRange<size_t>(
          0, dispatched_.size() - 1)];
      wire::TaskRef* ref = r->add_held();
      ref->set_job_id(d.first);
      ref->set_attempt(d.second);
    }
    if (!wire::DecodeFrame(wire::EncodeFrame(f)).ok()) return;
    Frame(f);
  }

  // A result for an attempt seen dispatched (or a made-up one).
  void Result() {
    wire::Frame f;
    f.set_version(wire::kProtocolVersion);
    int n = in_.ConsumeIntegralInRange<int>(1, 3);
    for (int i = 0; i < n; ++i) {
      wire::TaskResult* r = f.mutable_results()->add_results();
      if (!dispatched_.empty() && in_.ConsumeBool()) {
        const auto& d = dispatched_[in_.ConsumeIntegralInRange<size_t>(
            0, dispatched_.size() - 1)];
        r->set_job_id(d.first);
        r->set_attempt(d.second);
      } else {
        r->set_job_id(in_.ConsumeIntegralInRange<uint64_t>(1, 40));
        r->set_attempt(in_.ConsumeIntegralInRange<uint32_t>(0, 4));
      }
      r->set_ok(in_.ConsumeBool());
      r->set_output(
          in_.ConsumeBytesAsString(in_.ConsumeIntegralInRange<size_t>(0, 64)));
      if (!r->ok()) {
        r->set_error_kind(in_.ConsumeBool() ? "ValueError" : "");
        r->set_error_message(in_.ConsumeBytesAsString(
            in_.ConsumeIntegralInRange<size_t>(0, 16)));
      }
      r->set_started_at_us(in_.ConsumeIntegral<int64_t>());
      r->set_finished_at_us(in_.ConsumeIntegral<int64_t>());
      if (in_.ConsumeIntegralInRange<int>(0, 2) == 0) {
        // A piece of a longer output: in order, out of order, or past the
        // limit (DecodeFrame drops the frame if it lies outside).
        r->set_output_size(in_.ConsumeIntegralInRange<uint64_t>(1, 200));
        r->set_output_offset(in_.ConsumeIntegralInRange<uint64_t>(0, 199));
      }
    }
    absl::StatusOr<wire::Frame> decoded =
        wire::DecodeFrame(wire::EncodeFrame(f));
    if (decoded.ok()) Frame(*decoded);
  }

  void HeartbeatOrState() {
    wire::Frame f;
    f.set_version(wire::kProtocolVersion);
    switch (in_.ConsumeIntegralInRange<int>(0, 2)) {
      case 0:
        f.mutable_heartbeat()->set_busy(in_.ConsumeIntegralInRange<int>(-1, 8));
        break;
      case 1:
        f.mutable_worker_state()->set_draining(true);
        break;
      case 2:
        f.mutable_worker_state()->set_leaving(true);
        break;
    }
    Frame(f);
  }

  uint64_t SomeId() {
    uint64_t next = core_.jobs().next_id();
    return in_.ConsumeIntegralInRange<uint64_t>(0, next + 1);
  }

  void Submit() {
    SessionId session = in_.ConsumeIntegralInRange<SessionId>(0, 3);
    if (closed_.count(session)) session = 0;
    Caller caller =
        session != 0
            ? SessionCaller(session)
            : SessionCaller(in_.ConsumeIntegralInRange<SessionId>(1, 3));
    google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
    int n = in_.ConsumeIntegralInRange<int>(1, 4);
    for (int i = 0; i < n; ++i) {
      v1::JobSpec* s = specs.Add();
      int task = in_.ConsumeIntegralInRange<int>(0, 3);
      s->set_task(task < 3 ? kTasks[task] : "");
      s->set_payload(
          in_.ConsumeBytesAsString(in_.ConsumeIntegralInRange<size_t>(0, 300)));
      s->set_priority(in_.ConsumeIntegralInRange<int>(-2, 2));
      s->set_max_attempts(in_.ConsumeIntegralInRange<int>(-1, 3));
      int timeout_ms = in_.ConsumeIntegralInRange<int>(-1, 3000);
      if (timeout_ms != 0) {
        s->mutable_timeout()->set_seconds(timeout_ms / 1000);
        s->mutable_timeout()->set_nanos((timeout_ms % 1000) * 1000000);
      }
      if (in_.ConsumeBool()) {
        s->set_idempotency_key(
            absl::StrCat("key", in_.ConsumeIntegralInRange<int>(0, 3)));
      }
    }
    BatchKey batch{absl::StrCat("c", in_.ConsumeIntegralInRange<int>(0, 1)),
                   in_.ConsumeIntegralInRange<uint64_t>(0, 3)};
    bool with_batch = in_.ConsumeBool();
    absl::StatusOr<std::vector<uint64_t>> ids = core_.Submit(
        specs, caller, session, now_, &out_, with_batch ? &batch : nullptr);
    if (!ids.ok()) return;
    if (ids->size() != static_cast<size_t>(n)) {
      Fail(absl::StrCat("Submit of ", n, " specs returned ", ids->size(),
                        " ids"));
    }
    for (uint64_t id : *ids) {
      if (id == 0 || id >= core_.jobs().next_id()) {
        Fail(absl::StrCat("Submit returned id ", id, " (next id ",
                          core_.jobs().next_id(), ")"));
      }
    }
  }

  void Cancel() {
    SessionId who = in_.ConsumeIntegralInRange<SessionId>(1, 3);
    google::protobuf::RepeatedField<uint64_t> ids;
    int n = in_.ConsumeIntegralInRange<int>(0, 4);
    for (int i = 0; i < n; ++i) ids.Add(SomeId());
    std::vector<JobState> before;
    for (uint64_t id : ids) {
      const Job* job = core_.jobs().Find(id);
      before.push_back(job ? job->state : v1::Job::STATE_UNSPECIFIED);
    }
    v1::CancelResponse resp =
        core_.Cancel(SessionCaller(who), ids, now_, &out_);
    if (resp.cancelled_size() != ids.size()) {
      Fail("CancelResponse has not one answer per id");
    }
    for (int i = 0; i < ids.size(); ++i) {
      // True means CANCELLED now: cancelled by this request, or already
      // (dexec.proto); never for a job that succeeded, failed or is unknown.
      if (resp.cancelled(i) &&
          (before[i] == v1::Job::STATE_UNSPECIFIED ||
           before[i] == v1::Job::SUCCEEDED || before[i] == v1::Job::FAILED ||
           resp.states(i) != v1::Job::CANCELLED)) {
        Fail(absl::StrCat("Cancel of job ", ids[i], " in state ", before[i],
                          " answered true"));
      }
    }
  }

  void Watch() {
    SessionId s = in_.ConsumeIntegralInRange<SessionId>(1, 3);
    if (closed_.count(s)) return;
    google::protobuf::RepeatedField<uint64_t> ids;
    int n = in_.ConsumeIntegralInRange<int>(0, 20);
    for (int i = 0; i < n; ++i) ids.Add(SomeId());
    watch_op_ = true;
    (void)core_.Watch(s, SessionCaller(s), ids, &out_);
  }

  void Query() {
    Caller caller = SessionCaller(in_.ConsumeIntegralInRange<SessionId>(1, 3));
    if (in_.ConsumeBool()) caller.role = Caller::kRead;
    switch (in_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: {
        v1::GetJobsRequest req;
        int n = in_.ConsumeIntegralInRange<int>(0, 8);
        for (int i = 0; i < n; ++i) req.add_job_ids(SomeId());
        req.set_include_result(in_.ConsumeBool());
        v1::GetJobsResponse resp = core_.GetJobs(caller, req);
        if (resp.jobs_size() > req.job_ids_size()) {
          Fail("GetJobs answered more jobs than asked");
        }
        break;
      }
      case 1: {
        v1::ListJobsRequest req;
        req.set_state(
            static_cast<v1::Job::State>(in_.ConsumeIntegralInRange<int>(0, 5)));
        req.set_limit(in_.ConsumeIntegralInRange<int>(-1, 10));
        req.set_before_id(SomeId());
        v1::ListJobsResponse resp = core_.ListJobs(caller, req);
        uint64_t last = UINT64_MAX;
        for (const v1::Job& j : resp.jobs()) {
          if (j.id() >= last) Fail("ListJobs not newest first");
          last = j.id();
          if (req.before_id() != 0 && j.id() >= req.before_id()) {
            Fail("ListJobs answered a job not below before_id");
          }
        }
        break;
      }
      case 2:
        core_.ListWorkers();
        break;
      case 3: {
        v1::Stats stats = core_.GetStats(now_);
        if (stats.queued() != core_.jobs().count(v1::Job::QUEUED) ||
            stats.running() != core_.jobs().count(v1::Job::RUNNING)) {
          Fail("GetStats disagrees with the job table");
        }
        break;
      }
    }
  }

  // What the step put in the outbox.
  void CheckOutbox() {
    for (const auto& [identity, frame] : out_.to_workers) {
      if (!frame.has_dispatch()) continue;
      for (const wire::Task& t : frame.dispatch().tasks()) {
        const Job* job = core_.jobs().Find(t.job_id());
        if (job == nullptr) {
          Fail(absl::StrCat("dispatched job ", t.job_id(), " is unknown"));
        }
        if (!IsTerminal(job->state) && job->state != v1::Job::RUNNING &&
            job->attempt_number() == t.attempt()) {
          // Its attempt may have ended in the same step (worker dropped),
          // then it is QUEUED again with a later attempt; else RUNNING.
          Fail(absl::StrCat("dispatched job ", t.job_id(), " attempt ",
                            t.attempt(), " is ", job->state));
        }
        if (t.attempt() == 0 || t.attempt() > job->attempt_number()) {
          Fail(absl::StrCat("dispatched attempt ", t.attempt(), " of job ",
                            t.job_id(), " which made ", job->attempt_number()));
        }
        dispatched_.emplace_back(t.job_id(), t.attempt());
        if (dispatched_.size() > 64) dispatched_.erase(dispatched_.begin());
      }
    }
    for (const auto& [session, responses] : out_.to_sessions) {
      if (session == 0) Fail("a response addressed to session 0");
      for (const v1::SessionResponse& r : responses) {
        for (const v1::JobEvent& e : r.events().events()) {
          if (watch_op_ || !IsTerminal(e.state())) continue;
          // Outside Watch (which repeats a finished job's event on demand)
          // a session hears of a job's end once.
          if (!terminal_events_.insert({session, e.job_id()}).second) {
            Fail(absl::StrCat("session ", session,
                              " got a second terminal "
                              "event for job ",
                              e.job_id()));
          }
          const Job* job = core_.jobs().Find(e.job_id());
          if (job != nullptr && job->state != e.state()) {
            Fail(absl::StrCat("terminal event ", e.state(), " for job ",
                              e.job_id(), " which is ", job->state));
          }
        }
      }
    }
    for (auto& reply : out_.replies) reply();
    for (auto& reply : out_.query_replies) reply();
    out_.Clear();
    out_.replies.clear();
    out_.query_replies.clear();
  }

  // The job table's own invariants.
  void Check() {
    const JobTable& jobs = core_.jobs();
    uint64_t sum = 0;
    for (int s = 0; s < v1::Job::State_ARRAYSIZE; ++s) {
      sum += jobs.count(static_cast<JobState>(s));
    }
    if (sum != jobs.size()) {
      Fail(absl::StrCat("state counts sum to ", sum, ", table holds ",
                        jobs.size()));
    }
    uint64_t unfinished_bytes = 0;
    size_t seen = 0;
    jobs.ForEachNewest([&](const Job& job) {
      ++seen;
      if (!IsTerminal(job.state)) unfinished_bytes += job.payload.size();
      auto it = terminal_.find(job.id);
      if (it != terminal_.end() && it->second != job.state) {
        Fail(absl::StrCat("job ", job.id, " was ", it->second, ", now ",
                          job.state));
      }
      if (IsTerminal(job.state)) terminal_[job.id] = job.state;
      return true;
    });
    if (seen != jobs.size()) Fail("ForEachNewest misses jobs");
    if (unfinished_bytes != core_.payload_bytes()) {
      Fail(absl::StrCat("payload_bytes() is ", core_.payload_bytes(),
                        ", unfinished jobs hold ", unfinished_bytes));
    }
    if (jobs.finished_total() < terminal_.size()) {
      Fail("finished_total below the jobs seen finished");
    }
    // One partial output per registered worker, each within the limit.
    if (core_.partial_result_bytes() >
        std::size(kIdentities) * core_.options().max_result_bytes) {
      Fail(absl::StrCat("partial outputs hold ", core_.partial_result_bytes(),
                        " bytes"));
    }
  }

  FuzzedDataProvider& in_;
  BrokerCore core_;
  absl::Time now_;
  Outbox out_;
  bool watch_op_ = false;
  std::set<SessionId> closed_;
  // (job, attempt) of recent dispatches, for results and Register.held.
  std::vector<std::pair<uint64_t, uint32_t>> dispatched_;
  std::set<std::pair<SessionId, uint64_t>> terminal_events_;
  std::map<uint64_t, JobState> terminal_;
};

}  // namespace
}  // namespace dexec::broker

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dexec::broker;
  FuzzedDataProvider in(data, size);
  BrokerOptions o;
  uint8_t flags = in.ConsumeIntegral<uint8_t>();
  o.journal = flags & 1;
  o.requeue_backoff =
      (flags & 2) ? absl::Milliseconds(100) : absl::ZeroDuration();
  o.retention = absl::Seconds(1 + (flags >> 4));
  o.max_queued = 48;
  o.max_queued_bytes = 4096;
  o.max_payload_bytes = 256;
  o.max_result_bytes = 128;
  o.max_response_bytes = 1024;
  o.max_watch_ids = 16;
  o.max_watched_per_session = 40;
  o.timeout_grace = absl::Milliseconds(500);
  o.max_worker_credit = 6;
  o.default_max_attempts = 2;
  Driver(in, o).Run();
  return 0;
}
