// The client library against a real broker and real worker processes on
// loopback: what a user of Executor sees.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/executor.h"
#include "client/wait.h"
#include "common/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"
#include "zmq.hpp"

namespace dexec {
namespace {

using ::dexec::testing::TestCluster;

constexpr absl::Duration kResultTimeout = absl::Seconds(60);

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok());
    ASSERT_TRUE(cluster_.StartWorker(4).ok());
    ASSERT_TRUE(cluster_.StartWorker(4).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(2).ok());
    absl::StatusOr<std::unique_ptr<Executor>> ex =
        Executor::Connect(cluster_.executor_options());
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
  }

  // Some tests leave jobs queued that no worker offers: cancel them, as
  // Python's shutdown(cancel_futures=True) does, so shutdown does not wait.
  void TearDown() override {
    if (executor_) executor_->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
  }

  v1::Job GetJob(uint64_t id) {
    return ::dexec::testing::GetJob(cluster_.stub(), id);
  }

  TestCluster cluster_;
  std::unique_ptr<Executor> executor_;
};

TEST_F(EndToEndTest, SubmitReturnsTheTaskResult) {
  Future<std::string> f = executor_->Submit("sys.echo", std::string("hello"));
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hello");
  EXPECT_TRUE(f.Done());
  EXPECT_FALSE(f.Cancelled());
  absl::StatusOr<uint64_t> id = f.JobId();
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(GetJob(*id).state(), v1::Job::SUCCEEDED);
}

TEST_F(EndToEndTest, TypedSubmitDecodesTheResult) {
  Future<int64_t> f = executor_->Submit<int64_t>("sys.echo", int64_t{42});
  absl::StatusOr<int64_t> r = f.Result(kResultTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 42);
}

// Submit writes from the calling thread when the session is idle, and
// through client-send otherwise: callers racing each other (and the sender)
// must still take turns on the stream and each get their own result.
TEST_F(EndToEndTest, SequentialSubmitsFromManyThreadsEachGetTheirResult) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 300;
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread && errors[t].empty(); ++i) {
        const std::string payload = absl::StrCat(t, "-", i);
        absl::StatusOr<std::string> r =
            executor_->Submit("sys.echo", payload).Result(kResultTimeout);
        if (!r.ok()) {
          errors[t] = r.status().ToString();
        } else if (*r != payload) {
          errors[t] = absl::StrCat("got ", *r, " for ", payload);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

// The broker answers a submit with its acknowledgement and, when a worker
// takes the job in the same pass, the job's RUNNING event in one response
// (dexec.proto, SessionResponse): one write instead of two per job.
TEST_F(EndToEndTest, AnAcknowledgementCarriesTheFirstEventsOfItsJobs) {
  grpc::ClientContext context;
  auto stream = cluster_.stub().Session(&context);
  v1::SessionRequest request;
  v1::SessionRequest::Submit* submit = request.mutable_submit();
  submit->set_seq(7);
  v1::JobSpec* job = submit->add_jobs();
  job->set_task("sys.sleep");
  job->set_payload("300");
  ASSERT_TRUE(stream->Write(request));
  v1::SessionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_submitted());
  EXPECT_EQ(response.submitted().seq(), 7u);
  ASSERT_EQ(response.submitted().job_ids_size(), 1);
  const uint64_t id = response.submitted().job_ids(0);
  ASSERT_EQ(response.events().events_size(), 1) << response.DebugString();
  EXPECT_EQ(response.events().events(0).job_id(), id);
  EXPECT_EQ(response.events().events(0).state(), v1::Job::RUNNING);
  // The result follows on its own.
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_FALSE(response.has_submitted());
  ASSERT_EQ(response.events().events_size(), 1) << response.DebugString();
  EXPECT_EQ(response.events().events(0).state(), v1::Job::SUCCEEDED);
  stream->WritesDone();
  v1::SessionResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(EndToEndTest, MapReturnsResultsInInputOrderOverTenThousandInputs) {
  std::vector<std::string> inputs;
  for (int i = 0; i < 10000; ++i) inputs.push_back(absl::StrCat("item-", i));
  MapOptions options;
  options.window = 1000;  // fewer in flight than inputs: the window slides
  auto results = executor_->Map("sys.echo", inputs, options);
  size_t i = 0;
  while (auto r = results.Next()) {
    ASSERT_TRUE(r->ok()) << "element " << i << ": " << r->status();
    ASSERT_EQ(**r, inputs[i]) << "out of order at " << i;
    ++i;
  }
  EXPECT_EQ(i, inputs.size());
}

TEST_F(EndToEndTest, AsCompletedYieldsEveryFutureExactlyOnce) {
  std::vector<Future<std::string>> fs;
  for (int ms : {300, 5, 100, 50}) {
    fs.push_back(executor_->Submit("sys.sleep", absl::StrCat(ms)));
  }
  std::vector<uint64_t> seen;
  for (auto f : AsCompleted(fs, kResultTimeout)) {
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE(f->Done());
    seen.push_back(*f->JobId());
  }
  std::vector<uint64_t> all;
  for (auto& f : fs) all.push_back(*f.JobId());
  std::sort(seen.begin(), seen.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(seen, all);
}

TEST_F(EndToEndTest, AsCompletedYieldsAlreadyDoneFuturesFirst) {
  Future<std::string> done = executor_->Submit("sys.echo", std::string("a"));
  ASSERT_TRUE(done.Result(kResultTimeout).ok());
  Future<std::string> pending =
      executor_->Submit("nobody.offers.this", std::string());
  auto it = AsCompleted(std::vector<Future<std::string>>{pending, done},
                        absl::Milliseconds(300));
  auto first = it.Next();
  ASSERT_TRUE(first.has_value() && first->ok());
  EXPECT_EQ(*(*first)->JobId(), *done.JobId());
  auto second = it.Next();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(EndToEndTest, WaitFirstCompletedReturnsWhenOneIsDone) {
  Future<std::string> quick = executor_->Submit("sys.echo", std::string("q"));
  Future<std::string> never =
      executor_->Submit("nobody.offers.this", std::string());
  WaitResult<std::string> w = Wait<std::string>({quick, never}, kResultTimeout,
                                                ReturnWhen::kFirstCompleted);
  ASSERT_EQ(w.done.size(), 1u);
  EXPECT_EQ(*w.done[0].JobId(), *quick.JobId());
  ASSERT_EQ(w.not_done.size(), 1u);
  EXPECT_EQ(*w.not_done[0].JobId(), *never.JobId());
}

TEST_F(EndToEndTest, WaitFirstExceptionReturnsAtTheFirstFailure) {
  Future<std::string> fails = executor_->Submit("sys.fail", std::string("bad"));
  Future<std::string> never =
      executor_->Submit("nobody.offers.this", std::string());
  WaitResult<std::string> w = Wait<std::string>({never, fails}, kResultTimeout,
                                                ReturnWhen::kFirstException);
  ASSERT_EQ(w.done.size(), 1u);
  EXPECT_FALSE(w.done[0].Exception().ok());
  EXPECT_EQ(w.not_done.size(), 1u);
}

TEST_F(EndToEndTest, WaitAllCompletedWaitsForAllOrTheTimeout) {
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 20; ++i)
    fs.push_back(executor_->Submit("sys.sleep", std::string("20")));
  WaitResult<std::string> all =
      Wait(fs, kResultTimeout, ReturnWhen::kAllCompleted);
  EXPECT_EQ(all.done.size(), 20u);
  EXPECT_TRUE(all.not_done.empty());

  Future<std::string> never =
      executor_->Submit("nobody.offers.this", std::string());
  WaitResult<std::string> partial = Wait<std::string>(
      {fs[0], never}, absl::Milliseconds(200), ReturnWhen::kAllCompleted);
  EXPECT_EQ(partial.done.size(), 1u);
  EXPECT_EQ(partial.not_done.size(), 1u);
}

TEST_F(EndToEndTest, CancelStopsAQueuedJobButNotAFinishedOne) {
  Future<std::string> queued =
      executor_->Submit("nobody.offers.this", std::string());
  EXPECT_TRUE(queued.Cancel());
  EXPECT_TRUE(queued.Cancelled());
  EXPECT_EQ(queued.Result(kResultTimeout).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(GetJob(*queued.JobId()).state(), v1::Job::CANCELLED);

  Future<std::string> done = executor_->Submit("sys.echo", std::string("x"));
  ASSERT_TRUE(done.Result(kResultTimeout).ok());
  EXPECT_FALSE(done.Cancel());
  EXPECT_FALSE(done.Cancelled());
}

TEST_F(EndToEndTest, ATaskErrorReachesTheCallerWithItsKindAndMessage) {
  Future<std::string> f =
      executor_->Submit("sys.fail", std::string("the disk is full"));
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "task_error");
  EXPECT_NE(r.status().message().find("the disk is full"), std::string::npos)
      << r.status();
}

TEST_F(EndToEndTest, AJobNoWorkerOffersStaysQueuedAndSaysWhy) {
  Future<std::string> f =
      executor_->Submit("nobody.offers.this", std::string());
  EXPECT_EQ(f.Result(absl::Milliseconds(200)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  v1::Job job = GetJob(*f.JobId());
  EXPECT_EQ(job.state(), v1::Job::QUEUED);
  EXPECT_NE(job.waiting_reason().find("no live worker offers task"),
            std::string::npos);
}

TEST_F(EndToEndTest, DoneCallbacksRunInOrderOnceTheJobFinishes) {
  Future<std::string> f = executor_->Submit("sys.sleep", std::string("50"));
  std::vector<int> order;
  absl::Mutex mu;
  absl::Notification second_ran;
  f.AddDoneCallback([&](const Future<std::string>&) {
    absl::MutexLock l(&mu);
    order.push_back(1);
  });
  f.AddDoneCallback([&](const Future<std::string>& g) {
    {
      absl::MutexLock l(&mu);
      order.push_back(2);
    }
    EXPECT_TRUE(g.Done());
    second_ran.Notify();
  });
  ASSERT_TRUE(second_ran.WaitForNotificationWithTimeout(kResultTimeout));
  // Already done: runs at once, in this thread.
  bool ran_now = false;
  f.AddDoneCallback([&](const Future<std::string>&) { ran_now = true; });
  EXPECT_TRUE(ran_now);
  absl::MutexLock l(&mu);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST_F(EndToEndTest, TheBrokerSurvivesGarbageOnTheWorkerSocket) {
  zmq::context_t ctx;
  zmq::socket_t bad(ctx, zmq::socket_type::dealer);
  bad.set(zmq::sockopt::linger, 0);
  bad.connect(cluster_.worker_endpoint());
  bad.send(zmq::str_buffer("\xff\xfe garbage"), zmq::send_flags::none);
  bad.send(zmq::str_buffer(""), zmq::send_flags::none);
  bad.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  bad.send(zmq::str_buffer("b"), zmq::send_flags::none);
  // A well-formed frame of a future protocol version.
  bad.send(zmq::str_buffer("\x08\x63\x22\x00"), zmq::send_flags::none);
  // The broker still answers and its workers still work.
  Future<std::string> f =
      executor_->Submit("sys.echo", std::string("still here"));
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "still here");
  EXPECT_TRUE(cluster_.WaitForWorkers(2).ok());
}

TEST_F(EndToEndTest, AKilledWorkersJobsRunElsewhere) {
  // Four long-ish jobs, at least some on worker 0, which dies mid-run.
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 8; ++i)
    fs.push_back(executor_->Submit("sys.sleep", std::string("1500")));
  // Wait until every job runs: then worker 0 holds four of them.
  for (auto& f : fs) {
    const absl::Time deadline = absl::Now() + kResultTimeout;
    while (!f.Running() && !f.Done() && absl::Now() < deadline) {
      Wait<std::string>({f}, absl::Milliseconds(10),
                        ReturnWhen::kFirstCompleted);
    }
  }
  cluster_.workers()[0]->Signal(SIGKILL);
  int rerun = 0;
  for (auto& f : fs) {
    absl::StatusOr<std::string> r = f.Result(kResultTimeout);
    ASSERT_TRUE(r.ok()) << r.status();
    if (GetJob(*f.JobId()).attempts() == 2) ++rerun;
  }
  EXPECT_GE(rerun, 1);
}

// The skeleton's own case: ten one-second sleeps on ten threads run at once.
TEST(TenSleeps, RunConcurrentlyOnTenThreads) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(10).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto ex = Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 10; ++i)
    fs.push_back((*ex)->Submit("sys.sleep", std::string("1000")));
  grpc::ClientContext ctx;
  v1::GetJobsRequest req;
  for (auto& f : fs) {
    ASSERT_TRUE(f.Result(kResultTimeout).ok());
    req.add_job_ids(*f.JobId());
  }
  v1::GetJobsResponse resp;
  ASSERT_TRUE(cluster.stub().GetJobs(&ctx, req, &resp).ok());
  absl::Time latest_start = absl::InfinitePast(),
             earliest_end = absl::InfiniteFuture();
  for (const v1::Job& j : resp.jobs()) {
    latest_start = std::max(latest_start, FromProto(j.started_at()));
    earliest_end = std::min(earliest_end, FromProto(j.finished_at()));
    EXPECT_GE(FromProto(j.finished_at()) - FromProto(j.started_at()),
              absl::Milliseconds(990));
  }
  // Every job started before any finished: all ten ran at the same time.
  EXPECT_LT(latest_start, earliest_end);
}

TEST(MapErrors, StopAtTheFirstErrorAndCancelTheQueuedRest) {
  // One thread and no prefetch: jobs behind the running one stay queued.
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(1, {"--prefetch=0"}).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto ex = Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  // sys.sleep rejects "x" as a bad payload; the rest would take 3 s each.
  std::vector<std::string> inputs = {"x"};
  for (int i = 0; i < 10; ++i) inputs.push_back("3000");
  MapOptions options;
  options.window = 4;
  auto results = (*ex)->Map("sys.sleep", inputs, options);
  std::optional<absl::StatusOr<std::string>> first = results.Next();
  ASSERT_TRUE(first.has_value());
  ASSERT_FALSE(first->ok());
  EXPECT_EQ(ErrorKind(first->status()), "bad_payload") << first->status();
  EXPECT_FALSE(results.Next().has_value())
      << "iteration goes on after an error";
  // Of the three jobs behind it in the window, at most one got a thread; the
  // queued ones are cancelled, and no job past the window was submitted.
  grpc::ClientContext ctx;
  v1::ListJobsRequest req;
  v1::ListJobsResponse resp;
  ASSERT_TRUE(cluster.stub().ListJobs(&ctx, req, &resp).ok());
  int cancelled = 0;
  for (const v1::Job& j : resp.jobs())
    cancelled += j.state() == v1::Job::CANCELLED;
  EXPECT_GE(cancelled, 2);
  EXPECT_LE(resp.jobs_size(), 4);
}

TEST(Limits, AnOversizedPayloadGetsAClearErrorAndNothingIsLost) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--max_payload_bytes=1000"}).ok());
  ASSERT_TRUE(cluster.StartWorker(1).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto ex = Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  Future<std::string> big = (*ex)->Submit("sys.echo", std::string(5000, 'x'));
  absl::StatusOr<std::string> r = big.Result(kResultTimeout);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("--max_payload_bytes"), std::string::npos)
      << r.status();
  Future<std::string> ok = (*ex)->Submit("sys.echo", std::string("small"));
  EXPECT_TRUE(ok.Result(kResultTimeout).ok());
}

// docs/DESIGN.md, "Frame sizes": a result many times the broker's 8 MiB
// frame limit goes from the worker in 1 MiB pieces and comes back whole,
// beside small ones finishing at the same time.
TEST(Limits, AResultLongerThanTheFrameLimitArrivesWholeInPieces) {
  TestCluster cluster;
  ASSERT_TRUE(cluster
                  .StartBroker({"--max_payload_bytes=33554432",
                                "--max_result_bytes=100000000"})
                  .ok());
  ASSERT_TRUE(cluster.StartWorker(4).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto ex = Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::string big(20 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>((i * 131) ^ (i >> 20));
  }
  std::vector<Future<std::string>> small;
  Future<std::string> f = (*ex)->Submit("sys.echo", big);
  for (int i = 0; i < 20; ++i) {
    small.push_back((*ex)->Submit("sys.echo", absl::StrCat("small-", i)));
  }
  absl::StatusOr<std::string> r = f.Result(kResultTimeout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), big.size());
  EXPECT_TRUE(*r == big) << "the output came back changed";
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> s = small[i].Result(kResultTimeout);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(*s, absl::StrCat("small-", i));
  }
}

}  // namespace
}  // namespace dexec
