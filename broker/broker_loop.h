// The broker-loop thread: sole owner of the BrokerCore and of the ZeroMQ
// ROUTER socket that workers connect to. Other threads (gRPC's callback
// pool, main) never touch that state: they Post() commands, which run on
// the loop thread with the core, the time, and an Outbox whose frames and
// session responses the loop sends after the command batch.
//
// One iteration: poll the socket and the mailbox; take every waiting worker
// frame and every command; schedule once; tick if due; send what the Outbox
// collected. Batching falls out of this: a burst of submits or results costs
// one Schedule and one Dispatch frame per worker.
//
// Thread-safe (Post, AddSession, RemoveSession, NewSessionId).
#ifndef DEXEC_BROKER_BROKER_LOOP_H_
#define DEXEC_BROKER_BROKER_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "auth/worker_key_store.h"
#include "broker/broker_core.h"
#include "broker/journal.h"
#include "broker/zap_handler.h"
#include "common/mailbox.h"
#include "protos/dexec.pb.h"
#include "zmq.hpp"

namespace dexec::broker {

// Where a session's responses go: the gRPC stream of one client.
// Implementations are thread-safe; Push never blocks.
class SessionSink {
 public:
  virtual ~SessionSink() = default;
  virtual void Push(std::vector<v1::SessionResponse> responses) = 0;
  // Ends the stream with `status` once its queue is written out; what is
  // pushed after that is dropped. Only the first Close counts.
  virtual void Close(const absl::Status& status) = 0;
  // Ends the stream with `status` now, dropping what is queued.
  virtual void Fail(absl::Status status) = 0;
  // Once everything pushed so far is written, post
  // BrokerCore::OnSessionDrained for this session (once per call).
  virtual void ReportWhenDrained() = 0;
};

// How workers authenticate (docs/DESIGN.md, "Security"). Without it
// (--insecure) the worker socket is plain ZeroMQ and any peer may join.
struct WorkerPlaneAuth {
  // The broker's CURVE keypair (Z85); workers pin its public key.
  auth::CurveKeypair broker_key;
  // The admitted worker keys; borrowed, outlives the loop.
  const auth::WorkerKeyStore* keys = nullptr;
};

class BrokerLoop {
 public:
  // What a command sees; valid only during the command.
  struct Context {
    BrokerCore& core;
    absl::Time now;
    Outbox& out;
  };
  using Command = std::function<void(Context&)>;

  // With a `journal` (see journal.h), the core starts from `recovered` and
  // every reply to a client waits until what it reports is on disk.
  explicit BrokerLoop(BrokerOptions options,
                      std::unique_ptr<Journal> journal = nullptr,
                      RecoveredState recovered = {});
  ~BrokerLoop();  // Stop()s
  BrokerLoop(const BrokerLoop&) = delete;
  BrokerLoop& operator=(const BrokerLoop&) = delete;

  // Binds the worker socket (before Start). `endpoint` may end in ":*" or
  // ":0" for a free port; returns the endpoint actually bound. With `auth`
  // the socket is a CURVE server whose handshakes a ZapHandler checks (it
  // is bound first; failing that, nothing is bound).
  absl::StatusOr<std::string> BindWorkers(
      const std::string& endpoint,
      std::optional<WorkerPlaneAuth> auth = std::nullopt);

  // Starts the broker-loop thread.
  void Start();

  // Runs the commands already posted, then stops and joins the thread, and
  // closes the journal once everything is written.
  void Stop();

  // Runs `command` on the loop thread, soon.
  void Post(Command command);

  // Ends every client's Session stream after the replies queued for it so
  // far (with a journal: once what they report is durable). For shutdown: a
  // client reconnects to the next broker at once, and does not hold the
  // gRPC server's shutdown for its grace period.
  void CloseSessions();

  // Fixed at construction; readable from any thread.
  const BrokerOptions& options() const { return core_.options(); }

  SessionId NewSessionId() { return next_session_.fetch_add(1); }
  // `owner`: the name of the token that opened the stream.
  void AddSession(SessionId id, std::shared_ptr<SessionSink> sink,
                  std::string owner = "");
  void RemoveSession(SessionId id);
  // Ends, with `status`, every Session stream `owner`'s token opened (it
  // was revoked).
  void FailSessionsOf(std::string owner, absl::Status status);

  // Worker handshakes refused (no CURVE, or a key not admitted) and frames
  // dropped because their key was revoked since.
  uint64_t worker_auth_failures() const { return worker_auth_failures_.load(); }
  // The journal's metrics (a locked copy; any thread); none in memory.
  std::optional<JournalMetrics> journal_metrics() const {
    if (journal_ == nullptr) return std::nullopt;
    return journal_->metrics();
  }

 private:
  void Run();
  void ReadWorkerFrames(absl::Time now);
  void ReadMonitorEvents(absl::Time now);
  // The CURVE key (Z85) of the connection `identity` if it is still
  // admitted; PERMISSION_DENIED if it was revoked.
  absl::StatusOr<std::string> AdmittedKeyOf(const std::string& identity,
                                            zmq::message_t& body);
  void Flush(absl::Time now);
  // Hands memory the allocator holds free back to the OS, if it is much.
  void ReturnFreedMemory();
  void NoteBadFrame(const std::string& peer, const std::string& why,
                    absl::Time now);

  zmq::context_t context_;
  zmq::socket_t router_;  // owned by the loop thread once started
  // Handshake events of router_ (failures only), read by the loop thread.
  zmq::socket_t monitor_;
  std::optional<WorkerPlaneAuth> worker_auth_;
  std::unique_ptr<ZapHandler> zap_;
  std::atomic<uint64_t> worker_auth_failures_{0};
  Mailbox<Command> mailbox_;
  std::atomic<bool> stop_{false};
  std::atomic<SessionId> next_session_{1};
  std::thread thread_;

  // ---- Owned by the loop thread. ----
  BrokerCore core_;
  std::unique_ptr<Journal> journal_;  // null: in memory
  Outbox outbox_;
  struct SessionEntry {
    std::shared_ptr<SessionSink> sink;
    std::string owner;
  };
  absl::flat_hash_map<SessionId, SessionEntry> sessions_;
  absl::Time monitor_logged_ = absl::InfinitePast();
  // ROUTER identity -> admitted key, valid for one key-store generation.
  absl::flat_hash_map<std::string, std::string> admitted_keys_;
  uint64_t admitted_generation_ = 0;
  absl::Time next_tick_ = absl::InfinitePast();
  absl::Time next_trim_ = absl::InfinitePast();
  // Last time a bad frame from a peer was logged (once per peer per burst).
  absl::flat_hash_map<std::string, absl::Time> bad_frame_logged_;
  uint64_t bad_frames_ = 0;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_BROKER_LOOP_H_
