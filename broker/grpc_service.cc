#include "broker/grpc_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "broker/caller_of.h"
#include "common/log.h"
#include "common/mutex.h"
#include "common/proto_time.h"
#include "common/status_grpc.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace dexec::broker {
namespace {

// Session requests read but not yet handled by the loop, per stream. Reading
// pauses at this many, so a fast client cannot grow the broker's mailbox
// without bound.
constexpr int kMaxUnhandledRequests = 8;
// Events merged into one queued response at most.
constexpr int kMaxEventsPerResponse = 4096;
// A message's framing in a repeated field (tag and length) at most.
constexpr size_t kFieldOverhead = 16;

// Parses `bytes` into `msg`; false if they are not a valid `Message`.
template <typename Message>
bool ParseBytes(const grpc::ByteBuffer& bytes, Message* msg) {
  grpc::ByteBuffer copy(bytes);  // shares the slices; Reader consumes them
  grpc::ProtoBufferReader reader(&copy);
  return msg->ParseFromZeroCopyStream(&reader);
}

template <typename Message>
void SerializeTo(const Message& msg, grpc::ByteBuffer* out) {
  bool own = false;
  grpc::GenericSerialize<grpc::ProtoBufferWriter, Message>(msg, out, &own);
}

grpc::Status NotParsed(absl::string_view what, absl::string_view type,
                       size_t bytes) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat(what, " (", bytes, " bytes) is not a valid ", type,
                   " protobuf: send one serialized from protos/dexec.proto"));
}

// One client's Session stream. Deletes itself when gRPC is done with it.
//
// Reads: the reactor parses each request and posts it to the loop, and
// keeps at most kMaxUnhandledRequests outstanding; it also stops reading
// while more than two response budgets wait to be written, so a client
// that asks without reading cannot make the broker buffer without bound.
// Writes: the loop pushes responses into a queue; one write is in flight
// at a time, and queued responses are merged up to the byte budget
// (--max_response_bytes) so a burst of acknowledgements and results costs
// few writes.
class SessionReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  SessionReactor(BrokerLoop* loop, Caller caller, GrpcMetrics* metrics)
      : loop_(loop),
        metrics_(metrics),
        id_(loop->NewSessionId()),
        caller_(std::make_shared<const Caller>(std::move(caller))),
        sink_(
            std::make_shared<Sink>(this, loop->options().max_response_bytes)) {
    loop_->AddSession(id_, sink_, caller_->name);
    metrics_->CountSessionOpened();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed or the call ended: no more requests. Finish
      // once everything due for the requests already read is written.
      EndAfterQueued(absl::OkStatus());
      return;
    }
    ++requests_read_;
    auto req = std::make_shared<v1::SessionRequest>();
    const size_t bytes = request_.Length();
    const bool parsed = ParseBytes(request_, req.get());
    request_.Clear();
    metrics_->CountSessionRequest(
        !parsed             ? SessionRequestKind::kOther
        : req->has_submit() ? SessionRequestKind::kSubmit
        : req->has_watch()  ? SessionRequestKind::kWatch
                            : SessionRequestKind::kOther);
    if (!parsed) {
      EndAfterQueued(FromGrpcStatus(
          NotParsed(absl::StrCat("Session message ", requests_read_),
                    "dexec.v1.SessionRequest", bytes)));
      return;
    }
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
        absl::Status watched =
            c.core.Watch(id, *caller, req->watch().job_ids(), &c.out);
        if (!watched.ok()) {
          // The stream ends with the reason, after what is due before it.
          sink->EndReads();
          c.core.AfterOwed(
              id, [sink, watched] { sink->Close(watched); }, &c.out);
        }
      }
      sink->OnHandled();
    });
    sink_->OnRead();
  }

  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }

  void OnDone() override {
    loop_->RemoveSession(id_);
    sink_->Detach();
    delete this;
  }

 private:
  // Reads no more and ends the stream with `status` once the replies to the
  // requests already read are written: their commands are ahead of this
  // one in the mailbox, and the close runs as a reply, after their
  // acknowledgements and events (which wait for the journal).
  void EndAfterQueued(absl::Status status) {
    sink_->EndReads();
    std::shared_ptr<Sink> sink = sink_;
    const SessionId id = id_;
    loop_->Post([sink, status, id](BrokerLoop::Context& c) {
      // After the events the core still owes the stream, too.
      c.core.AfterOwed(
          id, [sink, status] { sink->Close(status); }, &c.out);
    });
  }

  // The stream's shared state: the loop pushes into it, gRPC reactions drive
  // it. Decisions are taken under the lock and carried out after it is
  // released, so a reaction that gRPC runs inline cannot deadlock on it.
  class Sink final : public SessionSink {
   public:
    Sink(SessionReactor* reactor, size_t max_response_bytes)
        : reactor_(reactor),
          budget_(std::max<size_t>(max_response_bytes, 1)),
          max_queued_bytes_(2 * budget_) {}

    void Push(std::vector<v1::SessionResponse> responses) override {
      Next next;
      {
        MutexLock lock(&mu_);
        if (reactor_ == nullptr || finish_started_) return;
        for (v1::SessionResponse& r : responses) AppendLocked(r);
        next = NextWriteLocked();
      }
      Do(next);
    }

    // A request was read and posted; read the next unless too many wait.
    void OnRead() {
      Next next;
      {
        MutexLock lock(&mu_);
        read_pending_ = false;
        ++unhandled_;
        next = NextReadLocked();
      }
      Do(next);
    }

    // No more reads: the last one failed (half-close, a broken call), or
    // the stream is ending with an error.
    void EndReads() {
      MutexLock lock(&mu_);
      reads_ended_ = true;
    }

    // The loop handled a request: resume reading if it was paused.
    void OnHandled() {
      Next next;
      {
        MutexLock lock(&mu_);
        --unhandled_;
        next = NextReadLocked();
      }
      Do(next);
    }

    // SessionSink: ends the stream with `status` once what is queued is
    // written (the client half-closed, sent a bad request, or the broker is
    // shutting down).
    void Close(const absl::Status& status) override {
      Next next;
      {
        MutexLock lock(&mu_);
        if (!closing_) {
          closing_ = true;
          finish_status_ = ToGrpcStatus(status);
        }
        next = NextWriteLocked();
      }
      Do(next);
    }

    // SessionSink: ends the stream with `status` now, dropping what is
    // queued (its token was revoked: nothing more of its jobs goes out).
    void Fail(absl::Status status) override {
      Next next;
      {
        MutexLock lock(&mu_);
        queue_.clear();
        queued_bytes_ = 0;
        reads_ended_ = true;
        closing_ = true;
        finish_status_ = ToGrpcStatus(status);
        next = NextWriteLocked();
      }
      Do(next);
    }

    // SessionSink: the core holds this session's further events until
    // what it was given is written.
    void ReportWhenDrained() override {
      Next next;
      {
        MutexLock lock(&mu_);
        report_drained_ = true;
        next = NextWriteLocked();
        DrainedLocked(next);
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
          queued_bytes_ = 0;
          broken_ = true;
        }
        next = NextWriteLocked();
        DrainedLocked(next);
        if (!next.finish) {
          // Writing made room: reading may go on.
          const Next read = NextReadLocked();
          if (read.read) {
            next.reactor = read.reactor;
            next.read = true;
          }
        }
      }
      Do(next);
    }

    void Detach() {
      MutexLock lock(&mu_);
      reactor_ = nullptr;
    }

   private:
    struct Queued {
      v1::SessionResponse response;
      size_t bytes = 0;  // its serialized size, about
    };

    // What to do once the lock is released.
    struct Next {
      SessionReactor* reactor = nullptr;
      bool read = false;
      // Serialized into in_flight_ and written, outside the lock.
      v1::SessionResponse* write = nullptr;
      bool finish = false;
      grpc::Status status;
      // Tell the loop everything pushed is written (ReportWhenDrained).
      bool drained = false;
    };

    // Adds the drain report to `next` if one is asked for and nothing is
    // queued or being written.
    void DrainedLocked(Next& next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (!report_drained_ || writing_ || !queue_.empty() || broken_ ||
          reactor_ == nullptr) {
        return;
      }
      report_drained_ = false;
      next.reactor = reactor_;
      next.drained = true;
    }

    // Adds `r` to the queue, merging into the last queued (not yet writing)
    // response where that keeps every acknowledgement ahead of its jobs'
    // events — the client handles a response's `submitted` before its
    // `events`, and the queued events are of jobs acknowledged earlier —
    // and keeps each response within the byte budget. An event larger than
    // the budget goes alone (it is bounded by --max_payload_bytes).
    void AppendLocked(v1::SessionResponse& r)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (r.has_submitted()) {
        const size_t bytes = r.submitted().ByteSizeLong() + kFieldOverhead;
        if (queue_.empty() || queue_.back().response.has_submitted() ||
            queue_.back().bytes + bytes > budget_) {
          queue_.emplace_back();
        }
        *queue_.back().response.mutable_submitted() =
            std::move(*r.mutable_submitted());
        queue_.back().bytes += bytes;
        queued_bytes_ += bytes;
      }
      for (v1::JobEvent& e : *r.mutable_events()->mutable_events()) {
        const size_t bytes = e.ByteSizeLong() + kFieldOverhead;
        if (queue_.empty() ||
            (queue_.back().bytes > 0 &&
             queue_.back().bytes + bytes > budget_) ||
            queue_.back().response.events().events_size() >=
                kMaxEventsPerResponse) {
          queue_.emplace_back();
        }
        queue_.back().response.mutable_events()->mutable_events()->Add(
            std::move(e));
        queue_.back().bytes += bytes;
        queued_bytes_ += bytes;
      }
    }

    void Do(Next& next) {
      if (next.reactor == nullptr) return;
      if (next.read) next.reactor->StartRead(&next.reactor->request_);
      if (next.write != nullptr) {
        // Only this writer touches in_flight_ until OnWriteDone.
        next.reactor->in_flight_.Clear();
        SerializeTo(*next.write, &next.reactor->in_flight_);
        next.write->Clear();
        next.reactor->StartWrite(&next.reactor->in_flight_);
      }
      if (next.drained && !next.finish) {
        // Before any Finish: the reactor may be gone once it is called.
        const SessionId id = next.reactor->id_;
        next.reactor->loop_->Post([id](BrokerLoop::Context& c) {
          c.core.OnSessionDrained(id, &c.out);
        });
      }
      if (next.finish) next.reactor->Finish(next.status);
    }

    // The next read, if reading may go on: no read is outstanding, few
    // requests wait for the loop and few responses wait to be written.
    Next NextReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      Next next;
      if (reactor_ == nullptr || read_pending_ || reads_ended_ || closing_ ||
          broken_ || unhandled_ >= kMaxUnhandledRequests ||
          queued_bytes_ > max_queued_bytes_) {
        return next;
      }
      read_pending_ = true;
      next.reactor = reactor_;
      next.read = true;
      return next;
    }

    // The next write, or the end of the call once it is closing and every
    // queued response went out. One write at a time.
    Next NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      Next next;
      if (reactor_ == nullptr || writing_ || finish_started_) return next;
      if (!queue_.empty() && !broken_) {
        writing_ = true;
        writing_now_ = std::move(queue_.front().response);
        queued_bytes_ -= queue_.front().bytes;
        queue_.pop_front();
        next.reactor = reactor_;
        next.write = &writing_now_;
      } else if (closing_ || broken_) {
        finish_started_ = true;
        next.reactor = reactor_;
        next.finish = true;
        next.status = finish_status_;
      }
      return next;
    }

    // Guards everything below: touched by gRPC reactions and the loop.
    Mutex mu_;
    SessionReactor* reactor_ ABSL_GUARDED_BY(mu_);
    const size_t budget_;
    const size_t max_queued_bytes_;
    std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
    size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
    // The response being serialized for writing; the writer's alone until
    // OnWriteDone.
    v1::SessionResponse writing_now_;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool broken_ ABSL_GUARDED_BY(mu_) = false;
    bool closing_ ABSL_GUARDED_BY(mu_) = false;
    grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
    bool read_pending_ ABSL_GUARDED_BY(mu_) = true;  // the constructor's
    bool reads_ended_ ABSL_GUARDED_BY(mu_) = false;
    bool finish_started_ ABSL_GUARDED_BY(mu_) = false;
    bool report_drained_ ABSL_GUARDED_BY(mu_) = false;
    int unhandled_ ABSL_GUARDED_BY(mu_) = 0;
  };

  BrokerLoop* const loop_;
  GrpcMetrics* const metrics_;  // the service's; outlives every stream
  const SessionId id_;
  const std::shared_ptr<const Caller> caller_;
  std::shared_ptr<Sink> sink_;
  grpc::ByteBuffer request_;
  uint64_t requests_read_ = 0;  // touched by the one outstanding read only
  grpc::ByteBuffer in_flight_;  // the write in flight
};

// Parses the request, runs `fill(context, request, response)` on the loop
// and finishes the unary call with its status, once what the call changed
// is durable (journal.h). A request that does not parse is answered at once
// with INVALID_ARGUMENT naming the method.
template <typename Request, typename Response, typename Fill>
grpc::ServerUnaryReactor* Unary(BrokerLoop* loop,
                                grpc::CallbackServerContext* ctx,
                                absl::string_view method,
                                const grpc::ByteBuffer* raw_request,
                                grpc::ByteBuffer* raw_response, Fill fill,
                                bool read_only = false) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto request = std::make_shared<Request>();
  if (!ParseBytes(*raw_request, request.get())) {
    reactor->Finish(NotParsed(absl::StrCat("the ", method, " request"),
                              Request::descriptor()->full_name(),
                              raw_request->Length()));
    return reactor;
  }
  loop->Post([reactor, request, raw_response, read_only,
              fill = std::move(fill)](BrokerLoop::Context& c) {
    auto response = std::make_shared<Response>();
    const absl::Status status = fill(c, *request, response.get());
    (read_only ? c.out.query_replies : c.out.replies)
        .push_back([reactor, raw_response, response, status] {
          if (status.ok()) SerializeTo(*response, raw_response);
          reactor->Finish(ToGrpcStatus(status));
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
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedSession(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

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
    caller = CallerOf(*principal);
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
                       << " method=" << method
                       << " code=" << absl::StatusCodeToString(refused.code())
                       << " client_auth_failures_total=" << n;
  }
  return refused;
}

grpc::ServerUnaryReactor* BrokerService::Submit(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Submit");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::SubmitRequest, v1::SubmitResponse>(
      loop_, ctx, "Submit", req, resp,
      [caller = *std::move(caller)](BrokerLoop::Context& c,
                                    const v1::SubmitRequest& req,
                                    v1::SubmitResponse* resp) {
        absl::StatusOr<std::vector<uint64_t>> ids =
            c.core.Submit(req.jobs(), caller, /*session=*/0, c.now, &c.out);
        if (!ids.ok()) return ids.status();
        resp->mutable_job_ids()->Add(ids->begin(), ids->end());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* BrokerService::GetJobs(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "GetJobs");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::GetJobsRequest, v1::GetJobsResponse>(
      loop_, ctx, "GetJobs", req, resp,
      [caller = *std::move(caller)](BrokerLoop::Context& c,
                                    const v1::GetJobsRequest& req,
                                    v1::GetJobsResponse* resp) {
        *resp = c.core.GetJobs(caller, req);
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerUnaryReactor* BrokerService::Cancel(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Cancel");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::CancelRequest, v1::CancelResponse>(
      loop_, ctx, "Cancel", req, resp,
      [caller = *std::move(caller)](BrokerLoop::Context& c,
                                    const v1::CancelRequest& req,
                                    v1::CancelResponse* resp) {
        *resp = c.core.Cancel(caller, req.job_ids(), c.now, &c.out);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* BrokerService::ListJobs(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "ListJobs");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::ListJobsRequest, v1::ListJobsResponse>(
      loop_, ctx, "ListJobs", req, resp,
      [caller = *std::move(caller)](BrokerLoop::Context& c,
                                    const v1::ListJobsRequest& req,
                                    v1::ListJobsResponse* resp) {
        *resp = c.core.ListJobs(caller, req);
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerUnaryReactor* BrokerService::ListWorkers(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "ListWorkers");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::ListWorkersRequest, v1::ListWorkersResponse>(
      loop_, ctx, "ListWorkers", req, resp,
      [](BrokerLoop::Context& c, const v1::ListWorkersRequest&,
         v1::ListWorkersResponse* resp) {
        *resp = c.core.ListWorkers();
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerUnaryReactor* BrokerService::GetStats(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kAny, "GetStats");
  if (!caller.ok()) return Refuse(ctx, caller.status());
  return Unary<v1::GetStatsRequest, v1::Stats>(
      loop_, ctx, "GetStats", req, resp,
      [this](BrokerLoop::Context& c, const v1::GetStatsRequest&,
             v1::Stats* resp) {
        *resp = c.core.GetStats(c.now);
        resp->set_client_auth_failures(client_auth_failures_.load());
        resp->set_worker_auth_failures(loop_->worker_auth_failures());
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
BrokerService::Session(grpc::CallbackServerContext* ctx) {
  absl::StatusOr<Caller> caller = Authorize(ctx, Need::kSubmit, "Session");
  if (!caller.ok()) return new RefusedSession(caller.status());
  return new SessionReactor(loop_, *std::move(caller), &grpc_metrics_);
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
                  << " role=" << auth::RoleName(*role)
                  << " by=" << caller->name;
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
  loop_->FailSessionsOf(
      req->name(), absl::UnauthenticatedError(
                       absl::StrCat("token '", req->name(), "' was revoked")));
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
