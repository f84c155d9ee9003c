#include "broker/ready_queue.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

class ReadyQueueTest : public ::testing::Test {
 protected:
  uint64_t Pop(const std::vector<std::string>& tasks) {
    return q_.Pop(tasks, [this](uint64_t id) { return !dead_.contains(id); });
  }
  ReadyQueue q_;
  absl::flat_hash_set<uint64_t> dead_;
};

TEST_F(ReadyQueueTest, PopsHigherPriorityFirstAndFifoWithinOne) {
  q_.Push("t", 0, 1);
  q_.Push("t", 5, 2);
  q_.Push("t", 0, 3);
  q_.Push("t", 5, 4);
  EXPECT_EQ(Pop({"t"}), 2u);
  EXPECT_EQ(Pop({"t"}), 4u);
  EXPECT_EQ(Pop({"t"}), 1u);
  EXPECT_EQ(Pop({"t"}), 3u);
  EXPECT_EQ(Pop({"t"}), 0u);
}

TEST_F(ReadyQueueTest, PopsOnlyTasksTheWorkerOffers) {
  q_.Push("a", 0, 1);
  q_.Push("b", 0, 2);
  EXPECT_EQ(Pop({"b"}), 2u);
  EXPECT_EQ(Pop({"b", "c"}), 0u);
  EXPECT_EQ(Pop({"c", "a"}), 1u);
}

TEST_F(ReadyQueueTest, PicksTheBestHeadAcrossTasks) {
  q_.Push("a", 0, 1);
  q_.Push("b", 1, 2);
  q_.Push("a", 1, 3);
  EXPECT_EQ(Pop({"a", "b"}), 2u);  // priority 1, older than 3
  EXPECT_EQ(Pop({"a", "b"}), 3u);
  EXPECT_EQ(Pop({"a", "b"}), 1u);
}

TEST_F(ReadyQueueTest, SkipsIdsThatAreNoLongerQueued) {
  q_.Push("t", 0, 1);
  q_.Push("t", 0, 2);
  dead_.insert(1);
  EXPECT_TRUE(
      q_.HasWork("t", [this](uint64_t id) { return !dead_.contains(id); }));
  EXPECT_EQ(Pop({"t"}), 2u);
  EXPECT_FALSE(
      q_.HasWork("t", [this](uint64_t id) { return !dead_.contains(id); }));
}

TEST_F(ReadyQueueTest, ARequeuedJobGoesAheadOfNewerOnes) {
  q_.Push("t", 0, 5);
  q_.Push("t", 0, 7);
  q_.Push("t", 0, 6);  // requeued after its worker died
  EXPECT_EQ(Pop({"t"}), 5u);
  EXPECT_EQ(Pop({"t"}), 6u);
  EXPECT_EQ(Pop({"t"}), 7u);
}

}  // namespace
// Issue 10: the entries of cancelled jobs of a task nobody pops stayed
// for good.
TEST_F(ReadyQueueTest, ForgottenEntriesOfATaskNobodyPopsAreFreed) {
  auto is_live = [this](uint64_t id) { return !dead_.contains(id); };
  for (uint64_t id = 1; id <= 5000; ++id) q_.Push("nobody-offers-this", 0, id);
  q_.Push("other", 0, 9999);
  EXPECT_EQ(q_.tasks(), 2u);
  for (uint64_t id = 1; id <= 3000; ++id) {
    dead_.insert(id);
    q_.Forget("nobody-offers-this", is_live);
  }
  // Compacted once half of it was dead.
  EXPECT_LT(q_.entries(), 3000u);
  for (uint64_t id = 3001; id <= 5000; ++id) {
    dead_.insert(id);
    q_.Forget("nobody-offers-this", is_live);
  }
  EXPECT_EQ(q_.tasks(), 1u);
  EXPECT_EQ(q_.entries(), 1u);
  EXPECT_EQ(Pop({"other"}), 9999u);
  EXPECT_EQ(q_.tasks(), 0u);
}

TEST_F(ReadyQueueTest, CompactionKeepsTheLiveIdsInOrder) {
  auto is_live = [this](uint64_t id) { return !dead_.contains(id); };
  for (uint64_t id = 1; id <= 4000; ++id) q_.Push("t", id % 2 == 0 ? 1 : 0, id);
  for (uint64_t id = 1; id <= 4000; ++id) {
    if (id % 4 == 0 || id % 4 == 1) continue;
    dead_.insert(id);
    q_.Forget("t", is_live);
  }
  std::vector<uint64_t> popped;
  while (uint64_t id = Pop({"t"})) popped.push_back(id);
  ASSERT_EQ(popped.size(), 2000u);
  // Priority 1 (even ids: multiples of 4) first, each level by id.
  EXPECT_EQ(popped[0], 4u);
  EXPECT_EQ(popped[999], 4000u);
  EXPECT_EQ(popped[1000], 1u);
  EXPECT_EQ(popped[1999], 3997u);
}

}  // namespace dexec::broker
