#include "client/session.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/proto_time.h"
#include "common/status_grpc.h"
#include "google/protobuf/arena.h"

namespace dexec {
namespace internal {
namespace {

// A Submit message is cut at this much payload, so that it stays under
// gRPC's default 4 MiB receive limit on the broker. A single larger job
// still goes alone.
constexpr size_t kMaxBatchBytes = size_t{3} << 20;

// How long Stop waits for the broker to end the stream after our
// half-close before cancelling it.
constexpr absl::Duration kCloseGrace = absl::Seconds(2);

void NameThisThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

bool IsTerminal(v1::Job::State state) {
  return state != v1::Job::QUEUED && state != v1::Job::RUNNING;
}

absl::Status EventStatus(const v1::JobEvent& event) {
  const v1::JobError& error = event.error();
  switch (event.state()) {
    case v1::Job::SUCCEEDED:
      return absl::OkStatus();
    case v1::Job::CANCELLED:
      return JobErrorToStatus(
          error.kind().empty() ? "cancelled" : error.kind(),
          error.message().empty() ? "the job was cancelled" : error.message());
    default:
      return JobErrorToStatus(error.kind().empty() ? "unknown" : error.kind(),
                              error.message());
  }
}

absl::StatusCode CodeFromWire(int32_t code) {
  if (code <= 0 ||
      code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

absl::StatusOr<std::shared_ptr<Session>> Session::Connect(
    const ExecutorOptions& options) {
  if (options.broker.empty()) {
    return absl::InvalidArgumentError(
        "no broker address; set ExecutorOptions::broker to host:port");
  }
  grpc::ChannelArguments args;
  // Results and event batches can be large; the broker bounds them.
  args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      options.broker, grpc::InsecureChannelCredentials(), args);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::microseconds(
                            absl::ToInt64Microseconds(options.connect_timeout));
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the dexec broker at ", options.broker,
                     " within ", absl::FormatDuration(options.connect_timeout),
                     "; is dexec-broker running and listening there?"));
  }
  std::shared_ptr<Session> session(new Session(options, std::move(channel)));
  session->Start();
  return session;
}

Session::Session(ExecutorOptions options,
                 std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      broker_(options_.broker),
      channel_(std::move(channel)),
      stub_(v1::Broker::NewStub(channel_)),
      callbacks_("client-callbacks") {}

Session::~Session() { Shutdown(/*wait=*/true, /*cancel_futures=*/false); }

void Session::Start() {
  stream_ = stub_->Session(&stream_context_);
  sender_ = std::thread([this] { SendLoop(); });
  receiver_ = std::thread([this] { RecvLoop(); });
}

Session::OutBatch Session::NewBatch(bool open) const {
  OutBatch batch;
  google::protobuf::ArenaOptions arena_options;
  arena_options.start_block_size = 4096;
  arena_options.max_block_size = size_t{1} << 20;
  batch.arena = std::make_unique<google::protobuf::Arena>(arena_options);
  batch.request = google::protobuf::Arena::CreateMessage<v1::SessionRequest>(
      batch.arena.get());
  batch.open = open;
  return batch;
}

void Session::AddJob(OutBatch* batch, absl::string_view task,
                     std::string payload, const SubmitOptions& options) const {
  v1::JobSpec* job = batch->request->mutable_submit()->add_jobs();
  batch->bytes += payload.size() + task.size() + 16;
  job->set_task(task.data(), task.size());
  job->set_payload(std::move(payload));
  if (options.priority != 0) job->set_priority(options.priority);
  if (options.timeout > absl::ZeroDuration()) {
    ToProto(options.timeout, job->mutable_timeout());
  }
  if (options.max_attempts != 0) job->set_max_attempts(options.max_attempts);
  if (!options.idempotency_key.empty()) {
    job->set_idempotency_key(options.idempotency_key);
  }
}

std::shared_ptr<FutureState> Session::Submit(absl::string_view task,
                                             std::string payload,
                                             const SubmitOptions& options) {
  auto state = std::make_shared<FutureState>(weak_from_this());
  const size_t max_batch = std::max<size_t>(1, options_.max_batch);
  absl::Status closed;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      // Join the batch the sender has not picked up yet: concurrent submits
      // coalesce into one message while the sender is busy writing.
      if (batches_.empty() || !batches_.back().open ||
          batches_.back().states.size() >= max_batch ||
          batches_.back().bytes >= kMaxBatchBytes) {
        batches_.push_back(NewBatch(/*open=*/true));
      }
      OutBatch& batch = batches_.back();
      AddJob(&batch, task, std::move(payload), options);
      batch.states.push_back(state);
      return state;
    }
    closed = closed_status_;
  }
  state->Complete(std::move(closed));
  return state;
}

void Session::SubmitBatch(absl::string_view task, const SubmitOptions& options,
                          std::vector<std::string> payloads,
                          std::vector<std::shared_ptr<FutureState>>* states) {
  const size_t max_batch = std::max<size_t>(1, options_.max_batch);
  const size_t first = states->size();
  // Built outside the queue lock; only the hand-over is locked.
  std::vector<OutBatch> built;
  built.push_back(NewBatch(/*open=*/false));
  const std::weak_ptr<FutureHost> host = weak_from_this();
  for (std::string& payload : payloads) {
    if (built.back().states.size() >= max_batch ||
        built.back().bytes >= kMaxBatchBytes) {
      built.push_back(NewBatch(/*open=*/false));
    }
    auto state = std::make_shared<FutureState>(host);
    AddJob(&built.back(), task, std::move(payload), options);
    built.back().states.push_back(state);
    states->push_back(std::move(state));
  }
  absl::Status closed;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      for (OutBatch& batch : built) batches_.push_back(std::move(batch));
      return;
    }
    closed = closed_status_;
  }
  for (size_t i = first; i < states->size(); ++i)
    (*states)[i]->Complete(closed);
}

std::shared_ptr<FutureState> Session::Attach(uint64_t job_id) {
  auto state = std::make_shared<FutureState>(weak_from_this());
  state->SetJobId(job_id);
  absl::Status closed;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      {
        MutexLock ids_lock(&mu_);
        ids_[job_id].push_back(Watcher{state, /*submitted=*/false});
      }
      watch_ids_.push_back(job_id);
      return state;
    }
    closed = closed_status_;
  }
  state->Complete(std::move(closed));
  return state;
}

void Session::Post(std::function<void()> fn) { callbacks_.Post(std::move(fn)); }

absl::StatusOr<std::vector<bool>> Session::CancelJobs(
    const std::vector<uint64_t>& job_ids) {
  v1::CancelRequest request;
  request.mutable_job_ids()->Add(job_ids.begin(), job_ids.end());
  v1::CancelResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::Status status = stub_->Cancel(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Cancel RPC to broker at ", broker_,
                                     " failed: ", status.error_message()));
  }
  if (response.cancelled_size() != request.job_ids_size()) {
    return absl::InternalError(absl::StrCat(
        "broker at ", broker_, " answered Cancel of ", request.job_ids_size(),
        " jobs with ", response.cancelled_size(), " outcomes"));
  }
  std::vector<bool> out(job_ids.size());
  for (int i = 0; i < response.cancelled_size(); ++i) {
    out[i] =
        response.cancelled(i) || (i < response.states_size() &&
                                  response.states(i) == v1::Job::CANCELLED);
  }
  return out;
}

void Session::SendLoop() {
  NameThisThread("client-send");
  bool healthy = true;
  std::deque<OutBatch> batches;
  std::vector<uint64_t> watches;
  for (;;) {
    {
      MutexLock lock(&queue_mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
        return stop_sender_ || !batches_.empty() || !watch_ids_.empty();
      };
      queue_mu_.Await(ready);
      if (batches_.empty() && watch_ids_.empty()) break;  // stop_sender_
      batches.swap(batches_);
      watches.swap(watch_ids_);
      sending_ = true;
    }
    const size_t messages = batches.size() + (watches.empty() ? 0 : 1);
    size_t written = 0;
    // All but the last message of a round may sit in gRPC's buffer: one
    // flush per round instead of one per message.
    auto write = [&](const v1::SessionRequest& request) {
      grpc::WriteOptions write_options;
      if (++written < messages) write_options.set_buffer_hint();
      return stream_->Write(request, write_options);
    };
    if (!watches.empty()) {
      v1::SessionRequest request;
      request.mutable_watch()->mutable_job_ids()->Add(watches.begin(),
                                                      watches.end());
      if (healthy) healthy = write(request);
      watches.clear();
    }
    for (OutBatch& batch : batches) {
      const uint64_t seq = ++next_seq_;
      batch.request->mutable_submit()->set_seq(seq);
      absl::Status broken;
      {
        // Registered before the write: the Submitted may arrive at once.
        MutexLock lock(&mu_);
        if (broken_) {
          broken = broken_status_;
        } else {
          unacked_.emplace(seq, std::move(batch.states));
        }
      }
      if (!broken.ok()) {
        for (const auto& state : batch.states) state->Complete(broken);
        continue;
      }
      // After a failed write the stream is over; the receiver fails
      // what is registered once it sees the end.
      if (healthy) healthy = write(*batch.request);
    }
    batches.clear();
    MutexLock lock(&queue_mu_);
    sending_ = false;
  }
  if (healthy) stream_->WritesDone();
  MutexLock lock(&queue_mu_);
  sender_exited_ = true;
}

void Session::RecvLoop() {
  NameThisThread("client-recv");
  v1::SessionResponse response;
  while (stream_->Read(&response)) {
    switch (response.body_case()) {
      case v1::SessionResponse::kSubmitted:
        HandleSubmitted(response.mutable_submitted());
        break;
      case v1::SessionResponse::kEvents:
        HandleEvents(response.mutable_events());
        break;
      default:
        break;  // newer broker; nothing we understand
    }
  }
  {
    // Finish must not race the sender's Write.
    MutexLock lock(&queue_mu_);
    stop_sender_ = true;
    auto exited = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
      return sender_exited_;
    };
    queue_mu_.Await(exited);
  }
  const grpc::Status status = stream_->Finish();
  FailOutstanding(absl::UnavailableError(absl::StrCat(
      "lost connection to broker at ", broker_, ": ",
      status.ok()
          ? "the broker closed the session"
          : absl::StrCat(status.error_message(), " (",
                         absl::StatusCodeToString(static_cast<absl::StatusCode>(
                             status.error_code())),
                         ")"))));
}

void Session::HandleSubmitted(v1::SessionResponse::Submitted* submitted) {
  std::vector<std::shared_ptr<FutureState>> states;
  absl::Status failure;
  {
    MutexLock lock(&mu_);
    auto it = unacked_.find(submitted->seq());
    if (it == unacked_.end()) return;  // not a seq of ours: ignore
    states = std::move(it->second);
    unacked_.erase(it);
    if (submitted->error_code() != 0) {
      failure = absl::Status(CodeFromWire(submitted->error_code()),
                             submitted->error_message().empty()
                                 ? "the broker rejected the submit"
                                 : submitted->error_message());
    } else if (static_cast<size_t>(submitted->job_ids_size()) !=
               states.size()) {
      failure = absl::InternalError(absl::StrCat(
          "broker at ", broker_, " acknowledged ", submitted->job_ids_size(),
          " job ids for a batch of ", states.size(), " jobs"));
    } else {
      ids_.reserve(ids_.size() + states.size());
      for (size_t i = 0; i < states.size(); ++i) {
        ids_[submitted->job_ids(static_cast<int>(i))].push_back(
            Watcher{states[i], /*submitted=*/true});
      }
    }
  }
  if (!failure.ok()) {
    for (const auto& state : states) state->Complete(failure);
    return;
  }
  for (size_t i = 0; i < states.size(); ++i) {
    states[i]->SetJobId(submitted->job_ids(static_cast<int>(i)));
  }
}

void Session::HandleEvents(v1::SessionResponse::Events* events) {
  struct Update {
    std::shared_ptr<FutureState> state;
    int event;
    bool terminal;
    bool last;  // last watcher of this event: may take the result bytes
  };
  std::vector<Update> updates;
  updates.reserve(events->events_size());
  {
    MutexLock lock(&mu_);
    for (int k = 0; k < events->events_size(); ++k) {
      const v1::JobEvent& event = events->events(k);
      auto it = ids_.find(event.job_id());
      if (it == ids_.end()) continue;  // already ended (e.g. a second watch)
      const bool terminal = IsTerminal(event.state());
      if (!terminal && event.state() != v1::Job::RUNNING) continue;
      absl::InlinedVector<Watcher, 1>& watchers = it->second;
      for (size_t w = 0; w < watchers.size(); ++w) {
        // A terminal event ends the watch: take the state; RUNNING keeps it.
        std::shared_ptr<FutureState> state =
            terminal ? std::exchange(watchers[w].state, nullptr)
                     : watchers[w].state;
        updates.push_back(
            Update{std::move(state), k, terminal, w + 1 == watchers.size()});
      }
      if (terminal) ids_.erase(it);
    }
  }
  for (Update& u : updates) {
    v1::JobEvent* event = events->mutable_events(u.event);
    if (!u.terminal) {
      u.state->MarkRunning();
      continue;
    }
    std::string result =
        u.last ? std::move(*event->mutable_result()) : event->result();
    u.state->Complete(EventStatus(*event), std::move(result));
  }
}

void Session::FailOutstanding(const absl::Status& status) {
  std::deque<OutBatch> unsent;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      closed_ = true;
      closed_status_ = status;
    }
    unsent.swap(batches_);
    watch_ids_.clear();
  }
  absl::flat_hash_map<uint64_t, std::vector<std::shared_ptr<FutureState>>>
      unacked;
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Watcher, 1>> ids;
  {
    MutexLock lock(&mu_);
    broken_ = true;
    broken_status_ = status;
    unacked.swap(unacked_);
    ids.swap(ids_);
  }
  for (OutBatch& batch : unsent) {
    for (const auto& state : batch.states) state->Complete(status);
  }
  for (auto& [seq, states] : unacked) {
    for (const auto& state : states) state->Complete(status);
  }
  for (auto& [id, watchers] : ids) {
    for (Watcher& w : watchers) w.state->Complete(status);
  }
}

void Session::Shutdown(bool wait, bool cancel_futures) {
  std::deque<OutBatch> unsent;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      closed_ = true;
      closed_status_ = absl::FailedPreconditionError(
          "the executor is shut down; submit before calling Shutdown()");
    }
    if (cancel_futures) unsent.swap(batches_);
  }
  if (cancel_futures) {
    const absl::Status cancelled = JobErrorToStatus(
        "cancelled", "cancelled by Executor::Shutdown before it was sent");
    for (OutBatch& batch : unsent) {
      for (const auto& state : batch.states) state->Complete(cancelled);
    }
    // Jobs already sent need their ids before they can be cancelled; the
    // acknowledgements are on their way (or the stream breaks).
    {
      MutexLock lock(&queue_mu_);
      auto sent = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
        return !sending_ || sender_exited_;
      };
      queue_mu_.Await(sent);
    }
    std::vector<std::shared_ptr<FutureState>> to_cancel;
    {
      MutexLock lock(&mu_);
      auto acked = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return broken_ || unacked_.empty();
      };
      mu_.Await(acked);
      for (const auto& [id, watchers] : ids_) {
        for (const Watcher& w : watchers) {
          if (w.submitted) to_cancel.push_back(w.state);
        }
      }
    }
    if (!to_cancel.empty()) CancelStates(this, to_cancel);
  }
  if (!wait) return;
  {
    MutexLock lock(&queue_mu_);
    auto drained = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
      return sender_exited_ ||
             (batches_.empty() && watch_ids_.empty() && !sending_);
    };
    queue_mu_.Await(drained);
  }
  {
    MutexLock lock(&mu_);
    auto all_done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return broken_ || (unacked_.empty() && ids_.empty());
    };
    mu_.Await(all_done);
  }
  Stop();
}

void Session::Stop() {
  MutexLock stop_lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  {
    MutexLock lock(&queue_mu_);
    stop_sender_ = true;
  }
  if (sender_.joinable()) sender_.join();  // it half-closes the stream
  bool ended;
  {
    MutexLock lock(&mu_);
    auto over = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return broken_; };
    ended = mu_.AwaitWithDeadline(over, absl::Now() + kCloseGrace);
  }
  // A broker that doesn't end the stream after our half-close must not
  // hang the shutdown.
  if (!ended) stream_context_.TryCancel();
  if (receiver_.joinable()) receiver_.join();
  callbacks_.Stop();
}

}  // namespace internal
}  // namespace dexec
