#include "worker/worker.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"
#include "worker/task_context.h"
#include "worker/task_error.h"
#include "zmq.hpp"


namespace dexec::worker {
namespace {

// Paranoid Pirate reconnect backoff (zguide ch. 4).
constexpr absl::Duration kInitialBackoff = absl::Milliseconds(250);
constexpr absl::Duration kMaxBackoff = absl::Seconds(8);
// Frames read per loop iteration before finished results get a turn.
constexpr int kMaxFramesPerIteration = 1024;
// Lets Results and WorkerState{leaving} reach the broker after close().
constexpr int kLingerMs = 500;
// A broker sending garbage is logged at most this often.
constexpr absl::Duration kBadFrameLogInterval = absl::Seconds(10);
// Bound on the (estimated) bytes of results kept in case the broker lost
// them (Impl::in_doubt_); beyond it the oldest are forgotten, and should
// the broker have lost those, it runs their jobs again.
constexpr size_t kMaxInDoubtBytes = 64 << 20;

using TaskKey = std::pair<uint64_t, uint32_t>;  // job id, attempt

TaskKey KeyOf(const wire::TaskResult& r) {
  return TaskKey(r.job_id(), r.attempt());
}

// Memory a kept result costs, roughly.
size_t CostOf(const wire::TaskResult& r) {
  return r.output().size() + r.error_message().size() + 64;
}

// A result sent to the broker, kept until the broker has surely seen it.
struct SentResult {
  absl::Time sent_at;
  wire::TaskResult result;
};

// One task attempt, shared by the io thread (which tracks it from Dispatch
// until its result is sent or it is abandoned) and the pool thread that
// runs it.
struct TaskRun {
  TaskRun(wire::Task t, absl::Time deadline)
      : task(std::move(t)), ctx(task.job_id(), task.attempt(), deadline) {}

  wire::Task task;
  TaskContext ctx;
  // Set by the io thread when the broker abandons the attempt: a pool
  // thread that has not started it skips it, and no result is sent.
  std::atomic<bool> abandoned{false};
  // Written by the pool thread before it posts the run to the mailbox,
  // read by the io thread after taking it out (the mailbox's lock orders
  // the two).
  wire::TaskResult result;
  bool finished_cancelled = false;
};

// What pool threads and Drain()/Stop() hand to the io thread.
struct IoEvent {
  // A finished task; null for a wake-up after Drain()/Stop().
  std::shared_ptr<TaskRun> finished;
};

// The pool's work queue. Thread-safe.
//
// std::mutex rather than absl::Mutex: Debian's Abseil is built without
// ThreadSanitizer annotations, so TSan cannot see absl::Mutex order threads
// and would report every hand-off through this queue as a race.
class TaskQueue {
 public:
  void PushAll(std::vector<std::shared_ptr<TaskRun>> runs) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      for (auto& r : runs) tasks_.push_back(std::move(r));
    }
    if (runs.size() == 1) {
      ready_.notify_one();
    } else {
      ready_.notify_all();
    }
  }

  // Blocks until a task is queued (returns it) or Close() (returns null).
  std::shared_ptr<TaskRun> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return closed_ || !tasks_.empty(); });
    if (closed_) return nullptr;
    std::shared_ptr<TaskRun> run = std::move(tasks_.front());
    tasks_.pop_front();
    return run;
  }

  // Drops queued tasks and makes every Pop() return null from now on.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      tasks_.clear();
    }
    ready_.notify_all();
  }

 private:
  // Guards the queue between the io thread (pushes) and the pool (pops).
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::shared_ptr<TaskRun>> tasks_;  // guarded by mu_
  bool closed_ = false;                         // guarded by mu_
};

std::string DefaultName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "localhost", ":", ::getpid());
}

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

int PollTimeoutMs(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  // Round up: waking a millisecond early would only loop once more.
  return static_cast<int>(std::min<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))),
      60 * 1000));
}

void NameThisThread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace

class Worker::Impl {
 public:
  Impl(WorkerOptions options, const TaskRegistry* registry);
  ~Impl();

  absl::Status Start();
  void RequestShutdown(int how);
  void Wait();
  const std::string& name() const { return name_; }
  int threads() const { return threads_; }

  static constexpr int kDrain = 1;
  static constexpr int kStop = 2;

 private:
  // ---- worker-io thread: everything below "owned by worker-io".
  void IoLoop();
  // Returns false when the worker has left and the loop must end.
  bool HandleShutdownRequests(absl::Time now);
  void CheckConnection(absl::Time now);
  absl::Time NextTimer() const;
  absl::Status Connect();
  void CloseSocket(int linger_ms);
  void PresumeBrokerDead(absl::Time now);
  void SendRegister(absl::Time now);
  void ForgetSettledResults();
  void Send(wire::Frame frame, absl::Time now);
  void ReadFrames(absl::Time now);
  void OnFrame(wire::Frame& frame, absl::Time now);
  void OnWelcome(const wire::Welcome& welcome, absl::Time now);
  void OnDispatch(wire::Dispatch& dispatch, absl::Time now);
  void OnAbandon(const wire::Abandon& abandon);
  void NoteBadFrame(absl::string_view why, absl::Time now);
  // Moves finished results from the mailbox to unsent_.
  void CollectResults(bool leaving);
  void FlushResults(absl::Time now);
  void Leave(absl::Time now, absl::string_view why);

  // ---- worker-pool-N threads.
  void PoolLoop();
  void Execute(TaskRun& run);

  // Fixed at construction.
  const WorkerOptions options_;
  const TaskRegistry* const registry_;
  const int threads_;
  const int prefetch_;
  const std::string name_;

  zmq::context_t context_;
  Mailbox<IoEvent> mailbox_;
  TaskQueue queue_;
  // Tasks running now, reported in heartbeats.
  std::atomic<int> running_{0};
  // 0, kDrain or kStop; only ever increases.
  std::atomic<int> requested_{0};
  // Set once Start() succeeded; Drain()/Stop() before that are no-ops.
  std::atomic<bool> started_flag_{false};

  // Guards starting and joining the threads (Start/Wait/destructor may be
  // called from different threads).
  absl::Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  std::thread io_thread_ ABSL_GUARDED_BY(lifecycle_mu_);
  std::vector<std::thread> pool_ ABSL_GUARDED_BY(lifecycle_mu_);

  // Owned by worker-io (created by Start() before the thread exists, then
  // handed over; thread creation orders the two).
  std::unique_ptr<zmq::socket_t> socket_;
  bool welcomed_ = false;
  absl::Duration interval_;
  int liveness_;
  absl::Duration backoff_ = kInitialBackoff;
  absl::Time reconnect_at_;  // meaningful while socket_ is null
  absl::Time last_recv_;
  absl::Time last_send_;
  bool draining_ = false;
  absl::Time drain_deadline_ = absl::InfiniteFuture();
  // Received and not yet reported: running, queued, or finished with the
  // result still in the mailbox.
  absl::flat_hash_map<TaskKey, std::shared_ptr<TaskRun>> active_;
  // Results waiting to be sent (while not registered, they wait for the
  // next Welcome).
  std::vector<wire::TaskResult> unsent_;
  // Results sent after, or less than one heartbeat interval before, the
  // broker's latest frame; oldest first. A broker that crashed may have
  // lost them (in the socket, or before its journal had them), and one
  // that restarted or declared us lost asks us to register again: they
  // then go back to unsent_, so the Register lists them as held and they
  // are sent again after the Welcome. The broker completes their jobs with
  // them instead of running the jobs again, or drops them as stale if it
  // had them already.
  std::deque<SentResult> in_doubt_;
  size_t in_doubt_bytes_ = 0;
  // Register sent on this socket and not yet answered by a Welcome. A
  // Reconnect meanwhile answers a frame sent before that Register (the
  // broker replies to each frame of an identity it does not know), so it
  // asks for nothing new: registering again would only make the broker
  // drop what it dispatched in reply to the first Register.
  bool register_pending_ = false;
  int64_t bad_frames_ = 0;
  bool in_bad_burst_ = false;
  absl::Time last_bad_log_ = absl::InfinitePast();
};

Worker::Impl::Impl(WorkerOptions options, const TaskRegistry* registry)
    : options_(std::move(options)),
      registry_(registry),
      threads_(options_.threads > 0
                   ? options_.threads
                   : std::max(1, static_cast<int>(
                                     std::thread::hardware_concurrency()))),
      prefetch_(options_.prefetch >= 0 ? options_.prefetch
                                       : std::max(256, 4 * threads_)),
      name_(options_.name.empty() ? DefaultName() : options_.name),
      context_(1),
      interval_(options_.heartbeat_interval),
      liveness_(options_.liveness) {}

Worker::Impl::~Impl() {
  RequestShutdown(kStop);
  Wait();
}

absl::Status Worker::Impl::Start() {
  absl::MutexLock lock(&lifecycle_mu_);
  if (started_) {
    return absl::FailedPreconditionError("Worker::Start() called twice");
  }
  if (registry_ == nullptr) {
    return absl::InvalidArgumentError("Worker needs a TaskRegistry");
  }
  if (options_.threads < 0 || options_.threads > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "threads=", options_.threads, "; use 1 to 100000, or 0 for one per "
        "hardware thread"));
  }
  if (options_.prefetch < -1 || prefetch_ > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefetch=", options_.prefetch, "; use 0 to 100000, or -1 for the "
        "default"));
  }
  if (options_.heartbeat_interval <= absl::ZeroDuration() ||
      options_.liveness < 1) {
    return absl::InvalidArgumentError(
        "heartbeat_interval and liveness must be positive");
  }
  if (options_.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain_timeout must not be negative");
  }
  const int curve_keys = !options_.curve_server_key.empty() +
                         !options_.curve_public_key.empty() +
                         !options_.curve_secret_key.empty();
  if (curve_keys != 0 && curve_keys != 3) {
    return absl::InvalidArgumentError(
        "CURVE needs all three keys: the broker's public key and this "
        "worker's public and secret keys");
  }
  absl::Status connected = Connect();
  if (!connected.ok()) return connected;

  started_ = true;
  started_flag_.store(true);
  io_thread_ = std::thread([this] {
    NameThisThread("worker-io");
    IoLoop();
  });
  for (int i = 0; i < threads_; ++i) {
    pool_.emplace_back([this, i] {
      NameThisThread(absl::StrCat("worker-pool-", i));
      PoolLoop();
    });
  }
  DEXEC_LOG(INFO) << "worker started worker=" << name_
                  << " broker=" << options_.broker << " threads=" << threads_
                  << " prefetch=" << prefetch_;
  return absl::OkStatus();
}

void Worker::Impl::RequestShutdown(int how) {
  if (!started_flag_.load()) return;
  int current = requested_.load();
  while (current < how && !requested_.compare_exchange_weak(current, how)) {
  }
  mailbox_.Post(IoEvent{});  // wake worker-io
}

void Worker::Impl::Wait() {
  absl::MutexLock lock(&lifecycle_mu_);
  if (io_thread_.joinable()) io_thread_.join();
  for (std::thread& t : pool_) {
    if (t.joinable()) t.join();
  }
}

// ------------------------------------------------------------ worker-io

absl::Status Worker::Impl::Connect() {
  try {
    auto socket =
        std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, kLingerMs);
    // Unbounded queues: what we send is batched and small, and a dead
    // broker is noticed (and the socket dropped) within interval x liveness.
    socket->set(zmq::sockopt::sndhwm, 0);
    socket->set(zmq::sockopt::rcvhwm, 0);
    socket->set(zmq::sockopt::maxmsgsize,
                static_cast<int64_t>(wire::kMaxFrameBytes));
    if (!options_.curve_server_key.empty()) {
      socket->set(zmq::sockopt::curve_serverkey, options_.curve_server_key);
      socket->set(zmq::sockopt::curve_publickey, options_.curve_public_key);
      socket->set(zmq::sockopt::curve_secretkey, options_.curve_secret_key);
    }
    // No ZMQ_IMMEDIATE: connecting is asynchronous, and with it the first
    // Register would be refused until the TCP handshake completes. Without
    // it, Register waits in the pipe and goes out as soon as it can.
    socket->connect(options_.broker);
    socket_ = std::move(socket);
    return absl::OkStatus();
  } catch (const zmq::error_t& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot connect to broker endpoint '", options_.broker,
                     "': ", e.what(), " (expected e.g. tcp://host:50052)"));
  }
}

void Worker::Impl::CloseSocket(int linger_ms) {
  if (socket_ == nullptr) return;
  try {
    socket_->set(zmq::sockopt::linger, linger_ms);
    socket_->close();
  } catch (const zmq::error_t& e) {
    DEXEC_LOG(ERROR) << "closing the broker socket failed worker=" << name_
                     << " error=\"" << e.what() << "\"";
  }
  socket_.reset();
  welcomed_ = false;
  register_pending_ = false;
}

void Worker::Impl::IoLoop() {
  const absl::Time start = absl::Now();
  last_recv_ = start;
  SendRegister(start);
  for (;;) {
    absl::Time now = absl::Now();
    if (!HandleShutdownRequests(now)) break;
    CheckConnection(now);

    zmq::pollitem_t items[2];
    int n = 0;
    int socket_index = -1;
    if (socket_ != nullptr) {
      socket_index = n;
      items[n++] = {socket_->handle(), 0, ZMQ_POLLIN, 0};
    }
    const int mailbox_index = n;
    items[n++] = {nullptr, mailbox_.fd(), ZMQ_POLLIN, 0};
    try {
      zmq::poll(items, n,
                std::chrono::milliseconds(PollTimeoutMs(NextTimer() - now)));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        DEXEC_LOG(ERROR) << "poll failed worker=" << name_ << " error=\""
                         << e.what() << "\"";
        // Avoid a hot loop on a persistent error; the mailbox still works.
        CloseSocket(0);
        reconnect_at_ = now + backoff_;
      }
      continue;
    }
    now = absl::Now();
    if (socket_index >= 0 && (items[socket_index].revents & ZMQ_POLLIN)) {
      ReadFrames(now);
    }
    if (items[mailbox_index].revents & ZMQ_POLLIN) {
      CollectResults(/*leaving=*/false);
      FlushResults(now);
    }
  }
  // Whatever ended the loop, the pool must not wait for more work.
  queue_.Close();
}

bool Worker::Impl::HandleShutdownRequests(absl::Time now) {
  const int requested = requested_.load();
  if (requested == kStop) {
    Leave(now, "stopped");
    return false;
  }
  if (requested == kDrain && !draining_) {
    draining_ = true;
    drain_deadline_ = now + options_.drain_timeout;
    DEXEC_LOG(INFO) << "worker draining worker=" << name_
                    << " tasks=" << active_.size() << " timeout="
                    << absl::FormatDuration(options_.drain_timeout);
    if (welcomed_) {
      wire::Frame frame;
      frame.mutable_worker_state()->set_draining(true);
      Send(std::move(frame), now);
    }
  }
  if (draining_ && active_.empty() && unsent_.empty()) {
    Leave(now, "drained");
    return false;
  }
  if (draining_ && now >= drain_deadline_) {
    Leave(now, "drain timeout");
    return false;
  }
  return true;
}

void Worker::Impl::CheckConnection(absl::Time now) {
  if (socket_ == nullptr) {
    if (now < reconnect_at_) return;
    absl::Status connected = Connect();
    if (!connected.ok()) {
      // Start() validated the endpoint, so this is transient (e.g. out of
      // file descriptors): try again later.
      DEXEC_LOG(ERROR) << "reconnect failed worker=" << name_ << " error=\""
                       << connected.message() << "\"";
      reconnect_at_ = now + backoff_;
      backoff_ = std::min(backoff_ * 2, kMaxBackoff);
      return;
    }
    last_recv_ = now;
    SendRegister(now);
    return;
  }
  if (now - last_recv_ >= interval_ * liveness_) {
    PresumeBrokerDead(now);
    return;
  }
  ForgetSettledResults();
  if (welcomed_ && now - last_send_ >= interval_) {
    wire::Frame frame;
    frame.mutable_heartbeat()->set_busy(running_.load());
    Send(std::move(frame), now);
  }
}

absl::Time Worker::Impl::NextTimer() const {
  absl::Time next = drain_deadline_;
  if (socket_ == nullptr) return std::min(next, reconnect_at_);
  next = std::min(next, last_recv_ + interval_ * liveness_);
  if (welcomed_) next = std::min(next, last_send_ + interval_);
  return next;
}

void Worker::Impl::PresumeBrokerDead(absl::Time now) {
  DEXEC_LOG(WARNING) << "broker lost worker=" << name_ << " broker="
                     << options_.broker << " silent_for="
                     << absl::FormatDuration(now - last_recv_)
                     << " retry_in=" << absl::FormatDuration(backoff_)
                     << " tasks=" << active_.size();
  // Whatever is still queued for a dead peer is worthless: no linger.
  CloseSocket(0);
  reconnect_at_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

void Worker::Impl::SendRegister(absl::Time now) {
  welcomed_ = false;
  register_pending_ = true;
  if (!in_doubt_.empty()) {
    // Offer them again, ahead of the newer unsent ones.
    std::vector<wire::TaskResult> again;
    again.reserve(in_doubt_.size() + unsent_.size());
    for (SentResult& sent : in_doubt_) again.push_back(std::move(sent.result));
    for (wire::TaskResult& r : unsent_) again.push_back(std::move(r));
    unsent_ = std::move(again);
    in_doubt_.clear();
    in_doubt_bytes_ = 0;
  }
  wire::Frame frame;
  wire::Register* reg = frame.mutable_register_();
  reg->set_name(name_);
  reg->set_host(HostName());
  reg->set_pid(static_cast<int32_t>(::getpid()));
  reg->set_threads(threads_);
  reg->set_prefetch(prefetch_);
  for (std::string& task : registry_->Names()) reg->add_tasks(std::move(task));
  // Everything we still hold, so that a broker that restarted (or forgot
  // us) keeps these attempts assigned to us instead of running them again.
  // Sorted so the frame does not depend on hash order.
  std::vector<TaskKey> held;
  held.reserve(active_.size() + unsent_.size());
  for (const auto& [key, run] : active_) held.push_back(key);
  for (const wire::TaskResult& r : unsent_) held.push_back(KeyOf(r));
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  for (const TaskKey& key : held) {
    wire::TaskRef* ref = reg->add_held();
    ref->set_job_id(key.first);
    ref->set_attempt(key.second);
  }
  Send(std::move(frame), now);
}

void Worker::Impl::Send(wire::Frame frame, absl::Time now) {
  if (socket_ == nullptr) return;
  const std::string bytes = wire::EncodeFrame(std::move(frame));
  try {
    if (!socket_->send(zmq::buffer(bytes), zmq::send_flags::dontwait)) {
      // Cannot happen with an unbounded HWM; say so if it ever does.
      DEXEC_LOG(WARNING) << "frame to broker dropped: send would block "
                            "worker="
                         << name_;
    }
  } catch (const zmq::error_t& e) {
    DEXEC_LOG(ERROR) << "send to broker failed worker=" << name_
                     << " error=\"" << e.what() << "\"";
  }
  last_send_ = now;
}

void Worker::Impl::ReadFrames(absl::Time now) {
  for (int i = 0; i < kMaxFramesPerIteration && socket_ != nullptr; ++i) {
    zmq::message_t message;
    try {
      if (!socket_->recv(message, zmq::recv_flags::dontwait)) return;
      if (message.more()) {
        // The broker sends one part per message; skip the rest of this one.
        zmq::message_t extra;
        do {
          (void)socket_->recv(extra, zmq::recv_flags::none);
        } while (extra.more());
        NoteBadFrame("message with more than one part", now);
        continue;
      }
    } catch (const zmq::error_t& e) {
      DEXEC_LOG(ERROR) << "receive from broker failed worker=" << name_
                       << " error=\"" << e.what() << "\"";
      return;
    }
    absl::StatusOr<wire::Frame> frame = wire::DecodeFrame(absl::string_view(
        static_cast<const char*>(message.data()), message.size()));
    if (!frame.ok()) {
      NoteBadFrame(frame.status().message(), now);
      continue;
    }
    in_bad_burst_ = false;
    last_recv_ = now;
    OnFrame(*frame, now);
  }
}

void Worker::Impl::OnFrame(wire::Frame& frame, absl::Time now) {
  switch (frame.body_case()) {
    case wire::Frame::kWelcome:
      OnWelcome(frame.welcome(), now);
      break;
    case wire::Frame::kDispatch:
      OnDispatch(*frame.mutable_dispatch(), now);
      break;
    case wire::Frame::kAbandon:
      OnAbandon(frame.abandon());
      break;
    case wire::Frame::kReconnect:
      if (register_pending_) {
        DEXEC_LOG(DEBUG) << "Reconnect ignored: registration under way "
                            "worker="
                         << name_;
        break;
      }
      DEXEC_LOG(INFO) << "broker asked to register again worker=" << name_;
      SendRegister(now);
      break;
    case wire::Frame::kHeartbeat:
      break;  // liveness only, noted by the caller
    default:
      NoteBadFrame("frame of a kind only workers send", now);
      break;
  }
}

void Worker::Impl::OnWelcome(const wire::Welcome& welcome, absl::Time now) {
  interval_ = absl::Milliseconds(welcome.heartbeat_interval_ms());
  liveness_ = welcome.liveness();
  backoff_ = kInitialBackoff;
  welcomed_ = true;
  register_pending_ = false;
  DEXEC_LOG(INFO) << "registered with broker worker=" << name_
                  << " broker=" << options_.broker << " heartbeat="
                  << absl::FormatDuration(interval_)
                  << " liveness=" << liveness_
                  << " pending_results=" << unsent_.size();
  if (draining_) {
    // A new broker session: say again that we take no more work.
    wire::Frame frame;
    frame.mutable_worker_state()->set_draining(true);
    Send(std::move(frame), now);
  }
  FlushResults(now);
}

void Worker::Impl::OnDispatch(wire::Dispatch& dispatch, absl::Time now) {
  std::vector<std::shared_ptr<TaskRun>> runs;
  runs.reserve(dispatch.tasks_size());
  for (wire::Task& task : *dispatch.mutable_tasks()) {
    // timeout_ms is relative because the two hosts' clocks differ; the
    // deadline starts when the task reaches us.
    const absl::Time deadline =
        task.timeout_ms() > 0 ? now + absl::Milliseconds(task.timeout_ms())
                              : absl::InfiniteFuture();
    TaskKey key(task.job_id(), task.attempt());
    auto run = std::make_shared<TaskRun>(std::move(task), deadline);
    if (!active_.emplace(key, run).second) {
      DEXEC_LOG(DEBUG) << "duplicate dispatch ignored job=" << key.first
                       << " attempt=" << key.second;
      continue;
    }
    runs.push_back(std::move(run));
  }
  queue_.PushAll(std::move(runs));
}

void Worker::Impl::OnAbandon(const wire::Abandon& abandon) {
  absl::flat_hash_set<TaskKey> finished;
  for (const wire::TaskRef& ref : abandon.tasks()) {
    const TaskKey key(ref.job_id(), ref.attempt());
    auto it = active_.find(key);
    if (it == active_.end()) {
      finished.insert(key);
      continue;
    }
    // The broker has already settled this attempt: cancel it (a sleeping
    // task wakes at once, sys.exec kills its process group) and never
    // report it, whatever it returns.
    it->second->abandoned.store(true);
    it->second->ctx.Cancel();
    active_.erase(it);
  }
  if (finished.empty()) return;
  // Finished already: the result may still wait for a Welcome (the broker
  // abandons held attempts of settled jobs right after one), or be kept in
  // doubt. Either way, never offer it again.
  unsent_.erase(std::remove_if(unsent_.begin(), unsent_.end(),
                               [&finished](const wire::TaskResult& r) {
                                 return finished.contains(KeyOf(r));
                               }),
                unsent_.end());
  for (auto d = in_doubt_.begin(); d != in_doubt_.end();) {
    if (!finished.contains(KeyOf(d->result))) {
      ++d;
      continue;
    }
    in_doubt_bytes_ -= CostOf(d->result);
    d = in_doubt_.erase(d);
  }
}

void Worker::Impl::NoteBadFrame(absl::string_view why, absl::Time now) {
  ++bad_frames_;
  if (in_bad_burst_ && now - last_bad_log_ < kBadFrameLogInterval) return;
  in_bad_burst_ = true;
  last_bad_log_ = now;
  DEXEC_LOG(WARNING) << "bad frame from broker dropped worker=" << name_
                     << " reason=\"" << why
                     << "\" bad_frames_total=" << bad_frames_;
}

void Worker::Impl::CollectResults(bool leaving) {
  std::vector<IoEvent> events = mailbox_.Drain();
  for (IoEvent& event : events) {
    if (event.finished == nullptr) continue;  // a wake-up
    TaskRun& run = *event.finished;
    auto it = active_.find(TaskKey(run.task.job_id(), run.task.attempt()));
    if (it == active_.end() || it->second != event.finished) continue;
    active_.erase(it);
    // While leaving, a task that failed because we cancelled it has no
    // result worth reporting: the broker requeues it when we leave.
    if (leaving && run.finished_cancelled && !run.result.ok()) continue;
    unsent_.push_back(std::move(run.result));
  }
}

void Worker::Impl::FlushResults(absl::Time now) {
  if (unsent_.empty() || !welcomed_) return;
  // Everything finished since the last send goes in one frame.
  wire::Frame frame;
  wire::Results* results = frame.mutable_results();
  results->mutable_results()->Reserve(static_cast<int>(unsent_.size()));
  for (wire::TaskResult& r : unsent_) {
    *results->add_results() = r;
    in_doubt_bytes_ += CostOf(r);
    in_doubt_.push_back(SentResult{now, std::move(r)});
  }
  unsent_.clear();
  Send(std::move(frame), now);
  ForgetSettledResults();
}

void Worker::Impl::ForgetSettledResults() {
  // Sent a heartbeat interval before the broker's latest frame: it has
  // almost surely read them by then, and its journal (group commit,
  // milliseconds) has them too. A heuristic: the protocol has no acks.
  const absl::Time settled_before = last_recv_ - interval_;
  while (!in_doubt_.empty() && (in_doubt_.front().sent_at < settled_before ||
                                in_doubt_bytes_ > kMaxInDoubtBytes)) {
    in_doubt_bytes_ -= CostOf(in_doubt_.front().result);
    in_doubt_.pop_front();
  }
}

void Worker::Impl::Leave(absl::Time now, absl::string_view why) {
  // Stop the pool taking tasks first, so nothing new starts while we
  // cancel the rest.
  queue_.Close();
  int cancelled = 0;
  for (auto& [key, run] : active_) {
    if (!run->ctx.cancelled()) ++cancelled;
    run->ctx.Cancel();
  }
  CollectResults(/*leaving=*/true);
  const size_t unreported = active_.size();
  FlushResults(now);
  if (socket_ != nullptr) {
    wire::Frame frame;
    frame.mutable_worker_state()->set_leaving(true);
    Send(std::move(frame), now);
  }
  CloseSocket(kLingerMs);
  DEXEC_LOG(INFO) << "worker left broker worker=" << name_ << " reason=\""
                  << why << "\" cancelled=" << cancelled
                  << " unreported=" << unreported + unsent_.size();
}

// ------------------------------------------------------------ worker-pool

void Worker::Impl::PoolLoop() {
  while (std::shared_ptr<TaskRun> run = queue_.Pop()) {
    if (run->abandoned.load(std::memory_order_relaxed)) continue;
    Execute(*run);
    mailbox_.Post(IoEvent{std::move(run)});
  }
}

void Worker::Impl::Execute(TaskRun& run) {
  running_.fetch_add(1, std::memory_order_relaxed);
  const absl::Time started = absl::Now();
  std::string output;
  absl::Status status;
  if (run.ctx.cancelled()) {
    status = TaskError(kCancelledKind, "cancelled before it started");
  } else if (started >= run.ctx.deadline()) {
    status = TaskError(kTimeoutKind,
                       "the job's deadline passed while the task waited for "
                       "a free worker thread");
  } else {
    status = registry_->Run(run.task.name(), run.ctx, run.task.payload(),
                            &output);
  }
  const absl::Time finished = absl::Now();
  running_.fetch_sub(1, std::memory_order_relaxed);

  run.task.clear_payload();  // may be large; the run lives until reported
  wire::TaskResult& r = run.result;
  r.set_job_id(run.task.job_id());
  r.set_attempt(run.task.attempt());
  r.set_started_at_us(absl::ToUnixMicros(started));
  r.set_finished_at_us(absl::ToUnixMicros(finished));
  r.set_output(std::move(output));
  run.finished_cancelled = run.ctx.cancelled();
  if (finished > run.ctx.deadline()) {
    // Late is a timeout whatever the task says: the job asked for an answer
    // by the deadline.
    r.set_ok(false);
    r.set_error_kind(std::string(kTimeoutKind));
    r.set_error_message(
        ErrorKindOf(status) == kTimeoutKind
            ? std::string(status.message())
            : absl::StrCat("task '", run.task.name(),
                           "' ran past its deadline (timeout_ms=",
                           run.task.timeout_ms(), ")"));
    return;
  }
  r.set_ok(status.ok());
  if (!status.ok()) {
    r.set_error_kind(ErrorKindOf(status));
    r.set_error_message(std::string(status.message()));
  }
}

// ------------------------------------------------------------ Worker

Worker::Worker(WorkerOptions options, const TaskRegistry* registry)
    : impl_(std::make_unique<Impl>(std::move(options), registry)) {}

Worker::~Worker() = default;

absl::Status Worker::Start() { return impl_->Start(); }
void Worker::Drain() { impl_->RequestShutdown(Impl::kDrain); }
void Worker::Stop() { impl_->RequestShutdown(Impl::kStop); }
void Worker::Wait() { impl_->Wait(); }
const std::string& Worker::name() const { return impl_->name(); }
int Worker::threads() const { return impl_->threads(); }

}  // namespace dexec::worker
