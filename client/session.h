// One client's Session stream to the broker, and the threads around it:
// `client-send` turns queued submits and watches into batched
// SessionRequests, `client-recv` matches Submitted acknowledgements and
// JobEvents to futures by job id and owns the stream's life (it reconnects
// when the stream breaks), `client-callbacks` runs done callbacks. Internal
// to the client library; Executor is its public face. See docs/DESIGN.md,
// "Threads and owners (client)".
//
// Riding over a broker restart: every submit batch carries this session's
// random client_id and a seq that increases per session (not per stream).
// A written batch stays in unacked_ until the broker answers it. When the
// stream breaks, client-recv reconnects with jittered backoff for up to
// ExecutorOptions::reconnect_timeout; on the new stream client-send first
// re-watches every job id with an unresolved future, then resends every
// unacknowledged batch in seq order with its original seq (the broker
// answers a batch it already took with the same ids and creates nothing).
//
// Thread-safe.
#ifndef DEXEC_CLIENT_SESSION_H_
#define DEXEC_CLIENT_SESSION_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/callback_thread.h"
#include "client/future_state.h"
#include "client/map_stream.h"
#include "client/options.h"
#include "common/backoff.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "protos/dexec.grpc.pb.h"

namespace google::protobuf {
class Arena;
}

namespace dexec {
namespace internal {

class Session final : public BatchSubmitter,
                      public std::enable_shared_from_this<Session> {
 public:
  // Connects (bounded by options.connect_timeout), opens the stream and
  // starts the threads. UNAVAILABLE naming the address on failure.
  static absl::StatusOr<std::shared_ptr<Session>> Connect(
      const ExecutorOptions& options);

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  // Shutdown(/*wait=*/true) if not done yet.
  ~Session() override;

  // Queues one job, coalesced with other submits into one message. A
  // RESOURCE_EXHAUSTED answer fails its future.
  std::shared_ptr<FutureState> Submit(absl::string_view task,
                                      std::string payload,
                                      const SubmitOptions& options);
  // Watches an existing job.
  std::shared_ptr<FutureState> Attach(uint64_t job_id);

  // BatchSubmitter. The batch waits for room: a RESOURCE_EXHAUSTED answer
  // puts it back in the client and offers it again later (options.h,
  // MapOptions).
  void SubmitBatch(absl::string_view task, const SubmitOptions& options,
                   std::vector<std::string> payloads,
                   std::vector<std::shared_ptr<FutureState>>* states) override;
  // FutureHost.
  void Post(std::function<void()> fn) override;
  absl::StatusOr<std::vector<bool>> CancelJobs(
      const std::vector<uint64_t>& job_ids) override;
  // Withdraws jobs of map chunks not sent yet (queued, or waiting for
  // room); a chunk out at the broker drops them if it is refused.
  std::vector<bool> CancelUnsent(
      const std::vector<std::shared_ptr<FutureState>>& states) override;

  // The sequence (executor.h, Executor::Shutdown): stop accepting; with
  // cancel_futures drop unsent jobs and cancel queued ones; with wait, wait
  // until every future is done (across reconnections, so at most
  // reconnect_timeout into an outage), half-close the stream, join the
  // threads.
  void Shutdown(bool wait, bool cancel_futures);

  // The Executor's destructor: Shutdown(/*wait=*/true), unless
  // Shutdown(/*wait=*/false) came first. Then it does not wait: futures
  // still pending fail with FAILED_PRECONDITION, the stream is closed and
  // the threads are joined at once.
  void Close();

  const std::string& broker() const { return broker_; }
  // The random name of this session in SessionRequest.Submit.client_id.
  const std::string& client_id() const { return client_id_; }

 private:
  // One SessionRequest.submit, built on its own arena (one allocation per
  // batch instead of one per job). Shared: the queues, unacked_ and the
  // sender (while it writes) may each hold it.
  struct OutBatch {
    std::unique_ptr<google::protobuf::Arena> arena;
    v1::SessionRequest* request = nullptr;  // on arena
    std::vector<std::shared_ptr<FutureState>> states;
    size_t bytes = 0;
    // Single submits may join an open batch; a map chunk is closed.
    bool open = false;
    // A Map chunk: RESOURCE_EXHAUSTED puts it back to wait for room.
    bool waits_for_room = false;
    // Creation order of map chunks: the room queue stays in this order.
    uint64_t ticket = 0;
    // The one chunk offered while others wait for room.
    bool probe = false;
    // Jobs cancelled before they were sent (CancelUnsent); empty if none.
    std::vector<bool> withdrawn;
  };
  using BatchPtr = std::shared_ptr<OutBatch>;

  // A future waiting for events of a job id.
  struct Watcher {
    std::shared_ptr<FutureState> state;
    bool submitted;  // by this session (Shutdown's cancel_futures applies)
    // generation_ when registered: a not_found on a later stream means the
    // broker lost a job it once had.
    uint64_t generation;
  };

  // One Session RPC. Member order matters: the stream goes before its
  // context.
  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionResponse>>
        rw;
  };

  Session(ExecutorOptions options, std::shared_ptr<grpc::Channel> channel);
  void Start();
  std::shared_ptr<Stream> OpenStream();
  BatchPtr NewBatch(bool open) const;
  void AddJob(OutBatch* batch, absl::string_view task, std::string payload,
              const SubmitOptions& options) const;
  // A copy of `batch` without its withdrawn jobs.
  BatchPtr WithoutWithdrawn(const OutBatch& batch) const;
  // `batch`'s jobs [begin, end) as a new batch of the same kind.
  BatchPtr Slice(const OutBatch& batch, size_t begin, size_t end) const;

  // ---- sending: client-send, or a caller of Submit on an idle session ----
  // What one writer takes from the queues and writes in one go.
  struct SendRound {
    std::shared_ptr<Stream> stream;  // null: nothing taken
    bool resync = false;
    std::vector<uint64_t> watches;
    std::vector<BatchPtr> taken;
  };
  void SendLoop();
  // Takes the sending role (sending_) and what may be sent now.
  SendRound BeginRoundLocked(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Registers and writes a round without holding locks, then gives the
  // sending role back.
  void WriteRound(SendRound round) ABSL_LOCKS_EXCLUDED(queue_mu_, mu_);
  // Submit may write its one job itself: the session is idle.
  bool InlineSendAllowedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Something to write now. Batches wait while kMaxUnackedBatches are
  // unanswered.
  bool HasWorkLocked(absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  bool RoomProbeDueLocked(absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Moves what may be sent now from the queues to `out`.
  void TakeBatchesLocked(absl::Time now, std::vector<BatchPtr>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  // Queues a map chunk behind older ones waiting for room, ahead of the
  // rest of its own chunk.
  void InsertWaitingLocked(BatchPtr batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);

  // ---- client-recv ----
  void RecvLoop();
  // Opens a new stream after the last one broke, with backoff, until
  // `outage_start` + reconnect_timeout. nullptr if it gave up or Stop()
  // was called.
  std::shared_ptr<Stream> Reconnect(absl::Time outage_start, Backoff* backoff);
  void HandleSubmitted(v1::SessionResponse::Submitted* submitted);
  void HandleEvents(v1::SessionResponse::Events* events);
  // The session is over for good: fail everything outstanding with
  // `status` and refuse later submits with it.
  void FailOutstanding(const absl::Status& status);

  // Blocks until nothing is queued, unanswered or watched (or the session
  // failed).
  void WaitUntilIdle();
  void Stop();

  const ExecutorOptions options_;
  const std::string broker_;
  // "Bearer <token>" for each call's metadata; empty: none found. Set once
  // by Connect before Start.
  std::string authorization_;
  const std::string client_id_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Broker::Stub> stub_;

  // Guards the outgoing side: what Submit/Attach hand to `client-send`,
  // map chunks waiting for room, and the current stream and whether the
  // sender may write to it. Lock order: queue_mu_ before mu_.
  Mutex queue_mu_;
  std::deque<BatchPtr> batches_ ABSL_GUARDED_BY(queue_mu_);
  std::vector<uint64_t> watch_ids_ ABSL_GUARDED_BY(queue_mu_);
  // Map chunks the broker had no room for, in ticket order; the head is
  // offered again at room_retry_at_ (one probe at a time).
  std::deque<BatchPtr> room_wait_ ABSL_GUARDED_BY(queue_mu_);
  bool room_probe_out_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Time room_retry_at_ ABSL_GUARDED_BY(queue_mu_) = absl::InfinitePast();
  Backoff room_backoff_ ABSL_GUARDED_BY(queue_mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Batches taken by the sender and not yet answered by the broker.
  int64_t in_flight_batches_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // The current stream (replaced by client-recv on reconnect). The sender
  // writes to it only while connected_, and client-recv calls Finish only
  // once the sender is out of its round (!sending_).
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(queue_mu_);
  bool connected_ ABSL_GUARDED_BY(queue_mu_) = false;
  // A new stream: re-watch and resend before anything else.
  bool resync_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Someone holds the sending role: client-send, or a caller of Submit
  // writing inline. It holds items taken from the queue and not yet
  // registered, or is writing. One writer at a time on a stream.
  bool sending_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Writes to this stream failed: skip it until client-recv replaces it.
  // Read and written only by the holder of the sending role.
  std::shared_ptr<Stream> failed_stream_;
  // No more submits accepted; they fail with closed_status_.
  bool closed_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Status closed_status_ ABSL_GUARDED_BY(queue_mu_);
  // Shutdown(cancel_futures): refused map chunks are cancelled, not kept.
  bool cancel_unsent_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Shutdown(wait=false) was called: Close() abandons pending futures.
  bool wait_declined_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool stop_sender_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool sender_exited_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Stop() was called: no reconnecting.
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool receiver_exited_ ABSL_GUARDED_BY(queue_mu_) = false;

  // Guards what the broker has yet to answer: written batches by seq (in
  // seq order, for resending), and watchers by job id. Held for map updates
  // only; futures are completed after it is released.
  Mutex mu_ ABSL_ACQUIRED_AFTER(queue_mu_);
  std::map<uint64_t, BatchPtr> unacked_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Watcher, 1>> ids_
      ABSL_GUARDED_BY(mu_);
  // Streams opened so far (1 is the first).
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // The session is over; nothing will be acknowledged or completed.
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_status_ ABSL_GUARDED_BY(mu_);
  // Per session, never per stream, so a resent batch keeps its seq. Only
  // `client-send` writes it, under mu_ together with unacked_.
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;

  // Serialises Stop (joining) across concurrent Shutdown calls.
  Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;

  CallbackThread callbacks_;
  std::thread sender_;
  std::thread receiver_;
};

}  // namespace internal
}  // namespace dexec

#endif  // DEXEC_CLIENT_SESSION_H_
