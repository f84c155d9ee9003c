// Clients riding over a broker restart: a real dexec-broker killed with
// SIGKILL and started again on the same ports (and, unless --in_memory, the
// same --data_dir) while an Executor's Map, the `dexec wait` and `dexec map`
// commands are waiting on it. (What the journal itself keeps is
// tests/durability_test.cc.)

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "client/executor.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"

namespace dexec {
namespace {

using ::dexec::testing::AllJobIds;
using ::dexec::testing::BinaryPath;
using ::dexec::testing::CommandResult;
using ::dexec::testing::GetJobs;
using ::dexec::testing::TestCluster;

constexpr absl::Duration kBound = absl::Seconds(90);
// Workers notice a restarted broker within a few heartbeats.
constexpr char kFastHeartbeat[] = "--heartbeat_interval=200ms";

std::unique_ptr<Executor> Connect(
    ExecutorOptions options,
    absl::Duration reconnect_timeout = absl::Seconds(60)) {
  options.reconnect_timeout = reconnect_timeout;
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
  EXPECT_TRUE(ex.ok()) << ex.status();
  return ex.ok() ? *std::move(ex) : nullptr;
}

// Polls `done` (real state: an RPC, /proc) until it holds or `timeout`
// passes.
bool PollUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));  // between polls of real state
  }
  return done();
}

std::unique_ptr<grpc::ClientContext> CallContext() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  return ctx;
}

std::optional<v1::Stats> GetStats(TestCluster& cluster) {
  v1::Stats stats;
  grpc::Status s = cluster.stub().GetStats(CallContext().get(),
                                           v1::GetStatsRequest(), &stats);
  if (!s.ok()) return std::nullopt;
  return stats;
}

// Submits `n` jobs with the unary RPC; their ids.
std::vector<uint64_t> SubmitUnary(TestCluster& cluster, const std::string& task,
                                  const std::string& payload, int n,
                                  int priority = 0) {
  v1::SubmitRequest req;
  for (int i = 0; i < n; ++i) {
    v1::JobSpec* spec = req.add_jobs();
    spec->set_task(task);
    spec->set_payload(payload);
    spec->set_priority(priority);
  }
  v1::SubmitResponse resp;
  grpc::Status s = cluster.stub().Submit(CallContext().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << "Submit: " << s.error_message();
  return {resp.job_ids().begin(), resp.job_ids().end()};
}

// Every job ran to success exactly once: one attempt with outcome
// "succeeded" (a worker that outlived the broker may have its attempt
// reclaimed, or the job may have been requeued; never both completing).
void ExpectEachSucceededOnce(const std::vector<v1::Job>& jobs) {
  for (const v1::Job& j : jobs) {
    EXPECT_EQ(j.state(), v1::Job::SUCCEEDED) << "job " << j.id();
    int succeeded = 0;
    std::vector<std::string> outcomes;
    for (const v1::Attempt& a : j.attempt_log()) {
      succeeded += a.outcome() == "succeeded";
      outcomes.push_back(a.outcome().empty() ? "(running)" : a.outcome());
    }
    EXPECT_EQ(succeeded, 1)
        << "job " << j.id() << " attempts: " << absl::StrJoin(outcomes, ", ");
  }
}

// (a) The journal brings back every acknowledged job; the client resends
// what was not acknowledged (deduplicated by client_id and seq) and watches
// the rest again, so a Map started before kill -9 finishes as if nothing
// happened.
TEST(ReconnectTest, AMapStartedBeforeAKill9FinishesInOrderAndRunsEachJobOnce) {
  constexpr int kJobs = 3000;
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({kFastHeartbeat}).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(2).ok());
  std::unique_ptr<Executor> ex = Connect(cluster.executor_options());
  ASSERT_NE(ex, nullptr);

  // Four long jobs of higher priority hold every worker thread, so the map
  // is still queued (and these are running) when the broker dies
  // (bench.spin runs on a thread; sys.sleep is a coroutine and holds none).
  std::vector<Future<std::string>> blockers;
  SubmitOptions urgent;
  urgent.priority = 10;
  for (int i = 0; i < 4; ++i) {
    blockers.push_back(
        ex->Submit("bench.spin", std::string("4000000"), urgent));
  }
  for (Future<std::string>& b : blockers) {
    ASSERT_TRUE(PollUntil([&] { return b.Running() || b.Done(); }, kBound));
  }

  std::vector<std::string> inputs;
  for (int i = 0; i < kJobs; ++i) inputs.push_back(absl::StrCat("item-", i));
  Mutex mu;
  std::vector<std::string> results;  // guarded by mu
  absl::Status map_error;            // guarded by mu
  std::thread consumer([&] {
    MapOptions options;
    options.timeout = kBound;
    for (absl::StatusOr<std::string> r : ex->Map("sys.echo", inputs, options)) {
      MutexLock lock(&mu);
      if (!r.ok()) {
        map_error = r.status();
        return;
      }
      results.push_back(*std::move(r));
    }
  });

  // Every map job is accepted (the broker counts them) and waits.
  ASSERT_TRUE(PollUntil(
      [&] {
        std::optional<v1::Stats> s = GetStats(cluster);
        return s.has_value() && s->submitted_total() >= kJobs + 4;
      },
      kBound))
      << "the map's jobs never reached the broker";
  std::optional<v1::Stats> before = GetStats(cluster);
  ASSERT_TRUE(before.has_value());
  EXPECT_GE(before->queued(), 1000u) << "too little work left for the test";
  EXPECT_GE(before->running(), 1u);

  ASSERT_TRUE(cluster.KillBroker().ok());
  ASSERT_TRUE(cluster.RestartBroker().ok());

  consumer.join();
  {
    MutexLock lock(&mu);
    ASSERT_TRUE(map_error.ok()) << map_error;
    ASSERT_EQ(results.size(), inputs.size());
    for (int i = 0; i < kJobs; ++i) {
      ASSERT_EQ(results[i], inputs[i]) << "out of order at " << i;
    }
  }
  for (Future<std::string>& b : blockers) {
    absl::StatusOr<std::string> r = b.Result(kBound);
    EXPECT_TRUE(r.ok()) << r.status();
  }
  ex->Shutdown();

  // Exactly the jobs we submitted: a resent batch created nothing new.
  std::vector<uint64_t> ids = AllJobIds(cluster.stub());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kJobs + 4));
  ExpectEachSucceededOnce(GetJobs(cluster.stub(), ids));
}

// What `dexec wait IDS` printed and returned when the broker was killed
// and restarted while it waited. The verb runs in-process on a stub that is
// already connected: the binary's first connect fails fast by design (exit
// 2), and from outside nothing tells when it is past it.
struct WaitOutcome {
  int code = -1;
  std::string out, err;
};

WaitOutcome WaitAcrossARestart(TestCluster& cluster,
                               const std::vector<uint64_t>& ids) {
  WaitOutcome outcome;
  std::vector<std::string> args = {"wait"};
  for (uint64_t id : ids) args.push_back(absl::StrCat(id));
  args.push_back("--broker=" + cluster.grpc_address());
  // The verb waits through an Executor of its own, on these credentials.
  args.push_back("--token=" + cluster.admin_token());
  absl::StatusOr<cli::ParsedCommand> cmd =
      cli::ParseCommandLine(args, std::nullopt);
  EXPECT_TRUE(cmd.ok()) << cmd.status();
  absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> stub = cli::ConnectToBroker(
      cluster.grpc_address(), auth::ClientAuthOptions{cluster.admin_token()});
  EXPECT_TRUE(stub.ok()) << stub.status();
  if (!cmd.ok() || !stub.ok()) return outcome;
  std::ostringstream out, err;
  std::thread wait([&] { outcome.code = cli::Wait(*cmd, **stub, out, err); });
  EXPECT_TRUE(cluster.KillBroker().ok());
  EXPECT_TRUE(cluster.RestartBroker().ok());
  wait.join();
  outcome.out = out.str();
  outcome.err = err.str();
  return outcome;
}

// (b) `dexec wait` attaches an Executor to the ids; when the broker dies it
// watches the unfinished ids again on the restarted one.
TEST(ReconnectTest, DexecWaitStartedBeforeARestartSucceeds) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({kFastHeartbeat}).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  std::vector<uint64_t> ids = SubmitUnary(cluster, "sys.sleep", "2000", 2);
  ASSERT_EQ(ids.size(), 2u);
  WaitOutcome wait = WaitAcrossARestart(cluster, ids);
  EXPECT_EQ(wait.code, 0) << wait.err;
  EXPECT_EQ(wait.out,
            absl::StrCat(ids[0], " SUCCEEDED\n", ids[1], " SUCCEEDED\n"));
  ExpectEachSucceededOnce(GetJobs(cluster.stub(), ids));
}

// The same against a broker that restarted without its journal: the jobs
// it lost show as NOT_FOUND and the command exits 1, at once.
TEST(ReconnectTest, DexecWaitReportsJobsAnInMemoryBrokerLost) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--in_memory"}).ok());
  std::vector<uint64_t> ids = SubmitUnary(cluster, "sys.echo", "x", 1);
  ASSERT_EQ(ids.size(), 1u);
  WaitOutcome wait = WaitAcrossARestart(cluster, ids);
  EXPECT_EQ(wait.code, 1) << wait.err;
  EXPECT_EQ(wait.out, absl::StrCat(ids[0], " NOT_FOUND\n"));
}

// (b) `dexec map` uses the Executor: its lines come out in order across a
// restart, each exactly once.
TEST(ReconnectTest, DexecMapStartedBeforeARestartPrintsEveryLineInOrder) {
  constexpr int kLines = 500;
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({kFastHeartbeat}).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  // Two long jobs of higher priority hold both threads, so the map waits
  // (bench.spin runs on a thread; sys.sleep is a coroutine and holds none).
  std::vector<uint64_t> blockers =
      SubmitUnary(cluster, "bench.spin", "4000000", 2, /*priority=*/10);
  ASSERT_TRUE(PollUntil(
      [&] {
        std::vector<v1::Job> jobs = GetJobs(cluster.stub(), blockers);
        return std::all_of(jobs.begin(), jobs.end(), [](const v1::Job& j) {
          return j.state() == v1::Job::RUNNING;
        });
      },
      kBound));

  std::string input, expected;
  for (int i = 0; i < kLines; ++i) {
    absl::StrAppend(&input, "line-", i, "\n");
    absl::StrAppend(&expected, "line-", i, "\n");
  }
  absl::StatusOr<CommandResult> map_result;
  std::thread map([&] {
    map_result = cluster.Cli({"map", "sys.echo"}, input, kBound);
  });
  const bool submitted = PollUntil(
      [&] {
        std::optional<v1::Stats> s = GetStats(cluster);
        return s.has_value() && s->submitted_total() >= kLines + 2;
      },
      kBound);
  if (submitted) {
    std::optional<v1::Stats> before = GetStats(cluster);
    EXPECT_TRUE(before.has_value() && before->queued() > 0)
        << "the map was done before the restart";
    EXPECT_TRUE(cluster.KillBroker().ok());
    EXPECT_TRUE(cluster.RestartBroker().ok());
  }
  map.join();
  ASSERT_TRUE(submitted) << "the map's jobs never reached the broker";
  ASSERT_TRUE(map_result.ok()) << map_result.status();
  EXPECT_EQ(map_result->exit_code, 0) << map_result->err;
  EXPECT_EQ(map_result->out, expected);
  std::vector<uint64_t> ids = AllJobIds(cluster.stub());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kLines + 2));
}

// (c) A broker without a journal forgets everything: the futures it lost
// fail with a clear not_found, nothing hangs, and the executor goes on.
TEST(ReconnectTest, AnInMemoryBrokerRestartFailsOutstandingFuturesAsLost) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--in_memory"}).ok());
  EXPECT_TRUE(cluster.data_dir().empty());
  std::unique_ptr<Executor> ex = Connect(cluster.executor_options());
  ASSERT_NE(ex, nullptr);
  // No worker yet: every job stays queued.
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 20; ++i) {
    fs.push_back(ex->Submit("sys.echo", absl::StrCat("lost-", i)));
  }
  for (Future<std::string>& f : fs) ASSERT_TRUE(f.JobId(kBound).ok());

  ASSERT_TRUE(cluster.KillBroker().ok());
  ASSERT_TRUE(cluster.RestartBroker().ok());

  for (Future<std::string>& f : fs) {
    absl::Status s = f.Exception(kBound);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
    EXPECT_EQ(ErrorKind(s), "not_found");
    EXPECT_NE(s.message().find("was lost by the broker"), std::string::npos)
        << s;
  }
  // The same executor works against the new broker.
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  absl::StatusOr<std::string> r =
      ex->Submit("sys.echo", std::string("again")).Result(kBound);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "again");
}

// (d) A Map waits for room instead of failing on RESOURCE_EXHAUSTED; a
// single Submit, which has no window, fails.
TEST(ReconnectTest, AMapWaitsForRoomUnderMaxQueued) {
  constexpr int kJobs = 2000;
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--max_queued=50"}).ok());
  std::unique_ptr<Executor> ex = Connect(cluster.executor_options());
  ASSERT_NE(ex, nullptr);
  // No worker: 50 jobs fill the queue, the 51st is refused.
  std::vector<Future<std::string>> first;
  for (int i = 0; i < 50; ++i) {
    first.push_back(ex->Submit("sys.echo", absl::StrCat("first-", i)));
  }
  for (Future<std::string>& f : first) ASSERT_TRUE(f.JobId(kBound).ok());
  absl::Status refused =
      ex->Submit("sys.echo", std::string("no room")).Exception(kBound);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("--max_queued"), std::string::npos)
      << refused;

  // The map starts against a full broker and waits; workers make room.
  std::vector<std::string> inputs;
  for (int i = 0; i < kJobs; ++i) inputs.push_back(absl::StrCat("item-", i));
  MapOptions options;
  options.timeout = kBound;
  MapResults<std::string> results = ex->Map("sys.echo", inputs, options);
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  int i = 0;
  while (std::optional<absl::StatusOr<std::string>> r = results.Next()) {
    ASSERT_TRUE(r->ok()) << "element " << i << ": " << r->status();
    ASSERT_EQ(**r, inputs[i]) << "out of order at " << i;
    ++i;
  }
  EXPECT_EQ(i, kJobs);
  for (Future<std::string>& f : first) EXPECT_TRUE(f.Result(kBound).ok());
  // 50 + the map; the refused single submit created nothing.
  EXPECT_EQ(AllJobIds(cluster.stub()).size(), static_cast<size_t>(kJobs + 50));
}

// A broker that stays away: after reconnect_timeout every unresolved future
// fails with UNAVAILABLE naming the broker and how long it was gone.
TEST(ReconnectTest, ABrokerThatStaysAwayFailsFuturesAfterTheReconnectTimeout) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  std::unique_ptr<Executor> ex = Connect(
      cluster.executor_options(), /*reconnect_timeout=*/absl::Seconds(1));
  ASSERT_NE(ex, nullptr);
  Future<std::string> f = ex->Submit("nobody.offers.this", std::string());
  ASSERT_TRUE(f.JobId(kBound).ok());
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(cluster.KillBroker().ok());
  absl::Status s = f.Exception(kBound);
  EXPECT_GE(absl::Now() - killed, absl::Seconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find(absl::StrCat("the dexec broker at ",
                                          cluster.grpc_address(),
                                          " was unreachable for")),
            std::string::npos)
      << s;
}

}  // namespace
}  // namespace dexec
