// The broker's decisions, driven with a manual clock and real frames.
#include "broker/broker_core.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/proto_time.h"
#include "gtest/gtest.h"
#include "protos/wire.h"

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
    // Retries at once unless a test is about backoff.
    o.requeue_backoff = absl::ZeroDuration();
    return o;
  }

  // Each worker authenticates with a key of its own, named after it
  // unless `key` says otherwise.
  void Register(const std::string& id, int threads, int prefetch = 0,
                std::vector<std::string> tasks = {"t"},
                const std::string& key = "") {
    wire::Frame f;
    wire::Register* r = f.mutable_register_();
    r->set_name(id);
    r->set_threads(threads);
    r->set_prefetch(prefetch);
    for (const auto& t : tasks) r->add_tasks(t);
    core_.OnWorkerFrame(id, key.empty() ? "key-" + id : key, f, now_, &out_);
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
      if (timeout > absl::ZeroDuration())
        ToProto(timeout, s->mutable_timeout());
    }
    absl::StatusOr<std::vector<uint64_t>> ids =
        core_.Submit(specs, Caller{}, session, now_, &out_);
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
      for (const wire::Task& t : frame.dispatch().tasks())
        tasks.emplace_back(id, t);
    }
    out_.Clear();
    return tasks;
  }

  void Result(const std::string& worker, uint64_t job, uint32_t attempt,
              bool ok, const std::string& output = "out",
              const std::string& kind = "", const std::string& key = "") {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(attempt);
    r->set_ok(ok);
    r->set_output(output);
    r->set_error_kind(kind);
    r->set_error_message(ok ? "" : "boom");
    core_.OnWorkerFrame(worker, key.empty() ? "key-" + worker : key, f, now_,
                        &out_);
  }

  // A successful result of attempt 1 that ran for `took` from now.
  void ResultTook(const std::string& worker, uint64_t job,
                  absl::Duration took) {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_started_at_us(absl::ToUnixMicros(now_));
    r->set_finished_at_us(absl::ToUnixMicros(now_ + took));
    core_.OnWorkerFrame(worker, "key-" + worker, f, now_, &out_);
  }

  // One piece of a chunked output: `data` at `offset` of `size` bytes.
  // The last piece says ok.
  void Piece(const std::string& worker, uint64_t job, uint32_t attempt,
             uint64_t size, uint64_t offset, const std::string& data) {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(attempt);
    r->set_output(data);
    r->set_output_size(size);
    r->set_output_offset(offset);
    r->set_ok(offset + data.size() == size);
    core_.OnWorkerFrame(worker, "key-" + worker, f, now_, &out_);
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

TEST_F(BrokerCoreTest, WelcomeTellsTheResultAndFrameLimits) {
  // A worker that chunks gets the broker's result limit; the frame limit
  // and the piece size are the protocol's, whatever the options say.
  BrokerOptions o = Options();
  o.max_result_bytes = 200 << 20;
  o.max_payload_bytes = 100 << 20;
  BrokerCore core(o, now_);
  for (bool chunked : {true, false}) {
    wire::Frame reg;
    reg.mutable_register_()->set_name("w");
    reg.mutable_register_()->set_threads(1);
    reg.mutable_register_()->set_chunked_results(chunked);
    out_.Clear();
    core.OnWorkerFrame(chunked ? "chunks" : "older", "k", reg, now_, &out_);
    ASSERT_FALSE(out_.to_workers.empty());
    const wire::Frame& f = out_.to_workers[0].second;
    ASSERT_TRUE(f.has_welcome());
    // An older worker, which sends a whole output in one frame, is held
    // to what one frame takes, so it fails a longer one cleanly.
    EXPECT_EQ(f.welcome().max_result_bytes(),
              chunked ? int64_t{200 << 20}
                      : static_cast<int64_t>(wire::kMaxResultChunkBytes));
    EXPECT_EQ(f.welcome().max_frame_bytes(),
              static_cast<int64_t>(wire::kMaxWorkerFrameBytes));
    EXPECT_EQ(f.welcome().max_chunk_bytes(),
              static_cast<int64_t>(wire::kMaxResultChunkBytes));
  }
}

TEST_F(BrokerCoreTest, AResultOverTheLimitFailsItsJobWithoutBeingKept) {
  BrokerOptions o = Options();
  o.max_result_bytes = 100;
  BrokerCore core(o, now_);
  wire::Frame reg;
  reg.mutable_register_()->set_name("w");
  reg.mutable_register_()->set_threads(2);
  reg.mutable_register_()->add_tasks("t");
  core.OnWorkerFrame("w", "key-w", reg, now_, &out_);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  specs.Add()->set_task("t");
  absl::StatusOr<std::vector<uint64_t>> ids =
      core.Submit(specs, Caller{}, 1, now_, &out_);
  ASSERT_TRUE(ids.ok());
  core.Schedule(now_, &out_);
  wire::Frame f;
  for (int i = 0; i < 2; ++i) {
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id((*ids)[i]);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output(std::string(i == 0 ? 101 : 100, 'x'));
  }
  // And an error message far over its bound, from a careless worker.
  f.mutable_results()->mutable_results(1)->set_ok(false);
  f.mutable_results()->mutable_results(1)->set_error_message(
      std::string(1 << 20, 'e'));
  core.OnWorkerFrame("w", "key-w", f, now_, &out_);
  const Job& big = *core.jobs().Find((*ids)[0]);
  EXPECT_EQ(big.state, v1::Job::FAILED);
  EXPECT_EQ(big.info().error_kind, "result_too_large");
  EXPECT_EQ(big.info().result, "");
  EXPECT_NE(big.info().error_message.find("--max_result_bytes"),
            std::string::npos);
  const Job& small = *core.jobs().Find((*ids)[1]);
  EXPECT_EQ(small.state, v1::Job::FAILED);
  EXPECT_EQ(small.info().result.size(), 100u) << "a failure's output is kept";
  EXPECT_EQ(small.info().error_message.size(), wire::kMaxErrorMessageBytes);
}

// A session gets about its window of event bytes, then waits for its
// stream to be written out; what is due meanwhile is owed by id and sent
// ---- Chunked outputs (docs/DESIGN.md, "Frame sizes") ----

TEST_F(BrokerCoreTest, AnOutputInPiecesIsReassembledAndFreesItsCreditAtTheEnd) {
  Register("w", 1);
  std::vector<uint64_t> ids = Submit(2);
  ASSERT_EQ(Dispatched().size(), 1u);
  Piece("w", ids[0], 1, 10, 0, "abcd");
  // Heartbeats may come between pieces.
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnWorkerFrame("w", "key-w", hb, now_, &out_);
  Piece("w", ids[0], 1, 10, 4, "efg");
  EXPECT_EQ(core_.partial_result_bytes(), 7u);
  EXPECT_EQ(JobOf(ids[0]).state, v1::Job::RUNNING);
  EXPECT_TRUE(Dispatched().empty()) << "credit came back before the last piece";
  Piece("w", ids[0], 1, 10, 7, "hij");
  EXPECT_EQ(JobOf(ids[0]).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(ids[0]).info().result, "abcdefghij");
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  EXPECT_EQ(core_.bad_result_pieces(), 0u);
  ASSERT_EQ(Dispatched().size(), 1u) << "the credit came back";
  // Pieces and whole results share frames: a whole one, then all of one
  // output, then another whole one.
  Register("v", 3);
  std::vector<uint64_t> more = Submit(3);
  ASSERT_EQ(Dispatched().size(), 3u);
  wire::Frame f;
  auto add = [&f](uint64_t job, std::string out, uint64_t size,
                  uint64_t offset) {
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output(std::move(out));
    r->set_output_size(size);
    r->set_output_offset(offset);
  };
  add(more[0], "one", 0, 0);
  add(more[1], "tw", 3, 0);
  add(more[1], "o", 3, 2);
  add(more[2], "three", 0, 0);
  core_.OnWorkerFrame("v", "key-v", f, now_, &out_);
  EXPECT_EQ(JobOf(more[0]).info().result, "one");
  EXPECT_EQ(JobOf(more[1]).info().result, "two");
  EXPECT_EQ(JobOf(more[2]).info().result, "three");
  EXPECT_EQ(core_.bad_result_pieces(), 0u);
}

// A worker breaking the piece rules loses the attempt (run again, as for
// a lost worker) and nothing else; what it had sent is freed.
TEST_F(BrokerCoreTest, ABrokenPieceSequenceFailsItsAttemptAndFreesThePartial) {
  Register("w", 4);
  std::vector<uint64_t> ids = Submit(4);
  ASSERT_EQ(Dispatched().size(), 4u);
  // A gap.
  Piece("w", ids[0], 1, 10, 0, "abcd");
  Piece("w", ids[0], 1, 10, 6, "ghij");
  EXPECT_EQ(core_.bad_result_pieces(), 1u);
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  EXPECT_EQ(JobOf(ids[0]).state, v1::Job::QUEUED);
  EXPECT_EQ(JobOf(ids[0]).info().attempts[0].outcome, "bad_result");
  EXPECT_EQ(core_.Metrics(now_).requeues[0], 1u) << "counted as worker_lost";
  // Another job's piece in the middle: the first is dropped, the second
  // starts afresh and completes.
  Piece("w", ids[1], 1, 10, 0, "abcd");
  Piece("w", ids[2], 1, 2, 0, "xy");
  EXPECT_EQ(core_.bad_result_pieces(), 2u);
  EXPECT_EQ(JobOf(ids[1]).state, v1::Job::QUEUED);
  EXPECT_EQ(JobOf(ids[2]).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(ids[2]).info().result, "xy");
  // A whole result in the middle: likewise.
  Piece("w", ids[3], 1, 10, 0, "abcd");
  Result("w", ids[2], 1, true, "late copy");
  EXPECT_EQ(core_.bad_result_pieces(), 3u);
  EXPECT_EQ(JobOf(ids[3]).state, v1::Job::QUEUED);
  EXPECT_EQ(JobOf(ids[2]).info().result, "xy") << "a job completes once";
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  // A piece without its start holds nothing.
  Piece("w", ids[0], 1, 10, 4, "efgh");
  EXPECT_EQ(core_.bad_result_pieces(), 4u);
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  // The failed attempts run again, and their results count.
  std::vector<std::pair<std::string, wire::Task>> again = Dispatched();
  ASSERT_EQ(again.size(), 3u);
  for (auto& [w, t] : again) {
    EXPECT_EQ(t.attempt(), 2u);
    Piece("w", t.job_id(), 2, 4, 0, "ab");
    Piece("w", t.job_id(), 2, 4, 2, "cd");
    EXPECT_EQ(JobOf(t.job_id()).state, v1::Job::SUCCEEDED);
    EXPECT_EQ(JobOf(t.job_id()).info().result, "abcd");
  }
  EXPECT_EQ(core_.bad_result_pieces(), 4u);
  EXPECT_EQ(core_.GetStats(now_).bad_result_pieces(), 4u);
}

TEST_F(BrokerCoreTest, AnOutputOverTheLimitInPiecesKeepsNothingAndFails) {
  BrokerOptions o = Options();
  o.max_result_bytes = 100;
  BrokerCore core(o, now_);
  wire::Frame reg;
  reg.mutable_register_()->set_name("w");
  reg.mutable_register_()->set_threads(1);
  reg.mutable_register_()->add_tasks("t");
  core.OnWorkerFrame("w", "key-w", reg, now_, &out_);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  absl::StatusOr<std::vector<uint64_t>> ids =
      core.Submit(specs, Caller{}, 1, now_, &out_);
  ASSERT_TRUE(ids.ok());
  core.Schedule(now_, &out_);
  for (int i = 0; i < 3; ++i) {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id((*ids)[0]);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output(std::string(100, 'x'));
    r->set_output_size(300);
    r->set_output_offset(100 * i);
    core.OnWorkerFrame("w", "key-w", f, now_, &out_);
    EXPECT_EQ(core.partial_result_bytes(), 0u);
  }
  const Job& job = *core.jobs().Find((*ids)[0]);
  EXPECT_EQ(job.state, v1::Job::FAILED);
  EXPECT_EQ(job.info().error_kind, "result_too_large");
  EXPECT_EQ(job.info().result, "");
  EXPECT_NE(job.info().error_message.find("300 bytes"), std::string::npos)
      << job.info().error_message;
  EXPECT_EQ(core.bad_result_pieces(), 0u);
}

TEST_F(BrokerCoreTest, APartialResultIsFreedWhenItsWorkerIsLostOrComesBack) {
  Register("w", 1);
  Register("v", 1);
  std::vector<uint64_t> ids = Submit(2);
  ASSERT_EQ(Dispatched().size(), 2u);
  Piece("w", ids[0], 1, 10, 0, "abcd");
  Piece("v", ids[1], 1, 10, 0, "abc");
  EXPECT_EQ(core_.partial_result_bytes(), 7u);
  // "v" registers again (a new broker session for it): its partial goes.
  Register("v", 1);
  EXPECT_EQ(core_.partial_result_bytes(), 4u);
  // "w" falls silent: lost, and its partial with it.
  now_ += absl::Milliseconds(3100);
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnWorkerFrame("v", "key-v", hb, now_, &out_);
  core_.Tick(now_, &out_);
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  EXPECT_EQ(JobOf(ids[0]).info().attempts[0].outcome, "worker_lost");
  // Its later pieces come from an identity the broker no longer knows:
  // dropped and counted (it resends the result after registering).
  Piece("w", ids[0], 1, 10, 4, "efghij");
  EXPECT_EQ(core_.partial_result_bytes(), 0u);
  EXPECT_EQ(core_.bad_result_pieces(), 1u);
  EXPECT_NE(JobOf(ids[0]).state, v1::Job::SUCCEEDED);
}

// on the drain report, a close queued after it.
TEST_F(BrokerCoreTest, ASessionsEventsWaitForItsStreamBeyondTheWindow) {
  BrokerOptions o = Options();
  o.session_window_bytes = 1000;
  BrokerCore core(o, now_);
  wire::Frame reg;
  reg.mutable_register_()->set_name("w");
  reg.mutable_register_()->set_threads(16);
  reg.mutable_register_()->add_tasks("t");
  core.OnWorkerFrame("w", "key-w", reg, now_, &out_);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 10; ++i) specs.Add()->set_task("t");
  // Submitted by session 1, which then goes away.
  absl::StatusOr<std::vector<uint64_t>> ids =
      core.Submit(specs, Caller{}, 1, now_, &out_);
  ASSERT_TRUE(ids.ok());
  core.CloseSession(1);
  core.Schedule(now_, &out_);
  wire::Frame f;
  for (uint64_t id : *ids) {
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(id);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output(std::string(400, 'r'));
  }
  core.OnWorkerFrame("w", "key-w", f, now_, &out_);
  out_.Clear();

  // Session 2 watches all ten (and an unknown id) at once.
  google::protobuf::RepeatedField<uint64_t> watch(ids->begin(), ids->end());
  watch.Add(999);
  ASSERT_TRUE(core.Watch(2, Caller{}, watch, &out_).ok());
  std::vector<uint64_t> got;
  auto take = [&] {
    for (const v1::SessionResponse& r : out_.to_sessions[2]) {
      for (const v1::JobEvent& e : r.events().events()) {
        got.push_back(e.job_id());
      }
    }
    out_.to_sessions.clear();
  };
  take();
  EXPECT_EQ(got.size(), 3u) << "3 x ~410 bytes reach the 1000-byte window";
  EXPECT_EQ(out_.drain_reports, std::vector<SessionId>{2});
  EXPECT_EQ(core.TEST_deferred_events(2), 8u);
  // The client half-closes: its close waits for what is owed.
  bool closed = false;
  core.AfterOwed(
      2, [&] { closed = true; }, &out_);
  EXPECT_TRUE(out_.replies.empty());
  for (int round = 0; round < 3; ++round) {
    out_.drain_reports.clear();
    core.OnSessionDrained(2, &out_);
    take();
  }
  ASSERT_EQ(got.size(), 11u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], (*ids)[i]) << "in order";
  EXPECT_EQ(got[10], 999u);
  EXPECT_EQ(core.TEST_deferred_events(2), 0u);
  ASSERT_EQ(out_.replies.size(), 1u) << "the close, after the last event";
  out_.replies[0]();
  EXPECT_TRUE(closed);
}

TEST_F(BrokerCoreTest, CoroutineTasksGoUpToConcurrencyBesideTheThreads) {
  // 1 thread, no prefetch; "co" holds no thread, up to 50 at once.
  wire::Frame f;
  wire::Register* r = f.mutable_register_();
  r->set_name("w");
  r->set_threads(1);
  r->add_tasks("t");
  r->add_tasks("co");
  r->add_async_tasks("co");
  r->set_concurrency(50);
  core_.OnWorkerFrame("w", "key-w", f, now_, &out_);
  out_.Clear();
  std::vector<uint64_t> co = Submit(60, "co");
  Submit(3, "t");
  std::vector<std::pair<std::string, wire::Task>> tasks = Dispatched();
  int n_co = 0, n_t = 0;
  for (auto& [worker, task] : tasks) (task.name() == "co" ? n_co : n_t)++;
  EXPECT_EQ(n_co, 50) << "up to its concurrency";
  EXPECT_EQ(n_t, 1) << "coroutine tasks take none of its threads";
  // Each coroutine result returns one slot.
  Result("w", co[0], 1, true);
  tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.name(), "co");
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
  EXPECT_EQ(JobOf(id).info().result, "hello");
  std::vector<v1::JobEvent> events = Events(7);
  ASSERT_EQ(events.size(), 1u);  // RUNNING went out with the dispatch batch
  EXPECT_EQ(events[0].state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(events[0].result(), "hello");
}

// Issue 10: Job.payload_size read 0 once the job had finished.
TEST_F(BrokerCoreTest, AFinishedJobKeepsItsPayloadSize) {
  Register("w", 1);
  const uint64_t id = Submit(1)[0];  // payload "0"
  ASSERT_EQ(Dispatched().size(), 1u);
  Result("w", id, 1, true);
  v1::GetJobsRequest req;
  req.add_job_ids(id);
  v1::GetJobsResponse resp = core_.GetJobs(Caller{}, req);
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(resp.jobs(0).payload_size(), 1u);
  EXPECT_TRUE(JobOf(id).payload.empty());
}

TEST_F(BrokerCoreTest, ATaskErrorFailsTheJobWithItsKindAndMessage) {
  Register("w", 1);
  uint64_t id = Submit(1)[0];
  Dispatched();
  Result("w", id, 1, false, "", "task_error");
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
  EXPECT_EQ(JobOf(id).info().error_kind, "task_error");
  EXPECT_EQ(JobOf(id).info().error_message, "boom");
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
  v1::GetJobsResponse resp = core_.GetJobs(Caller{}, req);
  EXPECT_EQ(resp.jobs(0).state(), v1::Job::QUEUED);
  EXPECT_EQ(resp.jobs(0).waiting_reason(),
            "no live worker offers task 'nobody.offers.this'");
}

TEST_F(BrokerCoreTest, CancelsQueuedAndRunningJobsAndTellsTheWorker) {
  Register("w", 1);
  std::vector<uint64_t> ids = Submit(3);
  Dispatched();                  // ids[0] runs
  Result("w", ids[0], 1, true);  // ... and finishes
  Dispatched();                  // ids[1] runs
  google::protobuf::RepeatedField<uint64_t> all(ids.begin(), ids.end());
  v1::CancelResponse resp = core_.Cancel(Caller{}, all, now_, &out_);
  // A finished job cannot be cancelled.
  EXPECT_FALSE(resp.cancelled(0));
  EXPECT_EQ(resp.states(0), v1::Job::SUCCEEDED);
  // The running one is cancelled and its worker told to abandon it.
  EXPECT_TRUE(resp.cancelled(1));
  EXPECT_EQ(JobOf(ids[1]).state, v1::Job::CANCELLED);
  EXPECT_EQ(JobOf(ids[1]).info().attempts[0].outcome, "cancelled");
  bool abandoned = false;
  for (auto& [w, frame] : out_.to_workers) {
    if (!frame.has_abandon()) continue;
    EXPECT_EQ(w, "w");
    EXPECT_EQ(frame.abandon().tasks(0).job_id(), ids[1]);
    EXPECT_EQ(frame.abandon().tasks(0).attempt(), 1u);
    abandoned = true;
  }
  EXPECT_TRUE(abandoned);
  EXPECT_TRUE(resp.cancelled(2));
  EXPECT_EQ(JobOf(ids[2]).state, v1::Job::CANCELLED);
  // The worker's thread is free again, and a late result changes nothing.
  Result("w", ids[1], 1, true, "too late");
  EXPECT_EQ(JobOf(ids[1]).state, v1::Job::CANCELLED);
  EXPECT_TRUE(Dispatched().empty());  // a cancelled job is never dispatched
  uint64_t next = Submit(1)[0];
  auto tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.job_id(), next);
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
  core_.OnWorkerFrame("lives", "", hb, now_, &out_);
  core_.Tick(now_, &out_);
  auto tasks = Dispatched();
  ASSERT_EQ(tasks.size(), 2u);
  for (auto& [w, t] : tasks) {
    EXPECT_EQ(w, "lives");
    EXPECT_EQ(t.attempt(), 2u);
  }
  EXPECT_EQ(JobOf(ids[0]).info().attempts[0].outcome, "worker_lost");
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
  EXPECT_EQ(JobOf(id).info().error_kind, "worker_lost");
  EXPECT_EQ(JobOf(id).info().attempts.size(), 3u);
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
  EXPECT_EQ(JobOf(id).info().result, "from-fast");
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
  EXPECT_EQ(JobOf(id).info().result, "late but fine");
  EXPECT_TRUE(Dispatched().empty());  // and the requeued copy never runs
}

TEST_F(BrokerCoreTest,
       AJobWhoseWorkerMissesItsTimeoutUsesItsNextAttemptsThenFails) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, 1, 0, absl::Seconds(5))[0];
  bool abandoned = false;
  // Keep the worker alive (it heartbeats, never answers) while the job
  // overruns, attempt after attempt.
  for (int i = 0; i < 30; ++i) {
    core_.Schedule(now_, &out_);
    for (auto& [w, f] : out_.to_workers) abandoned |= f.has_abandon();
    out_.Clear();
    now_ += absl::Seconds(1);
    wire::Frame hb;
    hb.mutable_heartbeat();
    core_.OnWorkerFrame("w", "key-w", hb, now_, &out_);
    core_.Tick(now_, &out_);
  }
  EXPECT_TRUE(abandoned);
  EXPECT_EQ(JobOf(id).state, v1::Job::FAILED);
  EXPECT_EQ(JobOf(id).info().error_kind, "timeout");
  ASSERT_EQ(JobOf(id).info().attempts.size(), 3u);
  for (const AttemptRecord& a : JobOf(id).info().attempts) {
    EXPECT_EQ(a.outcome, "timeout");
  }
}

TEST_F(BrokerCoreTest, AJobThatTimedOutAtAWorkerGoesToAnotherOne) {
  Register("hole", 1);
  uint64_t id = Submit(1, "t", 0, 1, 0, absl::Seconds(1))[0];
  ASSERT_EQ(Dispatched().at(0).first, "hole");
  Register("good", 1);
  for (int i = 0; i < 7; ++i) {  // past deadline + grace, both alive
    now_ += absl::Milliseconds(500);
    for (const char* w : {"hole", "good"}) {
      wire::Frame hb;
      hb.mutable_heartbeat();
      core_.OnWorkerFrame(w, absl::StrCat("key-", w), hb, now_, &out_);
    }
    core_.Tick(now_, &out_);
  }
  out_.Clear();
  ASSERT_EQ(JobOf(id).state, v1::Job::QUEUED);
  // The hole has a free thread again (its attempt was abandoned) and comes
  // first in registration order; the job goes to the other worker anyway.
  std::vector<std::pair<std::string, wire::Task>> d = Dispatched();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].first, "good");
  EXPECT_EQ(d[0].second.attempt(), 2u);
}

TEST_F(BrokerCoreTest, AResultFromAKeyTheAttemptWasNotDispatchedToIsDropped) {
  Register("w", 1);
  Register("rogue", 1, 0, {"other"});
  uint64_t id = Submit(1)[0];
  ASSERT_EQ(Dispatched().at(0).first, "w");
  // Registered or not, right attempt number or not: not its attempt.
  Result("rogue", id, 1, true, "forged");
  Result("stranger", id, 1, true, "forged", "", "key-rogue");
  Result("w", id, 1, true, "forged", "", "key-rogue");
  EXPECT_EQ(JobOf(id).state, v1::Job::RUNNING);
  EXPECT_EQ(core_.forged_results(), 3u);
  EXPECT_EQ(core_.GetStats(now_).forged_results(), 3u);
  Result("w", id, 1, true, "real");
  EXPECT_EQ(JobOf(id).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(id).info().result, "real");
}

TEST_F(BrokerCoreTest, DispatchFramesStayWithinAByteBudget) {
  BrokerOptions o = Options();
  o.max_payload_bytes = 8 << 20;
  BrokerCore core(o, now_);
  wire::Frame f;
  f.mutable_register_()->set_name("w");
  f.mutable_register_()->set_threads(8);
  f.mutable_register_()->add_tasks("t");
  Outbox out;
  core.OnWorkerFrame("w", "k", f, now_, &out);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 3; ++i) {
    v1::JobSpec* s = specs.Add();
    s->set_task("t");
    s->set_payload(std::string(3 << 20, 'x'));
  }
  specs.Add()->set_task("t");  // a small one joins the last frame
  ASSERT_TRUE(core.Submit(specs, Caller{}, 0, now_, &out).ok());
  out.Clear();
  core.Schedule(now_, &out);
  int frames = 0, tasks = 0;
  for (const auto& [id, frame] : out.to_workers) {
    if (!frame.has_dispatch()) continue;
    ++frames;
    tasks += frame.dispatch().tasks_size();
    EXPECT_LT(frame.ByteSizeLong(), (4u << 20) + (3u << 20)) << frames;
  }
  EXPECT_EQ(tasks, 4);
  EXPECT_EQ(frames, 3);
}

TEST_F(BrokerCoreTest, AWorkerGetsNoMoreCreditThanTheCap) {
  BrokerOptions o = Options();
  o.max_worker_credit = 10;
  BrokerCore core(o, now_);
  wire::Frame f;
  f.mutable_register_()->set_name("greedy");
  f.mutable_register_()->set_threads(1000000);
  f.mutable_register_()->set_prefetch(1000000);
  f.mutable_register_()->add_tasks("t");
  Outbox out;
  core.OnWorkerFrame("greedy", "k", f, now_, &out);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 100; ++i) specs.Add()->set_task("t");
  ASSERT_TRUE(core.Submit(specs, Caller{}, 0, now_, &out).ok());
  core.Schedule(now_, &out);
  EXPECT_EQ(core.jobs().count(v1::Job::RUNNING), 10u);
  EXPECT_EQ(core.ListWorkers().workers(0).threads(), 10);
}

TEST_F(BrokerCoreTest, ASubmitCallerSeesOnlyItsOwnJobs) {
  const Caller alice{"alice", Caller::kSubmit};
  const Caller bob{"bob", Caller::kSubmit};
  const Caller reader{"carol", Caller::kRead};
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  specs.Mutable(0)->set_idempotency_key("k");
  const uint64_t hers = core_.Submit(specs, alice, 0, now_, &out_).value()[0];
  const uint64_t his = core_.Submit(specs, bob, 0, now_, &out_).value()[0];
  EXPECT_NE(hers, his);  // keys are scoped to their owner
  EXPECT_EQ(core_.Submit(specs, alice, 0, now_, &out_).value()[0], hers);
  Register("w", 1);
  Dispatched();
  Result("w", hers, 1, true, "hers");

  v1::GetJobsRequest get;
  get.add_job_ids(hers);
  get.set_include_result(true);
  EXPECT_EQ(core_.GetJobs(bob, get).jobs(0).error().kind(), "not_found");
  EXPECT_EQ(core_.GetJobs(alice, get).jobs(0).result(), "hers");
  EXPECT_EQ(core_.GetJobs(alice, get).jobs(0).owner(), "alice");
  EXPECT_TRUE(core_.GetJobs(reader, get).jobs(0).result().empty());
  EXPECT_EQ(core_.GetJobs(reader, get).jobs(0).state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(core_.GetJobs(Caller{}, get).jobs(0).result(), "hers");
  EXPECT_EQ(core_.ListJobs(bob, v1::ListJobsRequest()).jobs_size(), 1);
  EXPECT_EQ(core_.ListJobs(reader, v1::ListJobsRequest()).jobs_size(), 2);
  google::protobuf::RepeatedField<uint64_t> ids;
  ids.Add(his);
  EXPECT_FALSE(core_.Cancel(alice, ids, now_, &out_).cancelled(0));
  EXPECT_EQ(JobOf(his).state, v1::Job::QUEUED);
  // A batch key replayed by another caller is another batch.
  BatchKey batch{"client", 1};
  const std::vector<uint64_t> first =
      core_.Submit(specs, alice, 0, now_, &out_, &batch).value();
  specs.Mutable(0)->clear_idempotency_key();
  EXPECT_NE(core_.Submit(specs, bob, 5, now_, &out_, &batch).value(), first);
  google::protobuf::RepeatedField<uint64_t> watch;
  watch.Add(hers);
  core_.Watch(6, bob, watch, &out_);
  std::vector<v1::JobEvent> events = Events(6);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error().kind(), "not_found");
  EXPECT_TRUE(events[0].result().empty());
}

TEST_F(BrokerCoreTest, RejectsBadSpecsWithActionableErrors) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  specs.Add()->set_payload(std::string(2000, 'x'));
  auto r = core_.Submit(specs, Caller{}, 0, now_, &out_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  specs.Mutable(1)->set_task("t");
  r = core_.Submit(specs, Caller{}, 0, now_, &out_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("--max_payload_bytes"),
            std::string::npos);
  EXPECT_EQ(core_.jobs().size(), 0u);  // all or nothing
}

TEST_F(BrokerCoreTest, RefusesSubmitsBeyondMaxQueued) {
  Submit(1000);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  EXPECT_EQ(core_.Submit(specs, Caller{}, 0, now_, &out_).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(BrokerCoreTest, AnIdempotencyKeyReturnsTheSameJob) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  v1::JobSpec* s = specs.Add();
  s->set_task("t");
  s->set_idempotency_key("k1");
  auto a = core_.Submit(specs, Caller{}, 0, now_, &out_);
  auto b = core_.Submit(specs, Caller{}, 0, now_, &out_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->at(0), b->at(0));
  EXPECT_EQ(core_.jobs().size(), 1u);
}

TEST_F(BrokerCoreTest, AsksAnUnknownWorkerToRegisterAgain) {
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnWorkerFrame("stranger", "", hb, now_, &out_);
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
  ASSERT_TRUE(core_.Watch(9, Caller{}, ids, &out_).ok());
  std::vector<v1::JobEvent> events = Events(9);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(events[0].result(), "r");
  EXPECT_EQ(events[1].error().kind(), "not_found");
}

// Issue 10: one Watch naming a job many times copied its result each time.
TEST_F(BrokerCoreTest, AWatchAnswersARepeatedIdOnce) {
  Register("w", 1);
  uint64_t id = Submit(1, "t", 0, /*session=*/0)[0];
  Dispatched();
  Result("w", id, 1, true, std::string(1000, 'r'));
  google::protobuf::RepeatedField<uint64_t> ids;
  for (int i = 0; i < 1000; ++i) ids.Add(id);
  ASSERT_TRUE(core_.Watch(9, Caller{}, ids, &out_).ok());
  EXPECT_EQ(Events(9).size(), 1u);
}

TEST_F(BrokerCoreTest, RefusesAWatchOverTheIdAndSessionLimits) {
  BrokerOptions o = Options();
  o.max_watch_ids = 10;
  o.max_watched_per_session = 15;
  BrokerCore core(o, kT0);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 30; ++i) specs.Add()->set_task("t");
  std::vector<uint64_t> ids =
      core.Submit(specs, Caller{}, 0, kT0, &out_).value();
  google::protobuf::RepeatedField<uint64_t> eleven(ids.begin(),
                                                   ids.begin() + 11);
  absl::Status s = core.Watch(9, Caller{}, eleven, &out_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--max_watch_ids"), std::string::npos) << s;
  google::protobuf::RepeatedField<uint64_t> first(ids.begin(),
                                                  ids.begin() + 10);
  ASSERT_TRUE(core.Watch(9, Caller{}, first, &out_).ok());
  // The same ten again add nothing.
  ASSERT_TRUE(core.Watch(9, Caller{}, first, &out_).ok());
  google::protobuf::RepeatedField<uint64_t> next(ids.begin() + 10,
                                                 ids.begin() + 20);
  s = core.Watch(9, Caller{}, next, &out_);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("--max_watched_per_session"), std::string::npos)
      << s;
  // Unknown ids cost nothing to hold: they are answered at once.
  google::protobuf::RepeatedField<uint64_t> unknown;
  for (uint64_t i = 1000; i < 1010; ++i) unknown.Add(i);
  EXPECT_TRUE(core.Watch(9, Caller{}, unknown, &out_).ok());
  // Jobs that finish free the session's room; so does closing it.
  google::protobuf::RepeatedField<uint64_t> cancel(ids.begin(),
                                                   ids.begin() + 5);
  core.Cancel(Caller{}, cancel, kT0, &out_);
  EXPECT_TRUE(core.Watch(9, Caller{}, next, &out_).ok());  // 5 + 10
  google::protobuf::RepeatedField<uint64_t> one(ids.begin() + 20,
                                                ids.begin() + 21);
  EXPECT_EQ(core.Watch(9, Caller{}, one, &out_).code(),
            absl::StatusCode::kResourceExhausted);
  core.CloseSession(9);
  EXPECT_TRUE(core.Watch(9, Caller{}, one, &out_).ok());
}

TEST_F(BrokerCoreTest, GetJobsAndListJobsStopAtTheResponseBudget) {
  BrokerOptions o = Options();
  o.max_response_bytes = 10'000;
  BrokerCore core(o, kT0);
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 100; ++i) specs.Add()->set_task("t");
  std::vector<uint64_t> ids =
      core.Submit(specs, Caller{}, 0, kT0, &out_).value();
  wire::Frame reg;
  reg.mutable_register_()->set_name("w");
  reg.mutable_register_()->set_threads(100);
  reg.mutable_register_()->add_tasks("t");
  core.OnWorkerFrame("w", "", reg, kT0, &out_);
  core.Schedule(kT0, &out_);
  wire::Frame res;
  for (uint64_t id : ids) {
    wire::TaskResult* r = res.mutable_results()->add_results();
    r->set_job_id(id);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output(std::string(3000, 'x'));
  }
  core.OnWorkerFrame("w", "", res, kT0, &out_);
  v1::GetJobsRequest req;
  req.mutable_job_ids()->Add(ids.begin(), ids.end());
  req.set_include_result(true);
  v1::GetJobsResponse resp = core.GetJobs(Caller{}, req);
  EXPECT_TRUE(resp.truncated());
  EXPECT_EQ(resp.jobs_size(), 4);  // 3 results fit 10 kB; the 4th passes it
  EXPECT_EQ(resp.jobs(0).id(), ids[0]);
  // Asked again from there, the next ones come.
  req.mutable_job_ids()->erase(req.mutable_job_ids()->begin(),
                               req.mutable_job_ids()->begin() + 4);
  EXPECT_EQ(core.GetJobs(Caller{}, req).jobs(0).id(), ids[4]);
  // Without results every job fits; ListJobs pages with before_id.
  req.set_include_result(false);
  EXPECT_FALSE(core.GetJobs(Caller{}, req).truncated());
  v1::ListJobsRequest list;
  list.set_limit(1000);
  BrokerOptions small = o;
  small.max_response_bytes = 2'000;
  BrokerCore core3(small, kT0);
  core3.Submit(specs, Caller{}, 0, kT0, &out_).value();
  std::vector<uint64_t> listed;
  for (int page = 0; page < 100; ++page) {
    v1::ListJobsResponse l = core3.ListJobs(Caller{}, list);
    for (const v1::Job& j : l.jobs()) listed.push_back(j.id());
    if (!l.truncated()) break;
    ASSERT_GT(l.jobs_size(), 0);
    list.set_before_id(listed.back());
  }
  ASSERT_EQ(listed.size(), 100u);
  EXPECT_EQ(listed.front(), 100u);
  EXPECT_EQ(listed.back(), 1u);
}

// Issue 10: every distinct task name stayed interned for the process.
TEST_F(BrokerCoreTest, ATaskNameIsFreedWhenNoJobAndNoWorkerNamesIt) {
  BrokerOptions o = Options();
  o.retention = absl::Seconds(1);
  // /metrics keeps the series (and so the names) of the first 10 tasks.
  o.max_task_series = 10;
  BrokerCore core(o, kT0);
  const size_t before = TaskName::InternedCount();
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 100; ++i)
    specs.Add()->set_task(absl::StrCat("fresh-", i));
  std::vector<uint64_t> ids =
      core.Submit(specs, Caller{}, 0, kT0, &out_).value();
  wire::Frame reg;
  reg.mutable_register_()->set_name("w");
  reg.mutable_register_()->set_threads(1);
  reg.mutable_register_()->add_tasks("fresh-0");
  core.OnWorkerFrame("w", "", reg, kT0, &out_);
  EXPECT_EQ(TaskName::InternedCount(), before + 100);
  google::protobuf::RepeatedField<uint64_t> all(ids.begin(), ids.end());
  core.Cancel(Caller{}, all, kT0, &out_);
  core.Tick(kT0 + absl::Milliseconds(100), &out_);  // heartbeat the worker
  core.Tick(kT0 + absl::Seconds(2), &out_);         // retention ends
  EXPECT_EQ(core.jobs().size(), 0u);
  // The one a worker offers stays, with its run-time statistics, and so do
  // the names with metrics series (fresh-0 is both): no more than the cap.
  EXPECT_EQ(TaskName::InternedCount(), before + 10);
}

TEST_F(BrokerCoreTest,
       RefusesSubmitsBeyondMaxQueuedBytesButAlwaysTakesOneBatch) {
  BrokerOptions o = Options();
  o.max_payload_bytes = 1000;
  o.max_queued_bytes = 1500;
  BrokerCore core(o, kT0);
  google::protobuf::RepeatedPtrField<v1::JobSpec> big;
  for (int i = 0; i < 2; ++i) {
    v1::JobSpec* spec = big.Add();
    spec->set_task("t");
    spec->set_payload(std::string(1000, 'x'));
  }
  // Nothing held: a batch larger than the limit still gets in.
  ASSERT_TRUE(core.Submit(big, Caller{}, 0, kT0, &out_).ok());
  EXPECT_EQ(core.payload_bytes(), 2000u);
  google::protobuf::RepeatedPtrField<v1::JobSpec> one(big.begin(),
                                                      big.begin() + 1);
  absl::StatusOr<std::vector<uint64_t>> refused =
      core.Submit(one, Caller{}, 0, kT0, &out_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("--max_queued_bytes"),
            std::string::npos)
      << refused.status();
  google::protobuf::RepeatedField<uint64_t> cancel;
  cancel.Add(1);
  cancel.Add(2);
  core.Cancel(Caller{}, cancel, kT0, &out_);
  EXPECT_EQ(core.payload_bytes(), 0u);
  EXPECT_TRUE(core.Submit(one, Caller{}, 0, kT0, &out_).ok());
}

TEST_F(BrokerCoreTest, DrainingWorkerGetsNoNewJobs) {
  Register("w", 4);
  wire::Frame f;
  f.mutable_worker_state()->set_draining(true);
  core_.OnWorkerFrame("w", "", f, now_, &out_);
  Submit(2);
  EXPECT_TRUE(Dispatched().empty());
  EXPECT_EQ(core_.ListWorkers().workers(0).state(), v1::WorkerInfo::DRAINING);
}

TEST_F(BrokerCoreTest, BacksOffBeforeRetryingAFailedAttempt) {
  BrokerOptions o = Options();
  o.requeue_backoff = absl::Milliseconds(100);
  o.max_requeue_backoff = absl::Milliseconds(150);
  BrokerCore core(o, kT0);
  Outbox out;
  auto register_worker = [&](const std::string& name) {
    wire::Frame f;
    f.mutable_register_()->set_name(name);
    f.mutable_register_()->set_threads(1);
    f.mutable_register_()->add_tasks("t");
    core.OnWorkerFrame(name, "", f, now_, &out);
  };
  auto dispatched = [&] {
    core.Schedule(now_, &out);
    int n = 0;
    for (auto& [w, frame] : out.to_workers) n += frame.dispatch().tasks_size();
    out.Clear();
    return n;
  };
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  const uint64_t id = core.Submit(specs, Caller{}, 0, now_, &out).value()[0];
  register_worker("w0");
  ASSERT_EQ(dispatched(), 1);
  int n = 0;
  for (absl::Duration wait :
       {absl::Milliseconds(100), absl::Milliseconds(150)}) {
    now_ += absl::Seconds(4);
    core.Tick(now_, &out);  // the worker is lost; the job waits out a backoff
    EXPECT_EQ(core.jobs().Find(id)->state, v1::Job::QUEUED);
    register_worker(absl::StrCat("fresh", ++n));
    EXPECT_EQ(dispatched(), 0);
    EXPECT_EQ(core.NextWakeup(), now_ + wait);
    v1::GetJobsRequest req;
    req.add_job_ids(id);
    EXPECT_NE(
        core.GetJobs(Caller{}, req).jobs(0).waiting_reason().find("failed"),
        std::string::npos);
    now_ += wait - absl::Milliseconds(1);
    EXPECT_EQ(dispatched(), 0);
    now_ += absl::Milliseconds(1);
    ASSERT_EQ(dispatched(), 1);  // 100 ms, then doubled but capped at 150
  }
}

TEST_F(BrokerCoreTest, AResubmittedBatchGetsTheSameIdsAndAddsNothing) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 3; ++i) specs.Add()->set_task("t");
  BatchKey key{"client-a", 7};
  auto first = core_.Submit(specs, Caller{}, 1, now_, &out_, &key);
  ASSERT_TRUE(first.ok());
  auto again = core_.Submit(specs, Caller{}, 1, now_, &out_, &key);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(core_.jobs().size(), 3u);
  // Another client, or another seq, is another batch.
  BatchKey other{"client-b", 7};
  auto b = core_.Submit(specs, Caller{}, 1, now_, &out_, &other);
  ASSERT_TRUE(b.ok());
  EXPECT_NE((*b)[0], (*first)[0]);
  EXPECT_EQ(core_.jobs().size(), 6u);
}

TEST_F(BrokerCoreTest,
       ResultsFromAnUnregisteredWorkerCountAndItIsAskedToRegister) {
  Register("w", 1);
  uint64_t id = Submit(1)[0];
  Dispatched();
  now_ += absl::Seconds(4);
  core_.Tick(now_, &out_);  // "w" declared lost; the job waits for a worker
  out_.Clear();
  Result("w", id, 1, true, "late but first");
  EXPECT_EQ(JobOf(id).state, v1::Job::SUCCEEDED);
  EXPECT_EQ(JobOf(id).info().result, "late but first");
  ASSERT_EQ(out_.to_workers.size(), 1u);
  EXPECT_TRUE(out_.to_workers[0].second.has_reconnect());
}

// A journal-backed core: what TakeChanges reports, and a restart from it.
class BrokerCoreJournalTest : public BrokerCoreTest {
 protected:
  static BrokerOptions JournalOptions() {
    BrokerOptions o = Options();
    o.journal = true;
    return o;
  }
};

TEST_F(BrokerCoreJournalTest, ReportsEveryChangedJobOnce) {
  BrokerCore core(JournalOptions(), kT0);
  Outbox out;
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < 2; ++i) specs.Add()->set_task("t");
  BatchKey key{"c", 1};
  std::vector<uint64_t> ids =
      core.Submit(specs, Caller{}, 0, now_, &out, &key).value();
  google::protobuf::RepeatedField<uint64_t> one;
  one.Add(ids[0]);
  core.Cancel(Caller{}, one, now_, &out);
  Changes c = core.TakeChanges();
  EXPECT_EQ(c.jobs, ids);  // the cancelled one once, though it changed twice
  EXPECT_EQ(c.new_jobs, ids);
  ASSERT_EQ(c.batches_added.size(), 1u);
  EXPECT_EQ(c.batches_added[0].Ids(), ids);
  EXPECT_EQ(c.next_id, ids.back() + 1);
  EXPECT_TRUE(core.TakeChanges().empty());
  // Retention ends: the finished job is erased.
  core.Tick(now_ + absl::Hours(2), &out);
  c = core.TakeChanges();
  EXPECT_EQ(c.erased, std::vector<uint64_t>{ids[0]});
  EXPECT_EQ(c.batches_removed.size(), 1u);
}

TEST_F(BrokerCoreJournalTest,
       ARestartedCoreRunsQueuedJobsAndLetsWorkersReclaimRunningOnes) {
  // Before the restart: job 1 queued, 2 and 3 running (attempt 1), 4 done.
  RecoveredState state;
  for (uint64_t id = 1; id <= 4; ++id) {
    Job job;
    job.id = id;
    job.task = TaskName::Intern("t");
    job.max_attempts = 3;
    job.submitted_at = kT0 - absl::Minutes(1);
    if (id == 2 || id == 3) {
      job.state = v1::Job::RUNNING;
      job.mutable_info().attempts.push_back(AttemptRecord{
          "old", "", "", kT0 - absl::Seconds(30), absl::InfinitePast(), ""});
    } else if (id == 4) {
      job.state = v1::Job::SUCCEEDED;
      job.mutable_info().finished_at = kT0 - absl::Seconds(10);
      job.mutable_info().result = "kept";
    }
    state.jobs.push_back(std::move(job));
  }
  state.next_id = 10;  // ids up to 9 were handed out once
  BatchRecord batch;
  batch.key = BatchKey{"c", 5};
  batch.id_runs = {{1, 4}};
  batch.at = kT0 - absl::Minutes(1);
  state.batches.push_back(batch);
  BrokerCore core(JournalOptions(), kT0);
  core.Restore(std::move(state), kT0);
  Outbox out;
  EXPECT_EQ(core.jobs().count(v1::Job::QUEUED), 1u);
  EXPECT_EQ(core.jobs().count(v1::Job::RUNNING), 2u);
  EXPECT_EQ(core.jobs().Find(4)->info().result, "kept");

  // The old worker comes back holding job 2's attempt and a stale one of 4.
  wire::Frame f;
  wire::Register* r = f.mutable_register_();
  r->set_name("old");
  r->set_threads(2);
  r->add_tasks("t");
  wire::TaskRef* held = r->add_held();
  held->set_job_id(2);
  held->set_attempt(1);
  held = r->add_held();
  held->set_job_id(4);
  held->set_attempt(1);
  core.OnWorkerFrame("old", "", f, kT0, &out);
  bool abandoned_4 = false;
  for (auto& [w, frame] : out.to_workers) {
    if (frame.has_abandon())
      abandoned_4 = frame.abandon().tasks(0).job_id() == 4;
  }
  EXPECT_TRUE(abandoned_4);
  out.Clear();
  // Job 1 is dispatched at once; job 2 is the worker's again; job 3 waits.
  core.Schedule(kT0, &out);
  std::vector<uint64_t> dispatched;
  for (auto& [w, frame] : out.to_workers) {
    for (const wire::Task& t : frame.dispatch().tasks())
      dispatched.push_back(t.job_id());
  }
  EXPECT_EQ(dispatched, std::vector<uint64_t>{1});
  out.Clear();
  // Nobody claims job 3 within the grace: it runs again (attempt 2).
  const absl::Time later = kT0 + absl::Seconds(5);
  wire::Frame hb;
  hb.mutable_heartbeat();
  core.OnWorkerFrame("old", "", hb, later, &out);
  core.Tick(later, &out);
  EXPECT_EQ(core.jobs().Find(3)->info().attempts[0].outcome,
            "broker_restarted");
  EXPECT_EQ(core.jobs().Find(2)->state, v1::Job::RUNNING);
  // The reclaimed job's result completes it normally.
  wire::Frame res;
  wire::TaskResult* tr = res.mutable_results()->add_results();
  tr->set_job_id(2);
  tr->set_attempt(1);
  tr->set_ok(true);
  tr->set_output("done");
  core.OnWorkerFrame("old", "", res, later, &out);
  EXPECT_EQ(core.jobs().Find(2)->state, v1::Job::SUCCEEDED);
  // New ids start above anything used before the restart, and the batch
  // acknowledged before it is still recognised.
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  specs.Add()->set_task("t");
  EXPECT_EQ(core.Submit(specs, Caller{}, 0, later, &out).value()[0], 10u);
  BatchKey key{"c", 5};
  EXPECT_EQ(core.Submit(specs, Caller{}, 0, later, &out, &key).value(),
            (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST_F(BrokerCoreTest, PrefetchesManyTinyTasksButNoLongOne) {
  // Two workers of 2 threads that accept up to 100 prefetched tasks.
  Register("tiny", 2, /*prefetch=*/100, {"tiny"});
  Register("long", 2, /*prefetch=*/100, {"long"});
  std::vector<uint64_t> tiny = Submit(500, "tiny");
  std::vector<uint64_t> longs = Submit(500, "long");
  // Before any result: threads + as many again.
  EXPECT_EQ(Dispatched().size(), 8u);
  // Tiny tasks (10 us): 500 per thread in 5 ms; capped at the 100 the
  // worker accepts.
  for (int i = 0; i < 4; ++i)
    ResultTook("tiny", tiny[i], absl::Microseconds(10));
  // Long tasks (1 s): none ahead.
  for (int i = 0; i < 4; ++i) ResultTook("long", longs[i], absl::Seconds(1));
  std::vector<std::pair<std::string, wire::Task>> more = Dispatched();
  int to_tiny = 0, to_long = 0;
  for (auto& [w, t] : more) (w == "tiny" ? to_tiny : to_long)++;
  EXPECT_EQ(to_tiny, 2 + 100);
  EXPECT_EQ(to_long, 2);
}

TEST_F(BrokerCoreTest, PrefetchFollowsTheTaskNotTheWorkersLastTasks) {
  // One worker warmed up on tiny tasks, then given long ones of another
  // task: the long ones are not prefetched by the tiny ones' estimate.
  Register("w", 2, /*prefetch=*/100, {"tiny", "long"});
  std::vector<uint64_t> tiny = Submit(4, "tiny");
  ASSERT_EQ(Dispatched().size(), 4u);
  for (uint64_t id : tiny) ResultTook("w", id, absl::Microseconds(5));
  Submit(50, "long");
  // Unknown run time: threads, plus as many again.
  EXPECT_EQ(Dispatched().size(), 4u);
}

TEST_F(BrokerCoreTest, ListJobsFiltersByTaskAndStateAndPages) {
  const std::vector<uint64_t> a = Submit(5, "a");
  const std::vector<uint64_t> b = Submit(3, "b");
  v1::ListJobsRequest req;
  req.set_task("b");
  v1::ListJobsResponse resp = core_.ListJobs(Caller{}, req);
  ASSERT_EQ(resp.jobs_size(), 3);
  EXPECT_EQ(resp.jobs(0).id(), b[2]);  // newest first
  for (const v1::Job& j : resp.jobs()) EXPECT_EQ(j.task(), "b");
  req.set_task("a");
  req.set_limit(2);
  req.set_before_id(a[3]);
  resp = core_.ListJobs(Caller{}, req);
  ASSERT_EQ(resp.jobs_size(), 2);
  EXPECT_EQ(resp.jobs(0).id(), a[2]);
  EXPECT_EQ(resp.jobs(1).id(), a[1]);
  req.Clear();
  req.set_task("a");
  req.set_state(v1::Job::RUNNING);
  EXPECT_EQ(core_.ListJobs(Caller{}, req).jobs_size(), 0);
  req.set_task("nope");
  req.set_state(v1::Job::STATE_UNSPECIFIED);
  EXPECT_EQ(core_.ListJobs(Caller{}, req).jobs_size(), 0);
  EXPECT_EQ(core_.ListJobs(Caller{}, req).resume_before_id(), 0u);
  // A scan bound: 2 jobs examined (b[2], b[1]), none matched; resume
  // below the last one examined.
  req.set_task("a");
  req.set_max_scan(2);
  resp = core_.ListJobs(Caller{}, req);
  EXPECT_EQ(resp.jobs_size(), 0);
  EXPECT_EQ(resp.resume_before_id(), b[1]);
  req.set_before_id(resp.resume_before_id());
  req.set_max_scan(3);
  resp = core_.ListJobs(Caller{}, req);
  ASSERT_EQ(resp.jobs_size(), 2);  // b[0], a[4], a[3] examined
  EXPECT_EQ(resp.jobs(0).id(), a[4]);
  EXPECT_EQ(resp.resume_before_id(), a[3]);
}

TEST_F(BrokerCoreTest, StatsGiveQueueWaitPercentilesOfTheLastMinute) {
  EXPECT_EQ(core_.GetStats(now_).wait_samples(), 0u);
  EXPECT_FALSE(core_.GetStats(now_).has_wait_p50());
  // 100 jobs waiting 1..100 ms: each submitted, then dispatched later.
  Register("w", 1);
  for (int i = 1; i <= 100; ++i) {
    const uint64_t id = Submit(1)[0];
    now_ += absl::Milliseconds(i);
    ASSERT_EQ(Dispatched().size(), 1u);
    Result("w", id, 1, true);
  }
  v1::Stats s = core_.GetStats(now_);
  EXPECT_EQ(s.wait_samples(), 100u);
  EXPECT_EQ(FromProto(s.wait_p50()), absl::Milliseconds(50));
  EXPECT_EQ(FromProto(s.wait_p99()), absl::Milliseconds(99));
  // A minute later they have aged out.
  now_ += absl::Seconds(61);
  EXPECT_EQ(core_.GetStats(now_).wait_samples(), 0u);
  // More dispatches than the ring holds: it keeps the newest, in bounds.
  for (int i = 0; i < 5000; ++i) {
    const uint64_t id = Submit(1)[0];
    ASSERT_EQ(Dispatched().size(), 1u);
    Result("w", id, 1, true);
  }
  EXPECT_EQ(core_.GetStats(now_).wait_samples(), 4096u);
  EXPECT_EQ(FromProto(core_.GetStats(now_).wait_p99()), absl::ZeroDuration());
}

}  // namespace
}  // namespace dexec::broker

namespace dexec::broker {
namespace {

class BrokerCoreMetricsTest : public BrokerCoreTest {};

// Issue 13: histograms, requeue reasons and the oldest queued job.
TEST_F(BrokerCoreMetricsTest, HistogramsRequeuesAndOldestQueuedFollowTheJobs) {
  std::vector<uint64_t> ids = Submit(2);
  now_ += absl::Milliseconds(300);
  EXPECT_TRUE(core_.Metrics(now_).any_queued);
  EXPECT_EQ(core_.Metrics(now_).oldest_queued_age, absl::Milliseconds(300));
  Register("w", 2);
  ASSERT_EQ(Dispatched().size(), 2u);
  EXPECT_FALSE(core_.Metrics(now_).any_queued);
  ResultTook("w", ids[0], absl::Seconds(2));
  // The worker is lost with the second job: requeued, and it is the
  // oldest queued job again (by its submit).
  now_ += absl::Seconds(4);
  core_.Tick(now_, &out_);
  CoreMetrics m = core_.Metrics(now_);
  EXPECT_EQ(m.requeues[0], 1u);  // worker_lost
  EXPECT_EQ(m.requeues[1] + m.requeues[2] + m.requeues[3], 0u);
  EXPECT_TRUE(m.any_queued);
  EXPECT_EQ(m.oldest_queued_age, absl::Milliseconds(4300));
  EXPECT_EQ(m.queue_wait.count(), 2u);
  EXPECT_EQ(m.submit_to_start.count(), 2u);
  EXPECT_EQ(m.run_time.count(), 1u);
  EXPECT_DOUBLE_EQ(m.run_time.sum(), 2.0);
  // 0.3 s waits, each in the 0.5 s bucket (index 11 of the bounds).
  EXPECT_EQ(m.queue_wait.counts()[11], 2u);
  Register("w2", 1);
  ASSERT_EQ(Dispatched().size(), 1u);
  m = core_.Metrics(now_);
  EXPECT_EQ(m.queue_wait.count(), 3u);
  EXPECT_EQ(m.submit_to_start.count(), 2u);  // first dispatches only
  const TaskSeries& t = m.tasks.front();
  EXPECT_EQ(t.task, "t");
  EXPECT_EQ(t.submitted, 2u);
  EXPECT_EQ(t.succeeded, 1u);
  EXPECT_EQ(t.running, 1u);
  EXPECT_EQ(t.queued, 0u);
  EXPECT_EQ(m.tasks.back().task, "(other)");
}

}  // namespace
}  // namespace dexec::broker
