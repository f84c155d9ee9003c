// Issue 10, item 1: no answer may outgrow the broker's response budget
// (--max_response_bytes; protobuf aborts the broker at 2 GB). A wait over
// results many times the budget, a Watch repeating one big job, a result
// larger than the whole budget, and GetJobs with results — on a 1 MiB
// budget, against a real broker and worker.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"
#include "tests/raw_grpc.h"

namespace dexec::testing {
namespace {

constexpr size_t kBudget = 1 << 20;
constexpr int kJobs = 40;
constexpr size_t kResultBytes = 300 << 10;  // 40 x 300 KiB = 12 MiB in all
constexpr size_t kHugeResult = 3 << 20;     // one result of 3 budgets

class ResponseBudgetTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::vector<std::string> flags = {
        absl::StrCat("--max_response_bytes=", kBudget)};
    if (!GetParam()) flags.push_back("--in_memory");
    ASSERT_TRUE(cluster_.StartBroker(flags).ok());
    ASSERT_TRUE(cluster_.StartWorker(2).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
    channel_ =
        UnlimitedChannel(cluster_.grpc_address(), cluster_.admin_token());
    stub_ = v1::Broker::NewStub(channel_);
    // sys.echo: each result is its payload.
    v1::SubmitRequest req;
    for (int i = 0; i < kJobs; ++i) {
      v1::JobSpec* job = req.add_jobs();
      job->set_task("sys.echo");
      job->set_payload(std::string(kResultBytes, 'a' + i % 26));
    }
    v1::JobSpec* huge = req.add_jobs();
    huge->set_task("sys.echo");
    huge->set_payload(std::string(kHugeResult, 'H'));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::SubmitResponse resp;
    grpc::Status s = stub_->Submit(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ids_.assign(resp.job_ids().begin(), resp.job_ids().end());
    huge_id_ = ids_.back();
    // Every job done before the tests watch them: their events all come at
    // once, which is when one answer used to hold them all.
    std::vector<std::string> args = {"wait", "--timeout=60s"};
    for (uint64_t id : ids_) args.push_back(absl::StrCat(id));
    absl::StatusOr<CommandResult> wait = cluster_.Cli(args);
    ASSERT_TRUE(wait.ok()) << wait.status();
    ASSERT_EQ(wait->exit_code, 0) << wait->err;
  }

  TestCluster cluster_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Broker::Stub> stub_;
  std::vector<uint64_t> ids_;
  uint64_t huge_id_ = 0;
};

TEST_P(ResponseBudgetTest,
       AWatchOfManyBigResultsComesInMessagesWithinTheBudget) {
  RawStream stream(channel_, "/dexec.v1.Broker/Session");
  // Every id, and the huge one a thousand times more (it used to be copied
  // into the answer a thousand times).
  v1::SessionRequest req;
  for (uint64_t id : ids_) req.mutable_watch()->add_job_ids(id);
  for (int i = 0; i < 1000; ++i) req.mutable_watch()->add_job_ids(huge_id_);
  ASSERT_TRUE(stream.Write(req.SerializeAsString()).ok());
  ASSERT_TRUE(stream.WritesDone().ok());
  std::map<uint64_t, int> events;
  size_t messages = 0;
  for (;;) {
    absl::StatusOr<std::optional<std::string>> m = stream.Read();
    ASSERT_TRUE(m.ok()) << m.status();
    if (!m->has_value()) break;
    ++messages;
    v1::SessionResponse r;
    ASSERT_TRUE(r.ParseFromString(**m));
    // Within the budget, unless it is one event larger than the budget.
    if (r.events().events_size() > 1) {
      EXPECT_LE((*m)->size(), kBudget) << r.events().events_size() << " events";
    }
    for (const v1::JobEvent& e : r.events().events()) {
      EXPECT_EQ(e.state(), v1::Job::SUCCEEDED);
      EXPECT_EQ(e.result().size(),
                e.job_id() == huge_id_ ? kHugeResult : kResultBytes);
      ++events[e.job_id()];
    }
  }
  absl::StatusOr<grpc::Status> end = stream.Finish();
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_TRUE(end->ok()) << end->error_message();
  EXPECT_EQ(events.size(), ids_.size());
  for (const auto& [id, n] : events) EXPECT_EQ(n, 1) << "job " << id;
  // 12 MiB of results and a 3 MiB one: at least 13 messages.
  EXPECT_GE(messages, 13u);
}

// SetUp's `dexec wait` already went over every result; --json reads them
// back with GetJobs too.
TEST_P(ResponseBudgetTest, TheCliWaitsOverResultsManyTimesTheBudget) {
  std::vector<std::string> args = {"wait", "--timeout=60s", "--json"};
  for (uint64_t id : ids_) args.push_back(absl::StrCat(id));
  absl::StatusOr<CommandResult> wait = cluster_.Cli(args);
  ASSERT_TRUE(wait.ok()) << wait.status();
  EXPECT_EQ(wait->exit_code, 0) << wait->err;
}

TEST_P(ResponseBudgetTest, GetJobsWithResultsAnswersInPagesAndSaysSo) {
  v1::GetJobsRequest req;
  req.mutable_job_ids()->Add(ids_.begin(), ids_.end());
  req.set_include_result(true);
  grpc::ClientContext ctx;
  v1::GetJobsResponse resp;
  ASSERT_TRUE(stub_->GetJobs(&ctx, req, &resp).ok());
  EXPECT_TRUE(resp.truncated());
  EXPECT_GE(resp.jobs_size(), 1);
  EXPECT_LT(resp.jobs_size(), static_cast<int>(ids_.size()));
  EXPECT_LE(resp.ByteSizeLong(), kBudget + kResultBytes + 4096);
  // Paging gets every one; the huge one alone.
  std::vector<v1::Job> all = GetJobs(*stub_, ids_, /*include_result=*/true);
  ASSERT_EQ(all.size(), ids_.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].id(), ids_[i]);
    EXPECT_EQ(all[i].result().size(),
              ids_[i] == huge_id_ ? kHugeResult : kResultBytes);
  }
}

INSTANTIATE_TEST_SUITE_P(DurableAndInMemory, ResponseBudgetTest,
                         ::testing::Bool(), [](const auto& info) {
                           return info.param ? "Durable" : "InMemory";
                         });

}  // namespace
}  // namespace dexec::testing
