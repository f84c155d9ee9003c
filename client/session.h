// One client's Session stream to the broker, and the threads around it:
// `client-send` turns queued submits and watches into batched
// SessionRequests, `client-recv` matches Submitted acknowledgements and
// JobEvents to futures by job id, `client-callbacks` runs done callbacks.
// Internal to the client library; Executor is its public face. See
// docs/DESIGN.md, "Client protocol".
//
// Per-job state is keyed by job id (ids_), so that a later reconnect can
// re-watch every id it holds (TODO: reconnect and re-subscribe).
//
// Thread-safe.
#ifndef DEXEC_CLIENT_SESSION_H_
#define DEXEC_CLIENT_SESSION_H_

#include <cstdint>
#include <deque>
#include <functional>
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
#include "client/callback_thread.h"
#include "client/future_state.h"
#include "client/map_stream.h"
#include "common/mutex.h"
#include "client/options.h"
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

  // Queues one job, coalesced with other submits into one message.
  std::shared_ptr<FutureState> Submit(absl::string_view task,
                                      std::string payload,
                                      const SubmitOptions& options);
  // Watches an existing job.
  std::shared_ptr<FutureState> Attach(uint64_t job_id);

  // BatchSubmitter.
  void SubmitBatch(absl::string_view task, const SubmitOptions& options,
                   std::vector<std::string> payloads,
                   std::vector<std::shared_ptr<FutureState>>* states) override;
  // FutureHost.
  void Post(std::function<void()> fn) override;
  absl::StatusOr<std::vector<bool>> CancelJobs(
      const std::vector<uint64_t>& job_ids) override;

  // The sequence (executor.h, Executor::Shutdown): stop accepting; with
  // cancel_futures drop unsent jobs and cancel queued ones; with wait, wait
  // until every future is done, half-close the stream, join the threads.
  void Shutdown(bool wait, bool cancel_futures);

  const std::string& broker() const { return broker_; }

 private:
  // One SessionRequest.submit waiting for the sender, built on its own arena
  // (one allocation per batch instead of one per job).
  struct OutBatch {
    std::unique_ptr<google::protobuf::Arena> arena;
    v1::SessionRequest* request = nullptr;  // on arena
    std::vector<std::shared_ptr<FutureState>> states;
    size_t bytes = 0;
    // Single submits may join an open batch; a map chunk is closed.
    bool open = false;
  };
  // A future waiting for events of a job id.
  struct Watcher {
    std::shared_ptr<FutureState> state;
    bool submitted;  // by this session (Shutdown's cancel_futures applies)
  };

  Session(ExecutorOptions options, std::shared_ptr<grpc::Channel> channel);
  void Start();
  OutBatch NewBatch(bool open) const;
  void AddJob(OutBatch* batch, absl::string_view task, std::string payload,
              const SubmitOptions& options) const;
  void SendLoop();
  void RecvLoop();
  void HandleSubmitted(v1::SessionResponse::Submitted* submitted);
  void HandleEvents(v1::SessionResponse::Events* events);
  // The stream ended: fail everything outstanding with `status`.
  void FailOutstanding(const absl::Status& status);
  void Stop();

  const ExecutorOptions options_;
  const std::string broker_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Broker::Stub> stub_;
  grpc::ClientContext stream_context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionResponse>>
      stream_;

  // Guards the outgoing queue: what Submit/Attach hand to `client-send`.
  // Lock order: queue_mu_ before mu_.
  Mutex queue_mu_;
  std::deque<OutBatch> batches_ ABSL_GUARDED_BY(queue_mu_);
  std::vector<uint64_t> watch_ids_ ABSL_GUARDED_BY(queue_mu_);
  // The sender holds items taken from the queue and not yet registered.
  bool sending_ ABSL_GUARDED_BY(queue_mu_) = false;
  // No more submits accepted; they fail with closed_status_.
  bool closed_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::Status closed_status_ ABSL_GUARDED_BY(queue_mu_);
  bool stop_sender_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool sender_exited_ ABSL_GUARDED_BY(queue_mu_) = false;

  // Guards what the broker has yet to answer: sent batches by seq, and
  // watchers by job id. Held for map updates only; futures are completed
  // after it is released.
  Mutex mu_ ABSL_ACQUIRED_AFTER(queue_mu_);
  absl::flat_hash_map<uint64_t, std::vector<std::shared_ptr<FutureState>>>
      unacked_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Watcher, 1>> ids_
      ABSL_GUARDED_BY(mu_);
  // The stream is over; nothing will be acknowledged or completed by it.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status broken_status_ ABSL_GUARDED_BY(mu_);

  // Only `client-send` touches it.
  uint64_t next_seq_ = 0;

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
