#include "broker/grpc_service.h"

#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/mutex.h"
#include "common/proto_time.h"
#include "common/status_grpc.h"

namespace dexec::broker {
namespace {

// Session requests read but not yet handled by the loop, per stream. Reading
// pauses at this many, so a fast client cannot grow the broker's mailbox
// without bound.
constexpr int kMaxUnhandledRequests = 8;
// Events merged into one queued response at most.
constexpr int kMaxEventsPerResponse = 4096;

// One client's Session stream. Deletes itself when gRPC is done with it.
//
// Reads: the reactor posts each request to the loop, and keeps at most
// kMaxUnhandledRequests outstanding. Writes: the loop pushes responses into
// a queue; one write is in flight at a time, and queued responses are
// merged so a burst of acknowledgements and results costs few writes.
class SessionReactor final
    : public grpc::ServerBidiReactor<v1::SessionRequest, v1::SessionResponse> {
 public:
  SessionReactor(BrokerLoop* loop, Caller caller)
      : loop_(loop),
        id_(loop->NewSessionId()),
        caller_(std::make_shared<const Caller>(std::move(caller))),
        sink_(std::make_shared<Sink>(this)) {
    loop_->AddSession(id_, sink_, caller_->name);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed or the call ended: no more requests. Answer
      // what is queued, then finish.
      loop_->RemoveSession(id_);
      sink_->Close();
      return;
    }
    auto req = std::make_shared<v1::SessionRequest>(std::move(request_));
    request_.Clear();
    const SessionId id = id_;
    std::shared_ptr<Sink> sink = sink_;
    std::shared_ptr<const Caller> caller = caller_;
    loop_->Post([req, id, sink, caller](BrokerLoop::Context& c) {
      if (req->has_submit()) {
        // Submitted goes into the outbox before any event of these jobs.
        std::vector<v1::SessionResponse>& q = c.out.to_sessions[id];
        const size_t index = q.size();
        q.emplace_back().mutable_submitted()->set_seq(req->submit().seq());
        const BatchKey batch{req->submit().client_id(), req->submit().seq()};
        absl::StatusOr<std::vector<uint64_t>> ids = c.core.Submit(
            req->submit().jobs(), *caller, id, c.now, &c.out, &batch);
        v1::SessionResponse::Submitted* submitted =
            c.out.to_sessions[id][index].mutable_submitted();
        if (ids.ok()) {
          submitted->mutable_job_ids()->Add(ids->begin(), ids->end());
        } else {
          submitted->set_error_code(static_cast<int32_t>(ids.status().code()));
          submitted->set_error_message(std::string(ids.status().message()));
        }
      } else if (req->has_watch()) {
        c.core.Watch(id, *caller, req->watch().job_ids(), &c.out);
      }
      sink->OnHandled();
    });
    sink_->OnRead();
  }

  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }

  void OnDone() override {
    sink_->Detach();
    delete this;
  }

 private:
  // The stream's shared state: the loop pushes into it, gRPC reactions drive
  // it. Decisions are taken under the lock and carried out after it is
  // released, so a reaction that gRPC runs inline cannot deadlock on it.
  class Sink final : public SessionSink {
   public:
    explicit Sink(SessionReactor* reactor) : reactor_(reactor) {}

    void Push(std::vector<v1::SessionResponse> responses) override {
      Next next;
      {
        MutexLock lock(&mu_);
        if (reactor_ == nullptr || finish_started_) return;
        for (v1::SessionResponse& r : responses) {
          // Merge into the queued (not yet writing) response where that
          // keeps every acknowledgement ahead of its jobs' events: the
          // client handles a response's `submitted` before its `events`,
          // and the queued events are of jobs acknowledged earlier.
          if (!queue_.empty() &&
              !(r.has_submitted() && queue_.back().has_submitted()) &&
              queue_.back().events().events_size() < kMaxEventsPerResponse) {
            v1::SessionResponse& dst = queue_.back();
            if (r.has_submitted()) {
              *dst.mutable_submitted() = std::move(*r.mutable_submitted());
            }
            if (r.has_events()) {
              auto* events = dst.mutable_events()->mutable_events();
              for (v1::JobEvent& e : *r.mutable_events()->mutable_events()) {
                events->Add(std::move(e));
              }
            }
            continue;
          }
          queue_.push_back(std::move(r));
        }
        next = NextWriteLocked();
      }
      Do(next);
    }

    // A request was read and posted; read the next unless too many wait.
    void OnRead() {
      Next next;
      {
        MutexLock lock(&mu_);
        if (reactor_ == nullptr) return;
        if (++unhandled_ < kMaxUnhandledRequests) {
          next.reactor = reactor_;
          next.read = true;
        } else {
          read_paused_ = true;
        }
      }
      Do(next);
    }

    // The loop handled a request: resume reading if it was paused.
    void OnHandled() {
      Next next;
      {
        MutexLock lock(&mu_);
        --unhandled_;
        if (read_paused_ && !reads_done_ && reactor_ != nullptr) {
          read_paused_ = false;
          next.reactor = reactor_;
          next.read = true;
        }
      }
      Do(next);
    }

    // SessionSink: ends the stream with `status` at once, dropping what is
    // queued (its token was revoked).
    void Fail(absl::Status status) override {
      Next next;
      {
        MutexLock lock(&mu_);
        queue_.clear();
        reads_done_ = true;
        final_status_ = ToGrpcStatus(status);
        next = NextWriteLocked();
      }
      Do(next);
    }

    // SessionSink: the client half-closed, or the broker is shutting down.
    void Close() override {
      Next next;
      {
        MutexLock lock(&mu_);
        reads_done_ = true;
        next = NextWriteLocked();
      }
      Do(next);
    }

    void OnWriteDone(bool ok) {
      Next next;
      {
        MutexLock lock(&mu_);
        writing_ = false;
        if (!ok) {
          // The stream is broken; the read side ends too.
          queue_.clear();
          broken_ = true;
        }
        next = NextWriteLocked();
      }
      Do(next);
    }

    void Detach() {
      MutexLock lock(&mu_);
      reactor_ = nullptr;
    }

   private:
    // What to do once the lock is released.
    struct Next {
      SessionReactor* reactor = nullptr;
      bool read = false;
      const v1::SessionResponse* write = nullptr;
      bool finish = false;
      grpc::Status status;
    };

    void Do(const Next& next) {
      if (next.reactor == nullptr) return;
      if (next.read) next.reactor->StartRead(&next.reactor->request_);
      if (next.write != nullptr) next.reactor->StartWrite(next.write);
      if (next.finish) next.reactor->Finish(next.status);
    }

    // The next write, or the end of the call once reads ended and every
    // queued response went out. One write at a time: in_flight_ is not
    // touched again until OnWriteDone.
    Next NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      Next next;
      if (reactor_ == nullptr || writing_ || finish_started_) return next;
      if (!queue_.empty() && !broken_) {
        writing_ = true;
        in_flight_ = std::move(queue_.front());
        queue_.pop_front();
        next.reactor = reactor_;
        next.write = &in_flight_;
      } else if (reads_done_ || broken_) {
        finish_started_ = true;
        next.reactor = reactor_;
        next.finish = true;
        next.status = final_status_;
      }
      return next;
    }

    // Guards everything below: touched by gRPC reactions and the loop.
    Mutex mu_;
    SessionReactor* reactor_ ABSL_GUARDED_BY(mu_);
    std::deque<v1::SessionResponse> queue_ ABSL_GUARDED_BY(mu_);
    // The response being written; stable until OnWriteDone.
    v1::SessionResponse in_flight_;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool broken_ ABSL_GUARDED_BY(mu_) = false;
    bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
    bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
    bool finish_started_ ABSL_GUARDED_BY(mu_) = false;
    int unhandled_ ABSL_GUARDED_BY(mu_) = 0;
    // How the call ends once everything queued is written.
    grpc::Status final_status_ ABSL_GUARDED_BY(mu_) = grpc::Status::OK;
  };

  BrokerLoop* const loop_;
  const SessionId id_;
  const std::shared_ptr<const Caller> caller_;
  std::shared_ptr<Sink> sink_;
  v1::SessionRequest request_;
};

// Runs `fill` on the loop and finishes the unary call with its status.
template <typename Fill>
grpc::ServerUnaryReactor* Unary(BrokerLoop* loop,
                                grpc::CallbackServerContext* ctx, Fill fill) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  loop->Post([reactor, fill = std::move(fill)](BrokerLoop::Context& c) {
    // Answered after what the call changed is durable (journal.h).
    c.out.replies.push_back([reactor, status = ToGrpcStatus(fill(c))] {
      reactor->Finish(status);
    });
  });
  return reactor;
}

grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx,
                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// A Session stream refused at open: it ends with the status at once.
class RefusedSession final
    : public grpc::ServerBidiReactor<v1::SessionRequest, v1::SessionResponse> {
 public:
  explicit RefusedSession(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

Caller::Role ToCallerRole(auth::Role role) {
  switch (role) {
    case auth::Role::kAdmin:
      return Caller::kAdmin;
    case auth::Role::kSubmit:
      return Caller::kSubmit;
    case auth::Role::kRead:
      return Caller::kRead;
  }
  return Caller::kRead;
}

void ToProto(const auth::TokenInfo& t, v1::TokenInfo* out) {
  out->set_name(t.name);
  out->set_role(std::string(auth::RoleName(t.role)));
  dexec::ToProto(t.created_at, out->mutable_created_at());
}

void ToProto(const auth::WorkerKeyInfo& k, v1::WorkerKeyInfo* out) {
  out->set_name(k.name);
  out->set_public_key(k.public_z85);
  dexec::ToProto(k.created_at, out->mutable_created_at());
}

}  // namespace

absl::StatusOr<Caller> BrokerService::Authorize(
    grpc::CallbackServerContext* ctx, Need need, absl::string_view method) {
  if (auth_.tokens == nullptr) return Caller{};  // --insecure
  const auto& metadata = ctx->client_metadata();
  auto it = metadata.find("authorization");
  absl::StatusOr<auth::Principal> principal =
      it == metadata.end()
          ? absl::UnauthenticatedError(
                "missing bearer token (authorization: Bearer <token>)")
          : auth_.tokens->AuthenticateHeader(
                absl::string_view(it->second.data(), it->second.size()));
  absl::Status refused;
  Caller caller;
  if (!principal.ok()) {
    refused = absl::UnauthenticatedError(absl::StrCat(
        principal.status().message(),
        "; the broker's admin token is in its --auth_dir, client.token"));
  } else {
    caller.name = principal->name;
    caller.role = ToCallerRole(principal->role);
    const bool allowed =
        need == Need::kAny ||
        (need == Need::kSubmit && caller.role != Caller::kRead) ||
        caller.role == Caller::kAdmin;
    if (!allowed) {
      refused = absl::PermissionDeniedError(absl::StrCat(
          "token '", caller.name, "' has role ",
          auth::RoleName(principal->role), ", which may not call ", method,
          need == Need::kAdmin ? " (admin only)" : " (admin or submit)"));
    }
  }
  if (refused.ok()) return caller;
  const uint64_t n = client_auth_failures_.fetch_add(1) + 1;
  // At most one log line per 10 s, whatever a peer sends.
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  int64_t last = last_refusal_logged_s_.load();
  if (now_s - last >= 10 &&
      last_refusal_logged_s_.compare_exchange_strong(last, now_s)) {
    DEXEC_LOG(WARNING) << "client refused peer=" << ctx->peer()
                       << " method=" << method << " code="
                       << absl::StatusCodeToString(refused.code())
                       << " client_auth_failures_total=" << n;
  }
  return refused;
}

grpc::ServerUnaryReactor* BrokerService::Submit(
    grpc::CallbackServerContext* ctx, const v1::SubmitRequest* req,
    v1::SubmitResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Submit");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [req, resp, caller = *std::move(caller)](
                               BrokerLoop::Context& c) {
    absl::StatusOr<std::vector<uint64_t>> ids =
        c.core.Submit(req->jobs(), caller, /*session=*/0, c.now, &c.out);
    if (!ids.ok()) return ids.status();
    resp->mutable_job_ids()->Add(ids->begin(), ids->end());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::GetJobs(
    grpc::CallbackServerContext* ctx, const v1::GetJobsRequest* req,
    v1::GetJobsResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "GetJobs");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [req, resp, caller = *std::move(caller)](
                               BrokerLoop::Context& c) {
    *resp = c.core.GetJobs(caller, *req);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::Cancel(
    grpc::CallbackServerContext* ctx, const v1::CancelRequest* req,
    v1::CancelResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Cancel");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [req, resp, caller = *std::move(caller)](
                               BrokerLoop::Context& c) {
    *resp = c.core.Cancel(caller, req->job_ids(), c.now, &c.out);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::ListJobs(
    grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
    v1::ListJobsResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "ListJobs");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [req, resp, caller = *std::move(caller)](
                               BrokerLoop::Context& c) {
    *resp = c.core.ListJobs(caller, *req);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::ListWorkers(
    grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest*,
    v1::ListWorkersResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "ListWorkers");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [resp](BrokerLoop::Context& c) {
    *resp = c.core.ListWorkers();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::GetStats(
    grpc::CallbackServerContext* ctx, const v1::GetStatsRequest*,
    v1::Stats* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "GetStats");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary(loop_, ctx, [this, resp](BrokerLoop::Context& c) {
    *resp = c.core.GetStats(c.now);
    resp->set_client_auth_failures(client_auth_failures_.load());
    resp->set_worker_auth_failures(loop_->worker_auth_failures());
    return absl::OkStatus();
  });
}

grpc::ServerBidiReactor<v1::SessionRequest, v1::SessionResponse>*
BrokerService::Session(grpc::CallbackServerContext* ctx) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Session");
  if (!caller.ok()) return new RefusedSession(caller.status());
  return new SessionReactor(loop_, *std::move(caller));
}

// ---- Credentials. The stores do their own (small, synced) file writes on
// this gRPC thread: these calls are rare, admin-only, and must be durable
// before they answer.

grpc::ServerUnaryReactor* BrokerService::CreateToken(
    grpc::CallbackServerContext* ctx, const v1::CreateTokenRequest* req,
    v1::CreateTokenResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAdmin, "CreateToken");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.tokens == nullptr) return Refuse(ctx, NoAuth());
  absl::StatusOr<auth::Role> role = auth::ParseRole(req->role());
  if (!role.ok()) return Refuse(ctx, role.status());
  const absl::Time now = absl::Now();
  absl::StatusOr<std::string> secret =
      auth_.tokens->Create(req->name(), *role, now);
  if (!secret.ok()) return Refuse(ctx, secret.status());
  ToProto(auth::TokenInfo{req->name(), *role, now}, resp->mutable_info());
  resp->set_token(*secret);
  DEXEC_LOG(INFO) << "token created name=" << req->name()
                  << " role=" << auth::RoleName(*role) << " by=" << caller->name;
  return Refuse(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BrokerService::ListTokens(
    grpc::CallbackServerContext* ctx, const v1::ListTokensRequest*,
    v1::ListTokensResponse* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAdmin, "ListTokens");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.tokens == nullptr) return Refuse(ctx, NoAuth());
  for (const auth::TokenInfo& t : auth_.tokens->List()) {
    ToProto(t, resp->add_tokens());
  }
  return Refuse(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BrokerService::RevokeToken(
    grpc::CallbackServerContext* ctx, const v1::RevokeTokenRequest* req,
    v1::RevokeTokenResponse*) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAdmin, "RevokeToken");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.tokens == nullptr) return Refuse(ctx, NoAuth());
  absl::Status revoked = auth_.tokens->Revoke(req->name());
  if (!revoked.ok()) return Refuse(ctx, revoked);
  // Streams opened with it end now; new calls are refused already.
  loop_->FailSessionsOf(req->name(),
                        absl::UnauthenticatedError(absl::StrCat(
                            "token '", req->name(), "' was revoked")));
  DEXEC_LOG(INFO) << "token revoked name=" << req->name()
                  << " by=" << caller->name;
  return Refuse(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BrokerService::CreateWorkerKey(
    grpc::CallbackServerContext* ctx, const v1::CreateWorkerKeyRequest* req,
    v1::CreateWorkerKeyResponse* resp) {
  absl::StatusOr<Caller> caller =
      Authorize(ctx, Need::kAdmin, "CreateWorkerKey");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.worker_keys == nullptr) return Refuse(ctx, NoAuth());
  const absl::Time now = absl::Now();
  absl::StatusOr<auth::WorkerCredentials> created =
      auth_.worker_keys->Create(req->name(), now);
  if (!created.ok()) return Refuse(ctx, created.status());
  ToProto(auth::WorkerKeyInfo{created->name, created->key.public_z85, now},
          resp->mutable_info());
  resp->set_credentials(auth::FormatWorkerCredentials(*created));
  DEXEC_LOG(INFO) << "worker key created name=" << req->name()
                  << " by=" << caller->name;
  return Refuse(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BrokerService::ListWorkerKeys(
    grpc::CallbackServerContext* ctx, const v1::ListWorkerKeysRequest*,
    v1::ListWorkerKeysResponse* resp) {
  absl::StatusOr<Caller> caller =
      Authorize(ctx, Need::kAdmin, "ListWorkerKeys");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.worker_keys == nullptr) return Refuse(ctx, NoAuth());
  for (const auth::WorkerKeyInfo& k : auth_.worker_keys->List()) {
    ToProto(k, resp->add_keys());
  }
  return Refuse(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* BrokerService::RevokeWorkerKey(
    grpc::CallbackServerContext* ctx, const v1::RevokeWorkerKeyRequest* req,
    v1::RevokeWorkerKeyResponse*) {
  absl::StatusOr<Caller> caller =
      Authorize(ctx, Need::kAdmin, "RevokeWorkerKey");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  if (auth_.worker_keys == nullptr) return Refuse(ctx, NoAuth());
  std::string public_key;
  for (const auth::WorkerKeyInfo& k : auth_.worker_keys->List()) {
    if (k.name == req->name()) public_key = k.public_z85;
  }
  absl::Status revoked = auth_.worker_keys->Revoke(req->name());
  if (!revoked.ok()) return Refuse(ctx, revoked);
  // New handshakes with it fail from now on (the ZAP handler asks the
  // store); workers connected with it are dropped and their frames refused.
  loop_->Post([public_key](BrokerLoop::Context& c) {
    c.core.DropWorkersWithKey(public_key, c.now, &c.out);
  });
  DEXEC_LOG(INFO) << "worker key revoked name=" << req->name()
                  << " by=" << caller->name;
  return Refuse(ctx, absl::OkStatus());
}

absl::Status BrokerService::NoAuth() {
  return absl::FailedPreconditionError(
      "this broker runs with --insecure: it has no tokens or worker keys");
}

}  // namespace dexec::broker
