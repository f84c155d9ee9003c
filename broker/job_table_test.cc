#include "broker/job_table.h"

#include <vector>

#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

Job NewJob(const std::string& key = "") {
  Job j;
  j.task = TaskName::Intern("sys.echo");
  j.mutable_info().idempotency_key = key;
  return j;
}

TEST(JobTable, HandsOutGrowingIdsStartingWhereAsked) {
  JobTable table(100);
  EXPECT_EQ(table.Insert(NewJob()).id, 100u);
  EXPECT_EQ(table.Insert(NewJob()).id, 101u);
  EXPECT_EQ(table.count(v1::Job::QUEUED), 2u);
}

TEST(JobTable, CountsFollowStateChanges) {
  JobTable table;
  Job& j = table.Insert(NewJob());
  table.SetState(j, v1::Job::RUNNING, kT0);
  EXPECT_EQ(table.count(v1::Job::QUEUED), 0u);
  EXPECT_EQ(table.count(v1::Job::RUNNING), 1u);
  table.SetState(j, v1::Job::SUCCEEDED, kT0);
  EXPECT_EQ(table.count(v1::Job::SUCCEEDED), 1u);
  EXPECT_EQ(table.finished_total(), 1u);
  EXPECT_EQ(table.finished_total(v1::Job::SUCCEEDED), 1u);
  EXPECT_EQ(table.finished_total(v1::Job::FAILED), 0u);
  EXPECT_EQ(j.info().finished_at, kT0);
}

TEST(JobTable, ForgetsFinishedJobsWhenRetentionEndsButNotBefore) {
  JobTable table;
  Job& done = table.Insert(NewJob("k"));
  const uint64_t done_id = done.id;
  table.SetState(done, v1::Job::SUCCEEDED, kT0);
  const uint64_t queued_id = table.Insert(NewJob()).id;
  std::vector<uint64_t> erased;
  auto note = [&](uint64_t id) { erased.push_back(id); };
  table.Expire(kT0 + absl::Minutes(59), absl::Hours(1), note);
  EXPECT_NE(table.Find(done_id), nullptr);
  table.Expire(kT0 + absl::Hours(1), absl::Hours(1), note);
  EXPECT_EQ(table.Find(done_id), nullptr);
  EXPECT_EQ(table.FindByKey("", "k"), nullptr);
  EXPECT_NE(table.Find(queued_id), nullptr);
  EXPECT_EQ(erased, std::vector<uint64_t>{done_id});
  EXPECT_EQ(table.count(v1::Job::SUCCEEDED), 0u);
}

TEST(JobTable, FindsJobsByIdempotencyKey) {
  JobTable table;
  const uint64_t id = table.Insert(NewJob("order-17")).id;
  ASSERT_NE(table.FindByKey("", "order-17"), nullptr);
  EXPECT_EQ(table.FindByKey("", "order-17")->id, id);
  EXPECT_EQ(table.FindByKey("", "other"), nullptr);
}

TEST(JobTable, WalksNewestFirst) {
  JobTable table;
  for (int i = 0; i < 5; ++i) table.Insert(NewJob());
  std::vector<uint64_t> seen;
  table.ForEachNewest([&](const Job& j) {
    seen.push_back(j.id);
    return seen.size() < 3;
  });
  EXPECT_EQ(seen, (std::vector<uint64_t>{5, 4, 3}));
}

}  // namespace
}  // namespace dexec::broker
