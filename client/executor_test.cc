// The executor over the real wire: an in-process gRPC server implements
// dexec.v1.Broker's Session and Cancel minimally (TestBroker below), on
// 127.0.0.1:0. Restarting that server on the same port is a broker restart:
// the executor must reconnect, resend and re-watch.
#include "client/executor.h"

#include <pthread.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "client/wait.h"
#include "common/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kBound = absl::Seconds(20);

// The jobs and streams of a test broker; outlives the gRPC servers that
// serve it, so that a "restarted" broker (a new server on the same port)
// still has its jobs and remembers the (client_id, seq) batches it took, as
// a broker with a journal does.
//
// Ids 1..n. Per task:
//   "fail"   -> FAILED at once, kind task_error;
//   "reject" -> the whole batch is rejected with RESOURCE_EXHAUSTED;
//   "hang"   -> stays QUEUED until cancelled (or Finish);
//   "run"    -> RUNNING, never finishes (not cancellable);
//   "script" -> by payload: "fail" fails, "hang" hangs, else echoes;
//   anything else -> SUCCEEDED, echoing the payload.
// A batch of more than max_batch_room() jobs, or any batch while
// refuse_next() > 0, is refused with RESOURCE_EXHAUSTED ("no room").
class BrokerState {
 public:
  using Stream =
      grpc::ServerReaderWriter<v1::SessionResponse, v1::SessionRequest>;

  grpc::Status Session(Stream* stream) {
    {
      MutexLock lock(&mu_);
      stream_ = stream;
      ++sessions_;
    }
    v1::SessionRequest request;
    while (stream->Read(&request)) {
      MutexLock lock(&mu_);
      if (request.has_submit()) {
        HandleSubmit(request.submit(), stream);
      } else if (request.has_watch()) {
        v1::SessionResponse events;
        for (uint64_t id : request.watch().job_ids()) {
          watched_.push_back(id);
          v1::JobEvent* event = events.mutable_events()->add_events();
          auto it = jobs_.find(id);
          if (it == jobs_.end()) {
            event->set_job_id(id);
            event->mutable_error()->set_kind("not_found");
            event->mutable_error()->set_message(absl::StrCat("no job ", id));
          } else {
            *event = it->second;
          }
        }
        stream->Write(events);
      }
    }
    MutexLock lock(&mu_);
    if (stream_ == stream) stream_ = nullptr;
    return grpc::Status::OK;
  }

  grpc::Status Cancel(const v1::CancelRequest* request,
                      v1::CancelResponse* response) {
    MutexLock lock(&mu_);
    ++cancel_rpcs_;
    v1::SessionResponse events;
    for (uint64_t id : request->job_ids()) {
      auto it = jobs_.find(id);
      const bool queued =
          it != jobs_.end() && it->second.state() == v1::Job::QUEUED;
      response->add_cancelled(queued);
      if (queued) {
        it->second.set_state(v1::Job::CANCELLED);
        it->second.mutable_error()->set_kind("cancelled");
        it->second.mutable_error()->set_message("cancelled by request");
        *events.mutable_events()->add_events() = it->second;
        cancelled_ids_.push_back(id);
      }
      response->add_states(it == jobs_.end() ? v1::Job::STATE_UNSPECIFIED
                                             : it->second.state());
    }
    if (stream_ != nullptr && events.events().events_size() > 0) {
      stream_->Write(events);
    }
    return grpc::Status::OK;
  }

  // Finishes job `id` with `result` and pushes the event `times` times to
  // the current session.
  void Finish(uint64_t id, const std::string& result, int times = 1) {
    MutexLock lock(&mu_);
    v1::JobEvent& event = jobs_[id];
    event.set_job_id(id);
    event.set_state(v1::Job::SUCCEEDED);
    event.set_result(result);
    if (stream_ == nullptr) return;
    for (int i = 0; i < times; ++i) {
      v1::SessionResponse events;
      *events.mutable_events()->add_events() = event;
      events.mutable_events()->mutable_events(0)->set_result(
          absl::StrCat(result, i == 0 ? "" : "-again"));
      stream_->Write(events);
    }
  }

  // While false, submits are taken (jobs created, batch remembered) but not
  // answered: the Submitted is lost, as when a broker dies right after
  // taking a batch.
  void set_answer_submits(bool answer) {
    MutexLock lock(&mu_);
    answer_submits_ = answer;
  }
  void set_max_batch_room(size_t n) {
    MutexLock lock(&mu_);
    max_batch_room_ = n;
  }
  void set_refuse_next(int n) {
    MutexLock lock(&mu_);
    refuse_next_ = n;
  }
  // Forgets every job and batch: an in-memory broker that restarted (ids
  // start again from 1).
  void Forget() {
    MutexLock lock(&mu_);
    jobs_.clear();
    batches_.clear();
    last_id_ = 0;
  }

  std::vector<size_t> submit_sizes() const {
    MutexLock lock(&mu_);
    return submit_sizes_;
  }
  // (client_id, seq) of every submit received, in order.
  std::vector<std::pair<std::string, uint64_t>> submit_keys() const {
    MutexLock lock(&mu_);
    return submit_keys_;
  }
  std::vector<uint64_t> watched() const {
    MutexLock lock(&mu_);
    return watched_;
  }
  uint64_t last_id() const {
    MutexLock lock(&mu_);
    return last_id_;
  }
  int sessions() const {
    MutexLock lock(&mu_);
    return sessions_;
  }
  int refused() const {
    MutexLock lock(&mu_);
    return refused_;
  }
  int cancel_rpcs() const {
    MutexLock lock(&mu_);
    return cancel_rpcs_;
  }
  std::vector<uint64_t> cancelled_ids() const {
    MutexLock lock(&mu_);
    return cancelled_ids_;
  }
  // Waits until `n` submit messages arrived in all.
  bool AwaitSubmits(size_t n) const {
    MutexLock lock(&mu_);
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return submit_keys_.size() >= n;
    };
    return mu_.AwaitWithDeadline(arrived, absl::Now() + kBound);
  }

 private:
  void HandleSubmit(const v1::SessionRequest::Submit& submit, Stream* stream)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    submit_sizes_.push_back(submit.jobs_size());
    submit_keys_.emplace_back(submit.client_id(), submit.seq());
    v1::SessionResponse ack;
    v1::SessionResponse::Submitted* submitted = ack.mutable_submitted();
    submitted->set_seq(submit.seq());
    const std::string key = absl::StrCat(submit.client_id(), "/", submit.seq());
    if (auto seen = batches_.find(key); seen != batches_.end()) {
      // Taken before: the same ids, and the jobs are watched (as the real
      // broker does).
      submitted->mutable_job_ids()->Add(seen->second.begin(),
                                        seen->second.end());
      stream->Write(ack);
      v1::SessionResponse events;
      for (uint64_t id : seen->second) {
        const v1::JobEvent& event = jobs_[id];
        if (event.state() != v1::Job::QUEUED) {
          *events.mutable_events()->add_events() = event;
        }
      }
      if (events.events().events_size() > 0) stream->Write(events);
      return;
    }
    bool refuse = static_cast<size_t>(submit.jobs_size()) > max_batch_room_;
    if (refuse_next_ > 0) {
      --refuse_next_;
      refuse = true;
    }
    for (const v1::JobSpec& job : submit.jobs()) {
      if (job.task() == "reject") refuse = true;
    }
    if (refuse) {
      ++refused_;
      submitted->set_error_code(
          static_cast<int>(absl::StatusCode::kResourceExhausted));
      submitted->set_error_message("queue is full (test)");
      stream->Write(ack);
      return;
    }
    v1::SessionResponse events;
    std::vector<uint64_t>& ids = batches_[key];
    for (const v1::JobSpec& job : submit.jobs()) {
      const uint64_t id = ++last_id_;
      ids.push_back(id);
      submitted->add_job_ids(id);
      v1::JobEvent& event = jobs_[id];
      event.set_job_id(id);
      const std::string behaviour =
          job.task() == "script" ? job.payload() : job.task();
      if (behaviour == "hang") {
        event.set_state(v1::Job::QUEUED);
        continue;
      }
      if (behaviour == "run") {
        event.set_state(v1::Job::RUNNING);
      } else if (behaviour == "fail") {
        event.set_state(v1::Job::FAILED);
        event.mutable_error()->set_kind("task_error");
        event.mutable_error()->set_message("failed on purpose");
      } else {
        event.set_state(v1::Job::SUCCEEDED);
        event.set_result(job.payload());
      }
      *events.mutable_events()->add_events() = event;
    }
    if (!answer_submits_) return;
    stream->Write(ack);
    if (events.events().events_size() > 0) stream->Write(events);
  }

  // Guards everything below, and serialises writes on a stream (the
  // Session handler and Cancel both write). Cancel's events go to the
  // latest session (tests cancel through the session that submitted).
  mutable Mutex mu_;
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, v1::JobEvent> jobs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<uint64_t>> batches_
      ABSL_GUARDED_BY(mu_);
  std::vector<size_t> submit_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, uint64_t>> submit_keys_
      ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> watched_ ABSL_GUARDED_BY(mu_);
  bool answer_submits_ ABSL_GUARDED_BY(mu_) = true;
  size_t max_batch_room_ ABSL_GUARDED_BY(mu_) = SIZE_MAX;
  int refuse_next_ ABSL_GUARDED_BY(mu_) = 0;
  int refused_ ABSL_GUARDED_BY(mu_) = 0;
  int sessions_ ABSL_GUARDED_BY(mu_) = 0;
  int cancel_rpcs_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> cancelled_ids_ ABSL_GUARDED_BY(mu_);
};

// dexec.v1.Broker's Session and Cancel over a BrokerState; one per server.
class TestBroker final : public v1::Broker::Service {
 public:
  explicit TestBroker(BrokerState* state) : state_(state) {}
  grpc::Status Session(grpc::ServerContext*,
                       BrokerState::Stream* stream) override {
    return state_->Session(stream);
  }
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override {
    return state_->Cancel(request, response);
  }

 private:
  BrokerState* const state_;
};

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartServer(0);
    ASSERT_NE(port_, 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
    executor_ = Connect();
  }
  void TearDown() override {
    executor_.reset();
    StopServer();
  }

  // Serves broker_ on `port` (0: any free port, saved in port_).
  void StartServer(int port) {
    service_ = std::make_unique<TestBroker>(&broker_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                             grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  // Ends the server and every stream: the broker is gone.
  void StopServer() {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now()));
    server_.reset();
  }
  // A broker restart on the same port, keeping broker_'s state.
  void RestartServer() {
    const int port = port_;
    StopServer();
    StartServer(port);
    ASSERT_EQ(port_, port);
  }

  std::unique_ptr<Executor> Connect(
      size_t max_batch = 1000,
      absl::Duration reconnect_timeout = absl::Seconds(60)) {
    ExecutorOptions options;
    options.broker = address_;
    options.max_batch = max_batch;
    options.reconnect_timeout = reconnect_timeout;
    absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
    EXPECT_TRUE(ex.ok()) << ex.status();
    return ex.ok() ? *std::move(ex) : nullptr;
  }

  BrokerState broker_;
  std::unique_ptr<TestBroker> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  std::unique_ptr<Executor> executor_;
};

TEST_F(ExecutorTest, SubmitReturnsTheResult) {
  Future<std::string> f = executor_->Submit("echo", "hello");
  EXPECT_EQ(f.Result(kBound).value(), "hello");
  EXPECT_EQ(f.JobId(kBound).value(), 1u);
  Future<int64_t> g = executor_->Submit<int64_t>("echo", int64_t{49});
  EXPECT_EQ(g.Result(kBound).value(), 49);
}

TEST_F(ExecutorTest, ConcurrentSubmitsCoalesceIntoBatches) {
  executor_ = Connect(/*max_batch=*/100);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  std::vector<std::vector<Future<int>>> futures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        futures[t].push_back(
            executor_->Submit<int>("echo", t * kPerThread + i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      ASSERT_EQ(futures[t][i].Result(kBound).value(), t * kPerThread + i);
    }
  }
  size_t jobs = 0;
  for (size_t size : broker_.submit_sizes()) {
    EXPECT_LE(size, 100u);
    jobs += size;
  }
  EXPECT_EQ(jobs, size_t{kThreads * kPerThread});
  EXPECT_LT(broker_.submit_sizes().size(), size_t{kThreads * kPerThread});
}

TEST_F(ExecutorTest, MapOverTenThousandInputsKeepsInputOrder) {
  std::vector<int64_t> inputs;
  for (int64_t i = 0; i < 10000; ++i) inputs.push_back(i * 7);
  MapOptions options;
  options.jobs_per_message = 256;
  options.window = 1000;
  options.timeout = kBound;
  int64_t i = 0;
  for (absl::StatusOr<int64_t> v :
       executor_->Map<int64_t>("echo", inputs, options)) {
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_EQ(*v, i * 7);
    ++i;
  }
  EXPECT_EQ(i, 10000);
  for (size_t size : broker_.submit_sizes()) EXPECT_LE(size, 256u);
}

TEST_F(ExecutorTest, MapTakesOwnershipOfATemporaryRange) {
  MapOptions options;
  options.timeout = kBound;
  MapResults<std::string> results =
      executor_->Map("echo", std::vector<std::string>{"a", "b", "c"}, options);
  std::string all;
  for (absl::StatusOr<std::string> v : results) all += v.value();
  EXPECT_EQ(all, "abc");
}

TEST_F(ExecutorTest, RemoteFailureBecomesStatusWithKind) {
  Future<std::string> f = executor_->Submit("fail", "x");
  absl::Status s = f.Exception(kBound);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "task_error: failed on purpose");
  EXPECT_EQ(ErrorKind(s), "task_error");
}

TEST_F(ExecutorTest, RejectedBatchFailsItsFutures) {
  Future<std::string> f = executor_->Submit("reject", "x");
  EXPECT_EQ(f.Result(kBound).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(f.JobId(kBound).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(ExecutorTest, WaitAndAsCompletedOverTheWire) {
  std::vector<Future<std::string>> fs = {executor_->Submit("echo", "a"),
                                         executor_->Submit("fail", "b"),
                                         executor_->Submit("hang", "c")};
  WaitResult<std::string> first = Wait(fs, kBound, ReturnWhen::kFirstException);
  EXPECT_GE(first.done.size(), 1u);
  EXPECT_EQ(first.not_done.size(), 1u);  // the hanging one
  WaitResult<std::string> all =
      Wait(fs, absl::Milliseconds(50), ReturnWhen::kAllCompleted);
  EXPECT_EQ(all.not_done.size(), 1u);
  int yielded = 0;
  for (absl::StatusOr<Future<std::string>> f :
       AsCompleted(fs, absl::Milliseconds(200))) {
    if (!f.ok()) {
      EXPECT_EQ(f.status().code(), absl::StatusCode::kDeadlineExceeded);
      break;
    }
    ++yielded;
  }
  EXPECT_EQ(yielded, 2);
  EXPECT_TRUE(fs[2].Cancel());
  EXPECT_EQ(Wait(fs, kBound).done.size(), 3u);
}

TEST_F(ExecutorTest, MapCancelsOutstandingJobsOnFirstError) {
  std::vector<std::string> inputs = {"1", "2", "fail", "hang", "hang", "hang"};
  MapOptions options;
  options.timeout = kBound;
  MapResults<std::string> results = executor_->Map("script", inputs, options);
  EXPECT_EQ(results.Next()->value(), "1");
  EXPECT_EQ(results.Next()->value(), "2");
  std::optional<absl::StatusOr<std::string>> error = results.Next();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(ErrorKind(error->status()), "task_error");
  EXPECT_FALSE(results.Next().has_value());
  EXPECT_EQ(broker_.cancel_rpcs(), 1);
  EXPECT_EQ(broker_.cancelled_ids(), (std::vector<uint64_t>{4, 5, 6}));
}

TEST_F(ExecutorTest, CancelOnlyCancelsQueuedJobs) {
  // The broker goes away for good at the end: give up on it quickly.
  executor_ = Connect(1000, /*reconnect_timeout=*/absl::Milliseconds(300));
  Future<std::string> queued = executor_->Submit("hang", "");
  EXPECT_TRUE(queued.Cancel());
  EXPECT_EQ(queued.Result(kBound).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_TRUE(queued.Cancel());

  Future<std::string> running = executor_->Submit("run", "");
  // Events arrive in order: once a later job's result is here, so is the
  // RUNNING event of the earlier one.
  ASSERT_TRUE(executor_->Submit("echo", "").Result(kBound).ok());
  EXPECT_TRUE(running.Running());
  EXPECT_FALSE(running.Cancel());
  Future<std::string> done = executor_->Submit("echo", "x");
  ASSERT_TRUE(done.Result(kBound).ok());
  EXPECT_FALSE(done.Cancel());
  executor_->Shutdown(/*wait=*/false, /*cancel_futures=*/false);
  // The running job never ends here: don't wait for it at teardown.
  StopServer();
  EXPECT_EQ(running.Result(kBound).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(ExecutorTest, AttachFollowsAnExistingJob) {
  Future<std::string> f = executor_->Submit("echo", "shared");
  const uint64_t id = f.JobId(kBound).value();
  ASSERT_TRUE(f.Result(kBound).ok());
  std::unique_ptr<Executor> other = Connect();
  EXPECT_EQ(other->Attach(id).Result(kBound).value(), "shared");
  absl::Status missing = other->Attach(424242).Exception(kBound);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorKind(missing), "not_found");
}

TEST_F(ExecutorTest, DoneCallbacksRunOnTheCallbackThread) {
  Future<std::string> f = executor_->Submit("hang", "");
  Mutex mu;
  std::string thread_name;
  bool ran = false;
  f.AddDoneCallback([&](const Future<std::string>& g) {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    EXPECT_TRUE(g.Cancelled());
    MutexLock lock(&mu);
    thread_name = name;
    ran = true;
  });
  ASSERT_TRUE(f.Cancel());
  MutexLock lock(&mu);
  ASSERT_TRUE(mu.AwaitWithDeadline([&] { return ran; }, absl::Now() + kBound))
      << "the done callback did not run";
  EXPECT_EQ(thread_name, "client-callback");  // 15-char kernel limit
}

TEST_F(ExecutorTest,
       GivingUpOnTheBrokerFailsOutstandingFuturesAndLaterSubmits) {
  executor_ = Connect(1000, /*reconnect_timeout=*/absl::Milliseconds(500));
  Future<std::string> f = executor_->Submit("hang", "");
  ASSERT_TRUE(f.JobId(kBound).ok());
  StopServer();
  absl::Status s = f.Exception(kBound);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(),
              HasSubstr(absl::StrCat("the dexec broker at ", address_,
                                     " was unreachable for ")));
  EXPECT_THAT(s.message(), HasSubstr("reconnect_timeout (500ms)"));
  EXPECT_EQ(executor_->Submit("echo", "").Exception(kBound).code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(ExecutorTest, ResendsAnUnansweredBatchWithItsSeqAfterARestart) {
  // The broker takes the batch, then "dies" before answering it.
  broker_.set_answer_submits(false);
  Future<std::string> f = executor_->Submit("echo", "once");
  ASSERT_TRUE(broker_.AwaitSubmits(1));
  broker_.set_answer_submits(true);
  RestartServer();
  EXPECT_EQ(f.Result(kBound).value(), "once");
  const auto keys = broker_.submit_keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[1], keys[0]) << "the resent batch must keep (client_id, seq)";
  EXPECT_EQ(keys[0].first.size(), 32u) << keys[0].first;
  EXPECT_EQ(broker_.last_id(), 1u) << "the resent batch created a second job";
  EXPECT_EQ(broker_.sessions(), 2);
}

TEST_F(ExecutorTest, SeqKeepsIncreasingAcrossStreams) {
  ASSERT_TRUE(executor_->Submit("echo", "a").Result(kBound).ok());
  RestartServer();
  ASSERT_TRUE(executor_->Submit("echo", "b").Result(kBound).ok());
  const auto keys = broker_.submit_keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].first, keys[1].first);
  EXPECT_LT(keys[0].second, keys[1].second);
}

TEST_F(ExecutorTest, AJobThatFinishedDuringTheOutageResolvesAfterReconnecting) {
  Future<std::string> f = executor_->Submit("hang", "");
  const uint64_t id = f.JobId(kBound).value();
  const int port = port_;
  StopServer();
  broker_.Finish(id, "finished while we were away");
  StartServer(port);
  EXPECT_EQ(f.Result(kBound).value(), "finished while we were away");
  const std::vector<uint64_t> watched = broker_.watched();
  EXPECT_NE(std::find(watched.begin(), watched.end(), id), watched.end())
      << "the unresolved job was not watched again";
}

TEST_F(ExecutorTest, SubmitsMadeDuringAnOutageAreSentAfterReconnecting) {
  const int port = port_;
  StopServer();
  Future<std::string> f = executor_->Submit("echo", "later");
  Future<std::string> g = executor_->Attach(424242);
  StartServer(port);
  EXPECT_EQ(f.Result(kBound).value(), "later");
  EXPECT_EQ(g.Exception(kBound).code(), absl::StatusCode::kNotFound);
}

TEST_F(ExecutorTest, ADuplicateTerminalEventResolvesTheFutureOnce) {
  Future<std::string> f = executor_->Submit("hang", "");
  const uint64_t id = f.JobId(kBound).value();
  Mutex mu;
  int calls = 0;
  f.AddDoneCallback([&](const Future<std::string>&) {
    MutexLock lock(&mu);
    ++calls;
  });
  broker_.Finish(id, "first", /*times=*/2);
  EXPECT_EQ(f.Result(kBound).value(), "first");
  // Events and callbacks are in order: once a later job's callback ran,
  // the duplicate event was handled long ago.
  bool later_ran = false;
  executor_->Submit("echo", "later")
      .AddDoneCallback([&](const Future<std::string>&) {
        MutexLock lock(&mu);
        later_ran = true;
      });
  MutexLock lock(&mu);
  ASSERT_TRUE(
      mu.AwaitWithDeadline([&] { return later_ran; }, absl::Now() + kBound));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(f.Result().value(), "first");
}

TEST_F(ExecutorTest, AJobTheRestartedBrokerLostFailsWithNotFound) {
  Future<std::string> f = executor_->Submit("hang", "");
  ASSERT_TRUE(f.JobId(kBound).ok());
  const int port = port_;
  StopServer();
  broker_.Forget();  // an in-memory broker restarted
  StartServer(port);
  absl::Status s = f.Exception(kBound);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorKind(s), "not_found");
  EXPECT_THAT(s.message(), HasSubstr("was lost by the broker at"));
  // The executor still works against the new broker.
  EXPECT_EQ(executor_->Submit("echo", "new").Result(kBound).value(), "new");
}

TEST_F(ExecutorTest, MapWaitsForRoomAndKeepsInputOrder) {
  broker_.set_max_batch_room(10);  // a 64-job chunk never fits whole
  broker_.set_refuse_next(3);      // and the broker starts out full
  std::vector<int64_t> inputs;
  for (int64_t i = 0; i < 300; ++i) inputs.push_back(i);
  MapOptions options;
  options.jobs_per_message = 64;
  options.window = 200;
  options.timeout = kBound;
  int64_t i = 0;
  for (absl::StatusOr<int64_t> v :
       executor_->Map<int64_t>("echo", inputs, options)) {
    ASSERT_TRUE(v.ok()) << "element " << i << ": " << v.status();
    ASSERT_EQ(*v, i);
    ++i;
  }
  EXPECT_EQ(i, 300);
  EXPECT_GT(broker_.refused(), 3);
  EXPECT_EQ(broker_.last_id(), 300u) << "a refused chunk was taken twice";
}

TEST_F(ExecutorTest, ASingleSubmitIsNotRetriedWhenTheBrokerIsFull) {
  broker_.set_refuse_next(1);
  Future<std::string> f = executor_->Submit("echo", "x");
  EXPECT_EQ(f.Exception(kBound).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(ExecutorTest, AbandoningAMapThatWaitsForRoomCancelsItsJobs) {
  broker_.set_max_batch_room(0);  // never any room
  std::vector<std::string> inputs(20, "x");
  MapOptions options;
  options.jobs_per_message = 8;
  options.timeout = absl::Milliseconds(300);
  {
    MapResults<std::string> results = executor_->Map("echo", inputs, options);
    std::optional<absl::StatusOr<std::string>> first = results.Next();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->status().code(), absl::StatusCode::kDeadlineExceeded);
  }
  // Nothing is left waiting: shutting down returns.
  executor_->Shutdown();
  EXPECT_EQ(broker_.last_id(), 0u);
}

TEST_F(ExecutorTest, ShutdownWaitsThenRefusesSubmits) {
  Future<std::string> f = executor_->Submit("echo", "last");
  executor_->Shutdown();
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(f.Result().value(), "last");
  EXPECT_EQ(executor_->Submit("echo", "").Exception(kBound).code(),
            absl::StatusCode::kFailedPrecondition);
  executor_->Shutdown();  // idempotent
}

TEST_F(ExecutorTest, ShutdownCancelsQueuedFuturesWhenAsked) {
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 5; ++i) fs.push_back(executor_->Submit("hang", ""));
  executor_->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
  for (const Future<std::string>& f : fs) EXPECT_TRUE(f.Cancelled());
}

TEST_F(ExecutorTest, DestroyingAfterShutdownWithoutWaitAbandonsPendingFutures) {
  Future<std::string> running = executor_->Submit("run", "");
  Future<std::string> attached =
      executor_->Attach(running.JobId(kBound).value());
  executor_->Shutdown(/*wait=*/false);
  EXPECT_FALSE(running.Done());
  const absl::Time start = absl::Now();
  executor_.reset();  // "run" never finishes: this must not wait for it
  EXPECT_LT(absl::Now() - start, kBound);
  EXPECT_EQ(running.Exception(kBound).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(attached.Exception(kBound).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ExecutorConnectTest, UnreachableBrokerIsUnavailable) {
  ExecutorOptions options;
  options.broker = "127.0.0.1:1";
  options.connect_timeout = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(ex.status().message(), HasSubstr("127.0.0.1:1"));
}

}  // namespace
}  // namespace dexec
