#include "broker/grpc_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
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
  explicit SessionReactor(BrokerLoop* loop)
      : loop_(loop),
        id_(loop->NewSessionId()),
        sink_(std::make_shared<Sink>(this, loop->options().max_response_bytes)) {
    loop_->AddSession(id_, sink_);
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
    if (!parsed) {
      EndAfterQueued(FromGrpcStatus(NotParsed(
          absl::StrCat("Session message ", requests_read_),
          "dexec.v1.SessionRequest", bytes)));
      return;
    }
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
        absl::Status watched = c.core.Watch(id, req->watch().job_ids(), &c.out);
        if (!watched.ok()) {
          // The stream ends with the reason, after what is due before it.
          sink->EndReads();
          c.out.replies.push_back([sink, watched] { sink->Close(watched); });
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
    loop_->Post([sink, status](BrokerLoop::Context& c) {
      c.out.replies.push_back([sink, status] { sink->Close(status); });
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
    };

    // Adds `r` to the queue, merging into the last queued (not yet writing)
    // response where that keeps every acknowledgement ahead of its jobs'
    // events — the client handles a response's `submitted` before its
    // `events`, and the queued events are of jobs acknowledged earlier —
    // and keeps each response within the byte budget. An event larger than
    // the budget goes alone (it is bounded by --max_payload_bytes).
    void AppendLocked(v1::SessionResponse& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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
            (queue_.back().bytes > 0 && queue_.back().bytes + bytes > budget_) ||
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
    int unhandled_ ABSL_GUARDED_BY(mu_) = 0;
  };

  BrokerLoop* const loop_;
  const SessionId id_;
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

}  // namespace

grpc::ServerUnaryReactor* BrokerService::Submit(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  return Unary<v1::SubmitRequest, v1::SubmitResponse>(
      loop_, ctx, "Submit", req, resp,
      [](BrokerLoop::Context& c, const v1::SubmitRequest& req,
         v1::SubmitResponse* resp) {
        absl::StatusOr<std::vector<uint64_t>> ids =
            c.core.Submit(req.jobs(), /*session=*/0, c.now, &c.out);
        if (!ids.ok()) return ids.status();
        resp->mutable_job_ids()->Add(ids->begin(), ids->end());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* BrokerService::GetJobs(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  return Unary<v1::GetJobsRequest, v1::GetJobsResponse>(
      loop_, ctx, "GetJobs", req, resp,
      [](BrokerLoop::Context& c, const v1::GetJobsRequest& req,
         v1::GetJobsResponse* resp) {
        *resp = c.core.GetJobs(req);
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerUnaryReactor* BrokerService::Cancel(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  return Unary<v1::CancelRequest, v1::CancelResponse>(
      loop_, ctx, "Cancel", req, resp,
      [](BrokerLoop::Context& c, const v1::CancelRequest& req,
         v1::CancelResponse* resp) {
        *resp = c.core.Cancel(req.job_ids(), c.now, &c.out);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* BrokerService::ListJobs(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
  return Unary<v1::ListJobsRequest, v1::ListJobsResponse>(
      loop_, ctx, "ListJobs", req, resp,
      [](BrokerLoop::Context& c, const v1::ListJobsRequest& req,
         v1::ListJobsResponse* resp) {
        *resp = c.core.ListJobs(req);
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerUnaryReactor* BrokerService::ListWorkers(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
    grpc::ByteBuffer* resp) {
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
  return Unary<v1::GetStatsRequest, v1::Stats>(
      loop_, ctx, "GetStats", req, resp,
      [](BrokerLoop::Context& c, const v1::GetStatsRequest&, v1::Stats* resp) {
        *resp = c.core.GetStats(c.now);
        return absl::OkStatus();
      },
      /*read_only=*/true);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
BrokerService::Session(grpc::CallbackServerContext*) {
  return new SessionReactor(loop_);
}

}  // namespace dexec::broker
