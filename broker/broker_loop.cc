#include "broker/broker_loop.h"

#include <malloc.h>
#include <pthread.h>

#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "protos/wire.h"

namespace dexec::broker {
namespace {

// Frames taken from the socket per iteration before commands get a turn.
constexpr int kMaxFramesPerIteration = 4096;
constexpr absl::Duration kBadFrameLogInterval = absl::Seconds(10);
// Connections whose admitted key the loop remembers, at most.
constexpr size_t kMaxCachedConnections = 65536;
// How often the loop asks whether the allocator holds much freed memory,
// and how much is much (see ReturnFreedMemory).
constexpr absl::Duration kTrimInterval = absl::Seconds(1);
constexpr size_t kTrimAboveBytes = 32 << 20;

std::string PeerName(const std::string& identity) {
  return absl::BytesToHexString(identity);
}

}  // namespace

BrokerLoop::BrokerLoop(BrokerOptions options, std::unique_ptr<Journal> journal,
                       RecoveredState recovered)
    : context_(1),
      router_(context_, zmq::socket_type::router),
      core_(std::move(options), absl::Now()),
      journal_(std::move(journal)) {
  if (journal_ != nullptr) core_.Restore(std::move(recovered), absl::Now());
  // Fail sends to a vanished peer instead of dropping them silently, so a
  // worker that went away is noticed at once.
  router_.set(zmq::sockopt::router_mandatory, 1);
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::sndhwm, 0);
  router_.set(zmq::sockopt::rcvhwm, 0);
  // What the protocol needs (wire.h), whatever the payload and result
  // limits: a longer frame drops its connection at the header, before
  // anything is buffered for it, authenticated or not. (Workers are told
  // the limit in Welcome and send long outputs in pieces under it.)
  router_.set(zmq::sockopt::maxmsgsize,
              static_cast<int64_t>(wire::kMaxWorkerFrameBytes));
}

BrokerLoop::~BrokerLoop() { Stop(); }

absl::StatusOr<std::string> BrokerLoop::BindWorkers(
    const std::string& endpoint, std::optional<WorkerPlaneAuth> auth) {
  std::string ep = endpoint;
  if (ep.size() > 2 && ep.compare(ep.size() - 2, 2, ":0") == 0) {
    ep = ep.substr(0, ep.size() - 1) + "*";
  }
  if (auth.has_value()) {
    if (auth->keys == nullptr) {
      return absl::InvalidArgumentError("worker authentication without keys");
    }
    // The handler first: a CURVE socket with none admits every key.
    zap_ = std::make_unique<ZapHandler>(&context_, auth->keys);
    absl::Status zap = zap_->Start();
    if (!zap.ok()) return zap;
    try {
      router_.set(zmq::sockopt::curve_server, 1);
      router_.set(zmq::sockopt::curve_secretkey, auth->broker_key.secret_z85);
      // A domain makes libzmq ask the handler for every handshake.
      router_.set(zmq::sockopt::zap_domain, "dexec-workers");
      // A peer that has not authenticated within 5 s is dropped, and with
      // it whatever it buffered (libzmq has no other pre-handshake limit
      // than maxmsgsize, which is why that one is small).
      router_.set(zmq::sockopt::handshake_ivl, 5000);
      // Failed handshakes, for the refusal count (the handler only sees the
      // ones that got as far as offering a key).
      if (zmq_socket_monitor(router_.handle(), "inproc://dexec-worker-monitor",
                             ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
        throw zmq::error_t();
      }
      monitor_ = zmq::socket_t(context_, zmq::socket_type::pair);
      monitor_.set(zmq::sockopt::linger, 0);
      monitor_.connect("inproc://dexec-worker-monitor");
    } catch (const zmq::error_t& e) {
      return absl::InternalError(
          absl::StrCat("cannot set up CURVE on the worker socket: ", e.what()));
    }
    worker_auth_ = std::move(auth);
  }
  try {
    router_.bind(ep);
    return router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind the worker socket to ", endpoint, ": ",
                     e.what(), " (--worker_listen)"));
  }
}

void BrokerLoop::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "broker-loop");
    Run();
  });
}

void BrokerLoop::Stop() {
  if (zap_ != nullptr && !thread_.joinable()) zap_->Stop();
  if (!thread_.joinable()) return;
  stop_.store(true);
  Post([](Context&) {});  // wake the loop
  thread_.join();
  if (zap_ != nullptr) zap_->Stop();
  if (journal_ != nullptr) journal_->Close();
}

void BrokerLoop::Post(Command command) { mailbox_.Post(std::move(command)); }

void BrokerLoop::AddSession(SessionId id, std::shared_ptr<SessionSink> sink,
                            std::string owner) {
  Post([this, id, sink = std::move(sink),
        owner = std::move(owner)](Context&) mutable {
    sessions_[id] = SessionEntry{std::move(sink), std::move(owner)};
  });
}

void BrokerLoop::FailSessionsOf(std::string owner, absl::Status status) {
  Post([this, owner = std::move(owner), status](Context&) {
    for (const auto& [id, entry] : sessions_) {
      if (entry.owner == owner) entry.sink->Fail(status);
    }
  });
}

void BrokerLoop::RemoveSession(SessionId id) {
  Post([this, id](Context& c) {
    sessions_.erase(id);
    c.core.CloseSession(id);
  });
}

void BrokerLoop::CloseSessions() {
  Post([this](Context& c) {
    for (const auto& [id, entry] : sessions_) {
      // A reply, so it runs after the replies already queued, in order.
      c.out.replies.push_back(
          [sink = entry.sink] { sink->Close(absl::OkStatus()); });
    }
  });
}

void BrokerLoop::Run() {
  const absl::Duration tick_every = core_.options().heartbeat_interval / 4;
  while (true) {
    absl::Time now = absl::Now();
    const absl::Duration until_tick =
        std::min(next_tick_, core_.NextWakeup()) - now;
    long timeout_ms = std::max<int64_t>(
        0, std::min<int64_t>(absl::ToInt64Milliseconds(until_tick) + 1, 1000));
    zmq::pollitem_t items[] = {
        {router_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, mailbox_.fd(), ZMQ_POLLIN, 0},
        {monitor_.handle(), 0, ZMQ_POLLIN, 0},
    };
    const int n_items = worker_auth_.has_value() ? 3 : 2;
    try {
      zmq::poll(items, n_items, std::chrono::milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        DEXEC_LOG(ERROR) << "poll failed: " << e.what();
      }
    }
    now = absl::Now();
    if (items[0].revents & ZMQ_POLLIN) ReadWorkerFrames(now);
    if (n_items > 2 && (items[2].revents & ZMQ_POLLIN)) ReadMonitorEvents(now);
    if (items[1].revents & ZMQ_POLLIN) {
      if (journal_ != nullptr) {
        // What this iteration's submits may add to the journal's disk.
        journal_->CheckSpace();
        core_.SetSubmitRoom(journal_->SubmitRoom());
      }
      Context ctx{core_, now, outbox_};
      for (Command& c : mailbox_.Drain()) c(ctx);
    }
    core_.Schedule(now, &outbox_);
    if (now >= next_tick_) {
      if (journal_ != nullptr) {
        // A full disk refuses submits, and space coming back ends that.
        journal_->CheckSpace();
        std::string why;
        core_.SetRefuseSubmits(journal_->Full(&why) ? why : "");
      }
      core_.Tick(now, &outbox_);
      core_.Schedule(now, &outbox_);
      next_tick_ = now + tick_every;
      if (now >= next_trim_) {
        ReturnFreedMemory();
        next_trim_ = now + kTrimInterval;
      }
    }
    Flush(now);
    if (stop_.load()) {
      // Run what was posted before Stop, then leave.
      Context ctx{core_, now, outbox_};
      for (Command& c : mailbox_.Drain()) c(ctx);
      Flush(now);
      break;
    }
  }
  router_.close();
  if (worker_auth_.has_value()) monitor_.close();
}

void BrokerLoop::ReadMonitorEvents(absl::Time now) {
  for (int i = 0; i < kMaxFramesPerIteration; ++i) {
    zmq::message_t event, address;
    try {
      if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
      if (event.more()) (void)monitor_.recv(address, zmq::recv_flags::none);
    } catch (const zmq::error_t& e) {
      DEXEC_LOG(ERROR) << "worker socket monitor: " << e.what();
      return;
    }
    if (event.size() < 6) continue;
    uint16_t type = 0;
    std::memcpy(&type, event.data(), sizeof(type));
    const uint64_t n = worker_auth_failures_.fetch_add(1) + 1;
    if (now - monitor_logged_ >= kBadFrameLogInterval) {
      monitor_logged_ = now;
      DEXEC_LOG(WARNING) << "worker handshake failed peer="
                         << address.to_string() << " reason="
                         << (type == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                                 ? "key_not_admitted"
                                 : "no_curve_or_bad_handshake")
                         << " worker_auth_failures_total=" << n;
    }
  }
}

void BrokerLoop::ReturnFreedMemory() {
  // glibc keeps freed memory in its arenas for reuse, and returns only the
  // top of each heap: after a burst of large payloads, or of jobs expiring
  // by the hundred thousand, the broker stayed gigabytes larger than what
  // it held. malloc_trim(0) hands every free page back. It takes the loop
  // 2-20 ms (measured on 100-500 MB heaps), so it runs at most once a
  // second, and only when at least kTrimAboveBytes and half as much as is
  // in use lie free — after a large free, not in a steady state, where
  // freed memory is reused. See docs/DESIGN.md, "Memory".
  const struct mallinfo2 info = mallinfo2();
  const size_t free_bytes = info.fordblks;
  if (free_bytes < kTrimAboveBytes || free_bytes < info.uordblks / 2) return;
  const absl::Time start = absl::Now();
  malloc_trim(0);
  DEXEC_LOG(DEBUG) << "returned freed memory free_bytes=" << free_bytes
                   << " in_use_bytes=" << info.uordblks
                   << " took=" << absl::FormatDuration(absl::Now() - start);
}

void BrokerLoop::ReadWorkerFrames(absl::Time now) {
  for (int i = 0; i < kMaxFramesPerIteration; ++i) {
    zmq::message_t identity;
    zmq::message_t body;
    try {
      if (!router_.recv(identity, zmq::recv_flags::dontwait)) return;
      if (!identity.more()) {
        NoteBadFrame(identity.to_string(), "message without body", now);
        continue;
      }
      (void)router_.recv(body, zmq::recv_flags::none);
      if (body.more()) {
        // A DEALER of ours sends one body frame; drain whatever follows.
        zmq::message_t extra;
        while (body.more() || extra.more()) {
          (void)router_.recv(extra, zmq::recv_flags::none);
          if (!extra.more()) break;
        }
        NoteBadFrame(identity.to_string(), "message with extra frames", now);
        continue;
      }
    } catch (const zmq::error_t& e) {
      DEXEC_LOG(ERROR) << "worker socket receive failed: " << e.what();
      return;
    }
    std::string key;
    if (worker_auth_.has_value()) {
      absl::StatusOr<std::string> admitted =
          AdmittedKeyOf(identity.to_string(), body);
      if (!admitted.ok()) {
        worker_auth_failures_.fetch_add(1);
        NoteBadFrame(identity.to_string(), "worker key revoked", now);
        continue;
      }
      key = *std::move(admitted);
    }
    absl::StatusOr<wire::Frame> frame = wire::DecodeFrame(
        absl::string_view(static_cast<const char*>(body.data()), body.size()));
    if (!frame.ok()) {
      NoteBadFrame(identity.to_string(), std::string(frame.status().message()),
                   now);
      continue;
    }
    core_.OnWorkerFrame(identity.to_string(), key, *frame, now, &outbox_);
  }
}

absl::StatusOr<std::string> BrokerLoop::AdmittedKeyOf(
    const std::string& identity, zmq::message_t& body) {
  // The ZAP handler admitted this connection's key at its handshake; it may
  // have been revoked since. A connection keeps its key, and ROUTER
  // identities are not reused, so the answer is cached per identity until
  // the admitted keys change (a revoke bumps the store's generation).
  const uint64_t generation = worker_auth_->keys->generation();
  if (generation != admitted_generation_ ||
      admitted_keys_.size() > kMaxCachedConnections) {
    admitted_keys_.clear();
    admitted_generation_ = generation;
  }
  if (auto it = admitted_keys_.find(identity); it != admitted_keys_.end()) {
    return it->second;
  }
  const char* user = nullptr;
  try {
    user = body.gets("User-Id");
  } catch (const zmq::error_t&) {
  }
  absl::StatusOr<std::string> binary =
      user == nullptr ? absl::InvalidArgumentError("no key")
                      : auth::Z85ToBinary(user);
  if (!binary.ok() || !worker_auth_->keys->NameOfKey(*binary).has_value()) {
    return absl::PermissionDeniedError("worker key not admitted");
  }
  admitted_keys_.emplace(identity, user);
  return std::string(user);
}

void BrokerLoop::NoteBadFrame(const std::string& peer, const std::string& why,
                              absl::Time now) {
  ++bad_frames_;
  if (bad_frame_logged_.size() > 1024) bad_frame_logged_.clear();
  absl::Time& last = bad_frame_logged_[peer];
  if (now - last < kBadFrameLogInterval) return;
  last = now;
  DEXEC_LOG(WARNING) << "bad frame dropped peer=" << PeerName(peer)
                     << " reason=\"" << why
                     << "\" bad_frames_total=" << bad_frames_;
}

void BrokerLoop::Flush(absl::Time now) {
  // Replies to clients, in the order the core produced them. Frames to
  // workers go out at once: a dispatch ahead of its journal record is safe
  // (a job not yet durable was not acknowledged either). Session pushes go
  // before the other replies of the iteration: those include the closing
  // of streams (a half-close, CloseSessions), which must come after what
  // the same iteration queued for them.
  std::vector<Journal::Reply> replies;
  std::vector<Journal::Reply> after = std::move(outbox_.replies);
  outbox_.replies.clear();
  // Sending can reveal a dead worker, whose jobs then produce more output:
  // loop until nothing is left.
  while (!outbox_.empty()) {
    std::vector<std::pair<std::string, wire::Frame>> frames;
    frames.swap(outbox_.to_workers);
    outbox_.open_dispatch.clear();
    auto sessions = std::move(outbox_.to_sessions);
    outbox_.to_sessions.clear();
    std::vector<SessionId> drain_reports = std::move(outbox_.drain_reports);
    outbox_.drain_reports.clear();
    for (auto& [identity, frame] : frames) {
      std::string bytes = wire::EncodeFrame(std::move(frame));
      try {
        router_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
        core_.NoteSent(identity, now);
      } catch (const zmq::error_t& e) {
        if (e.num() == EHOSTUNREACH) {
          core_.OnWorkerUnreachable(identity, now, &outbox_);
        } else {
          DEXEC_LOG(ERROR) << "send to worker failed peer="
                           << PeerName(identity) << " error=" << e.what();
        }
      }
    }
    for (auto& [id, responses] : sessions) {
      auto it = sessions_.find(id);
      if (it == sessions_.end()) continue;  // the client went away
      replies.push_back(
          [sink = it->second.sink, responses = std::move(responses)]() mutable {
            sink->Push(std::move(responses));
          });
    }
    // After the pushes they follow: a report means "what came before me
    // is written".
    for (SessionId id : drain_reports) {
      auto it = sessions_.find(id);
      if (it == sessions_.end()) continue;
      replies.push_back(
          [sink = it->second.sink] { sink->ReportWhenDrained(); });
    }
    for (auto& r : outbox_.replies) after.push_back(std::move(r));
    outbox_.replies.clear();
  }
  for (Journal::Reply& r : after) replies.push_back(std::move(r));
  std::vector<Journal::Reply> queries = std::move(outbox_.query_replies);
  outbox_.query_replies.clear();
  if (journal_ != nullptr) {
    journal_->Commit(core_.TakeChanges(), core_.jobs(), std::move(replies),
                     std::move(queries));
  } else {
    for (Journal::Reply& r : replies) r();
    for (Journal::Reply& r : queries) r();
  }
}

}  // namespace dexec::broker
