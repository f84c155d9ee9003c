// The broker's journal seen from outside: real dexec-broker processes
// stopped (SIGTERM, kill -9) and started again on the same --data_dir.
// (A client riding over a restart is tests/reconnect_test.cc.)
#include <signal.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"

namespace dexec {
namespace {

using ::dexec::testing::GetJobs;
using ::dexec::testing::TestCluster;

std::string DataDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

std::vector<uint64_t> SubmitEchoes(TestCluster& cluster, int n,
                                   const std::string& tag) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::SubmitRequest req;
  for (int i = 0; i < n; ++i) {
    v1::JobSpec* spec = req.add_jobs();
    spec->set_task("sys.echo");
    spec->set_payload(absl::StrCat(tag, "-", i));
  }
  v1::SubmitResponse resp;
  grpc::Status s = cluster.stub().Submit(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return {resp.job_ids().begin(), resp.job_ids().end()};
}

// Polls the broker's counters until `n` jobs succeeded, then checks that
// these are the ones (counters keep the polling cheap: a GetJobs of
// thousands of results every few milliseconds is slow under sanitizers).
// `before`: jobs that had succeeded already (they count too).
bool AllSucceed(TestCluster& cluster, const std::vector<uint64_t>& ids,
                absl::Duration timeout, uint64_t before = 0) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::Stats stats;
    grpc::Status s =
        cluster.stub().GetStats(&ctx, v1::GetStatsRequest(), &stats);
    if (s.ok() && stats.succeeded() >= before + ids.size()) break;
    absl::SleepFor(absl::Milliseconds(50));  // polling real state
  }
  std::vector<v1::Job> jobs = GetJobs(cluster.stub(), ids);
  bool all = jobs.size() == ids.size();
  for (const v1::Job& j : jobs) all = all && j.state() == v1::Job::SUCCEEDED;
  return all;
}

TEST(Durability, SigtermFlushesAndARestartedBrokerHasEveryJob) {
  const std::string dir = DataDir("sigterm");
  std::vector<uint64_t> ids;
  {
    TestCluster cluster;
    ASSERT_TRUE(cluster.StartBroker({"--data_dir=" + dir}).ok());
    // Nobody runs them: all stay queued.
    ids = SubmitEchoes(cluster, 2000, "queued");
    ASSERT_EQ(ids.size(), 2000u);
    cluster.broker().Signal(SIGTERM);
    absl::StatusOr<int> code = cluster.broker().Wait(absl::Seconds(20));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0) << "SIGTERM must exit 0";
  }
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--data_dir=" + dir}).ok());
  std::vector<v1::Job> before = GetJobs(cluster.stub(), ids);
  ASSERT_EQ(before.size(), 2000u);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(before[i].state(), v1::Job::QUEUED) << "job " << ids[i];
  }
  // Ids continue above the old ones.
  std::vector<uint64_t> more = SubmitEchoes(cluster, 1, "after");
  ASSERT_EQ(more.size(), 1u);
  EXPECT_GT(more[0], ids.back());
  ASSERT_TRUE(cluster.StartWorker(4).ok());
  ASSERT_TRUE(AllSucceed(cluster, ids, absl::Seconds(60)));
  std::vector<v1::Job> after =
      GetJobs(cluster.stub(), ids, /*include_result=*/true);
  ASSERT_EQ(after.size(), 2000u);
  for (int i = 0; i < 2000; ++i) {
    EXPECT_EQ(after[i].result(), absl::StrCat("queued-", i));
    EXPECT_EQ(after[i].attempts(), 1);
  }
}

// SIGTERM ends the clients' Session streams cleanly (status OK, after what
// was queued for them) instead of leaving them open until the gRPC server's
// shutdown grace cancels them: clients move on to the next broker at once.
TEST(Durability, SigtermEndsClientStreamsCleanly) {
  TestCluster cluster;
  ASSERT_TRUE(
      cluster.StartBroker({"--data_dir=" + DataDir("sigterm-streams")}).ok());
  grpc::ClientContext context;
  auto stream = cluster.stub().Session(&context);
  v1::SessionRequest request;
  request.mutable_submit()->set_seq(1);
  v1::JobSpec* job = request.mutable_submit()->add_jobs();
  job->set_task("sys.echo");  // no worker: it stays queued
  job->set_payload("x");
  ASSERT_TRUE(stream->Write(request));
  v1::SessionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.submitted().job_ids_size(), 1) << response.DebugString();

  cluster.broker().Signal(SIGTERM);
  EXPECT_FALSE(stream->Read(&response)) << response.DebugString();
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << ": "
                           << status.error_message();
  absl::StatusOr<int> code = cluster.broker().Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(Durability, KillNineLosesNoAcknowledgedJobAndKeepsResults) {
  const std::string dir = DataDir("kill9");
  std::vector<uint64_t> done, queued;
  {
    TestCluster cluster;
    ASSERT_TRUE(cluster.StartBroker({"--data_dir=" + dir}).ok());
    ASSERT_TRUE(cluster.StartWorker(2).ok());
    ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
    done = SubmitEchoes(cluster, 500, "done");
    ASSERT_TRUE(AllSucceed(cluster, done, absl::Seconds(60)));
    // Stop the worker, then queue more: acknowledged, not yet run.
    cluster.workers()[0]->Signal(SIGKILL);
    ASSERT_TRUE(cluster.workers()[0]->Wait(absl::Seconds(10)).ok());
    queued = SubmitEchoes(cluster, 3000, "queued");
    ASSERT_EQ(queued.size(), 3000u);
    cluster.broker().Signal(SIGKILL);
    ASSERT_TRUE(cluster.broker().Wait(absl::Seconds(10)).ok());
  }
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--data_dir=" + dir}).ok());
  // Finished jobs kept their results.
  std::vector<v1::Job> kept =
      GetJobs(cluster.stub(), done, /*include_result=*/true);
  ASSERT_EQ(kept.size(), done.size());
  for (int i = 0; i < static_cast<int>(done.size()); ++i) {
    ASSERT_EQ(kept[i].state(), v1::Job::SUCCEEDED);
    EXPECT_EQ(kept[i].result(), absl::StrCat("done-", i));
  }
  ASSERT_TRUE(cluster.StartWorker(4).ok());
  ASSERT_TRUE(AllSucceed(cluster, queued, absl::Seconds(60), done.size()));
  std::vector<v1::Job> after =
      GetJobs(cluster.stub(), queued, /*include_result=*/true);
  ASSERT_EQ(after.size(), queued.size());
  for (int i = 0; i < static_cast<int>(queued.size()); ++i) {
    EXPECT_EQ(after[i].result(), absl::StrCat("queued-", i));
  }
}

TEST(Durability, ASecondBrokerOnTheSameDataDirIsRefusedClearly) {
  const std::string dir = DataDir("locked");
  TestCluster first;
  ASSERT_TRUE(first.StartBroker({"--data_dir=" + dir}).ok());
  absl::StatusOr<testing::CommandResult> second = testing::RunCommand(
      {testing::BinaryPath("broker/dexec-broker"), "--listen=127.0.0.1:0",
       "--http_listen=127.0.0.1:0", "--worker_listen=tcp://127.0.0.1:*",
       "--data_dir=" + dir},
      "", absl::Seconds(20));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_NE(second->err.find("another dexec-broker"), std::string::npos)
      << second->err;
}

}  // namespace
}  // namespace dexec
