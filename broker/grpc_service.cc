#include "broker/grpc_service.h"

#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
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
  explicit SessionReactor(BrokerLoop* loop)
      : loop_(loop), id_(loop->NewSessionId()), sink_(std::make_shared<Sink>(this)) {
    loop_->AddSession(id_, sink_);
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
    loop_->Post([req, id, sink](BrokerLoop::Context& c) {
      if (req->has_submit()) {
        // Submitted goes into the outbox before any event of these jobs.
        std::vector<v1::SessionResponse>& q = c.out.to_sessions[id];
        const size_t index = q.size();
        q.emplace_back().mutable_submitted()->set_seq(req->submit().seq());
        const BatchKey batch{req->submit().client_id(), req->submit().seq()};
        absl::StatusOr<std::vector<uint64_t>> ids =
            c.core.Submit(req->submit().jobs(), id, c.now, &c.out, &batch);
        v1::SessionResponse::Submitted* submitted =
            c.out.to_sessions[id][index].mutable_submitted();
        if (ids.ok()) {
          submitted->mutable_job_ids()->Add(ids->begin(), ids->end());
        } else {
          submitted->set_error_code(static_cast<int32_t>(ids.status().code()));
          submitted->set_error_message(std::string(ids.status().message()));
        }
      } else if (req->has_watch()) {
        c.core.Watch(id, req->watch().job_ids(), &c.out);
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
    };

    void Do(const Next& next) {
      if (next.reactor == nullptr) return;
      if (next.read) next.reactor->StartRead(&next.reactor->request_);
      if (next.write != nullptr) next.reactor->StartWrite(next.write);
      if (next.finish) next.reactor->Finish(grpc::Status::OK);
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
  };

  BrokerLoop* const loop_;
  const SessionId id_;
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

}  // namespace

grpc::ServerUnaryReactor* BrokerService::Submit(
    grpc::CallbackServerContext* ctx, const v1::SubmitRequest* req,
    v1::SubmitResponse* resp) {
  return Unary(loop_, ctx, [req, resp](BrokerLoop::Context& c) {
    absl::StatusOr<std::vector<uint64_t>> ids =
        c.core.Submit(req->jobs(), /*session=*/0, c.now, &c.out);
    if (!ids.ok()) return ids.status();
    resp->mutable_job_ids()->Add(ids->begin(), ids->end());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::GetJobs(
    grpc::CallbackServerContext* ctx, const v1::GetJobsRequest* req,
    v1::GetJobsResponse* resp) {
  return Unary(loop_, ctx, [req, resp](BrokerLoop::Context& c) {
    *resp = c.core.GetJobs(*req);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::Cancel(
    grpc::CallbackServerContext* ctx, const v1::CancelRequest* req,
    v1::CancelResponse* resp) {
  return Unary(loop_, ctx, [req, resp](BrokerLoop::Context& c) {
    *resp = c.core.Cancel(req->job_ids(), c.now, &c.out);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::ListJobs(
    grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
    v1::ListJobsResponse* resp) {
  return Unary(loop_, ctx, [req, resp](BrokerLoop::Context& c) {
    *resp = c.core.ListJobs(*req);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::ListWorkers(
    grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest*,
    v1::ListWorkersResponse* resp) {
  return Unary(loop_, ctx, [resp](BrokerLoop::Context& c) {
    *resp = c.core.ListWorkers();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::GetStats(
    grpc::CallbackServerContext* ctx, const v1::GetStatsRequest*,
    v1::Stats* resp) {
  return Unary(loop_, ctx, [resp](BrokerLoop::Context& c) {
    *resp = c.core.GetStats(c.now);
    return absl::OkStatus();
  });
}

grpc::ServerBidiReactor<v1::SessionRequest, v1::SessionResponse>*
BrokerService::Session(grpc::CallbackServerContext*) {
  return new SessionReactor(loop_);
}

}  // namespace dexec::broker
