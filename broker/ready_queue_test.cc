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
  EXPECT_TRUE(q_.HasWork("t", [this](uint64_t id) { return !dead_.contains(id); }));
  EXPECT_EQ(Pop({"t"}), 2u);
  EXPECT_FALSE(q_.HasWork("t", [this](uint64_t id) { return !dead_.contains(id); }));
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
}  // namespace dexec::broker
