#include "client/session.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/client_credentials.h"
#include "common/proto_time.h"
#include "common/status_grpc.h"
#include "google/protobuf/arena.h"
#include "protos/error_kind.h"
#include "protos/job_state.h"

namespace dexec {
namespace internal {
namespace {

// A Submit message is cut at this much payload, so that it stays under
// gRPC's default 4 MiB receive limit on the broker. A single larger job
// still goes alone.
constexpr size_t kMaxBatchBytes = size_t{3} << 20;
// A Submit on an idle session writes its job itself up to this size; larger
// ones go through client-send, so a caller never blocks on flow control.
constexpr size_t kMaxInlineSendBytes = size_t{64} << 10;

// How long Stop waits for the broker to end the stream after our
// half-close before cancelling it.
constexpr absl::Duration kCloseGrace = absl::Seconds(2);

// At most this many submit batches written and unanswered. The broker
// remembers the last 256 (client_id, seq) of each client for
// deduplication; staying at half of that guarantees that every batch we
// resend after a reconnect is still remembered if the broker took it.
constexpr int64_t kMaxUnackedBatches = 128;

// Reconnecting: delays between attempts to open a new stream.
constexpr absl::Duration kReconnectInitial = absl::Milliseconds(50);
constexpr absl::Duration kReconnectMax = absl::Seconds(2);
// How long one attempt lets gRPC connect the channel.
constexpr absl::Duration kConnectProbe = absl::Milliseconds(500);
// A stream that answered, or lived this long, ended an outage: the next
// break starts a new reconnect_timeout.
constexpr absl::Duration kStableStream = absl::Seconds(1);

// Offering a refused map chunk again.
constexpr absl::Duration kRoomInitial = absl::Milliseconds(10);
constexpr absl::Duration kRoomMax = absl::Seconds(1);

// Job ids per Watch message when re-watching after a reconnect.
constexpr size_t kMaxWatchIds = 65536;

void NameThisThread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

absl::Status EventStatus(const v1::JobEvent& event) {
  const v1::JobError& error = event.error();
  switch (event.state()) {
    case v1::Job::SUCCEEDED:
      return absl::OkStatus();
    case v1::Job::CANCELLED:
      return JobErrorToStatus(
          error.kind().empty() ? error_kind::kCancelled : error.kind(),
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

// A stream that ended this way may work again on a new stream: the broker
// went away or restarted. Anything else (our request was refused, e.g.
// UNIMPLEMENTED or a message over the broker's limit) would fail the same
// way again.
bool Reconnectable(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:  // the broker closed the session (shutdown)
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:  // e.g. RST_STREAM from a dying peer
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return true;
    default:
      return false;
  }
}

std::string Describe(const grpc::Status& status) {
  if (status.ok()) return "the broker closed the session";
  return absl::StrCat(status.error_message(), " (",
                      absl::StatusCodeToString(
                          static_cast<absl::StatusCode>(status.error_code())),
                      ")");
}

// 128 random bits as hex: unique among the broker's clients in practice.
std::string RandomClientId() {
  std::random_device device;
  std::mt19937_64 random((static_cast<uint64_t>(device()) << 32) ^ device() ^
                         static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())));
  return absl::StrFormat("%016x%016x", random(), random());
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
  // gRPC's own reconnect backoff (1 s growing to 120 s by default) would
  // leave a restarted broker unused for minutes; keep it within ours.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(kReconnectInitial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(kReconnectMax)));
  const auth::ClientAuthOptions auth_options{
      options.token,    options.token_file, options.tls_ca,
      options.tls_cert, options.tls_key,    options.tls_server_name};
  // No channel interceptor: the token goes on each call's context (one
  // stream, a few unary calls), which keeps the stream's messages cheap.
  absl::StatusOr<auth::BareBrokerChannel> made =
      auth::MakeBareBrokerChannel(options.broker, auth_options, args);
  if (!made.ok()) return made.status();
  std::shared_ptr<grpc::Channel> channel = std::move(made->channel);
  const std::string authorization = std::move(made->authorization);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::microseconds(
                            absl::ToInt64Microseconds(options.connect_timeout));
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the dexec broker at ", options.broker,
                     " within ", absl::FormatDuration(options.connect_timeout),
                     "; is dexec-broker running and listening there",
                     options.tls_ca.empty() ? "" : ", with TLS", "?"));
  }
  {
    // One cheap call, so that a missing or refused token is reported here
    // rather than as the first future's failure.
    grpc::ClientContext context;
    context.set_deadline(deadline);
    if (!authorization.empty())
      context.AddMetadata("authorization", authorization);
    v1::Stats stats;
    const grpc::Status probe = v1::Broker::NewStub(channel)->GetStats(
        &context, v1::GetStatsRequest(), &stats);
    if (probe.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        probe.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      absl::StatusOr<auth::FoundToken> found =
          auth::FindClientToken(auth_options);
      return absl::Status(
          static_cast<absl::StatusCode>(probe.error_code()),
          found.ok() ? absl::StrCat("the broker at ", options.broker,
                                    " refused the token from ", found->source,
                                    ": ", probe.error_message())
                     : std::string(found.status().message()));
    }
  }
  std::shared_ptr<Session> session(new Session(options, std::move(channel)));
  session->authorization_ = authorization;
  session->Start();
  return session;
}

Session::Session(ExecutorOptions options,
                 std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      broker_(options_.broker),
      client_id_(RandomClientId()),
      channel_(std::move(channel)),
      stub_(v1::Broker::NewStub(channel_)),
      room_backoff_(kRoomInitial, kRoomMax),
      callbacks_("client-callbacks") {}

Session::~Session() { Shutdown(/*wait=*/true, /*cancel_futures=*/false); }

std::shared_ptr<Session::Stream> Session::OpenStream() {
  auto stream = std::make_shared<Stream>();
  if (!authorization_.empty()) {
    stream->context.AddMetadata("authorization", authorization_);
  }
  stream->rw = stub_->Session(&stream->context);
  return stream;
}

void Session::Start() {
  std::shared_ptr<Stream> stream = OpenStream();
  {
    MutexLock lock(&queue_mu_);
    stream_ = std::move(stream);
    connected_ = true;
    MutexLock ids_lock(&mu_);
    generation_ = 1;
  }
  sender_ = std::thread([this] { SendLoop(); });
  receiver_ = std::thread([this] { RecvLoop(); });
}

Session::BatchPtr Session::NewBatch(bool open) const {
  auto batch = std::make_shared<OutBatch>();
  google::protobuf::ArenaOptions arena_options;
  arena_options.start_block_size = 4096;
  arena_options.max_block_size = size_t{1} << 20;
  batch->arena = std::make_unique<google::protobuf::Arena>(arena_options);
  batch->request = google::protobuf::Arena::CreateMessage<v1::SessionRequest>(
      batch->arena.get());
  batch->open = open;
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

Session::BatchPtr Session::Slice(const OutBatch& batch, size_t begin,
                                 size_t end) const {
  BatchPtr out = NewBatch(/*open=*/false);
  out->waits_for_room = batch.waits_for_room;
  out->ticket = batch.ticket;
  const auto& jobs = batch.request->submit().jobs();
  for (size_t i = begin; i < end; ++i) {
    if (!batch.withdrawn.empty() && batch.withdrawn[i]) continue;
    const v1::JobSpec& job = jobs.Get(static_cast<int>(i));
    *out->request->mutable_submit()->add_jobs() = job;
    out->bytes += job.payload().size() + job.task().size() + 16;
    out->states.push_back(batch.states[i]);
  }
  return out;
}

Session::BatchPtr Session::WithoutWithdrawn(const OutBatch& batch) const {
  BatchPtr out = Slice(batch, 0, batch.states.size());
  out->open = batch.open;
  out->probe = batch.probe;
  return out;
}

std::shared_ptr<FutureState> Session::Submit(absl::string_view task,
                                             std::string payload,
                                             const SubmitOptions& options) {
  auto state = std::make_shared<FutureState>(weak_from_this());
  const size_t max_batch = std::max<size_t>(1, options_.max_batch);
  absl::Status closed;
  SendRound round;
  {
    MutexLock lock(&queue_mu_);
    if (closed_) {
      closed = closed_status_;
    } else {
      // Join the batch the sender has not picked up yet: concurrent submits
      // coalesce into one message while the sender is busy writing.
      if (batches_.empty() || !batches_.back()->open ||
          batches_.back()->states.size() >= max_batch ||
          batches_.back()->bytes >= kMaxBatchBytes) {
        batches_.push_back(NewBatch(/*open=*/true));
      }
      OutBatch& batch = *batches_.back();
      AddJob(&batch, task, std::move(payload), options);
      batch.states.push_back(state);
      if (!InlineSendAllowedLocked()) return state;
      // Nothing else is going on: write it from this thread, a thread
      // hand-off (~15-25 us on a 2-core VM) sooner than client-send could.
      round = BeginRoundLocked(absl::Now());
    }
  }
  if (!closed.ok()) {
    state->Complete(std::move(closed));
    return state;
  }
  WriteRound(std::move(round));
  return state;
}

void Session::SubmitBatch(absl::string_view task, const SubmitOptions& options,
                          std::vector<std::string> payloads,
                          std::vector<std::shared_ptr<FutureState>>* states) {
  const size_t max_batch = std::max<size_t>(1, options_.max_batch);
  const size_t first = states->size();
  // Built outside the queue lock; only the hand-over is locked.
  std::vector<BatchPtr> built;
  built.push_back(NewBatch(/*open=*/false));
  const std::weak_ptr<FutureHost> host = weak_from_this();
  for (std::string& payload : payloads) {
    if (built.back()->states.size() >= max_batch ||
        built.back()->bytes >= kMaxBatchBytes) {
      built.push_back(NewBatch(/*open=*/false));
    }
    auto state = std::make_shared<FutureState>(host);
    AddJob(built.back().get(), task, std::move(payload), options);
    built.back()->states.push_back(state);
    states->push_back(std::move(state));
  }
  absl::Status closed;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      for (BatchPtr& batch : built) {
        batch->waits_for_room = true;
        batch->ticket = ++next_ticket_;
        batches_.push_back(std::move(batch));
      }
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
        ids_[job_id].push_back(
            Watcher{state, /*submitted=*/false, generation_});
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
  if (!authorization_.empty())
    context.AddMetadata("authorization", authorization_);
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

std::vector<bool> Session::CancelUnsent(
    const std::vector<std::shared_ptr<FutureState>>& states) {
  std::vector<bool> out(states.size(), false);
  std::vector<size_t> withdrawn;
  {
    MutexLock lock(&queue_mu_);
    absl::flat_hash_map<const FutureState*, size_t> wanted;
    wanted.reserve(states.size());
    for (size_t i = 0; i < states.size(); ++i) wanted[states[i].get()] = i;
    {
      // A map chunk out at the broker right now may be refused and come
      // back to wait for room: then its cancelled jobs must not wait again
      // (HandleSubmitted completes them). If it is taken, the caller
      // cancels them by id.
      MutexLock ids_lock(&mu_);
      for (auto& [seq, batch] : unacked_) {
        if (!batch->waits_for_room) continue;
        for (size_t j = 0; j < batch->states.size(); ++j) {
          if (wanted.contains(batch->states[j].get())) {
            batch->withdrawn.resize(batch->states.size(), false);
            batch->withdrawn[j] = true;
          }
        }
      }
    }
    // Marked, not removed: the sender drops marked jobs when it takes the
    // batch, so nothing marked here can reach the broker. Only map chunks:
    // they may wait for room without bound. A single Submit goes out as
    // soon as there is a stream, and is cancelled by id (so the broker
    // records it as CANCELLED).
    auto mark = [&](std::deque<BatchPtr>* queue) {
      for (auto it = queue->begin(); it != queue->end();) {
        OutBatch& batch = **it;
        if (!batch.waits_for_room) {
          ++it;
          continue;
        }
        size_t left = 0;
        for (size_t j = 0; j < batch.states.size(); ++j) {
          if (!batch.withdrawn.empty() && batch.withdrawn[j]) continue;
          auto found = wanted.find(batch.states[j].get());
          if (found == wanted.end()) {
            ++left;
            continue;
          }
          batch.withdrawn.resize(batch.states.size(), false);
          batch.withdrawn[j] = true;
          out[found->second] = true;
          withdrawn.push_back(found->second);
        }
        it = left == 0 ? queue->erase(it) : it + 1;
      }
    };
    mark(&batches_);
    mark(&room_wait_);
  }
  const absl::Status cancelled = JobErrorToStatus(
      error_kind::kCancelled,
      "cancelled by the client before it was sent to the broker");
  for (size_t i : withdrawn) states[i]->Complete(cancelled);
  return out;
}

// ---- client-send ----

bool Session::RoomProbeDueLocked(absl::Time now) const {
  return !room_wait_.empty() && !room_probe_out_ && now >= room_retry_at_;
}

bool Session::HasWorkLocked(absl::Time now) const {
  if (resync_ || !watch_ids_.empty()) return true;
  if (in_flight_batches_ >= kMaxUnackedBatches) return false;
  return !batches_.empty() || RoomProbeDueLocked(now);
}

void Session::InsertWaitingLocked(BatchPtr batch) {
  // Before the others of its ticket (the rest of its own chunk).
  auto pos = std::lower_bound(
      room_wait_.begin(), room_wait_.end(), batch->ticket,
      [](const BatchPtr& b, uint64_t ticket) { return b->ticket < ticket; });
  room_wait_.insert(pos, std::move(batch));
}

void Session::TakeBatchesLocked(absl::Time now, std::vector<BatchPtr>* out) {
  // The oldest chunk waiting for room goes first, alone, as the probe.
  if (RoomProbeDueLocked(now) && in_flight_batches_ < kMaxUnackedBatches) {
    BatchPtr probe = std::move(room_wait_.front());
    room_wait_.pop_front();
    probe->probe = true;
    room_probe_out_ = true;
    ++in_flight_batches_;
    out->push_back(std::move(probe));
  }
  while (!batches_.empty() && in_flight_batches_ < kMaxUnackedBatches) {
    BatchPtr batch = std::move(batches_.front());
    batches_.pop_front();
    if (batch->waits_for_room && (!room_wait_.empty() || room_probe_out_)) {
      // The broker is full: queue behind the chunks already waiting.
      InsertWaitingLocked(std::move(batch));
      continue;
    }
    ++in_flight_batches_;
    out->push_back(std::move(batch));
  }
}

Session::SendRound Session::BeginRoundLocked(absl::Time now) {
  SendRound round;
  round.stream = stream_;
  round.resync = std::exchange(resync_, false);
  round.watches.swap(watch_ids_);
  TakeBatchesLocked(now, &round.taken);
  sending_ = true;
  return round;
}

bool Session::InlineSendAllowedLocked() const {
  // Only an idle session: the broker has answered everything (so its flow
  // control window is open and the write does not block the caller), and
  // nobody else is sending or waiting to.
  return connected_ && !sending_ && !resync_ && !stop_sender_ &&
         in_flight_batches_ == 0 && batches_.size() == 1 &&
         watch_ids_.empty() && room_wait_.empty() && !room_probe_out_ &&
         batches_.front()->bytes <= kMaxInlineSendBytes;
}

void Session::SendLoop() {
  NameThisThread("client-send");
  for (;;) {
    SendRound round;
    {
      MutexLock lock(&queue_mu_);
      // A caller may be sending inline (Submit): wait until it is done.
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return !sending_ &&
               (stop_sender_ || (connected_ && HasWorkLocked(absl::Now())));
      };
      // Sleeps until there is work, or the head of the room queue is due.
      // The due time may move while we sleep: wake up and re-read it.
      auto next_wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return connected_ && !room_wait_.empty() && !room_probe_out_ &&
                       in_flight_batches_ < kMaxUnackedBatches
                   ? room_retry_at_
                   : absl::InfiniteFuture();
      };
      while (!ready()) {
        const absl::Time wake = next_wake();
        auto woken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
          return ready() || next_wake() != wake;
        };
        queue_mu_.AwaitWithDeadline(woken, wake);
      }
      // On stop, flush what can still be written, then leave.
      if (!connected_ || !HasWorkLocked(absl::Now())) break;
      round = BeginRoundLocked(absl::Now());
    }
    WriteRound(std::move(round));
  }
  std::shared_ptr<Stream> last;
  {
    MutexLock lock(&queue_mu_);
    if (connected_ && stream_ != failed_stream_) {
      last = stream_;
      sending_ = true;  // client-recv must not Finish it under our feet
    }
  }
  if (last != nullptr) last->rw->WritesDone();
  MutexLock lock(&queue_mu_);
  sending_ = false;
  sender_exited_ = true;
}

void Session::WriteRound(SendRound round) {
  std::vector<BatchPtr>& taken = round.taken;
  // Jobs cancelled while queued never reach the broker.
  for (BatchPtr& batch : taken) {
    if (!batch->withdrawn.empty()) batch = WithoutWithdrawn(*batch);
  }

  std::vector<v1::SessionRequest> watch_requests;
  auto add_watches = [&](const std::vector<uint64_t>& ids) {
    for (size_t i = 0; i < ids.size(); i += kMaxWatchIds) {
      const size_t end = std::min(ids.size(), i + kMaxWatchIds);
      watch_requests.emplace_back().mutable_watch()->mutable_job_ids()->Add(
          ids.begin() + i, ids.begin() + end);
    }
  };
  std::vector<BatchPtr> resend;
  std::vector<BatchPtr> fresh;
  std::vector<BatchPtr> refused;
  absl::Status failed;
  bool probe_not_sent = false;
  {
    MutexLock lock(&mu_);
    if (round.resync) {
      // Watches first: a restarted in-memory broker hands out ids from 1
      // again, and a resent batch could otherwise take an id we are about
      // to re-watch (docs/DESIGN.md, "Reconnecting").
      std::vector<uint64_t> rewatch;
      rewatch.reserve(ids_.size());
      for (const auto& [id, watchers] : ids_) rewatch.push_back(id);
      add_watches(rewatch);
      for (const auto& [seq, batch] : unacked_) resend.push_back(batch);
    }
    for (BatchPtr& batch : taken) {
      if (batch->states.empty() || failed_) {
        // Not sent: if it was the probe, the next one may go.
        probe_not_sent = probe_not_sent || batch->probe;
      }
      if (batch->states.empty()) continue;
      if (failed_) {
        failed = failed_status_;
        refused.push_back(std::move(batch));
        continue;
      }
      const uint64_t seq = ++next_seq_;
      v1::SessionRequest::Submit* submit = batch->request->mutable_submit();
      submit->set_seq(seq);
      submit->set_client_id(client_id_);
      // Registered before the write: the Submitted may arrive at once.
      unacked_.emplace(seq, batch);
      fresh.push_back(std::move(batch));
    }
  }
  const int64_t not_sent = static_cast<int64_t>(taken.size() - fresh.size());
  taken.clear();
  for (const BatchPtr& batch : refused) {
    for (const auto& state : batch->states) state->Complete(failed);
  }
  add_watches(round.watches);

  // Only the holder of sending_ touches failed_stream_.
  bool write_failed = false;
  if (round.stream != failed_stream_) {
    std::vector<const v1::SessionRequest*> out;
    out.reserve(watch_requests.size() + resend.size() + fresh.size());
    for (const v1::SessionRequest& r : watch_requests) out.push_back(&r);
    for (const BatchPtr& batch : resend) out.push_back(batch->request);
    for (const BatchPtr& batch : fresh) out.push_back(batch->request);
    for (size_t i = 0; i < out.size(); ++i) {
      // All but the last message of a round may sit in gRPC's buffer: one
      // flush per round instead of one per message.
      grpc::WriteOptions write_options;
      if (i + 1 < out.size()) write_options.set_buffer_hint();
      if (!round.stream->rw->Write(*out[i], write_options)) {
        // The stream is over. What was registered stays in unacked_ and
        // ids_, and goes again on the next stream.
        write_failed = true;
        break;
      }
    }
  }
  MutexLock lock(&queue_mu_);
  if (write_failed) failed_stream_ = round.stream;
  in_flight_batches_ -= not_sent;
  if (probe_not_sent) room_probe_out_ = false;
  sending_ = false;
}

// ---- client-recv ----

void Session::RecvLoop() {
  NameThisThread("client-recv");
  std::shared_ptr<Stream> stream;
  {
    MutexLock lock(&queue_mu_);
    stream = stream_;
  }
  Backoff backoff(kReconnectInitial, kReconnectMax);
  absl::Time outage_start = absl::Now();
  absl::Status end;
  for (;;) {
    const absl::Time opened = absl::Now();
    bool answered = false;
    v1::SessionResponse response;
    while (stream->rw->Read(&response)) {
      answered = true;
      // The acknowledgement first: the events may be of its jobs.
      if (response.has_submitted()) {
        HandleSubmitted(response.mutable_submitted());
      }
      if (response.has_events()) HandleEvents(response.mutable_events());
    }
    bool stopping;
    {
      // Finish must not race the sender's Write: park it first.
      MutexLock lock(&queue_mu_);
      connected_ = false;
      auto parked = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return !sending_ || sender_exited_;
      };
      queue_mu_.Await(parked);
      stopping = stopping_;
    }
    const grpc::Status status = stream->rw->Finish();
    const absl::Time now = absl::Now();
    if (answered || now - opened >= kStableStream) {
      // That stream worked: this is a new outage.
      outage_start = now;
      backoff.Reset();
    }
    if (stopping) {
      end = absl::FailedPreconditionError(
          "the executor is shut down; submit before calling Shutdown()");
      break;
    }
    if (!Reconnectable(status)) {
      const bool refused =
          status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          status.error_code() == grpc::StatusCode::PERMISSION_DENIED;
      end = absl::Status(
          refused ? static_cast<absl::StatusCode>(status.error_code())
                  : absl::StatusCode::kUnavailable,
          absl::StrCat(
              refused ? "the broker at " : "lost connection to broker at ",
              broker_, refused ? " refused this client: " : ": ",
              Describe(status)));
      break;
    }
    stream = Reconnect(outage_start, &backoff);
    if (stream == nullptr) {
      end = absl::UnavailableError(absl::StrCat(
          "the dexec broker at ", broker_, " was unreachable for ",
          absl::FormatDuration(absl::Now() - outage_start),
          "; gave up reconnecting after ExecutorOptions::reconnect_timeout (",
          absl::FormatDuration(options_.reconnect_timeout),
          "). The stream ended with: ", Describe(status)));
      break;
    }
  }
  FailOutstanding(end);
  MutexLock lock(&queue_mu_);
  receiver_exited_ = true;
}

std::shared_ptr<Session::Stream> Session::Reconnect(absl::Time outage_start,
                                                    Backoff* backoff) {
  const absl::Time give_up = outage_start + options_.reconnect_timeout;
  for (;;) {
    const absl::Time attempt_at =
        std::min(absl::Now() + backoff->Next(), give_up);
    {
      MutexLock lock(&queue_mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return stopping_;
      };
      if (queue_mu_.AwaitWithDeadline(stop, attempt_at)) return nullptr;
    }
    // gRPC connects the channel (with the short backoff set in Connect);
    // ask it to and give it a moment. Only a READY channel gets a stream,
    // so attempts against a dead broker cost nothing on the wire.
    grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    if (state != GRPC_CHANNEL_READY) {
      channel_->WaitForStateChange(
          state,
          absl::ToChronoTime(std::min(absl::Now() + kConnectProbe, give_up)));
      state = channel_->GetState(/*try_to_connect=*/true);
    }
    if (state == GRPC_CHANNEL_READY) {
      std::shared_ptr<Stream> stream = OpenStream();
      {
        MutexLock lock(&queue_mu_);
        if (!stopping_) {
          {
            MutexLock ids_lock(&mu_);
            ++generation_;
          }
          stream_ = stream;
          connected_ = true;
          resync_ = true;
          return stream;
        }
      }
      stream->context.TryCancel();
      (void)stream->rw->Finish();
      return nullptr;
    }
    if (absl::Now() >= give_up) return nullptr;
  }
}

void Session::HandleSubmitted(v1::SessionResponse::Submitted* submitted) {
  BatchPtr batch;
  absl::Status failure;
  std::vector<std::shared_ptr<FutureState>> cancelled;
  {
    // Both locks: a refused map chunk moves from unacked_ to room_wait_ in
    // one step, so WaitUntilIdle never sees it in neither.
    MutexLock queue_lock(&queue_mu_);
    MutexLock lock(&mu_);
    auto it = unacked_.find(submitted->seq());
    if (it == unacked_.end()) return;  // not a seq of ours: ignore
    batch = std::move(it->second);
    unacked_.erase(it);
    --in_flight_batches_;
    const bool probe = std::exchange(batch->probe, false);
    if (probe) room_probe_out_ = false;
    const absl::Time now = absl::Now();
    if (submitted->error_code() != 0) {
      const absl::StatusCode code = CodeFromWire(submitted->error_code());
      if (code == absl::StatusCode::kResourceExhausted &&
          batch->waits_for_room && !cancel_unsent_) {
        // No room at the broker: the chunk waits in the client, without
        // the jobs cancelled meanwhile (CancelUnsent). Halve it, so that a
        // chunk larger than the broker's whole --max_queued still gets in,
        // piece by piece.
        BatchPtr rest = std::move(batch);
        if (!rest->withdrawn.empty()) {
          for (size_t i = 0; i < rest->states.size(); ++i) {
            if (rest->withdrawn[i]) cancelled.push_back(rest->states[i]);
          }
          rest = WithoutWithdrawn(*rest);
        }
        // A refused chunk was the oldest waiting (a probe) or never waited:
        // it goes back to the front of its ticket, halves in order.
        const size_t n = rest->states.size();
        if (n > 1) {
          InsertWaitingLocked(Slice(*rest, n / 2, n));
          InsertWaitingLocked(Slice(*rest, 0, n / 2));
        } else if (n == 1) {
          InsertWaitingLocked(std::move(rest));
        }
        if (probe && n > 1) {
          // Maybe it was only too big: offer the first half at once. A
          // full broker refuses log2(jobs_per_message) halves in a row, then
          // the single jobs back off.
          room_retry_at_ = now;
        } else if (probe || (!room_probe_out_ && room_retry_at_ <= now)) {
          room_retry_at_ = now + room_backoff_.Next();
        }
      } else {
        failure = absl::Status(code, submitted->error_message().empty()
                                         ? "the broker rejected the submit"
                                         : submitted->error_message());
        if (code == absl::StatusCode::kResourceExhausted && cancel_unsent_) {
          failure = JobErrorToStatus(
              error_kind::kCancelled,
              "cancelled by Executor::Shutdown before it was sent");
        }
      }
    } else if (static_cast<size_t>(submitted->job_ids_size()) !=
               batch->states.size()) {
      failure = absl::InternalError(absl::StrCat(
          "broker at ", broker_, " acknowledged ", submitted->job_ids_size(),
          " job ids for a batch of ", batch->states.size(), " jobs"));
    } else {
      if (probe) {
        // There was room: offer the next waiting chunk at once.
        room_backoff_.Reset();
        room_retry_at_ = now;
      }
      ids_.reserve(ids_.size() + batch->states.size());
      for (size_t i = 0; i < batch->states.size(); ++i) {
        ids_[submitted->job_ids(static_cast<int>(i))].push_back(
            Watcher{batch->states[i], /*submitted=*/true, generation_});
      }
    }
  }
  if (!cancelled.empty()) {
    const absl::Status status =
        JobErrorToStatus(error_kind::kCancelled,
                         "cancelled by the client while it waited for room");
    for (const auto& state : cancelled) state->Complete(status);
  }
  if (batch == nullptr) return;  // waits for room
  if (!failure.ok()) {
    for (const auto& state : batch->states) state->Complete(failure);
    return;
  }
  for (size_t i = 0; i < batch->states.size(); ++i) {
    batch->states[i]->SetJobId(submitted->job_ids(static_cast<int>(i)));
  }
}

void Session::HandleEvents(v1::SessionResponse::Events* events) {
  struct Update {
    std::shared_ptr<FutureState> state;
    int event;
    bool terminal;
    bool last;  // last watcher of this event: may take the result bytes
    bool lost;  // the broker no longer knows a job it had
  };
  std::vector<Update> updates;
  updates.reserve(events->events_size());
  {
    MutexLock lock(&mu_);
    for (int k = 0; k < events->events_size(); ++k) {
      const v1::JobEvent& event = events->events(k);
      auto it = ids_.find(event.job_id());
      // Already ended: a duplicate terminal event (a second watch, a
      // re-watch after reconnecting) is ignored.
      if (it == ids_.end()) continue;
      // An unknown id's one event has no state (kind not_found): it ends
      // the watch as a terminal state does.
      const bool terminal = IsTerminal(event.state()) ||
                            event.state() == v1::Job::STATE_UNSPECIFIED;
      if (!terminal && event.state() != v1::Job::RUNNING) continue;
      const bool not_found = event.error().kind() == error_kind::kNotFound;
      absl::InlinedVector<Watcher, 1>& watchers = it->second;
      for (size_t w = 0; w < watchers.size(); ++w) {
        const bool lost = not_found && (watchers[w].submitted ||
                                        watchers[w].generation < generation_);
        // A terminal event ends the watch: take the state; RUNNING keeps it.
        std::shared_ptr<FutureState> state =
            terminal ? std::exchange(watchers[w].state, nullptr)
                     : watchers[w].state;
        updates.push_back(Update{std::move(state), k, terminal,
                                 w + 1 == watchers.size(), lost});
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
    if (u.lost) {
      u.state->Complete(JobErrorToStatus(
          error_kind::kNotFound,
          absl::StrCat("job ", event->job_id(), " was lost by the broker at ",
                       broker_,
                       ": after reconnecting, the broker no longer knows it "
                       "(a broker restarted without its journal, e.g. "
                       "--in_memory, loses its queued and running jobs); "
                       "submit it again")));
      continue;
    }
    std::string result =
        u.last ? std::move(*event->mutable_result()) : event->result();
    u.state->Complete(EventStatus(*event), std::move(result));
  }
}

void Session::FailOutstanding(const absl::Status& status) {
  std::deque<BatchPtr> unsent;
  std::map<uint64_t, BatchPtr> unacked;
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Watcher, 1>> ids;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      closed_ = true;
      closed_status_ = status;
    }
    stop_sender_ = true;
    connected_ = false;
    unsent.swap(batches_);
    for (BatchPtr& batch : room_wait_) unsent.push_back(std::move(batch));
    room_wait_.clear();
    room_probe_out_ = false;
    watch_ids_.clear();
    in_flight_batches_ = 0;
    MutexLock ids_lock(&mu_);
    failed_ = true;
    failed_status_ = status;
    unacked.swap(unacked_);
    ids.swap(ids_);
  }
  for (BatchPtr& batch : unsent) {
    for (const auto& state : batch->states) state->Complete(status);
  }
  for (auto& [seq, batch] : unacked) {
    for (const auto& state : batch->states) state->Complete(status);
  }
  for (auto& [id, watchers] : ids) {
    for (Watcher& w : watchers) w.state->Complete(status);
  }
}

void Session::WaitUntilIdle() {
  auto queue_idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return batches_.empty() && watch_ids_.empty() && room_wait_.empty() &&
           !sending_;
  };
  for (;;) {
    {
      MutexLock lock(&queue_mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return sender_exited_ || queue_idle();
      };
      queue_mu_.Await(ready);
    }
    {
      MutexLock lock(&mu_);
      auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return failed_ || (unacked_.empty() && ids_.empty());
      };
      mu_.Await(all_done);
    }
    // A refused map chunk may have moved back to room_wait_ between the
    // two waits: decide under both locks.
    MutexLock lock(&queue_mu_);
    MutexLock ids_lock(&mu_);
    if (failed_ || sender_exited_) return;
    if (queue_idle() && unacked_.empty() && ids_.empty()) return;
  }
}

void Session::Shutdown(bool wait, bool cancel_futures) {
  std::deque<BatchPtr> unsent;
  {
    MutexLock lock(&queue_mu_);
    if (!closed_) {
      closed_ = true;
      closed_status_ = absl::FailedPreconditionError(
          "the executor is shut down; submit before calling Shutdown()");
    }
    if (!wait) wait_declined_ = true;
    if (cancel_futures) {
      cancel_unsent_ = true;
      unsent.swap(batches_);
      for (BatchPtr& batch : room_wait_) unsent.push_back(std::move(batch));
      room_wait_.clear();
    }
  }
  if (cancel_futures) {
    const absl::Status cancelled =
        JobErrorToStatus(error_kind::kCancelled,
                         "cancelled by Executor::Shutdown before it was sent");
    for (BatchPtr& batch : unsent) {
      for (const auto& state : batch->states) state->Complete(cancelled);
    }
    // Jobs already sent need their ids before they can be cancelled; the
    // acknowledgements are on their way (or the session fails).
    {
      MutexLock lock(&queue_mu_);
      auto sent = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return !sending_ || sender_exited_;
      };
      queue_mu_.Await(sent);
    }
    std::vector<std::shared_ptr<FutureState>> to_cancel;
    {
      MutexLock lock(&mu_);
      auto acked = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return failed_ || unacked_.empty();
      };
      mu_.Await(acked);
      for (const auto& [id, watchers] : ids_) {
        for (const Watcher& w : watchers) {
          if (w.submitted) to_cancel.push_back(w.state);
        }
      }
    }
    if (!to_cancel.empty()) {
      CancelStates(this, to_cancel, /*running_too=*/false);
    }
  }
  if (!wait) return;
  WaitUntilIdle();
  Stop();
}

void Session::Close() {
  bool declined = false;
  {
    MutexLock lock(&queue_mu_);
    declined = wait_declined_;
  }
  if (!declined) {
    Shutdown(/*wait=*/true, /*cancel_futures=*/false);
    return;
  }
  FailOutstanding(absl::FailedPreconditionError(
      "the executor was destroyed before the job finished (after "
      "Shutdown(wait=false)); the job itself goes on at the broker"));
  // Nothing is left to hear from the broker, which keeps a stream with
  // watches open after our half-close: end it now rather than after
  // kCloseGrace. stopping_ first, so that client-recv does not reconnect.
  std::shared_ptr<Stream> stream;
  {
    MutexLock lock(&queue_mu_);
    stopping_ = true;
    stream = stream_;
  }
  if (stream != nullptr) stream->context.TryCancel();
  Stop();
}

void Session::Stop() {
  MutexLock stop_lock(&stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  {
    MutexLock lock(&queue_mu_);
    stopping_ = true;
    stop_sender_ = true;
  }
  if (sender_.joinable()) sender_.join();  // it half-closes the stream
  std::shared_ptr<Stream> stream;
  {
    MutexLock lock(&queue_mu_);
    auto over = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
      return receiver_exited_;
    };
    if (!queue_mu_.AwaitWithDeadline(over, absl::Now() + kCloseGrace)) {
      stream = stream_;
    }
  }
  // A broker that doesn't end the stream after our half-close must not
  // hang the shutdown.
  if (stream != nullptr) stream->context.TryCancel();
  if (receiver_.joinable()) receiver_.join();
  callbacks_.Stop();
}

}  // namespace internal
}  // namespace dexec
