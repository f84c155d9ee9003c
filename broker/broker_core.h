// The broker's state and decisions, with no I/O, threads or clocks: the job
// table, the ready queues, the worker registry, watchers and timers. The
// broker loop (broker_loop.h) feeds it requests, worker frames and the time,
// and turns the Outbox it fills into socket writes and stream pushes.
// See docs/DESIGN.md, "Broker".
//
// Not thread-safe; owned by the broker loop.
#ifndef DEXEC_BROKER_BROKER_CORE_H_
#define DEXEC_BROKER_BROKER_CORE_H_

#include <cstdint>
#include <deque>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/job.h"
#include "broker/job_table.h"
#include "broker/ready_queue.h"
#include "broker/worker_registry.h"
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
  uint64_t max_payload_bytes = 64 << 20;
  // A job with a timeout fails at the broker this long after its deadline
  // if its worker has not answered.
  absl::Duration timeout_grace = absl::Seconds(2);
};

// A session: one client's Session stream; events of the jobs it watches are
// addressed to it.
using SessionId = uint64_t;

// What the loop must send after a call into the core. Frames to one worker
// and responses to one session keep their order.
struct Outbox {
  std::vector<std::pair<std::string, wire::Frame>> to_workers;
  absl::flat_hash_map<SessionId, std::vector<v1::SessionResponse>> to_sessions;
  // Dispatch frames under construction, by worker identity (index into
  // to_workers), so one loop iteration sends one Dispatch per worker.
  absl::flat_hash_map<std::string, size_t> open_dispatch;

  bool empty() const { return to_workers.empty() && to_sessions.empty(); }
  void Clear();
  // Appends an event to the session's last Events response (or a new one).
  void AddEvent(SessionId session, v1::JobEvent event);
};

class BrokerCore {
 public:
  BrokerCore(BrokerOptions options, absl::Time now,
             uint64_t first_job_id = 1);
  BrokerCore(const BrokerCore&) = delete;
  BrokerCore& operator=(const BrokerCore&) = delete;

  // ---- Client requests ----

  // Validates and enqueues `specs` (all or none). If `session` is not 0 the
  // jobs are watched by it. Returns one id per spec; an idempotency key seen
  // before returns the earlier job's id.
  absl::StatusOr<std::vector<uint64_t>> Submit(
      const google::protobuf::RepeatedPtrField<v1::JobSpec>& specs,
      SessionId session, absl::Time now, Outbox* out);

  // Watch `ids` from `session`: RUNNING and terminal events are pushed; a job
  // already finished (or unknown) gets its event at once.
  void Watch(SessionId session, const google::protobuf::RepeatedField<uint64_t>& ids,
             Outbox* out);

  // Cancels jobs that are still QUEUED.
  v1::CancelResponse Cancel(const google::protobuf::RepeatedField<uint64_t>& ids,
                            absl::Time now, Outbox* out);

  v1::GetJobsResponse GetJobs(const v1::GetJobsRequest& req) const;
  v1::ListJobsResponse ListJobs(const v1::ListJobsRequest& req) const;
  v1::ListWorkersResponse ListWorkers();
  v1::Stats GetStats(absl::Time now) const;

  // ---- Workers ----

  // One decoded frame from the worker at ROUTER identity `identity`.
  void OnWorkerFrame(const std::string& identity, const wire::Frame& frame,
                     absl::Time now, Outbox* out);

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

  const BrokerOptions& options() const { return options_; }
  const JobTable& jobs() const { return jobs_; }

 private:
  struct Deadline {
    absl::Time at;
    uint64_t job_id;
    uint32_t attempt;
    bool operator>(const Deadline& o) const { return at > o.at; }
  };

  absl::Status ValidateSpec(const v1::JobSpec& spec) const;
  bool IsQueued(uint64_t id) const;
  void Dispatch(Job& job, WorkerEntry& w, absl::Time now, Outbox* out);
  void OnRegister(const std::string& identity, const wire::Register& reg,
                  absl::Time now, Outbox* out);
  void OnResults(WorkerEntry& w, const wire::Results& results, absl::Time now,
                 Outbox* out);
  // Ends the job's current attempt with `outcome`; requeues the job if it has
  // attempts left and `retry`, else finishes it FAILED with `kind`/`message`.
  void FailAttempt(Job& job, const std::string& outcome, bool retry,
                   const std::string& kind, const std::string& message,
                   absl::Time now, Outbox* out);
  void Finish(Job& job, JobState state, absl::Time now, Outbox* out);
  void Requeue(Job& job, absl::Time now, Outbox* out);
  // Releases `w`'s jobs (requeue or fail as worker_lost) and forgets it.
  void DropWorker(WorkerEntry& w, const std::string& why, absl::Time now,
                  Outbox* out);
  // Tells the worker holding the job's current attempt to stop it.
  void AbandonCurrentAttempt(Job& job, Outbox* out);
  void Notify(const Job& job, Outbox* out);
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
  // Timeouts of running attempts, earliest first; stale entries skipped.
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>>
      deadlines_;
  // Jobs finished per second over the last seconds, for the finish rate.
  std::deque<std::pair<int64_t, uint64_t>> finish_buckets_;
  absl::Time started_at_;
  bool dirty_ = true;  // something changed that may allow a dispatch
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_BROKER_CORE_H_
