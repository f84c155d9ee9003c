// The worker's side of protos/wire.proto as pure decisions: registration,
// heartbeats and broker liveness, reconnect backoff, the attempts it holds,
// results waiting for a Welcome or kept in doubt, fencing of repeated and
// abandoned attempts, and drain. It owns no socket, thread or clock: every
// call takes `now` and fills a WorkerOutbox that the worker-io loop
// (worker.cc) turns into I/O. The rules are docs/DESIGN.md, "Worker timing
// rules".
//
//   WorkerCore core(options, now);
//   WorkerOutbox out;
//   core.OnConnected(now, &out);           // a socket exists: Register
//   core.OnFrame(frame, now, &out);        // a Dispatch: out.start
//   core.OnFinished(run_id, result);
//   core.Flush(now, &out);                 // one Results frame
//   core.Tick(now, &out);                  // heartbeats, liveness, drain
//
// Not thread-safe; owned by the worker-io thread (or a test).
#ifndef DEXEC_WORKER_WORKER_CORE_H_
#define DEXEC_WORKER_WORKER_CORE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"

namespace dexec::worker {

// (job id, attempt): one dispatch of a job.
using TaskKey = std::pair<uint64_t, uint32_t>;

struct WorkerCoreOptions {
  std::string name;
  std::string host;
  int32_t pid = 0;
  // Register.threads and Register.prefetch (docs/DESIGN.md, "Credit").
  int threads = 1;
  int prefetch = 0;
  // Registered task names, as sent in Register.
  std::vector<std::string> tasks;
  // Register.async_tasks and Register.concurrency: the tasks among `tasks`
  // that hold no thread while they run (coroutine tasks), and how many of
  // them the worker runs at once.
  std::vector<std::string> async_tasks;
  int concurrency = 0;
  // Used until a Welcome says otherwise.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  int liveness = 3;
  absl::Duration drain_timeout = absl::Seconds(30);
};

// A task the loop must start. `run_id` names this run in OnFinished and
// WorkerOutbox::cancel; it is never reused.
struct TaskStart {
  uint64_t run_id = 0;
  wire::Task task;
  absl::Time deadline;
};

// What one call decided; the loop acts on it in this order: close, connect,
// send frames, cancel, start.
struct WorkerOutbox {
  // Close the socket, with this linger (ms); -1 = leave it open.
  int close_linger_ms = -1;
  // Open a socket and call OnConnected (or OnConnectFailed).
  bool connect = false;
  std::vector<wire::Frame> frames;
  // Runs to cancel (abandoned by the broker, or cut short while leaving).
  // Their results are not wanted any more: OnFinished ignores them.
  std::vector<uint64_t> cancel;
  std::vector<TaskStart> start;
  // The worker has left: cancel everything still running and end the loop.
  bool left = false;
  // Set with `left`, for the log line.
  std::string left_reason;
  // A bad frame worth a log line (the first of a burst); empty otherwise.
  std::string bad_frame_log;

  void Clear() { *this = WorkerOutbox(); }
};

class WorkerCore {
 public:
  // Lingers Results and WorkerState{leaving} after close() on leaving.
  static constexpr int kLeaveLingerMs = 500;
  // Paranoid Pirate reconnect backoff (zguide ch. 4).
  static constexpr absl::Duration kInitialBackoff = absl::Milliseconds(250);
  static constexpr absl::Duration kMaxBackoff = absl::Seconds(8);
  // Bound on the (estimated) bytes of results kept in case the broker lost
  // them; beyond it the oldest are forgotten (the broker then runs their
  // jobs again, should it have lost them).
  static constexpr size_t kMaxInDoubtBytes = 64 << 20;
  // Encoded bytes of results per Results frame at most (one larger result
  // or piece goes alone), as the broker cuts its Dispatch frames: a frame
  // the broker refuses would drop the connection and every result in it.
  // Under wire::kMaxWorkerFrameBytes with room for one piece and its
  // envelope.
  static constexpr size_t kResultsFrameBudget = 4 << 20;
  static_assert(kResultsFrameBudget + wire::kMaxResultChunkBytes +
                    wire::kFrameEnvelopeBytes <=
                wire::kMaxWorkerFrameBytes);
  // A broker sending garbage is logged at most this often.
  static constexpr absl::Duration kBadFrameLogInterval = absl::Seconds(10);

  WorkerCore(WorkerCoreOptions options, absl::Time now);
  WorkerCore(const WorkerCore&) = delete;
  WorkerCore& operator=(const WorkerCore&) = delete;

  // A socket was just opened: sends Register (listing what is held).
  void OnConnected(absl::Time now, WorkerOutbox* out);
  // Opening one failed (transient): try again after a backoff.
  void OnConnectFailed(absl::Time now);
  // The socket broke (poll failed): it is closed; reconnect after a backoff.
  void OnSocketError(absl::Time now, WorkerOutbox* out);

  // A decoded frame from the broker.
  void OnFrame(wire::Frame& frame, absl::Time now, WorkerOutbox* out);
  // An undecodable frame from the broker (dropped, counted, logged once
  // per burst through out->bad_frame_log).
  void OnBadFrame(absl::string_view why, absl::Time now, WorkerOutbox* out);

  // A run finished with `result`. Ignored for a run that is no longer held
  // (abandoned, cut short by leaving).
  void OnFinished(uint64_t run_id, wire::TaskResult result);
  // Sends every result waiting (once welcomed), in Results frames of at
  // most kResultsFrameBudget encoded bytes each, and under the broker's
  // Welcome.max_frame_bytes; a result larger than the budget goes alone.
  // An output longer than Welcome.max_chunk_bytes goes in pieces of that
  // size, one after another (docs/DESIGN.md, "Frame sizes"). A result
  // whose output is over Welcome.max_result_bytes is sent as a failure of
  // kind result_too_large, without its output.
  void Flush(absl::Time now, WorkerOutbox* out);

  // Timers: reconnect, broker liveness, heartbeats, drain end.
  void Tick(absl::Time now, WorkerOutbox* out);
  // When Tick next has something to do.
  absl::Time NextTimer() const;

  // Drain: tell the broker to send nothing new, leave once every held task
  // is reported (or at drain_timeout, cancelling the rest). Idempotent.
  void Drain(absl::Time now, WorkerOutbox* out);
  // Leave now: send what finished, cancel the rest, say leaving, close.
  void Stop(absl::Time now, WorkerOutbox* out);

  // Tasks running at the executors, for Heartbeat.busy (set by the loop).
  void set_busy(int busy) { busy_ = busy; }

  bool connected() const { return connected_; }
  // When the last frame from the broker arrived (or the core started).
  absl::Time last_recv() const { return last_recv_; }
  bool welcomed() const { return welcomed_; }
  bool draining() const { return draining_; }
  bool left() const { return left_; }
  absl::Duration heartbeat_interval() const { return interval_; }
  int liveness() const { return liveness_; }
  // The broker's limits from its Welcome (0: not said).
  uint64_t max_result_bytes() const { return max_result_bytes_; }
  uint64_t max_frame_bytes() const { return max_frame_bytes_; }
  uint64_t max_chunk_bytes() const { return max_chunk_bytes_; }
  // Attempts received and not yet reported.
  size_t held() const { return active_.size(); }
  size_t unsent() const { return unsent_.size(); }
  size_t in_doubt() const { return in_doubt_.size(); }
  int64_t bad_frames() const { return bad_frames_; }

 private:
  struct SentResult {
    absl::Time sent_at;
    wire::TaskResult result;
  };

  void SendRegister(absl::Time now, WorkerOutbox* out);
  void Send(wire::Frame frame, absl::Time now, WorkerOutbox* out);
  void Close(int linger_ms, WorkerOutbox* out);
  void PresumeBrokerDead(absl::Time now, WorkerOutbox* out);
  void OnWelcome(const wire::Welcome& welcome, absl::Time now,
                 WorkerOutbox* out);
  void OnDispatch(wire::Dispatch& dispatch, absl::Time now, WorkerOutbox* out);
  void OnAbandon(const wire::Abandon& abandon, WorkerOutbox* out);
  void ForgetSettledResults();
  void Leave(absl::Time now, absl::string_view why, WorkerOutbox* out);

  const WorkerCoreOptions options_;

  bool connected_ = false;
  bool welcomed_ = false;
  // Register sent on this socket and not yet answered by a Welcome. A
  // Reconnect meanwhile answers a frame sent before that Register (the
  // broker replies to each frame of an identity it does not know), so it
  // asks for nothing new: registering again would only make the broker
  // drop what it dispatched in reply to the first Register.
  bool register_pending_ = false;
  absl::Duration interval_;
  int liveness_;
  uint64_t max_result_bytes_ = 0;
  uint64_t max_frame_bytes_ = 0;
  uint64_t max_chunk_bytes_ = 0;
  absl::Duration backoff_ = kInitialBackoff;
  absl::Time reconnect_at_ = absl::InfinitePast();  // while !connected_
  absl::Time last_recv_;
  absl::Time last_send_;
  bool draining_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  bool left_ = false;
  int busy_ = 0;

  uint64_t next_run_id_ = 1;
  // Received and not yet reported: key -> run id.
  absl::flat_hash_map<TaskKey, uint64_t> active_;
  // Results waiting to be sent (while not welcomed, for the next Welcome).
  std::vector<wire::TaskResult> unsent_;
  // Results sent after, or less than one heartbeat interval before, the
  // broker's latest frame; oldest first. A broker that crashed may have
  // lost them, so on the next Register they count as held again and are
  // sent again after the Welcome (the broker drops copies it had as
  // stale).
  std::deque<SentResult> in_doubt_;
  size_t in_doubt_bytes_ = 0;

  int64_t bad_frames_ = 0;
  bool in_bad_burst_ = false;
  absl::Time last_bad_log_ = absl::InfinitePast();
};

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_WORKER_CORE_H_
