// The broker's decisions, driven with a manual clock and real frames.
#include "broker/broker_core.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/proto_time.h"
#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

class BrokerCoreTest : public ::testing::Test {
 protected:
  BrokerCoreTest() : core_(Options(), kT0) {}

  static BrokerOptions Options() {
    BrokerOptions o;
    o.heartbeat_interval = absl::Seconds(1);
    o.liveness = 3;
    o.max_queued = 1000;
    o.max_payload_bytes = 1024;
    return o;
  }

  void Register(const std::string& id, int threads, int prefetch = 0,
                std::vector<std::string> tasks = {"t"}) {
    wire::Frame f;
    wire::Register* r = f.mutable_register_();
    r->set_name(id);
    r->set_threads(threads);
    r->set_prefetch(prefetch);
    for (const auto& t : tasks) r->add_tasks(t);
    core_.OnWorkerFrame(id, f, now_, &out_);
  }

  std::vector<uint64_t> Submit(int n, const std::string& task = "t",
                               int priority = 0, SessionId session = 1,
                               int max_attempts = 0,
                               absl::Duration timeout = absl::ZeroDuration()) {
    google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
    for (int i = 0; i < n; ++i) {
      v1::JobSpec* s = specs.Add();
      s->set_task(task);
      s->set_payload(absl::StrCat(i));
      s->set_priority(priority);
      s->set_max_attempts(max_attempts);
      if (timeout > absl::ZeroDuration()) ToProto(timeout, s->mutable_timeout());
    }
    absl::StatusOr<std::vector<uint64_t>> ids =
        core_.Submit(specs, session, now_, &out_);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.value_or(std::vector<uint64_t>{});
  }

  // Schedules and returns the tasks dispatched to each worker, clearing
  // the outbox.
  std::vector<std::pair<std::string, wire::Task>> Dispatched() {
    core_.Schedule(now_, &out_);
    std::vector<std::pair<std::string, wire::Task>> tasks;
    for (auto& [id, frame] : out_.to_workers) {
      if (!frame.has_dispatch()) continue;
      for (const wire::Task& t : frame.dispatch().tasks()) tasks.emplace_back(id, t);
    }
    out_.Clear();
    return tasks;
  }

  void Result(const std::string& worker, uint64_t job, uint32_t attempt,
              bool ok, const std::string& output = "out",
              const std::string& kind = "") {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(attempt);
    r->set_ok(ok);
    r->set_output(output);
    r->set_error_kind(kind);
    r->set_error_message(ok ? "" : "boom");
    core_.OnWorkerFrame(worker, f, now_, &out_);
  }

  const Job& JobOf(uint64_t id) { return *core_.jobs().Find(id); }

  // Every event pushed to `session` so far (and clears them).
  std::vector<v1::JobEvent> Events(SessionId session) {
    std::vector<v1::JobEvent> events;
    for (const v1::SessionResponse& r : out_.to_sessions[session]) {
      for (const v1::JobEvent& e : r.events().events()) events.push_back(e);
    }
    out_.to_sessions.erase(session);
    return events;
  }

  absl::Time now_ = kT0;
  BrokerCore core_;
  Outbox out_;
};

TEST_F(BrokerCoreTest, DispatchesOnlyToWorkersOfferingTheTask) {
  Register("w-other", 4, 0, {"other"});
  Register("w-t", 4, 0, {"t"});
  Submit(3);
  auto tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 3u);
  for (auto& [worker, task] : tasks) EXPECT_EQ(worker, "w-t");
}

TEST_F(BrokerCoreTest, NeverSendsMoreThanThreadsPlusPrefetch) {
  Register("w", 2, 1);
  Submit(10);
  EXPECT_EQ(Dispatched().size(), 3u);
  EXPECT_EQ(Dispatched().size(), 0u);
  // One result returns one credit.
  Result("w", 1, 1, true);
  EXPECT_EQ(Dispatched().size(), 1u);
}

TEST_F(BrokerCoreTest, FillsFreeThreadsEverywhereBeforePrefetching) {
  Register("a", 5, 2);
  Register("b", 5, 2);
  Submit(10);
  auto tasks = Dispatched();
  int on_a = 0, on_b = 0;
  for (auto& [w, t] : tasks) (w == "a" ? on_a : on_b)++;
  EXPECT_EQ(on_a, 5);
  EXPECT_EQ(on_b, 5);
}

TEST_F(BrokerCoreTest, RunsHigherPriorityFirst) {
  Register("w", 1);
  Submit(1, "t", 0);
  std::vector<uint64_t> urgent = Submit(1, "t", 9);
  auto tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.job_id(), urgent[0]);
}

TEST_F(BrokerCoreTest, JobGoesQueuedRunningSucceededAndWatcherSeesEachStep) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, /*session=*/7)[0];
  EXPECT_EQ(JobOf(id).state, v1::Job::QUEUED);
  Dispatched();
  EXPECT_EQ(JobOf(id).state, v1::Job::RUNNING);
  Result("w", id, 1, true, "hello");
  EXPECT_EQ(JobOf(id).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(id).result, "hello");
  std::vector<v1::JobEvent> events = Events(7);
  ASSERT_EQ(events.size(), 1u);  // RUNNING went out with the dispatch batch
  EXPECT_EQ(events[0].state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(events[0].result(), "hello");
}

TEST_F(BrokerCoreTest, ATaskErrorFailsTheJobWithItsKindAndMessage) {
  Register("w", 1);
  uint64_t id = Submit(1)[0];
  Dispatched();
  Result("w", id, 1, false, "", "task_error");
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
  EXPECT_EQ(JobOf(id).error_kind, "task_error");
  EXPECT_EQ(JobOf(id).error_message, "boom");
}

TEST_F(BrokerCoreTest, RetriesTaskErrorsOnlyWhenTheSubmitAskedForAttempts) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, 1, /*max_attempts=*/2)[0];
  Dispatched();
  Result("w", id, 1, false, "", "task_error");
  EXPECT_EQ(JobOf(id).state, v1::Job::QUEUED);
  auto again = Dispatched();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].second.attempt(), 2u);
  Result("w", id, 2, false, "", "task_error");
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
}

TEST_F(BrokerCoreTest, AJobNoWorkerOffersStaysQueuedAndSaysWhy) {
  Register("w", 1, 0, {"t"});
  uint64_t id = Submit(1, "nobody.offers.this")[0];
  EXPECT_TRUE(Dispatched().empty());
  v1::GetJobsRequest req;
  req.add_job_ids(id);
  v1::GetJobsResponse resp = core_.GetJobs(req);
  EXPECT_EQ(resp.jobs(0).state(), v1::Job::QUEUED);
  EXPECT_EQ(resp.jobs(0).waiting_reason(),
            "no live worker offers task 'nobody.offers.this'");
}

TEST_F(BrokerCoreTest, CancelsQueuedJobsButNotRunningOnes) {
  Register("w", 1);
  std::vector<uint64_t> ids = Submit(2);
  Dispatched();  // ids[0] runs
  google::protobuf::RepeatedField<uint64_t> both;
  both.Add(ids[0]);
  both.Add(ids[1]);
  v1::CancelResponse resp = core_.Cancel(both, now_, &out_);
  EXPECT_FALSE(resp.cancelled(0));
  EXPECT_EQ(resp.states(0), v1::Job::RUNNING);
  EXPECT_TRUE(resp.cancelled(1));
  EXPECT_EQ(JobOf(ids[1]).state, v1::Job::CANCELLED);
  // A cancelled job is never dispatched.
  Result("w", ids[0], 1, true);
  EXPECT_TRUE(Dispatched().empty());
}

TEST_F(BrokerCoreTest, RequeuesTheJobsOfASilentWorkerAndRunsThemElsewhere) {
  Register("dies", 2);
  std::vector<uint64_t> ids = Submit(2);
  ASSERT_EQ(Dispatched().size(), 2u);
  Register("lives", 2);
  now_ += absl::Milliseconds(3100);
  // "lives" keeps talking; "dies" does not.
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnWorkerFrame("lives", hb, now_, &out_);
  core_.Tick(now_, &out_);
  auto tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 2u);
  for (auto& [w, t] : tasks) {
    EXPECT_EQ(w, "lives");
    EXPECT_EQ(t.attempt(), 2u);
  }
  EXPECT_EQ(JobOf(ids[0]).attempts[0].outcome, "worker_lost");
}

TEST_F(BrokerCoreTest, FailsAJobAsWorkerLostAfterItsAttemptsAreUsed) {
  uint64_t id = Submit(1)[0];
  for (int attempt = 1; attempt <= 3; ++attempt) {
    std::string w = absl::StrCat("w", attempt);
    Register(w, 1);
    ASSERT_EQ(Dispatched().size(), 1u) << "attempt " << attempt;
    now_ += absl::Seconds(4);
    core_.Tick(now_, &out_);
  }
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
  EXPECT_EQ(JobOf(id).error_kind, "worker_lost");
  EXPECT_EQ(JobOf(id).attempts.size(), 3u);
}

TEST_F(BrokerCoreTest, CompletesAJobExactlyOnceWhenALostWorkerAnswersLate) {
  Register("slow", 1);
  uint64_t id = Submit(1, "t", 0, /*session=*/3)[0];
  Dispatched();
  now_ += absl::Seconds(4);
  core_.Tick(now_, &out_);  // "slow" declared lost; job requeued
  Register("fast", 1);
  auto again = Dispatched();
  ASSERT_EQ(again.size(), 1u);
  Result("fast", id, 2, true, "from-fast");
  // "slow" comes back with its late result for attempt 1: dropped.
  Register("slow", 1);
  Result("slow", id, 1, true, "from-slow");
  EXPECT_EQ(JobOf(id).result, "from-fast");
  int terminal = 0;
  for (const v1::JobEvent& e : Events(3)) {
    if (IsTerminal(e.state())) ++terminal;
  }
  EXPECT_EQ(terminal, 1);
}

TEST_F(BrokerCoreTest, ALateResultCompletesAJobNothingElseCompletedYet) {
  Register("slow", 1);
  uint64_t id = Submit(1)[0];
  Dispatched();
  now_ += absl::Seconds(4);
  core_.Tick(now_, &out_);  // requeued, no other worker yet
  Register("slow", 1);      // it reconnects...
  Result("slow", id, 1, true, "late but fine");
  EXPECT_EQ(JobOf(id).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(id).result, "late but fine");
  EXPECT_TRUE(Dispatched().empty());  // and the requeued copy never runs
}

TEST_F(BrokerCoreTest, FailsAJobWhoseWorkerMissesItsTimeout) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, 1, 0, absl::Seconds(5))[0];
  Dispatched();
  // Keep the worker alive while the job overruns.
  for (int i = 0; i < 8; ++i) {
    now_ += absl::Seconds(1);
    wire::Frame hb;
    hb.mutable_heartbeat();
    core_.OnWorkerFrame("w", hb, now_, &out_);
    core_.Tick(now_, &out_);
  }
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
  EXPECT_EQ(JobOf(id).error_kind, "timeout");
  bool abandoned = false;
  for (auto& [w, f] : out_.to_workers) abandoned |= f.has_abandon();
  EXPECT_TRUE(abandoned);
}

TEST_F(BrokerCoreTest, RejectsBadSpecsWithActionableErrors) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  specs.Add()->set_payload(std::string(2000, 'x'));
  auto r = core_.Submit(specs, 0, now_, &out_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  specs.Mutable(1)->set_task("t");
  r = core_.Submit(specs, 0, now_, &out_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("--max_payload_bytes"), std::string::npos);
  EXPECT_EQ(core_.jobs().size(), 0u);  // all or nothing
}

TEST_F(BrokerCoreTest, RefusesSubmitsBeyondMaxQueued) {
  Submit(1000);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  EXPECT_EQ(core_.Submit(specs, 0, now_, &out_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(BrokerCoreTest, AnIdempotencyKeyReturnsTheSameJob) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  v1::JobSpec* s = specs.Add();
  s->set_task("t");
  s->set_idempotency_key("k1");
  auto a = core_.Submit(specs, 0, now_, &out_);
  auto b = core_.Submit(specs, 0, now_, &out_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->at(0), b->at(0));
  EXPECT_EQ(core_.jobs().size(), 1u);
}

TEST_F(BrokerCoreTest, AsksAnUnknownWorkerToRegisterAgain) {
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnWorkerFrame("stranger", hb, now_, &out_);
  ASSERT_EQ(out_.to_workers.size(), 1u);
  EXPECT_TRUE(out_.to_workers[0].second.has_reconnect());
}

TEST_F(BrokerCoreTest, WatchingAFinishedOrUnknownJobAnswersAtOnce) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, /*session=*/0)[0];
  Dispatched();
  Result("w", id, 1, true, "r");
  google::protobuf::RepeatedField<uint64_t> ids;
  ids.Add(id);
  ids.Add(999);
  core_.Watch(9, ids, &out_);
  std::vector<v1::JobEvent> events = Events(9);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(events[0].result(), "r");
  EXPECT_EQ(events[1].error().kind(), "not_found");
}

TEST_F(BrokerCoreTest, DrainingWorkerGetsNoNewJobs) {
  Register("w", 4);
  wire::Frame f;
  f.mutable_worker_state()->set_draining(true);
  core_.OnWorkerFrame("w", f, now_, &out_);
  Submit(2);
  EXPECT_TRUE(Dispatched().empty());
  EXPECT_EQ(core_.ListWorkers().workers(0).state(), v1::WorkerInfo::DRAINING);
}

}  // namespace
}  // namespace dexec::broker
