#include "broker/broker_core.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/proto_time.h"
#include "protos/error_kind.h"
#include "protos/wire.h"

namespace dexec::broker {
namespace {

constexpr size_t kMaxTaskNameBytes = 256;
constexpr int32_t kMaxAttemptsLimit = 100;
// A Dispatch frame carries at most this many tasks, and at most this many
// payload bytes unless one task alone is bigger; more go in the next.
constexpr int kMaxTasksPerDispatch = 1024;
constexpr size_t kDispatchFrameBudget = 4 << 20;
// Acknowledged batches remembered per client for idempotent resubmission:
// far more than a client has unacknowledged at any time.
constexpr size_t kMaxBatchesPerClient = 256;

}  // namespace

void Outbox::Clear() {
  to_workers.clear();
  to_sessions.clear();
  open_dispatch.clear();
  replies.clear();
  query_replies.clear();
  drain_reports.clear();
}

void Outbox::AddEvent(SessionId session, v1::JobEvent event) {
  // Into the last response, even one that acknowledges a submit: the
  // client reads the acknowledgement first (dexec.proto, SessionResponse).
  std::vector<v1::SessionResponse>& q = to_sessions[session];
  if (q.empty()) q.emplace_back();
  *q.back().mutable_events()->add_events() = std::move(event);
}

std::vector<uint64_t> BatchRecord::Ids() const {
  std::vector<uint64_t> ids;
  for (auto [first, count] : id_runs) {
    for (uint32_t i = 0; i < count; ++i) ids.push_back(first + i);
  }
  return ids;
}

std::vector<std::pair<uint64_t, uint32_t>> BatchRecord::ToRuns(
    const std::vector<uint64_t>& ids) {
  std::vector<std::pair<uint64_t, uint32_t>> runs;
  for (uint64_t id : ids) {
    if (!runs.empty() && runs.back().first + runs.back().second == id) {
      ++runs.back().second;
    } else {
      runs.emplace_back(id, 1);
    }
  }
  return runs;
}

namespace {

v1::JobEvent NotFoundEvent(uint64_t id) {
  v1::JobEvent event;
  event.set_job_id(id);
  event.mutable_error()->set_kind(std::string(error_kind::kNotFound));
  event.mutable_error()->set_message(absl::StrCat(
      "job ", id, " is unknown: never submitted, or its retention ended"));
  return event;
}

}  // namespace

BrokerCore::BrokerCore(BrokerOptions options, absl::Time now,
                       uint64_t first_job_id)
    : options_(std::move(options)),
      jobs_(first_job_id, options_.max_task_series),
      started_at_(now) {}

// ---------------------------------------------------------------- clients

absl::Status BrokerCore::ValidateSpec(const v1::JobSpec& spec) const {
  if (spec.task().empty()) {
    return absl::InvalidArgumentError("job has no task name");
  }
  if (spec.task().size() > kMaxTaskNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("task name is ", spec.task().size(),
                     " bytes; the limit is ", kMaxTaskNameBytes));
  }
  if (spec.payload().size() > options_.max_payload_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload of task '", spec.task(), "' is ",
                     spec.payload().size(), " bytes; the limit is ",
                     options_.max_payload_bytes, " (--max_payload_bytes)"));
  }
  if (spec.has_timeout() && FromProto(spec.timeout()) < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("job timeout is negative");
  }
  if (spec.max_attempts() < 0 || spec.max_attempts() > kMaxAttemptsLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_attempts is ", spec.max_attempts(),
        "; it must be between 0 (default) and ", kMaxAttemptsLimit));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> BrokerCore::Submit(
    const google::protobuf::RepeatedPtrField<v1::JobSpec>& specs,
    const Caller& caller, SessionId session, absl::Time now, Outbox* out,
    const BatchKey* unscoped_batch) {
  // A batch key is the caller's own: another token replaying a client id and
  // seq must not be handed (and made to watch) someone else's jobs. Token
  // names cannot contain NUL.
  BatchKey scoped;
  const BatchKey* batch = nullptr;
  if (unscoped_batch != nullptr && !unscoped_batch->client_id.empty()) {
    scoped.client_id =
        caller.name.empty()
            ? unscoped_batch->client_id
            : absl::StrCat(caller.name, absl::string_view("\0", 1),
                           unscoped_batch->client_id);
    scoped.seq = unscoped_batch->seq;
    batch = &scoped;
  }
  if (batch != nullptr) {
    if (const BatchRecord* seen = FindBatch(*batch)) {
      // A resubmission (the client did not see our answer): same ids.
      std::vector<uint64_t> ids = seen->Ids();
      if (session != 0) {
        for (uint64_t id : ids) WatchOne(session, caller, id, out);
      }
      return ids;
    }
  }
  if (!refuse_submits_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(refuse_submits_,
                     ": new jobs are refused until space returns (jobs "
                     "held still run and answer)"));
  }
  for (const v1::JobSpec& spec : specs) {
    absl::Status valid = ValidateSpec(spec);
    if (!valid.ok()) return valid;
  }
  const uint64_t queued = jobs_.count(v1::Job::QUEUED);
  if (queued + specs.size() > options_.max_queued) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the broker holds ", queued, " queued jobs; the limit is ",
        options_.max_queued, " (--max_queued): retry when workers catch up"));
  }
  uint64_t bytes = 0;
  for (const v1::JobSpec& spec : specs) bytes += spec.payload().size();
  if (bytes > submit_room_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the journal's disk is full: this batch's ", bytes,
        " payload bytes do not fit in the ", submit_room_,
        " left above its reserve (--journal_min_free_bytes): new jobs are "
        "refused until space returns (jobs held still run and answer)"));
  }
  if (payload_bytes_ > 0 &&
      payload_bytes_ + bytes > options_.max_queued_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the broker holds ", payload_bytes_,
        " bytes of payloads of unfinished jobs and this batch adds ", bytes,
        "; the limit is ", options_.max_queued_bytes,
        " (--max_queued_bytes): retry when workers catch up"));
  }
  if (submit_room_ != UINT64_MAX) submit_room_ -= bytes;
  std::vector<uint64_t> ids;
  ids.reserve(specs.size());
  TaskName last_task;
  const TaskName owner = TaskName::Intern(caller.name);
  if (session != 0) flows_.try_emplace(session);
  for (const v1::JobSpec& spec : specs) {
    if (!spec.idempotency_key().empty()) {
      if (Job* earlier = jobs_.FindByKey(caller.name, spec.idempotency_key())) {
        ids.push_back(earlier->id);
        if (session != 0) WatchOne(session, caller, earlier->id, out);
        continue;
      }
    }
    Job job;
    job.owner = owner;
    // Consecutive jobs of one task (the usual batch) intern its name once.
    if (last_task.str() != spec.task())
      last_task = TaskName::Intern(spec.task());
    job.task = last_task;
    job.payload = spec.payload();
    payload_bytes_ += job.payload.size();
    job.priority = spec.priority();
    if (spec.has_timeout()) job.timeout = FromProto(spec.timeout());
    job.retry_task_errors = spec.max_attempts() > 0;
    job.max_attempts = spec.max_attempts() > 0 ? spec.max_attempts()
                                               : options_.default_max_attempts;
    if (!spec.idempotency_key().empty()) {
      job.mutable_info().idempotency_key = spec.idempotency_key();
    }
    job.submitted_at = now;
    Job& added = jobs_.Insert(std::move(job));
    ready_.Push(added.task.str(), added.priority, added.id);
    if (options_.journal) changes_.new_jobs.push_back(added.id);
    Changed(added);
    if (session != 0) AddWatcher(added.id, session);
    ids.push_back(added.id);
  }
  if (batch != nullptr) {
    AddBatch(BatchRecord{*batch, BatchRecord::ToRuns(ids), now});
  }
  dirty_ = true;
  return ids;
}

const BatchRecord* BrokerCore::FindBatch(const BatchKey& key) const {
  auto it = batches_.find(key.client_id);
  if (it == batches_.end()) return nullptr;
  const std::deque<BatchRecord>& q = it->second.batches;
  for (auto r = q.rbegin(); r != q.rend(); ++r) {
    if (r->key.seq == key.seq) return &*r;
  }
  return nullptr;
}

void BrokerCore::AddBatch(BatchRecord record) {
  ClientBatches& client = batches_[record.key.client_id];
  client.last_used = std::max(client.last_used, record.at);
  if (options_.journal) changes_.batches_added.push_back(record);
  client.batches.push_back(std::move(record));
  while (client.batches.size() > kMaxBatchesPerClient) {
    if (options_.journal) {
      changes_.batches_removed.push_back(client.batches.front().key);
    }
    client.batches.pop_front();
  }
}

void BrokerCore::WatchOne(SessionId session, const Caller& caller, uint64_t id,
                          Outbox* out) {
  const Job* job = jobs_.Find(id);
  // Another token's job reads as unknown: its existence is no secret (ids
  // are sequential), its state and result are.
  if (job != nullptr && !caller.SeesResultsOf(job->owner.str())) {
    job = nullptr;
  }
  if (job == nullptr || IsTerminal(job->state)) {
    auto flow = flows_.find(session);
    if (flow != flows_.end() && flow->second.paused) {
      // Owed: rendered when the stream has written what it was given.
      flow->second.caller = caller;
      flow->second.owed.push_back({id, /*checked=*/false});
      ++owed_jobs_[id];
      return;
    }
  }
  PushCurrent(session, id, job, out);
}

void BrokerCore::PushCurrent(SessionId session, uint64_t id, const Job* job,
                             Outbox* out) {
  if (job == nullptr) {
    PushEvent(session, NotFoundEvent(id), out);
    return;
  }
  if (IsTerminal(job->state) || job->state == v1::Job::RUNNING) {
    v1::JobEvent event;
    JobToEvent(*job, &event);
    PushEvent(session, std::move(event), out);
  }
  if (!IsTerminal(job->state)) AddWatcher(id, session);
}

void BrokerCore::PushEvent(SessionId session, v1::JobEvent event, Outbox* out) {
  auto flow = flows_.find(session);
  if (flow != flows_.end()) {
    SessionFlow& f = flow->second;
    f.pushed_bytes += event.ByteSizeLong();
    if (!f.paused && f.pushed_bytes >= SessionWindowBytes()) {
      f.paused = true;
      out->drain_reports.push_back(session);
    }
  }
  out->AddEvent(session, std::move(event));
}

uint64_t BrokerCore::SessionWindowBytes() const {
  return options_.session_window_bytes > 0 ? options_.session_window_bytes
                                           : 4 * options_.max_response_bytes;
}

void BrokerCore::OnSessionDrained(SessionId session, Outbox* out) {
  auto it = flows_.find(session);
  if (it == flows_.end()) return;
  SessionFlow& f = it->second;
  f.paused = false;
  f.pushed_bytes = 0;
  while (!f.owed.empty() && !f.paused) {
    const SessionFlow::Owed owed = f.owed.front();
    f.owed.pop_front();
    Unowe(owed.job_id);
    const Job* job = jobs_.Find(owed.job_id);
    if (job != nullptr && !owed.checked &&
        !f.caller.SeesResultsOf(job->owner.str())) {
      job = nullptr;
    }
    // Null: unknown then, or its retention ended while it was owed. Live:
    // an id unknown when watched that names a job by now.
    PushCurrent(session, owed.job_id, job, out);
  }
  if (f.owed.empty()) {
    f.owed.shrink_to_fit();
    for (auto& reply : f.after_owed) out->replies.push_back(std::move(reply));
    f.after_owed.clear();
  }
}

void BrokerCore::AfterOwed(SessionId session, std::function<void()> reply,
                           Outbox* out) {
  auto it = flows_.find(session);
  if (it != flows_.end() && !it->second.owed.empty()) {
    it->second.after_owed.push_back(std::move(reply));
    return;
  }
  out->replies.push_back(std::move(reply));
}

size_t BrokerCore::TEST_deferred_events(SessionId session) const {
  auto it = flows_.find(session);
  return it == flows_.end() ? 0 : it->second.owed.size();
}

absl::Status BrokerCore::Watch(
    SessionId session, const Caller& caller,
    const google::protobuf::RepeatedField<uint64_t>& ids, Outbox* out) {
  if (static_cast<uint64_t>(ids.size()) > options_.max_watch_ids) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a Watch names ", ids.size(), " job ids; the limit is ",
        options_.max_watch_ids,
        " per request (--max_watch_ids): send them in several Watch "
        "messages"));
  }
  // Each id once: a repeated id would copy its result again.
  absl::flat_hash_set<uint64_t> seen;
  seen.reserve(ids.size());
  std::vector<uint64_t> distinct;
  distinct.reserve(ids.size());
  uint64_t adds = 0;
  for (uint64_t id : ids) {
    if (!seen.insert(id).second) continue;
    distinct.push_back(id);
    const Job* job = jobs_.Find(id);
    if (job == nullptr || IsTerminal(job->state) ||
        !caller.SeesResultsOf(job->owner.str())) {
      continue;
    }
    auto w = watchers_.find(id);
    if (w == watchers_.end() || std::find(w->second.begin(), w->second.end(),
                                          session) == w->second.end()) {
      ++adds;
    }
  }
  auto count = watched_by_session_.find(session);
  const uint64_t watched =
      count == watched_by_session_.end() ? 0 : count->second;
  if (watched + adds > options_.max_watched_per_session) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this session watches ", watched, " unfinished jobs and asks for ",
        adds, " more; the limit is ", options_.max_watched_per_session,
        " per session (--max_watched_per_session): watch fewer at a time"));
  }
  flows_.try_emplace(session);
  for (uint64_t id : distinct) WatchOne(session, caller, id, out);
  return absl::OkStatus();
}

void BrokerCore::CloseSession(SessionId session) {
  watched_by_session_.erase(session);
  auto it = flows_.find(session);
  if (it == flows_.end()) return;
  for (const SessionFlow::Owed& owed : it->second.owed) Unowe(owed.job_id);
  flows_.erase(it);
}

void BrokerCore::Unowe(uint64_t id) {
  auto it = owed_jobs_.find(id);
  if (it != owed_jobs_.end() && --it->second == 0) owed_jobs_.erase(it);
}

void BrokerCore::AddWatcher(uint64_t id, SessionId session) {
  auto& sessions = watchers_[id];
  if (std::find(sessions.begin(), sessions.end(), session) != sessions.end()) {
    return;
  }
  sessions.push_back(session);
  ++watched_by_session_[session];
}

void BrokerCore::RemoveWatchers(uint64_t id) {
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  for (SessionId s : it->second) {
    auto count = watched_by_session_.find(s);
    // Absent: the session closed.
    if (count != watched_by_session_.end() && --count->second == 0) {
      watched_by_session_.erase(count);
    }
  }
  watchers_.erase(it);
}

v1::CancelResponse BrokerCore::Cancel(
    const Caller& caller, const google::protobuf::RepeatedField<uint64_t>& ids,
    absl::Time now, Outbox* out) {
  v1::CancelResponse resp;
  for (uint64_t id : ids) {
    Job* job = jobs_.Find(id);
    if (job != nullptr && !caller.SeesResultsOf(job->owner.str())) {
      job = nullptr;  // not the caller's to cancel: as if unknown
    }
    if (job == nullptr) {
      resp.add_cancelled(false);
      resp.add_states(v1::Job::STATE_UNSPECIFIED);
      continue;
    }
    bool cancelled = false;
    if (job->state == v1::Job::QUEUED) {
      const bool in_ready_queue = !delayed_until_.contains(job->id);
      job->mutable_info().error_kind = "cancelled";
      job->mutable_info().error_message = "cancelled while queued";
      Finish(*job, v1::Job::CANCELLED, now, out);
      if (in_ready_queue) {
        ready_.Forget(job->task.str(),
                      [this](uint64_t id) { return IsQueued(id); });
      }
      cancelled = true;
    } else if (job->state == v1::Job::RUNNING) {
      // The worker is told to stop (a cooperative C++ task may still run to
      // its end); whatever it sends back is stale from here on.
      AbandonCurrentAttempt(*job, out);
      AttemptRecord& a = job->mutable_info().attempts.back();
      a.outcome = "cancelled";
      a.ended_at = now;
      job->mutable_info().error_kind = "cancelled";
      job->mutable_info().error_message =
          absl::StrCat("cancelled while running (attempt ",
                       job->attempt_number(), " on worker ", a.worker, ")");
      orphans_.erase(job->id);
      Finish(*job, v1::Job::CANCELLED, now, out);
      cancelled = true;
    } else if (job->state == v1::Job::CANCELLED) {
      cancelled = true;
    }
    resp.add_cancelled(cancelled);
    resp.add_states(job->state);
  }
  return resp;
}

v1::GetJobsResponse BrokerCore::GetJobs(const Caller& caller,
                                        const v1::GetJobsRequest& req) const {
  v1::GetJobsResponse resp;
  size_t bytes = 0;
  for (uint64_t id : req.job_ids()) {
    if (bytes >= options_.max_response_bytes) {
      // The rest would not fit the budget: the client asks again for them.
      resp.set_truncated(true);
      break;
    }
    v1::Job* p = resp.add_jobs();
    const Job* job = jobs_.Find(id);
    if (job != nullptr && !Visible(caller, *job)) job = nullptr;
    if (job == nullptr) {
      p->set_id(id);
      p->set_state(v1::Job::STATE_UNSPECIFIED);
      p->mutable_error()->set_kind("not_found");
      p->mutable_error()->set_message(absl::StrCat(
          "job ", id, " is unknown: never submitted, or its retention ended"));
    } else {
      JobToProto(*job,
                 req.include_result() && caller.SeesResultsOf(job->owner.str()),
                 p);
      if (job->state == v1::Job::QUEUED) {
        p->set_waiting_reason(WaitingReason(*job));
      }
    }
    bytes += p->ByteSizeLong() + 16;
  }
  return resp;
}

v1::ListJobsResponse BrokerCore::ListJobs(
    const Caller& caller, const v1::ListJobsRequest& req) const {
  v1::ListJobsResponse resp;
  const int limit = req.limit() > 0 ? req.limit() : 100;
  size_t bytes = 0;
  uint32_t scanned = 0;
  jobs_.ForEachNewest(
      [&](const Job& job) {
        if (req.max_scan() > 0 && scanned++ >= req.max_scan()) {
          // Not examined: the client resumes from here (ids only go down).
          resp.set_resume_before_id(job.id + 1);
          return false;
        }
        if (req.state() != v1::Job::STATE_UNSPECIFIED &&
            job.state != req.state()) {
          return true;
        }
        if (!req.task().empty() && job.task.str() != req.task()) return true;
        if (!Visible(caller, job)) return true;
        if (bytes >= options_.max_response_bytes) {
          resp.set_truncated(true);
          return false;
        }
        v1::Job* p = resp.add_jobs();
        JobToProto(job, /*include_result=*/false, p);
        p->clear_attempt_log();
        if (job.state == v1::Job::QUEUED) {
          p->set_waiting_reason(WaitingReason(job));
        }
        bytes += p->ByteSizeLong() + 16;
        return resp.jobs_size() < limit;
      },
      req.before_id());
  return resp;
}

v1::ListWorkersResponse BrokerCore::ListWorkers() {
  v1::ListWorkersResponse resp;
  for (WorkerEntry* w : workers_.All()) {
    v1::WorkerInfo* p = resp.add_workers();
    p->set_name(w->name);
    p->set_host(w->host);
    p->set_pid(w->pid);
    p->set_threads(w->threads);
    // Every job it holds, coroutine tasks too (WorkerInfo.busy).
    p->set_busy(static_cast<int32_t>(w->in_flight.size()));
    p->set_done(w->done);
    ToProto(w->last_heard, p->mutable_last_heartbeat());
    ToProto(w->registered_at, p->mutable_registered_at());
    for (const std::string& t : w->tasks) p->add_tasks(t);
    p->set_state(w->draining ? v1::WorkerInfo::DRAINING
                             : v1::WorkerInfo::READY);
  }
  return resp;
}

v1::Stats BrokerCore::GetStats(absl::Time now) const {
  v1::Stats s;
  s.set_queued(jobs_.count(v1::Job::QUEUED));
  s.set_running(jobs_.count(v1::Job::RUNNING));
  s.set_succeeded(jobs_.count(v1::Job::SUCCEEDED));
  s.set_failed(jobs_.count(v1::Job::FAILED));
  s.set_cancelled(jobs_.count(v1::Job::CANCELLED));
  s.set_submitted_total(jobs_.submitted_total());
  s.set_finished_total(jobs_.finished_total());
  s.set_succeeded_total(jobs_.finished_total(v1::Job::SUCCEEDED));
  s.set_failed_total(jobs_.finished_total(v1::Job::FAILED));
  s.set_cancelled_total(jobs_.finished_total(v1::Job::CANCELLED));
  s.set_forged_results(forged_results_);
  s.set_bad_result_pieces(bad_result_pieces_);
  // Rate over the last 10 seconds (or the uptime, if shorter), counting
  // the current second too.
  const int64_t sec = absl::ToUnixSeconds(now);
  uint64_t recent = 0;
  for (const auto& [bucket, n] : finish_buckets_) {
    if (bucket > sec - 10) recent += n;
  }
  const double window =
      std::clamp(absl::ToDoubleSeconds(now - started_at_), 1.0, 10.0);
  s.set_finish_rate(static_cast<double>(recent) / window);
  s.set_workers(static_cast<int32_t>(workers_.size()));
  s.set_threads(workers_.total_threads());
  ToProto(now - started_at_, s.mutable_uptime());
  std::vector<absl::Duration> recent_waits;
  recent_waits.reserve(waits_.size());
  for (const auto& [at, wait] : waits_) {
    if (at > now - absl::Seconds(60)) recent_waits.push_back(wait);
  }
  if (!recent_waits.empty()) {
    std::sort(recent_waits.begin(), recent_waits.end());
    // Nearest rank: the smallest wait at or above the fraction; the index
    // is clamped to the vector, which is not empty here.
    auto rank = [&](double q) {
      size_t i = static_cast<size_t>(
          std::ceil(q * static_cast<double>(recent_waits.size())));
      i = std::clamp<size_t>(i, 1, recent_waits.size()) - 1;
      return recent_waits[i];
    };
    ToProto(rank(0.50), s.mutable_wait_p50());
    ToProto(rank(0.99), s.mutable_wait_p99());
    s.set_wait_samples(static_cast<uint32_t>(recent_waits.size()));
  }
  return s;
}

CoreMetrics BrokerCore::Metrics(absl::Time now) {
  CoreMetrics m;
  m.queue_wait = queue_wait_;
  m.run_time = run_time_;
  m.submit_to_start = submit_to_start_;
  m.requeues = requeues_;
  m.tasks = jobs_.task_metrics().Snapshot();
  if (const Job* oldest = jobs_.OldestQueued()) {
    m.any_queued = true;
    if (oldest->submitted_at != absl::InfinitePast()) {
      m.oldest_queued_age =
          std::max(now - oldest->submitted_at, absl::ZeroDuration());
    }
  }
  return m;
}

std::string BrokerCore::WaitingReason(const Job& job) const {
  if (auto it = delayed_until_.find(job.id); it != delayed_until_.end()) {
    return absl::StrCat("attempt ", job.attempt_number(),
                        " failed; the next one may start at ",
                        absl::FormatTime(it->second));
  }
  if (!workers_.Offers(job.task.str())) {
    if (job.task.str() == "sys.exec") {
      return "no live worker offers task 'sys.exec': a worker runs shell "
             "commands only when started with --allow_exec";
    }
    return absl::StrCat("no live worker offers task '", job.task.str(), "'");
  }
  return "waiting for a free worker thread";
}

// ---------------------------------------------------------------- workers

void BrokerCore::OnWorkerFrame(const std::string& identity,
                               const std::string& key, const wire::Frame& frame,
                               absl::Time now, Outbox* out) {
  if (frame.has_register_()) {
    OnRegister(identity, key, frame.register_(), now, out);
    return;
  }
  WorkerEntry* w = workers_.Find(identity);
  if (w == nullptr) {
    // We restarted, or declared it lost: it must introduce itself again.
    // Its results still count where fencing allows (a job nobody else
    // completed), so work done across a broker restart is not redone.
    if (frame.has_results()) OnResults(nullptr, key, frame.results(), now, out);
    wire::Frame reconnect;
    reconnect.mutable_reconnect();
    SendToWorker(identity, std::move(reconnect), out);
    return;
  }
  w->last_heard = now;
  switch (frame.body_case()) {
    case wire::Frame::kResults:
      OnResults(w, key, frame.results(), now, out);
      break;
    case wire::Frame::kWorkerState:
      if (frame.worker_state().leaving()) {
        DEXEC_LOG(INFO) << "worker left worker=" << w->name;
        DropWorker(*w, "worker left", now, out);
      } else if (frame.worker_state().draining()) {
        DEXEC_LOG(INFO) << "worker draining worker=" << w->name
                        << " busy=" << w->busy();
        workers_.SetDraining(*w);
      }
      break;
    case wire::Frame::kHeartbeat:
      break;
    default:
      // Frames only a broker sends: a confused peer. Ignore.
      break;
  }
}

void BrokerCore::OnRegister(const std::string& identity, const std::string& key,
                            const wire::Register& reg, absl::Time now,
                            Outbox* out) {
  if (WorkerEntry* old = workers_.Find(identity)) {
    // Attempts the worker says it still holds stay with it; the rest of
    // what we thought it held is released.
    for (const wire::TaskRef& ref : reg.held()) {
      auto it = old->in_flight.find(ref.job_id());
      if (it != old->in_flight.end() && it->second == ref.attempt()) {
        old->Release(it);
      }
    }
    DropWorker(*old, "worker registered again", now, out);
  }
  WorkerEntry& w = workers_.Add(identity, reg, now);
  w.key = key;
  // A worker gets no more credit than the broker allows, whatever it claims.
  const int32_t cap = std::max(1, options_.max_worker_credit);
  if (w.threads > cap || w.prefetch > cap - std::min(w.threads, cap)) {
    DEXEC_LOG(WARNING) << "worker credit capped worker=" << w.name
                       << " threads=" << w.threads << " prefetch=" << w.prefetch
                       << " cap=" << cap;
    w.threads = std::min(w.threads, cap);
    w.prefetch = std::max(0, std::min(w.prefetch, cap - w.threads));
  }
  if (w.concurrency > cap) {
    DEXEC_LOG(WARNING) << "worker concurrency capped worker=" << w.name
                       << " concurrency=" << w.concurrency << " cap=" << cap;
    w.concurrency = cap;
  }
  wire::Frame welcome;
  welcome.mutable_welcome()->set_heartbeat_interval_ms(
      absl::ToInt64Milliseconds(options_.heartbeat_interval));
  welcome.mutable_welcome()->set_liveness(options_.liveness);
  // A worker that does not chunk (an older one) fails a result longer
  // than one piece as result_too_large rather than send a frame the worker
  // socket refuses (which would drop its connection and everything on it).
  const uint64_t max_result =
      reg.chunked_results() ? options_.max_result_bytes
                            : std::min<uint64_t>(options_.max_result_bytes,
                                                 wire::kMaxResultChunkBytes);
  welcome.mutable_welcome()->set_max_result_bytes(
      static_cast<int64_t>(max_result));
  welcome.mutable_welcome()->set_max_frame_bytes(
      static_cast<int64_t>(wire::kMaxWorkerFrameBytes));
  welcome.mutable_welcome()->set_max_chunk_bytes(
      static_cast<int64_t>(wire::kMaxResultChunkBytes));
  SendToWorker(identity, std::move(welcome), out);
  // Held attempts of settled jobs are worthless: tell the worker to stop.
  wire::Frame abandon;
  int reclaimed = 0;
  for (const wire::TaskRef& ref : reg.held()) {
    if (Reclaim(w, ref)) {
      ++reclaimed;
      continue;
    }
    const Job* job = jobs_.Find(ref.job_id());
    if (job == nullptr || IsTerminal(job->state)) {
      *abandon.mutable_abandon()->add_tasks() = ref;
    }
  }
  if (abandon.has_abandon()) SendToWorker(identity, std::move(abandon), out);
  DEXEC_LOG(INFO) << "worker joined worker=" << w.name << " host=" << w.host
                  << " threads=" << w.threads << " prefetch=" << w.prefetch
                  << " tasks=" << w.tasks.size() << " held=" << reg.held_size()
                  << " reclaimed=" << reclaimed;
  dirty_ = true;
}

int32_t BrokerCore::CreditFor(const WorkerEntry& w, const Job& job) const {
  // Per thread, as many tasks as it runs in kPrefetchHorizon (a few round
  // trips under load): they are there when the thread frees up. A task
  // longer than the horizon gets none: prefetched, it could wait behind
  // another at a busy worker while a thread elsewhere is free — an extra
  // wave at the end of a batch (1000 x 100 ms on 100 threads took 1.1 s
  // with one prefetched task per worker, 1.02 s with none).
  constexpr double kPrefetchHorizonUs = 5000;
  int32_t extra = w.threads;
  const double mean = job.task.mean_run_us();
  if (mean >= 0) {
    const double per_thread =
        std::floor(kPrefetchHorizonUs / std::max(mean, 1.0));
    extra = static_cast<int32_t>(std::min(1e6, w.threads * per_thread));
  }
  return w.threads + std::min(extra, w.prefetch);
}

bool BrokerCore::Reclaim(WorkerEntry& w, const wire::TaskRef& ref) {
  Job* job = jobs_.Find(ref.job_id());
  if (job == nullptr || job->state != v1::Job::RUNNING ||
      job->attempt_number() != ref.attempt()) {
    return false;
  }
  const std::string& bound = job->info().attempts.back().worker_key;
  if (!bound.empty() && bound != w.key) return false;  // not its attempt
  for (WorkerEntry* other : workers_.All()) {
    if (other != &w && other->in_flight.contains(job->id)) return false;
  }
  w.Hold(job->id, ref.attempt(), job->task.str());
  orphans_.erase(job->id);
  return true;
}

void BrokerCore::OnResults(WorkerEntry* w, const std::string& key,
                           const wire::Results& results, absl::Time now,
                           Outbox* out) {
  for (const wire::TaskResult& r : results.results()) {
    if (r.output_size() == 0) {
      if (w != nullptr) {
        auto it = assemblies_.find(w->identity);
        if (it != assemblies_.end() && it->second.partial.open) {
          const PartialResult& p = it->second.partial;
          BadPiece(*w, p.job_id, p.attempt,
                   "another result came between the pieces of an output", now,
                   out);
        }
      }
      OnResult(w, key, r, r.output().size(), nullptr, now, out);
      continue;
    }
    if (w == nullptr) {
      // No partial result is kept for an identity that has not registered
      // (it would be a way to make the broker hold memory for nobody). The
      // worker sent it after the broker's latest frame, so it holds it in
      // doubt and offers it again once it has registered.
      ++bad_result_pieces_;
      continue;
    }
    wire::TaskResult whole;
    if (OnPiece(*w, r, now, out, &whole)) {
      OnResult(w, key, whole, r.output_size(), whole.mutable_output(), now,
               out);
    }
  }
}

bool BrokerCore::OnPiece(WorkerEntry& w, const wire::TaskResult& r,
                         absl::Time now, Outbox* out, wire::TaskResult* whole) {
  Assembly& a = assemblies_[w.identity];
  bool same_broken = false;  // this piece's own output just broke
  if (a.partial.open) {
    const PartialResult& p = a.partial;
    const bool same = p.job_id == r.job_id() && p.attempt == r.attempt();
    if (!same || p.size != r.output_size() || p.received != r.output_offset()) {
      same_broken = same;
      BadPiece(w, p.job_id, p.attempt,
               same ? "a piece out of order"
                    : "a piece of another result came in the middle of an "
                      "output",
               now, out);
    }
  }
  Assembly& b = assemblies_[w.identity];  // BadPiece may have rehashed
  if (!b.partial.open) {
    if (same_broken) return false;  // dropped with the rest of its output
    if (r.output_offset() != 0) {
      BadPiece(w, r.job_id(), r.attempt(), "a piece without its output's start",
               now, out);
      return false;
    }
    b.partial = PartialResult();
    PartialResult& p = b.partial;
    p.open = true;
    p.job_id = r.job_id();
    p.attempt = r.attempt();
    p.size = r.output_size();
    // Over the limit: the job fails result_too_large once the last piece
    // is in, and nothing of it is kept meanwhile.
    p.keep = p.size <= options_.max_result_bytes;
    if (p.keep) p.output.reserve(p.size);
  }
  PartialResult& p = b.partial;
  p.received += r.output().size();
  if (p.keep) {
    p.output.append(r.output());
    partial_result_bytes_ += r.output().size();
  }
  if (p.received < p.size) return false;
  // The last piece says how the task ended.
  whole->set_job_id(r.job_id());
  whole->set_attempt(r.attempt());
  whole->set_ok(r.ok());
  whole->set_error_kind(r.error_kind());
  whole->set_error_message(r.error_message());
  whole->set_started_at_us(r.started_at_us());
  whole->set_finished_at_us(r.finished_at_us());
  partial_result_bytes_ -= p.output.size();
  *whole->mutable_output() = std::move(p.output);
  b.partial = PartialResult();
  return true;
}

void BrokerCore::BadPiece(WorkerEntry& w, uint64_t job_id, uint32_t attempt,
                          const std::string& why, absl::Time now, Outbox* out) {
  ++bad_result_pieces_;
  auto a = assemblies_.find(w.identity);
  if (a != assemblies_.end()) {
    if (a->second.partial.open && a->second.partial.job_id == job_id &&
        a->second.partial.attempt == attempt) {
      partial_result_bytes_ -= a->second.partial.output.size();
      a->second.partial = PartialResult();
    }
    // Once per worker per burst: a worker can send broken pieces in a loop.
    if (now - a->second.last_bad_log >= absl::Seconds(10)) {
      a->second.last_bad_log = now;
      DEXEC_LOG(WARNING) << "broken result dropped worker=" << w.name
                         << " job=" << job_id << " attempt=" << attempt
                         << " reason=\"" << why
                         << "\" bad_result_pieces_total=" << bad_result_pieces_;
    }
  }
  auto held = w.in_flight.find(job_id);
  if (held == w.in_flight.end() || held->second != attempt) return;
  // The worker will not send this result again: end the attempt now (its
  // credit with it) rather than wait for a timeout that may never come.
  w.Release(held);
  dirty_ = true;
  Job* job = jobs_.Find(job_id);
  if (job == nullptr || job->state != v1::Job::RUNNING ||
      job->attempt_number() != attempt) {
    return;
  }
  FailAttempt(
      *job, "bad_result", /*retry=*/true, std::string(error_kind::kWorkerLost),
      absl::StrCat("worker ", w.name, " sent a broken result (", why,
                   ") for attempt ", attempt, " of ", job->max_attempts),
      now, out);
}

void BrokerCore::ForgetPartial(const std::string& identity) {
  auto it = assemblies_.find(identity);
  if (it == assemblies_.end()) return;
  if (it->second.partial.open) {
    partial_result_bytes_ -= it->second.partial.output.size();
  }
  assemblies_.erase(it);
}

void BrokerCore::OnResult(WorkerEntry* w, const std::string& key,
                          const wire::TaskResult& r, uint64_t size,
                          std::string* output, absl::Time now, Outbox* out) {
  const std::string worker_name = w != nullptr ? w->name : "(unregistered)";
  // Credit comes back whatever happens to the result.
  if (w != nullptr) {
    auto held = w->in_flight.find(r.job_id());
    if (held != w->in_flight.end() && held->second == r.attempt()) {
      w->Release(held);
      ++w->done;
      dirty_ = true;
    }
  }
  Job* job = jobs_.Find(r.job_id());
  // Fencing: a result counts only for a job that has not completed, and
  // only for an attempt that was really dispatched. A late result of an
  // attempt we gave up on still completes the job if nothing else did.
  if (job == nullptr || IsTerminal(job->state) || r.attempt() == 0 ||
      r.attempt() > job->attempt_number()) {
    DEXEC_LOG(DEBUG) << "stale result dropped job=" << r.job_id()
                     << " attempt=" << r.attempt() << " worker=" << worker_name;
    return;
  }
  // The attempt is bound to the key it was dispatched to: a result from
  // any other authenticated identity is forged, whatever its number.
  // (Attempts journaled before keys existed have none: fencing only.)
  const std::string& bound = job->info().attempts[r.attempt() - 1].worker_key;
  if (!bound.empty() && bound != key) {
    ++forged_results_;
    DEXEC_LOG(DEBUG) << "result from another key dropped job=" << r.job_id()
                     << " attempt=" << r.attempt() << " worker=" << worker_name;
    return;
  }
  if (r.finished_at_us() >= r.started_at_us() && r.started_at_us() > 0) {
    const double us =
        static_cast<double>(r.finished_at_us() - r.started_at_us());
    const double mean = job->task.mean_run_us();
    job->task.set_mean_run_us(mean < 0 ? us : 0.8 * mean + 0.2 * us);
  }
  const bool current =
      r.attempt() == job->attempt_number() && job->state == v1::Job::RUNNING;
  if (!current && job->state == v1::Job::RUNNING) {
    // Another attempt is running elsewhere: this result wins, stop that.
    AbandonCurrentAttempt(*job, out);
  }
  orphans_.erase(job->id);
  AttemptRecord& a = job->mutable_info().attempts[r.attempt() - 1];
  if (r.started_at_us() > 0)
    a.started_at = absl::FromUnixMicros(r.started_at_us());
  a.ended_at =
      r.finished_at_us() > 0 ? absl::FromUnixMicros(r.finished_at_us()) : now;
  // The worker's own clock at both ends when it sent them; else from
  // dispatch to now.
  run_time_.Observe(absl::ToDoubleSeconds(
      std::max(a.ended_at - a.started_at, absl::ZeroDuration())));
  if (size > options_.max_result_bytes) {
    // A worker that did not check (it was not told, or ignores it): the
    // output is not kept, so one job cannot hold more than the limit.
    job->mutable_info().result.clear();
    a.outcome = "failed";
    job->mutable_info().error_kind = std::string(error_kind::kResultTooLarge);
    job->mutable_info().error_message =
        wire::ResultTooLargeMessage(size, options_.max_result_bytes);
    Finish(*job, v1::Job::FAILED, now, out);
    return;
  }
  if (output != nullptr) {
    job->mutable_info().result = std::move(*output);
  } else {
    job->mutable_info().result = r.output();
  }
  if (r.ok()) {
    a.outcome = "succeeded";
    job->mutable_info().error_kind.clear();
    job->mutable_info().error_message.clear();
    Finish(*job, v1::Job::SUCCEEDED, now, out);
    return;
  }
  const std::string kind =
      r.error_kind().empty() ? "task_error" : r.error_kind();
  a.outcome = kind == "timeout" ? "timeout" : "failed";
  const bool retryable = job->retry_task_errors && kind != "unknown_task" &&
                         kind != "bad_payload" && kind != "cancelled";
  if (current && retryable &&
      job->attempt_number() < static_cast<uint32_t>(job->max_attempts)) {
    DEXEC_LOG(INFO) << "job failed, retrying job=" << job->id
                    << " attempt=" << r.attempt() << " kind=" << kind;
    Requeue(*job, now, out, /*backoff=*/true);
    return;
  }
  job->mutable_info().error_kind =
      wire::TruncateUtf8(kind, wire::kMaxErrorKindBytes);
  job->mutable_info().error_message =
      wire::TruncateUtf8(r.error_message(), wire::kMaxErrorMessageBytes);
  Finish(*job, v1::Job::FAILED, now, out);
}

void BrokerCore::OnWorkerUnreachable(const std::string& identity,
                                     absl::Time now, Outbox* out) {
  if (WorkerEntry* w = workers_.Find(identity)) {
    DropWorker(*w, "worker unreachable", now, out);
  }
}

void BrokerCore::DropWorker(WorkerEntry& w, const std::string& why,
                            absl::Time now, Outbox* out) {
  const std::string name = w.name;
  const std::string identity = w.identity;
  std::vector<std::pair<uint64_t, uint32_t>> held(w.in_flight.begin(),
                                                  w.in_flight.end());
  workers_.Remove(identity);  // `w` is gone from here on
  ForgetPartial(identity);
  std::sort(held.begin(), held.end());
  size_t requeued = 0, failed = 0;
  for (auto [id, attempt] : held) {
    Job* job = jobs_.Find(id);
    if (job == nullptr || job->state != v1::Job::RUNNING ||
        job->attempt_number() != attempt) {
      continue;
    }
    FailAttempt(*job, "worker_lost", /*retry=*/true, "worker_lost",
                absl::StrCat("worker ", name, " was lost (", why,
                             ") while running attempt ", attempt, " of ",
                             job->max_attempts),
                now, out);
    (job->state == v1::Job::QUEUED ? requeued : failed)++;
  }
  DEXEC_LOG(INFO) << "worker removed worker=" << name << " reason=\"" << why
                  << "\" requeued=" << requeued << " failed=" << failed;
  dirty_ = true;
}

void BrokerCore::FailAttempt(Job& job, const std::string& outcome, bool retry,
                             const std::string& kind,
                             const std::string& message, absl::Time now,
                             Outbox* out) {
  AttemptRecord& a = job.mutable_info().attempts.back();
  a.outcome = outcome;
  a.ended_at = now;
  if (retry && job.attempt_number() < static_cast<uint32_t>(job.max_attempts)) {
    Requeue(job, now, out, /*backoff=*/true);
    return;
  }
  job.mutable_info().error_kind = kind;
  job.mutable_info().error_message = message;
  Finish(job, v1::Job::FAILED, now, out);
}

void BrokerCore::Requeue(Job& job, absl::Time now, Outbox* out, bool backoff) {
  if (job.state != v1::Job::QUEUED) jobs_.SetState(job, v1::Job::QUEUED, now);
  if (!job.info().attempts.empty()) {
    // The attempt's outcome says why (FailAttempt, OnResults, Tick).
    const std::string& outcome = job.info().attempts.back().outcome;
    // A broken chunked result is its worker's failure to deliver, as a
    // lost worker's is.
    const size_t reason = outcome == "worker_lost" || outcome == "bad_result"
                              ? 0
                          : outcome == "timeout"          ? 1
                          : outcome == "broker_restarted" ? 3
                                                          : 2;
    ++requeues_[reason];
  }
  if (backoff && options_.requeue_backoff > absl::ZeroDuration()) {
    const int doublings =
        std::min<int>(20, std::max<int>(0, job.attempt_number() - 1));
    const absl::Duration wait =
        std::min(options_.requeue_backoff * (int64_t{1} << doublings),
                 options_.max_requeue_backoff);
    delayed_.push(Delayed{now + wait, job.id});
    delayed_until_[job.id] = now + wait;
  } else {
    ready_.Push(job.task.str(), job.priority, job.id);
  }
  Changed(job);
  Notify(job, out);
  dirty_ = true;
}

void BrokerCore::ReleaseDelayed(absl::Time now) {
  while (!delayed_.empty() && delayed_.top().at <= now) {
    const Delayed d = delayed_.top();
    delayed_.pop();
    auto it = delayed_until_.find(d.job_id);
    if (it == delayed_until_.end() || it->second != d.at) continue;
    delayed_until_.erase(it);
    const Job* job = jobs_.Find(d.job_id);
    if (job == nullptr || job->state != v1::Job::QUEUED) continue;
    ready_.Push(job->task.str(), job->priority, job->id);
    dirty_ = true;
  }
}

absl::Time BrokerCore::NextWakeup() const {
  absl::Time next = orphans_due_;
  if (!delayed_.empty()) next = std::min(next, delayed_.top().at);
  return next;
}

void BrokerCore::Finish(Job& job, JobState state, absl::Time now, Outbox* out) {
  jobs_.SetState(job, state, now);
  const int64_t sec = absl::ToUnixSeconds(now);
  if (finish_buckets_.empty() || finish_buckets_.back().first != sec) {
    finish_buckets_.emplace_back(sec, 0);
    while (finish_buckets_.size() > 12) finish_buckets_.pop_front();
  }
  ++finish_buckets_.back().second;
  // The payload is not needed any more; the result is kept for retention.
  job.mutable_info().payload_size = job.payload.size();
  payload_bytes_ -= std::min<uint64_t>(payload_bytes_, job.payload.size());
  std::string().swap(job.payload);
  delayed_until_.erase(job.id);
  Changed(job);
  Notify(job, out);
  RemoveWatchers(job.id);
}

void BrokerCore::AbandonCurrentAttempt(Job& job, Outbox* out) {
  if (job.info().attempts.empty()) return;
  AttemptRecord& a = job.mutable_info().attempts.back();
  if (a.outcome.empty()) a.outcome = "abandoned";
  for (WorkerEntry* w : workers_.All()) {
    auto it = w->in_flight.find(job.id);
    if (it == w->in_flight.end()) continue;
    wire::Frame frame;
    wire::TaskRef* ref = frame.mutable_abandon()->add_tasks();
    ref->set_job_id(job.id);
    ref->set_attempt(it->second);
    w->Release(it);
    SendToWorker(w->identity, std::move(frame), out);
    dirty_ = true;
  }
}

void BrokerCore::Notify(const Job& job, Outbox* out) {
  auto it = watchers_.find(job.id);
  if (it == watchers_.end()) return;
  const bool terminal = IsTerminal(job.state);
  for (SessionId s : it->second) {
    if (terminal) {
      auto flow = flows_.find(s);
      if (flow != flows_.end() && flow->second.paused) {
        flow->second.owed.push_back({job.id, /*checked=*/true});
        ++owed_jobs_[job.id];
        continue;
      }
    }
    v1::JobEvent event;
    JobToEvent(job, &event);
    PushEvent(s, std::move(event), out);
  }
}

bool BrokerCore::IsQueued(uint64_t id) const {
  const Job* job = jobs_.Find(id);
  return job != nullptr && job->state == v1::Job::QUEUED;
}

void BrokerCore::Dispatch(Job& job, WorkerEntry& w, absl::Time now,
                          Outbox* out) {
  {
    // Waiting since submit, or since the previous attempt ended.
    const auto& attempts = job.info().attempts;
    absl::Time since = job.submitted_at;
    if (!attempts.empty() && attempts.back().ended_at != absl::InfinitePast()) {
      since = attempts.back().ended_at;
    }
    const absl::Duration wait = std::max(now - since, absl::ZeroDuration());
    // (A restored job without a submit time gives no sample.)
    if (since != absl::InfinitePast()) {
      queue_wait_.Observe(absl::ToDoubleSeconds(wait));
      if (attempts.empty()) {
        submit_to_start_.Observe(absl::ToDoubleSeconds(wait));
      }
      if (waits_.size() < kWaitSamples) {
        waits_.emplace_back(now, wait);
      } else {
        waits_[waits_next_] = {now, wait};
      }
      waits_next_ = (waits_next_ + 1) % kWaitSamples;
    }
  }
  jobs_.SetState(job, v1::Job::RUNNING, now);
  job.mutable_info().attempts.push_back(
      AttemptRecord{w.name, w.key, w.identity, now, absl::InfinitePast(), ""});
  const uint32_t attempt = job.attempt_number();
  w.Hold(job.id, attempt, job.task.str());
  if (job.timeout > absl::ZeroDuration()) {
    deadlines_.push(
        Deadline{now + job.timeout + options_.timeout_grace, job.id, attempt});
  }
  auto open = out->open_dispatch.find(w.identity);
  const size_t bytes = job.payload.size() + job.task.str().size() + 64;
  if (open == out->open_dispatch.end() ||
      out->to_workers[open->second.first].second.dispatch().tasks_size() >=
          kMaxTasksPerDispatch ||
      (open->second.second > 0 &&
       open->second.second + bytes > kDispatchFrameBudget)) {
    out->to_workers.emplace_back(w.identity, wire::Frame());
    out->to_workers.back().second.mutable_dispatch();
    open = out->open_dispatch
               .insert_or_assign(w.identity, std::pair<size_t, size_t>(
                                                 out->to_workers.size() - 1, 0))
               .first;
  }
  open->second.second += bytes;
  wire::Task* t = out->to_workers[open->second.first]
                      .second.mutable_dispatch()
                      ->add_tasks();
  t->set_job_id(job.id);
  t->set_attempt(attempt);
  t->set_name(job.task.str());
  t->set_payload(job.payload);
  t->set_timeout_ms(absl::ToInt64Milliseconds(job.timeout));
  Changed(job);
  Notify(job, out);
}

void BrokerCore::Schedule(absl::Time now, Outbox* out) {
  ReleaseDelayed(now);
  if (!dirty_) return;
  dirty_ = false;
  auto is_live = [this](uint64_t id) { return IsQueued(id); };
  std::vector<WorkerEntry*> workers = workers_.All();
  // Coroutine tasks first: they hold no thread, so each worker takes up to
  // its concurrency of them, least loaded first, round-robin.
  {
    std::vector<WorkerEntry*> open;
    for (WorkerEntry* w : workers) {
      if (!w->draining && !w->async_tasks.empty()) open.push_back(w);
    }
    std::stable_sort(open.begin(), open.end(),
                     [](const WorkerEntry* a, const WorkerEntry* b) {
                       return a->async_busy() < b->async_busy();
                     });
    while (!open.empty()) {
      std::vector<WorkerEntry*> next;
      for (WorkerEntry* w : open) {
        if (w->async_busy() >= w->concurrency) continue;
        uint64_t id = ready_.Pop(w->async_tasks, is_live);
        if (id == 0) continue;
        Job& job = *jobs_.Find(id);
        if (AvoidsWorker(job, *w)) {
          ready_.Push(job.task.str(), job.priority, id);
          continue;
        }
        Dispatch(job, *w, now, out);
        if (w->async_busy() < w->concurrency) next.push_back(w);
      }
      open.swap(next);
    }
  }
  // Two passes: first fill free threads everywhere (so no worker idles while
  // another holds prefetched work it could run), then prefetch up to credit.
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<WorkerEntry*> open;
    for (WorkerEntry* w : workers) {
      if (!w->draining) open.push_back(w);
    }
    // Round-robin, one job per worker per round, least busy first.
    std::stable_sort(open.begin(), open.end(),
                     [](const WorkerEntry* a, const WorkerEntry* b) {
                       return a->busy() * b->threads < b->busy() * a->threads;
                     });
    while (!open.empty()) {
      std::vector<WorkerEntry*> next;
      for (WorkerEntry* w : open) {
        const int32_t limit = pass == 0 ? w->threads : w->capacity();
        if (w->busy() >= limit) continue;
        uint64_t id = ready_.Pop(w->thread_tasks, is_live);
        if (id == 0) continue;
        Job& job = *jobs_.Find(id);
        if (AvoidsWorker(job, *w)) {
          // Leave it for the other workers; this one's turn ends.
          ready_.Push(job.task.str(), job.priority, id);
          continue;
        }
        if (pass == 1 && w->busy() >= CreditFor(*w, job)) {
          // Enough of this kind of work waits there already: leave the job
          // in its place for a worker with a free thread.
          ready_.Push(job.task.str(), job.priority, id);
          continue;
        }
        Dispatch(job, *w, now, out);
        if (w->busy() < limit) next.push_back(w);
      }
      open.swap(next);
    }
  }
}

bool BrokerCore::AvoidsWorker(const Job& job, const WorkerEntry& w) const {
  if (job.details == nullptr || job.details->attempts.empty()) return false;
  const AttemptRecord& last = job.details->attempts.back();
  return last.outcome == "timeout" && last.worker_identity == w.identity &&
         workers_.OfferCount(job.task.str()) > 1;
}

void BrokerCore::DropWorkersWithKey(const std::string& key, absl::Time now,
                                    Outbox* out) {
  for (WorkerEntry* w : workers_.All()) {
    if (w->key != key) continue;
    // Tell it to go (it will fail the handshake when it reconnects).
    wire::Frame reconnect;
    reconnect.mutable_reconnect();
    SendToWorker(w->identity, std::move(reconnect), out);
    DropWorker(*w, "its key was revoked", now, out);
  }
}

void BrokerCore::Tick(absl::Time now, Outbox* out) {
  const absl::Duration silence =
      options_.heartbeat_interval * options_.liveness;
  for (WorkerEntry* w : workers_.All()) {
    if (now - w->last_heard > silence) {
      DEXEC_LOG(WARNING) << "worker lost worker=" << w->name << " silent_for="
                         << absl::FormatDuration(now - w->last_heard);
      DropWorker(*w, "no heartbeat", now, out);
      continue;
    }
    if (now - w->last_sent >= options_.heartbeat_interval) {
      wire::Frame hb;
      hb.mutable_heartbeat();
      SendToWorker(w->identity, std::move(hb), out);
    }
  }
  while (!deadlines_.empty() && deadlines_.top().at <= now) {
    Deadline d = deadlines_.top();
    deadlines_.pop();
    Job* job = jobs_.Find(d.job_id);
    if (job == nullptr || job->state != v1::Job::RUNNING ||
        job->attempt_number() != d.attempt) {
      continue;
    }
    DEXEC_LOG(INFO) << "job timed out at broker job=" << job->id
                    << " attempt=" << d.attempt;
    AbandonCurrentAttempt(*job, out);
    // No answer at all is the worker's failure, not the task's (a worker
    // that reports a timeout itself answered): like a lost worker, it uses
    // the next attempt while any remain, on another worker if one offers
    // the task (AvoidsWorker).
    FailAttempt(*job, "timeout", /*retry=*/true, "timeout",
                absl::StrCat("no result within the job's timeout of ",
                             absl::FormatDuration(job->timeout), " (+",
                             absl::FormatDuration(options_.timeout_grace),
                             " grace) on attempt ", d.attempt, " of ",
                             job->max_attempts),
                now, out);
  }
  if (now >= orphans_due_) {
    // Jobs that were running when the broker stopped and whose worker did
    // not come back to claim them: run them again.
    size_t requeued = 0;
    for (uint64_t id : orphans_) {
      Job* job = jobs_.Find(id);
      if (job == nullptr || job->state != v1::Job::RUNNING) continue;
      AttemptRecord& a = job->mutable_info().attempts.back();
      a.outcome = "broker_restarted";
      a.ended_at = now;
      Requeue(*job, now, out, /*backoff=*/false);
      ++requeued;
    }
    if (requeued > 0) {
      DEXEC_LOG(INFO) << "jobs running before the restart were not claimed "
                         "by their workers; requeued="
                      << requeued;
    }
    orphans_.clear();
    orphans_due_ = absl::InfiniteFuture();
  }
  ShrinkIfSparse(watchers_);
  ShrinkIfSparse(watched_by_session_);
  ShrinkIfSparse(delayed_until_);
  ShrinkIfSparse(orphans_);
  ShrinkIfSparse(batches_);
  jobs_.ShrinkIfSparse();
  jobs_.Expire(
      now, options_.retention,
      [this](uint64_t id) {
        RemoveWatchers(id);
        if (options_.journal) changes_.erased.push_back(id);
      },
      [this](uint64_t id) { return owed_jobs_.contains(id); });
  for (auto it = batches_.begin(); it != batches_.end();) {
    if (it->second.last_used + options_.retention > now) {
      ++it;
      continue;
    }
    if (options_.journal) {
      for (const BatchRecord& r : it->second.batches) {
        changes_.batches_removed.push_back(r.key);
      }
    }
    batches_.erase(it++);
  }
}

void BrokerCore::Restore(RecoveredState state, absl::Time now) {
  jobs_.AdvanceNextId(state.next_id);
  // Finished jobs in finishing order keep the retention queue cheap to
  // build; live ones (finished_at in the past) come first.
  std::sort(state.jobs.begin(), state.jobs.end(),
            [](const Job& a, const Job& b) {
              const absl::Time fa = a.info().finished_at;
              const absl::Time fb = b.info().finished_at;
              return fa < fb || (fa == fb && a.id < b.id);
            });
  size_t queued = 0, running = 0, finished = 0;
  for (Job& recovered : state.jobs) {
    const uint64_t id = recovered.id;
    jobs_.Restore(std::move(recovered));
    Job& job = *jobs_.Find(id);
    if (!IsTerminal(job.state)) payload_bytes_ += job.payload.size();
    if (job.state == v1::Job::QUEUED) {
      ready_.Push(job.task.str(), job.priority, id);
      ++queued;
    } else if (job.state == v1::Job::RUNNING) {
      orphans_.insert(id);
      if (job.timeout > absl::ZeroDuration() && !job.info().attempts.empty()) {
        deadlines_.push(Deadline{job.info().attempts.back().started_at +
                                     job.timeout + options_.timeout_grace,
                                 id, job.attempt_number()});
      }
      ++running;
    } else {
      ++finished;
    }
  }
  if (!orphans_.empty()) {
    orphans_due_ = now + options_.heartbeat_interval * (options_.liveness + 1);
  }
  for (BatchRecord& r : state.batches) AddBatchRestored(std::move(r));
  DEXEC_LOG(INFO) << "recovered queued=" << queued << " running=" << running
                  << " finished=" << finished << " next_id=" << jobs_.next_id();
  dirty_ = true;
}

void BrokerCore::AddBatchRestored(BatchRecord record) {
  ClientBatches& client = batches_[record.key.client_id];
  client.last_used = std::max(client.last_used, record.at);
  client.batches.push_back(std::move(record));
}

Changes BrokerCore::TakeChanges() {
  Changes c = std::move(changes_);
  changes_ = Changes();
  for (uint64_t id : c.jobs) {
    if (Job* job = jobs_.Find(id)) job->journal_dirty = false;
  }
  c.next_id = jobs_.next_id();
  return c;
}

void BrokerCore::SendToWorker(const std::string& identity, wire::Frame frame,
                              Outbox* out) {
  out->to_workers.emplace_back(identity, std::move(frame));
}

void BrokerCore::NoteSent(const std::string& identity, absl::Time now) {
  if (WorkerEntry* w = workers_.Find(identity)) w->last_sent = now;
}

}  // namespace dexec::broker
