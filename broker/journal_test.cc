// The journal against a real RocksDB store in the test's temporary
// directory: what a core writes is what a restarted core reads back.
#include "broker/journal.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

BrokerOptions JournalOptions() {
  BrokerOptions o;
  o.journal = true;
  o.requeue_backoff = absl::ZeroDuration();
  return o;
}

google::protobuf::RepeatedPtrField<v1::JobSpec> Specs(int n) {
  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < n; ++i) {
    v1::JobSpec* s = specs.Add();
    s->set_task("t");
    s->set_payload(absl::StrCat("payload-", i));
  }
  return specs;
}

// Commits the core's changes and waits for the replies to run.
void CommitAndWait(Journal& journal, BrokerCore& core) {
  bool done = false;
  Mutex mu;
  journal.Commit(core.TakeChanges(), core.jobs(), {[&] {
                   MutexLock lock(&mu);
                   done = true;
                 }});
  MutexLock lock(&mu);
  mu.Await([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return done; });
}

TEST(JournalTest, ARestartRecoversEveryJobItsStateAndTheNextId) {
  const std::string dir = FreshDir("recover");
  std::vector<uint64_t> ids;
  uint64_t keyed_id = 0;
  {
    RecoveredState nothing;
    auto journal = Journal::Open(dir, &nothing);
    ASSERT_TRUE(journal.ok()) << journal.status();
    EXPECT_TRUE(nothing.jobs.empty());
    BrokerCore core(JournalOptions(), kT0);
    Outbox out;
    BatchKey key{"client", 3};
    ids = core.Submit(Specs(4), Caller{}, 0, kT0, &out, &key).value();
    auto keyed = Specs(1);
    keyed[0].set_idempotency_key("order-42");
    keyed_id = core.Submit(keyed, Caller{}, 0, kT0, &out).value()[0];
    // Job 0 succeeds, job 1 runs, 2 and 3 stay queued; 3 is cancelled.
    wire::Frame reg;
    reg.mutable_register_()->set_name("w");
    reg.mutable_register_()->set_threads(2);
    reg.mutable_register_()->add_tasks("t");
    core.OnWorkerFrame("w", "", reg, kT0, &out);
    core.Schedule(kT0, &out);  // dispatches 0 and 1
    wire::Frame res;
    wire::TaskResult* r = res.mutable_results()->add_results();
    r->set_job_id(ids[0]);
    r->set_attempt(1);
    r->set_ok(true);
    r->set_output("result-0");
    core.OnWorkerFrame("w", "", res, kT0, &out);
    google::protobuf::RepeatedField<uint64_t> cancel;
    cancel.Add(ids[3]);
    core.Cancel(Caller{}, cancel, kT0, &out);
    CommitAndWait(**journal, core);
    EXPECT_GE((*journal)->syncs(), 1u);
  }  // closed, as after SIGTERM

  RecoveredState state;
  auto journal = Journal::Open(dir, &state);
  ASSERT_TRUE(journal.ok()) << journal.status();
  ASSERT_EQ(state.jobs.size(), 5u);
  BrokerCore core(JournalOptions(), kT0);
  core.Restore(std::move(state), kT0 + absl::Seconds(1));
  const Job* done = core.jobs().Find(ids[0]);
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->state, v1::Job::SUCCEEDED);
  EXPECT_EQ(done->info().result, "result-0");
  ASSERT_EQ(done->info().attempts.size(), 1u);
  EXPECT_EQ(done->info().attempts[0].outcome, "succeeded");
  EXPECT_EQ(done->info().attempts[0].worker, "w");
  // Its payload is gone, its size is not (issue 10).
  EXPECT_EQ(done->payload_size(), std::string("payload-0").size());
  EXPECT_EQ(core.jobs().Find(ids[1])->state, v1::Job::RUNNING);
  EXPECT_EQ(core.jobs().Find(ids[1])->payload, "payload-1");
  EXPECT_EQ(core.jobs().Find(ids[2])->state, v1::Job::QUEUED);
  EXPECT_EQ(core.jobs().Find(ids[2])->payload, "payload-2");
  EXPECT_EQ(core.jobs().Find(ids[3])->state, v1::Job::CANCELLED);
  // Ids never repeat, and the acknowledged batch is still known.
  Outbox out;
  EXPECT_EQ(core.Submit(Specs(1), Caller{}, 0, kT0, &out).value()[0],
            keyed_id + 1);
  BatchKey key{"client", 3};
  EXPECT_EQ(core.Submit(Specs(4), Caller{}, 0, kT0, &out, &key).value(), ids);
  // So is the idempotency key: the same job again, not a new one.
  auto keyed = Specs(1);
  keyed[0].set_idempotency_key("order-42");
  EXPECT_EQ(core.Submit(keyed, Caller{}, 0, kT0, &out).value()[0], keyed_id);
}

TEST(JournalTest, IdsNeverRepeatAfterTheNewestJobsExpire) {
  const std::string dir = FreshDir("expire");
  uint64_t last = 0;
  {
    RecoveredState nothing;
    auto journal = Journal::Open(dir, &nothing);
    ASSERT_TRUE(journal.ok()) << journal.status();
    BrokerOptions o = JournalOptions();
    o.retention = absl::Seconds(1);
    BrokerCore core(o, kT0);
    Outbox out;
    std::vector<uint64_t> ids =
        core.Submit(Specs(3), Caller{}, 0, kT0, &out).value();
    last = ids.back();
    google::protobuf::RepeatedField<uint64_t> all(ids.begin(), ids.end());
    core.Cancel(Caller{}, all, kT0, &out);
    CommitAndWait(**journal, core);
    core.Tick(kT0 + absl::Seconds(5), &out);  // all three expire
    CommitAndWait(**journal, core);
  }
  RecoveredState state;
  auto journal = Journal::Open(dir, &state);
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_TRUE(state.jobs.empty());
  BrokerCore core(JournalOptions(), kT0);
  core.Restore(std::move(state), kT0);
  Outbox out;
  EXPECT_EQ(core.Submit(Specs(1), Caller{}, 0, kT0, &out).value()[0], last + 1);
}

TEST(JournalTest, RefusesADirectoryAnotherBrokerHasOpen) {
  const std::string dir = FreshDir("locked");
  RecoveredState a, b;
  auto first = Journal::Open(dir, &a);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Journal::Open(dir, &b);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another dexec-broker"),
            std::string::npos)
      << second.status();
}

TEST(JournalTest, RepliesRunInOrderEvenWhenTheyHaveNothingToWrite) {
  const std::string dir = FreshDir("order");
  RecoveredState nothing;
  auto journal = Journal::Open(dir, &nothing);
  ASSERT_TRUE(journal.ok()) << journal.status();
  BrokerCore core(JournalOptions(), kT0);
  Outbox out;
  Mutex mu;
  std::vector<int> order;
  for (int i = 0; i < 50; ++i) {
    if (i % 2 == 0) core.Submit(Specs(10), Caller{}, 0, kT0, &out).value();
    (*journal)->Commit(core.TakeChanges(), core.jobs(), {[&, i] {
                         MutexLock lock(&mu);
                         order.push_back(i);
                       }});
  }
  (*journal)->Close();
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  // Each submit wrote 10 payloads, 10 job records and the next id.
  EXPECT_EQ((*journal)->records_written(), 25u * 21u);
  // /metrics: one commit time and one record count per synced round.
  const JournalMetrics m = (*journal)->metrics();
  EXPECT_EQ(m.commit_seconds.count(), (*journal)->syncs());
  EXPECT_EQ(m.round_records.count(), (*journal)->syncs());
  EXPECT_DOUBLE_EQ(m.round_records.sum(), 25.0 * 21.0);
}

}  // namespace
}  // namespace dexec::broker
