// The worker-io loop: owns the DEALER socket and turns WorkerCore's
// decisions (worker_core.h) into I/O, hands runs to the executors
// (task_executor.h) and their results back to the core. docs/DESIGN.md,
// "Threads and owners (worker)".
#include "worker/worker.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/mailbox.h"
#include "common/mutex.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"
#include "worker/coroutine_executor.h"
#include "worker/process_executor.h"
#include "worker/task_executor.h"
#include "worker/task_run.h"
#include "worker/thread_executor.h"
#include "worker/worker_core.h"
#include "zmq.hpp"

namespace dexec::worker {
namespace {

// Frames read per loop iteration before finished results get a turn.
constexpr int kMaxFramesPerIteration = 1024;

// What executors and Drain()/Stop() hand to the io thread.
struct IoEvent {
  // A finished run; null for a wake-up after Drain()/Stop().
  std::shared_ptr<TaskRun> finished;
};

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

std::string DefaultName() {
  const std::string host = HostName();
  return absl::StrCat(host.empty() ? "localhost" : host, ":", ::getpid());
}

int PollTimeoutMs(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  // Round up: waking a millisecond early would only loop once more.
  return static_cast<int>(std::min<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))),
      60 * 1000));
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
  WorkerMetrics Metrics() const;

  static constexpr int kDrain = 1;
  static constexpr int kStop = 2;

 private:
  absl::Status ValidateOptions() const;

  // ---- worker-io thread: everything below "owned by worker-io".
  void IoLoop();
  absl::Status Connect();
  void CloseSocket(int linger_ms);
  // Carries out what the core decided (and what that leads to).
  void Apply(WorkerOutbox& out, absl::Time now);
  void SendFrame(wire::Frame frame);
  void ReadFrames(absl::Time now, WorkerOutbox* out);
  void CollectResults();
  TaskExecutor* ExecutorFor(const wire::Task& task);
  // The isolation `task` runs with.
  Isolation IsolationOf(absl::string_view task) const;
  int Busy() const;
  // Copies what Metrics() shows from worker-io's state (each iteration).
  void PublishMetrics();

  // Fixed at construction.
  const WorkerOptions options_;
  const TaskRegistry* const registry_;
  const int threads_;
  const int prefetch_;
  const std::string name_;

  zmq::context_t context_;
  Mailbox<IoEvent> mailbox_;
  // 0, kDrain or kStop; only ever increases.
  std::atomic<int> requested_{0};
  // Set once Start() succeeded; Drain()/Stop() before that are no-ops.
  std::atomic<bool> started_flag_{false};

  // Guards starting and joining the io thread (Start/Wait/destructor may be
  // called from different threads).
  absl::Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  std::thread io_thread_ ABSL_GUARDED_BY(lifecycle_mu_);

  // Owned by worker-io (created by Start() before the thread exists, then
  // handed over; thread creation orders the two).
  std::unique_ptr<WorkerCore> core_;
  std::unique_ptr<zmq::socket_t> socket_;
  // Either may be null when no task runs there.
  std::unique_ptr<ThreadExecutor> pool_;
  std::unique_ptr<ProcessExecutor> procs_;
  std::unique_ptr<CoroutineExecutor> coroutines_;
  bool left_ = false;
  // Runs handed to an executor and not yet taken back: run id -> run.
  struct Held {
    std::shared_ptr<TaskRun> run;
    TaskExecutor* executor;
  };
  absl::flat_hash_map<uint64_t, Held> runs_;

  // What Metrics() reads: written by worker-io (finished runs as they are
  // collected, the rest once per loop iteration), read by HTTP threads.
  const absl::Time started_at_ = absl::Now();
  mutable Mutex metrics_mu_;
  // Task name -> index into task_counts_; capped, then "(other)".
  absl::flat_hash_map<std::string, size_t> task_index_
      ABSL_GUARDED_BY(metrics_mu_);
  std::vector<WorkerMetrics::TaskCounts> task_counts_
      ABSL_GUARDED_BY(metrics_mu_);
  WorkerMetrics::TaskCounts other_counts_ ABSL_GUARDED_BY(metrics_mu_){
      "(other)"};
  int busy_threads_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  int coroutines_running_ ABSL_GUARDED_BY(metrics_mu_) = 0;
  absl::Time last_recv_ ABSL_GUARDED_BY(metrics_mu_) = absl::Now();
  bool welcomed_ ABSL_GUARDED_BY(metrics_mu_) = false;
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
      context_(1) {}

Worker::Impl::~Impl() {
  RequestShutdown(kStop);
  Wait();
}

absl::Status Worker::Impl::ValidateOptions() const {
  if (registry_ == nullptr) {
    return absl::InvalidArgumentError("Worker needs a TaskRegistry");
  }
  if (options_.threads < 0 || options_.threads > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads=", options_.threads,
                     "; use 1 to 100000, or 0 for one per "
                     "hardware thread"));
  }
  if (options_.prefetch < -1 || prefetch_ > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch=", options_.prefetch,
                     "; use 0 to 100000, or -1 for the "
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
  if (options_.max_tasks_per_child < 0 ||
      options_.child_memory_limit_bytes < 0) {
    return absl::InvalidArgumentError(
        "max_tasks_per_child and child_memory_limit_bytes must not be "
        "negative (0 = no limit)");
  }
  if (options_.concurrency < 1 || options_.concurrency > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "concurrency=", options_.concurrency, "; use 1 to 1000000"));
  }
  if (options_.isolation == Isolation::kDefault) {
    return absl::InvalidArgumentError(
        "WorkerOptions::isolation must be kThread or kProcess");
  }
  const int curve_keys = !options_.curve_server_key.empty() +
                         !options_.curve_public_key.empty() +
                         !options_.curve_secret_key.empty();
  if (curve_keys != 0 && curve_keys != 3) {
    return absl::InvalidArgumentError(
        "CURVE needs all three keys: the broker's public key and this "
        "worker's public and secret keys");
  }
  return absl::OkStatus();
}

absl::Status Worker::Impl::Start() {
  absl::MutexLock lock(&lifecycle_mu_);
  if (started_) {
    return absl::FailedPreconditionError("Worker::Start() called twice");
  }
  absl::Status valid = ValidateOptions();
  if (!valid.ok()) return valid;

  WorkerCoreOptions core;
  core.name = name_;
  core.host = HostName();
  core.pid = static_cast<int32_t>(::getpid());
  core.threads = threads_;
  core.prefetch = prefetch_;
  core.tasks = registry_->Names();
  core.heartbeat_interval = options_.heartbeat_interval;
  core.liveness = options_.liveness;
  core.drain_timeout = options_.drain_timeout;

  auto done = [this](std::shared_ptr<TaskRun> run) {
    mailbox_.Post(IoEvent{std::move(run)});
  };
  bool any_thread = false;
  bool any_process = false;
  for (const std::string& task : core.tasks) {
    if (registry_->IsAsync(task)) {
      core.async_tasks.push_back(task);
      continue;
    }
    (IsolationOf(task) == Isolation::kProcess ? any_process : any_thread) =
        true;
  }
  core.concurrency = options_.concurrency;
  if (any_process) {
    ProcessExecutorOptions process;
    process.children = threads_;
    process.max_tasks_per_child = options_.max_tasks_per_child;
    process.memory_limit_bytes = options_.child_memory_limit_bytes;
    procs_ = std::make_unique<ProcessExecutor>(registry_, process, done);
    // First, before this worker starts any thread (docs/DESIGN.md,
    // "Process isolation").
    absl::Status forked = procs_->Start();
    if (!forked.ok()) return forked;
  }
  if (any_thread || !any_process) {
    pool_ = std::make_unique<ThreadExecutor>(registry_, threads_, done);
  }

  absl::Status connected = Connect();
  if (!connected.ok()) {
    if (procs_ != nullptr) procs_->Shutdown();
    return connected;
  }
  if (pool_ != nullptr) {
    absl::Status pool_started = pool_->Start();
    if (!pool_started.ok()) return pool_started;
  }
  if (!core.async_tasks.empty()) {
    coroutines_ = std::make_unique<CoroutineExecutor>(registry_, threads_, done,
                                                      options_.concurrency);
    absl::Status loops_started = coroutines_->Start();
    if (!loops_started.ok()) return loops_started;
  }
  core_ = std::make_unique<WorkerCore>(std::move(core), absl::Now());

  started_ = true;
  started_flag_.store(true);
  io_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "worker-io");
    IoLoop();
  });
  DEXEC_LOG(INFO) << "worker started worker=" << name_
                  << " broker=" << options_.broker << " threads=" << threads_
                  << " prefetch=" << prefetch_
                  << " concurrency=" << options_.concurrency << " isolation="
                  << (options_.isolation == Isolation::kProcess ? "process"
                                                                : "thread");
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
}

// ------------------------------------------------------------ worker-io

absl::Status Worker::Impl::Connect() {
  try {
    auto socket =
        std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, WorkerCore::kLeaveLingerMs);
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
}

int Worker::Impl::Busy() const {
  return (pool_ != nullptr ? pool_->running() : 0) +
         (procs_ != nullptr ? procs_->running() : 0) +
         (coroutines_ != nullptr ? coroutines_->running() : 0);
}

Isolation Worker::Impl::IsolationOf(absl::string_view task) const {
  const Isolation isolation = registry_->IsolationOf(task);
  return isolation == Isolation::kDefault ? options_.isolation : isolation;
}

void Worker::Impl::IoLoop() {
  WorkerOutbox out;
  core_->OnConnected(absl::Now(), &out);
  Apply(out, absl::Now());
  int handled_request = 0;
  while (!left_) {
    absl::Time now = absl::Now();
    out.Clear();
    const int requested = requested_.load();
    if (requested > handled_request) {
      handled_request = requested;
      if (requested == kStop) {
        core_->Stop(now, &out);
      } else {
        core_->Drain(now, &out);
      }
    }
    core_->set_busy(Busy());
    core_->Tick(now, &out);
    Apply(out, now);
    PublishMetrics();
    if (left_) break;

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
      zmq::poll(
          items, n,
          std::chrono::milliseconds(PollTimeoutMs(core_->NextTimer() - now)));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        DEXEC_LOG(ERROR) << "poll failed worker=" << name_ << " error=\""
                         << e.what() << "\"";
        // Avoid a hot loop on a persistent error; the mailbox still works.
        out.Clear();
        core_->OnSocketError(now, &out);
        Apply(out, now);
      }
      continue;
    }
    now = absl::Now();
    out.Clear();
    if (socket_index >= 0 && (items[socket_index].revents & ZMQ_POLLIN)) {
      ReadFrames(now, &out);
    }
    if (items[mailbox_index].revents & ZMQ_POLLIN) {
      CollectResults();
      core_->Flush(now, &out);
    }
    Apply(out, now);
  }
  // Whatever ended the loop, no executor may wait for more work.
  if (pool_ != nullptr) pool_->Shutdown();
  if (procs_ != nullptr) procs_->Shutdown();
  if (coroutines_ != nullptr) coroutines_->Shutdown();
  runs_.clear();
}

void Worker::Impl::Apply(WorkerOutbox& out, absl::Time now) {
  if (!out.bad_frame_log.empty()) {
    DEXEC_LOG(WARNING) << "bad frame from broker dropped worker=" << name_
                       << " " << out.bad_frame_log;
  }
  for (wire::Frame& frame : out.frames) SendFrame(std::move(frame));
  if (out.close_linger_ms >= 0) CloseSocket(out.close_linger_ms);
  if (!out.start.empty()) {
    // One batch per executor, in dispatch order.
    std::vector<std::pair<TaskExecutor*, std::vector<std::shared_ptr<TaskRun>>>>
        batches;
    for (TaskStart& start : out.start) {
      auto run = std::make_shared<TaskRun>(start.run_id, std::move(start.task),
                                           start.deadline);
      TaskExecutor* executor = ExecutorFor(run->task);
      runs_.emplace(run->run_id, Held{run, executor});
      auto batch = std::find_if(
          batches.begin(), batches.end(),
          [executor](const auto& b) { return b.first == executor; });
      if (batch == batches.end()) {
        batches.emplace_back(executor, std::vector<std::shared_ptr<TaskRun>>{});
        batch = batches.end() - 1;
      }
      batch->second.push_back(std::move(run));
    }
    for (auto& [executor, batch] : batches) executor->Run(std::move(batch));
  }
  for (uint64_t run_id : out.cancel) {
    auto it = runs_.find(run_id);
    if (it == runs_.end()) continue;
    it->second.executor->Cancel(it->second.run);
    runs_.erase(it);
  }
  if (out.left) left_ = true;
  if (out.connect) {
    WorkerOutbox next;
    absl::Status connected = Connect();
    if (!connected.ok()) {
      // Start() validated the endpoint, so this is transient (e.g. out of
      // file descriptors): try again later.
      DEXEC_LOG(ERROR) << "reconnect failed worker=" << name_ << " error=\""
                       << connected.message() << "\"";
      core_->OnConnectFailed(now);
      return;
    }
    core_->OnConnected(now, &next);
    Apply(next, now);
  }
}

TaskExecutor* Worker::Impl::ExecutorFor(const wire::Task& task) {
  if (coroutines_ != nullptr && registry_->IsAsync(task.name())) {
    return coroutines_.get();
  }
  // An unknown task fails wherever it goes; the pool is cheapest.
  if (procs_ != nullptr &&
      (pool_ == nullptr || (registry_->Has(task.name()) &&
                            IsolationOf(task.name()) == Isolation::kProcess))) {
    return procs_.get();
  }
  return pool_.get();
}

void Worker::Impl::SendFrame(wire::Frame frame) {
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
    DEXEC_LOG(ERROR) << "send to broker failed worker=" << name_ << " error=\""
                     << e.what() << "\"";
  }
}

void Worker::Impl::ReadFrames(absl::Time now, WorkerOutbox* out) {
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
        core_->OnBadFrame("message with more than one part", now, out);
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
      core_->OnBadFrame(frame.status().message(), now, out);
      continue;
    }
    core_->OnFrame(*frame, now, out);
  }
}

void Worker::Impl::CollectResults() {
  std::vector<IoEvent> events = mailbox_.Drain();
  {
    MutexLock lock(&metrics_mu_);
    for (const IoEvent& event : events) {
      if (event.finished == nullptr) continue;
      const TaskRun& run = *event.finished;
      if (!runs_.contains(run.run_id)) continue;
      WorkerMetrics::TaskCounts* c = &other_counts_;
      auto at = task_index_.find(run.task.name());
      if (at != task_index_.end()) {
        c = &task_counts_[at->second];
      } else if (task_counts_.size() < WorkerMetrics::kMaxTaskSeries) {
        task_index_.emplace(run.task.name(), task_counts_.size());
        task_counts_.push_back({run.task.name()});
        c = &task_counts_.back();
      }
      ++c->run;
      if (!run.result.ok()) ++c->failed;
    }
  }
  for (IoEvent& event : events) {
    if (event.finished == nullptr) continue;  // a wake-up
    TaskRun& run = *event.finished;
    auto it = runs_.find(run.run_id);
    if (it == runs_.end()) continue;  // cancelled for good: not wanted
    runs_.erase(it);
    core_->OnFinished(run.run_id, std::move(run.result));
  }
}

void Worker::Impl::PublishMetrics() {
  MutexLock lock(&metrics_mu_);
  busy_threads_ = (pool_ != nullptr ? pool_->running() : 0) +
                  (procs_ != nullptr ? procs_->running() : 0);
  coroutines_running_ = coroutines_ != nullptr ? coroutines_->running() : 0;
  last_recv_ = core_->last_recv();
  welcomed_ = core_->welcomed();
}

WorkerMetrics Worker::Impl::Metrics() const {
  WorkerMetrics m;
  const absl::Time now = absl::Now();
  MutexLock lock(&metrics_mu_);
  m.tasks = task_counts_;
  m.tasks.push_back(other_counts_);
  m.threads = threads_;
  m.busy_threads = busy_threads_;
  m.coroutines = coroutines_running_;
  m.heartbeat_age = std::max(now - last_recv_, absl::ZeroDuration());
  m.connected = welcomed_;
  m.uptime = now - started_at_;
  return m;
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
WorkerMetrics Worker::Metrics() const { return impl_->Metrics(); }

}  // namespace dexec::worker
