// The broker's state and decisions, with no I/O, threads or clocks: the job
// table, the ready queues, the worker registry, watchers and timers. The
// broker loop (broker_loop.h) feeds it requests, worker frames and the time,
// and turns the Outbox it fills into socket writes and stream pushes.
// See docs/DESIGN.md, "Broker".
//
// Not thread-safe; owned by the broker loop.
#ifndef DEXEC_BROKER_BROKER_CORE_H_
#define DEXEC_BROKER_BROKER_CORE_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/job.h"
#include "broker/job_table.h"
#include "broker/ready_queue.h"
#include "broker/task_metrics.h"
#include "broker/worker_registry.h"
#include "common/histogram.h"
#include "protos/dexec.pb.h"
#include "protos/wire.pb.h"

namespace dexec::broker {

struct BrokerOptions {
  // Heartbeat interval told to workers, and how many intervals of silence
  // declare a peer lost (3 x 1 s: a dead worker is lost within 3 s).
  absl::Duration heartbeat_interval = absl::Seconds(1);
  int liveness = 3;
  // How long finished jobs keep their results.
  absl::Duration retention = absl::Hours(1);
  int32_t default_max_attempts = 3;
  // Submits beyond this many queued jobs get RESOURCE_EXHAUSTED.
  uint64_t max_queued = 10'000'000;
  // Submits that would take the payloads of unfinished (queued and
  // running) jobs beyond this many bytes get RESOURCE_EXHAUSTED; a batch
  // always gets in when none is held, however large. main.cc defaults it
  // to a quarter of physical memory.
  uint64_t max_queued_bytes = uint64_t{4} << 30;
  uint64_t max_payload_bytes = 64 << 20;
  // A result's output longer than this fails its job with kind
  // result_too_large (the worker checks, told by Welcome; the broker checks
  // again). Outputs longer than wire::kMaxResultChunkBytes arrive in
  // pieces, so the worker socket's frame limit does not depend on it.
  uint64_t max_result_bytes = 64 << 20;
  // Bytes of one response at most (a Session message, a GetJobs or
  // ListJobs answer), well under gRPC's and protobuf's 2 GB: more is split
  // across messages, or cut short with `truncated` set. A single event or
  // job larger than this still goes, alone.
  uint64_t max_response_bytes = 16 << 20;
  // Event bytes a session gets before the broker waits for its stream to
  // be written out (OnSessionDrained); the events due meanwhile are kept as
  // job ids and rendered then. 0: four response budgets. It bounds what
  // one slow or greedy reader makes the broker copy: a Watch of 2,200
  // finished 1 MB results no longer queues 2.2 GB at once.
  uint64_t session_window_bytes = 0;
  // Ids in one Watch at most (INVALID_ARGUMENT beyond), and jobs one
  // session watches at once at most, its submitted ones included
  // (RESOURCE_EXHAUSTED beyond). Either ends the Session stream.
  uint64_t max_watch_ids = 100'000;
  uint64_t max_watched_per_session = 10'000'000;
  // A job with a timeout fails at the broker this long after its deadline
  // if its worker has not answered.
  absl::Duration timeout_grace = absl::Seconds(2);
  // A failed or lost attempt is retried after requeue_backoff doubled per
  // attempt already made, at most max_requeue_backoff.
  absl::Duration requeue_backoff = absl::Milliseconds(100);
  absl::Duration max_requeue_backoff = absl::Seconds(10);
  // Record every change for the journal (TakeChanges). False for an
  // in-memory broker.
  bool journal = false;
  // The most credit (threads + prefetch) a worker may claim: a worker that
  // registers more is cut down to it, so one peer cannot take every job.
  int32_t max_worker_credit = 65536;
  // Task names with /metrics series of their own; the rest are counted
  // under task="(other)" (task_metrics.h).
  size_t max_task_series = TaskMetrics::kDefaultCap;
};

// Why a job went back to the queue: its worker was lost, its attempt timed
// out (at the broker, or reported by the worker), the task failed and the
// job asked for retries (JobSpec.max_attempts), or it was running when the
// broker stopped and no worker claimed it after the restart.
inline constexpr absl::string_view kRequeueReasons[] = {
    "worker_lost", "timeout", "task_failed", "broker_restarted"};
inline constexpr size_t kRequeueReasonCount = 4;

// The core's part of /metrics (docs/DESIGN.md, "Metrics"): a snapshot the
// loop hands to an HTTP thread.
struct CoreMetrics {
  // Per dispatch: since submit, or since the previous attempt ended.
  Histogram queue_wait{kLatencyBoundsSeconds};
  // Per result accepted: the worker's start to finish of the attempt.
  Histogram run_time{kLatencyBoundsSeconds};
  // Per job, at its first dispatch: since submit.
  Histogram submit_to_start{kLatencyBoundsSeconds};
  // By kRequeueReasons.
  std::array<uint64_t, kRequeueReasonCount> requeues{};
  std::vector<TaskSeries> tasks;  // task_metrics.h, "(other)" last
  // Since the submit of the queued job held longest; zero if none.
  absl::Duration oldest_queued_age = absl::ZeroDuration();
  bool any_queued = false;
};

// Who makes a client request, as the gRPC front end authenticated it
// (docs/DESIGN.md, "Security"). The core enforces ownership: a kSubmit
// caller sees, watches and cancels only the jobs it submitted (others' are
// reported unknown); a kRead caller sees every job but no result; kAdmin
// sees everything. An --insecure broker passes Caller{} (admin, no name).
struct Caller {
  enum Role { kAdmin, kSubmit, kRead };
  // The token's name: the owner of the jobs it submits, and the scope of
  // its idempotency keys and submit batches.
  std::string name;
  Role role = kAdmin;

  bool SeesAllJobs() const { return role != kSubmit; }
  bool SeesResultsOf(const std::string& owner) const {
    return role == kAdmin || (role == kSubmit && owner == name);
  }
};

// Identifies a submit batch across reconnections and restarts
// (SessionRequest.Submit's client_id and seq).
struct BatchKey {
  std::string client_id;
  uint64_t seq = 0;
  bool operator==(const BatchKey& o) const {
    return seq == o.seq && client_id == o.client_id;
  }
};

// A batch the broker acknowledged: its jobs' ids (as runs of consecutive
// ids, [first, first + count)) and when.
struct BatchRecord {
  BatchKey key;
  std::vector<std::pair<uint64_t, uint32_t>> id_runs;
  absl::Time at;

  std::vector<uint64_t> Ids() const;
  static std::vector<std::pair<uint64_t, uint32_t>> ToRuns(
      const std::vector<uint64_t>& ids);
};

// What changed since the last BrokerCore::TakeChanges: what the journal
// must write for the state on disk to match the core's.
struct Changes {
  // Jobs whose record must be (re)written.
  std::vector<uint64_t> jobs;
  // Jobs new since the last call: their payload must be written too.
  std::vector<uint64_t> new_jobs;
  // Jobs forgotten (retention ended): delete everything of theirs.
  std::vector<uint64_t> erased;
  std::vector<BatchRecord> batches_added;
  std::vector<BatchKey> batches_removed;
  // Never hand out ids below this again.
  uint64_t next_id = 1;

  bool empty() const {
    return jobs.empty() && erased.empty() && batches_added.empty() &&
           batches_removed.empty();
  }
};

// The state read back from the journal after a restart.
struct RecoveredState {
  std::vector<Job> jobs;
  std::vector<BatchRecord> batches;
  uint64_t next_id = 1;
};

// A session: one client's Session stream; events of the jobs it watches are
// addressed to it.
using SessionId = uint64_t;

// What the loop must send after a call into the core. Frames to one worker
// and responses to one session keep their order.
struct Outbox {
  std::vector<std::pair<std::string, wire::Frame>> to_workers;
  absl::flat_hash_map<SessionId, std::vector<v1::SessionResponse>> to_sessions;
  // Dispatch frames under construction, by worker identity: index into
  // to_workers and payload bytes so far. One loop iteration sends one
  // Dispatch per worker, cut at kMaxTasksPerDispatch tasks or
  // kDispatchFrameBudget bytes (a frame stays far below what a worker
  // receives: --max_payload_bytes plus wire::kFrameEnvelopeBytes).
  // (Frames the other way are bounded by wire::kMaxWorkerFrameBytes.)
  absl::flat_hash_map<std::string, std::pair<size_t, size_t>> open_dispatch;
  // Answers to unary calls. Like session responses, they are released only
  // once the changes made before them are durable (see journal.h).
  std::vector<std::function<void()>> replies;
  // Answers to read-only calls: the same, except while journal writes fail
  // (Journal::Commit).
  std::vector<std::function<void()>> query_replies;
  // Sessions that reached their window: the loop asks each one's stream to
  // report (OnSessionDrained) once what was pushed to it is written.
  std::vector<SessionId> drain_reports;

  bool empty() const {
    return to_workers.empty() && to_sessions.empty() && drain_reports.empty();
  }
  void Clear();
  // Appends an event to the session's last Events response (or a new one).
  void AddEvent(SessionId session, v1::JobEvent event);
};

class BrokerCore {
 public:
  BrokerCore(BrokerOptions options, absl::Time now, uint64_t first_job_id = 1);
  BrokerCore(const BrokerCore&) = delete;
  BrokerCore& operator=(const BrokerCore&) = delete;

  // ---- Client requests ----

  // Validates and enqueues `specs` (all or none). If `session` is not 0 the
  // jobs are watched by it. Returns one id per spec; an idempotency key seen
  // before returns the earlier job's id. A batch whose `batch` key was
  // acknowledged before returns the same ids and adds nothing.
  // The jobs are owned by `caller` (its idempotency keys and batch keys are
  // its own).
  absl::StatusOr<std::vector<uint64_t>> Submit(
      const google::protobuf::RepeatedPtrField<v1::JobSpec>& specs,
      const Caller& caller, SessionId session, absl::Time now, Outbox* out,
      const BatchKey* batch = nullptr);

  // Watch `ids` from `session`: RUNNING and terminal events are pushed; a job
  // already finished (or unknown, or not visible to `caller`) gets its event
  // at once, once per request however often the request names it.
  // INVALID_ARGUMENT for more than max_watch_ids ids, RESOURCE_EXHAUSTED if
  // the session would watch more than max_watched_per_session jobs; then
  // nothing is watched. Sessions are opened by admin and submit callers only
  // (events carry results).
  absl::Status Watch(SessionId session, const Caller& caller,
                     const google::protobuf::RepeatedField<uint64_t>& ids,
                     Outbox* out);

  // The session's stream ended: its watches no longer count against its
  // limit (its entries go as their jobs finish), and events owed to it are
  // forgotten.
  void CloseSession(SessionId session);
  // Everything pushed to the session's stream until it asked for a report
  // (Outbox::drain_reports) is written: send the events it is owed, up to
  // the next window.
  void OnSessionDrained(SessionId session, Outbox* out);
  // Queues `reply` (a stream's close) to run after every event owed to the
  // session has been pushed: at once if none is owed.
  void AfterOwed(SessionId session, std::function<void()> reply, Outbox* out);
  // Events owed to the session while it waits for a drain report.
  size_t TEST_deferred_events(SessionId session) const;

  // Cancels jobs that have not finished. A RUNNING job is CANCELLED at once
  // and its worker is told to abandon the attempt; its result, if it still
  // comes, is discarded. A job `caller` may not cancel (another token's, for
  // a submit token) answers false, as an unknown id does.
  v1::CancelResponse Cancel(
      const Caller& caller,
      const google::protobuf::RepeatedField<uint64_t>& ids, absl::Time now,
      Outbox* out);

  // Jobs not visible to `caller` are answered as unknown; results only
  // where caller.SeesResultsOf the job's owner.
  v1::GetJobsResponse GetJobs(const Caller& caller,
                              const v1::GetJobsRequest& req) const;
  v1::ListJobsResponse ListJobs(const Caller& caller,
                                const v1::ListJobsRequest& req) const;
  v1::ListWorkersResponse ListWorkers();
  v1::Stats GetStats(absl::Time now) const;
  // What /metrics shows of the core (not const: finding the oldest queued
  // job advances a scan).
  CoreMetrics Metrics(absl::Time now);

  // ---- Workers ----

  // One decoded frame from the worker at ROUTER identity `identity`, whose
  // connection authenticated with CURVE public key `key` (Z85; empty on an
  // --insecure broker). Results count only for attempts dispatched to that
  // key.
  void OnWorkerFrame(const std::string& identity, const std::string& key,
                     const wire::Frame& frame, absl::Time now, Outbox* out);

  // A worker key was revoked: every worker connected with it is dropped
  // (its jobs requeued). Its frames are refused by the loop from now on.
  void DropWorkersWithKey(const std::string& key, absl::Time now, Outbox* out);

  // Results dropped because they came from a key their attempt was not
  // dispatched to.
  uint64_t forged_results() const { return forged_results_; }
  // Pieces of a chunked output dropped (docs/DESIGN.md, "Frame sizes"):
  // out of order, of another attempt in the middle of an output, or from
  // an identity that has not registered.
  uint64_t bad_result_pieces() const { return bad_result_pieces_; }
  // Output bytes held in partly received results (at most
  // max_result_bytes per registered worker).
  uint64_t partial_result_bytes() const { return partial_result_bytes_; }

  // A worker's socket is gone (send failed): treat it as lost now.
  void OnWorkerUnreachable(const std::string& identity, absl::Time now,
                           Outbox* out);

  // Hands queued jobs to workers with free credit.
  void Schedule(absl::Time now, Outbox* out);

  // Periodic duties: heartbeats to workers, lost workers, job timeouts,
  // retention. Call at least every heartbeat_interval / 4.
  void Tick(absl::Time now, Outbox* out);

  // Notes that frames were sent to `identity` at `now` (heartbeats are only
  // sent when nothing else was).
  void NoteSent(const std::string& identity, absl::Time now);

  // ---- Journal ----

  // Puts back the state recovered from the journal; call once, before
  // anything else. QUEUED jobs are ready at once; RUNNING ones wait one
  // liveness period for their worker to claim them (Register.held), then
  // run again.
  void Restore(RecoveredState state, absl::Time now);

  // What changed since the last call (empty unless options().journal).
  Changes TakeChanges();

  // The earliest time something is due (a backed-off job becomes ready);
  // InfiniteFuture if nothing is.
  absl::Time NextWakeup() const;

  const BrokerOptions& options() const { return options_; }
  // While `why` is not empty, submits are refused RESOURCE_EXHAUSTED with
  // it (the journal's disk is full); resubmitted batches still answer.
  void SetRefuseSubmits(std::string why) { refuse_submits_ = std::move(why); }
  // Payload bytes submits may add before the next call (free journal space
  // above its reserve); beyond, they are refused as for a full disk.
  void SetSubmitRoom(uint64_t bytes) { submit_room_ = bytes; }

  // Payload bytes of jobs not finished (what --max_queued_bytes bounds).
  uint64_t payload_bytes() const { return payload_bytes_; }
  const JobTable& jobs() const { return jobs_; }

 private:
  struct Deadline {
    absl::Time at;
    uint64_t job_id;
    uint32_t attempt;
    bool operator>(const Deadline& o) const { return at > o.at; }
  };

  struct Delayed {
    absl::Time at;
    uint64_t job_id;
    bool operator>(const Delayed& o) const { return at > o.at; }
  };
  // A client's recent batches, oldest first.
  struct ClientBatches {
    std::deque<BatchRecord> batches;
    absl::Time last_used;
  };

  absl::Status ValidateSpec(const v1::JobSpec& spec) const;
  // Watches one job: its event now if it has one, later ones if it is live.
  void WatchOne(SessionId session, const Caller& caller, uint64_t id,
                Outbox* out);
  // Notes that the job must be written by the journal.
  void Changed(Job& job) {
    if (!options_.journal || job.journal_dirty) return;
    job.journal_dirty = true;
    changes_.jobs.push_back(job.id);
  }
  const BatchRecord* FindBatch(const BatchKey& key) const;
  void AddBatch(BatchRecord record);
  void AddBatchRestored(BatchRecord record);
  // Moves backed-off jobs whose time came to the ready queue.
  void ReleaseDelayed(absl::Time now);
  // How many tasks `w` may hold while taking `job`: its threads plus, per
  // thread, as many prefetched tasks as it runs in about 5 ms at the job's
  // task's mean run time — many for tiny tasks (else each thread waits a
  // round trip per task), none for tasks over 5 ms (so a long task never
  // waits behind another at a busy worker while others are free). At most
  // w.capacity(); threads x 2 for a task not seen finishing yet.
  int32_t CreditFor(const WorkerEntry& w, const Job& job) const;
  // Registers `w`'s claim on an attempt it still holds; false if the
  // attempt is settled or held elsewhere.
  bool Reclaim(WorkerEntry& w, const wire::TaskRef& ref);
  bool IsQueued(uint64_t id) const;
  void Dispatch(Job& job, WorkerEntry& w, absl::Time now, Outbox* out);
  void OnRegister(const std::string& identity, const std::string& key,
                  const wire::Register& reg, absl::Time now, Outbox* out);
  // `w` is null for results from a worker the broker does not know (it
  // restarted, or declared the worker lost): fencing still applies, and so
  // does the key binding (`key` is the sender's).
  void OnResults(WorkerEntry* w, const std::string& key,
                 const wire::Results& results, absl::Time now, Outbox* out);
  // One whole result whose output is `size` bytes long: `r.output()`, or
  // `*output` when not null (taken), or none kept when over the limit.
  void OnResult(WorkerEntry* w, const std::string& key,
                const wire::TaskResult& r, uint64_t size, std::string* output,
                absl::Time now, Outbox* out);
  // One piece of a chunked output from `w`; true when it completed the
  // output, and `whole` is then the result with all of it.
  bool OnPiece(WorkerEntry& w, const wire::TaskResult& r, absl::Time now,
               Outbox* out, wire::TaskResult* whole);
  // A piece sequence of `w` broke (`why`): the piece or partial result of
  // (job_id, attempt) is dropped and counted, and that attempt, if `w`
  // holds it, fails (retried elsewhere as for a lost worker).
  void BadPiece(WorkerEntry& w, uint64_t job_id, uint32_t attempt,
                const std::string& why, absl::Time now, Outbox* out);
  // Frees the partial result of the worker at `identity`, if any.
  void ForgetPartial(const std::string& identity);
  // Whether `caller` may see the job at all.
  static bool Visible(const Caller& caller, const Job& job) {
    return caller.SeesAllJobs() || job.owner.str() == caller.name;
  }
  // Whether the job's last attempt timed out at the broker on the
  // connection `w`, and another live worker offers its task: the job then
  // goes elsewhere (a worker that holds jobs and never answers must not
  // keep getting them back).
  bool AvoidsWorker(const Job& job, const WorkerEntry& w) const;
  // Ends the job's current attempt with `outcome`; requeues the job if it has
  // attempts left and `retry`, else finishes it FAILED with `kind`/`message`.
  void FailAttempt(Job& job, const std::string& outcome, bool retry,
                   const std::string& kind, const std::string& message,
                   absl::Time now, Outbox* out);
  void Finish(Job& job, JobState state, absl::Time now, Outbox* out);
  // Back to QUEUED; after a failed attempt, `backoff` delays the next one.
  void Requeue(Job& job, absl::Time now, Outbox* out, bool backoff);
  // Releases `w`'s jobs (requeue or fail as worker_lost) and forgets it.
  void DropWorker(WorkerEntry& w, const std::string& why, absl::Time now,
                  Outbox* out);
  // Tells the worker holding the job's current attempt to stop it.
  void AbandonCurrentAttempt(Job& job, Outbox* out);
  void Notify(const Job& job, Outbox* out);
  // Pushes an event to a session, counting it against the window.
  void PushEvent(SessionId session, v1::JobEvent event, Outbox* out);
  // Pushes what the session must know of job `id` now (`job`: the job if
  // the session may see it, else null): not_found, or its RUNNING or
  // terminal event; and watches it while it lives.
  void PushCurrent(SessionId session, uint64_t id, const Job* job, Outbox* out);
  uint64_t SessionWindowBytes() const;
  // One owed event of the job was sent or dropped.
  void Unowe(uint64_t id);
  // Adds `session` to the job's watchers unless it is there already.
  void AddWatcher(uint64_t id, SessionId session);
  // Forgets every watcher of the job.
  void RemoveWatchers(uint64_t id);
  void SendToWorker(const std::string& identity, wire::Frame frame,
                    Outbox* out);
  std::string WaitingReason(const Job& job) const;

  const BrokerOptions options_;
  JobTable jobs_;
  ReadyQueue ready_;
  WorkerRegistry workers_;
  // job -> sessions watching it. Sessions that closed are skipped by the
  // loop; entries go when the job finishes or expires.
  absl::flat_hash_map<uint64_t, absl::InlinedVector<SessionId, 1>> watchers_;
  // Jobs each open session watches (entries of watchers_), for
  // max_watched_per_session.
  absl::flat_hash_map<SessionId, uint64_t> watched_by_session_;
  // Per session that got events: bytes pushed since its last drain report,
  // and while it waits for one, the events it is owed (job ids, in order;
  // `checked`: the session's right to see the job was checked already).
  struct SessionFlow {
    uint64_t pushed_bytes = 0;
    bool paused = false;
    struct Owed {
      uint64_t job_id;
      bool checked;
    };
    std::deque<Owed> owed;
    // The caller of the session's latest Watch, for the unchecked ones.
    Caller caller;
    // Replies (a stream's close) to queue once nothing is owed.
    std::vector<std::function<void()>> after_owed;
  };
  absl::flat_hash_map<SessionId, SessionFlow> flows_;
  // Jobs some session is owed an event of (how many times): their
  // retention waits.
  absl::flat_hash_map<uint64_t, uint32_t> owed_jobs_;
  // Timeouts of running attempts, earliest first; stale entries skipped.
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>>
      deadlines_;
  // Requeued jobs waiting out their backoff, earliest first (stale entries
  // — cancelled since — are skipped), and their due times by id.
  std::priority_queue<Delayed, std::vector<Delayed>, std::greater<>> delayed_;
  absl::flat_hash_map<uint64_t, absl::Time> delayed_until_;
  // Jobs recovered RUNNING that no worker has claimed yet, and when they
  // run again if none does.
  absl::flat_hash_set<uint64_t> orphans_;
  absl::Time orphans_due_ = absl::InfiniteFuture();
  // Recent acknowledged batches by client id, for idempotent resubmission.
  absl::flat_hash_map<std::string, ClientBatches> batches_;
  Changes changes_;
  // Jobs finished per second over the last seconds, for the finish rate.
  std::deque<std::pair<int64_t, uint64_t>> finish_buckets_;
  // Queue waits of the last kWaitSamples dispatches (when, how long), a
  // ring: waits_next_ is the slot the next one takes. GetStats reads the
  // entries of the last 60 s for Stats.wait_p50/p99.
  static constexpr size_t kWaitSamples = 4096;
  std::vector<std::pair<absl::Time, absl::Duration>> waits_;
  size_t waits_next_ = 0;
  // /metrics (CoreMetrics): histograms and requeue counts since start.
  Histogram queue_wait_{kLatencyBoundsSeconds};
  Histogram run_time_{kLatencyBoundsSeconds};
  Histogram submit_to_start_{kLatencyBoundsSeconds};
  std::array<uint64_t, kRequeueReasonCount> requeues_{};
  absl::Time started_at_;
  uint64_t forged_results_ = 0;
  // Per registered worker that sent a piece of a chunked output: the
  // output it is sending (at most one; docs/DESIGN.md, "Frame sizes"), and
  // when its last broken piece was logged. Erased with the worker.
  struct PartialResult {
    bool open = false;  // an output is being received
    uint64_t job_id = 0;
    uint32_t attempt = 0;
    uint64_t size = 0;      // of the whole output
    uint64_t received = 0;  // bytes of it so far
    // Over max_result_bytes: the bytes are counted, not kept.
    bool keep = true;
    std::string output;
  };
  struct Assembly {
    PartialResult partial;
    absl::Time last_bad_log = absl::InfinitePast();
  };
  absl::flat_hash_map<std::string, Assembly> assemblies_;
  uint64_t partial_result_bytes_ = 0;
  uint64_t bad_result_pieces_ = 0;
  bool dirty_ = true;  // something changed that may allow a dispatch
  uint64_t payload_bytes_ = 0;
  std::string refuse_submits_;
  uint64_t submit_room_ = UINT64_MAX;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_BROKER_CORE_H_
