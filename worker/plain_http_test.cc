// PlainPool on its own, with the time passed in: kept connections, their
// age and cap, and the queue for a slot. Real sockets to a listener on
// loopback; the scheduler is a recorder of whom the pool wakes.
#include "worker/plain_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/http1.h"

namespace dexec::worker {
namespace {

class RecordingScheduler final : public TaskScheduler {
 public:
  void Suspend(TaskContext&, int, uint32_t, absl::Time, void*) override {}
  absl::Status Watch(int, uint32_t, FdWatcher*) override {
    return absl::OkStatus();
  }
  void Unwatch(int) override {}
  void Wake(TaskContext& ctx) override { woken.push_back(&ctx); }
  int loop_count() const override { return 1; }
  std::vector<TaskContext*> woken;
};

class Slots final : public ConnectionBudget {
 public:
  explicit Slots(int n) : left(n) {}
  bool Take() override { return left > 0 ? (--left, true) : false; }
  void Give() override { ++left; }
  int left;
};

class PlainPoolTest : public ::testing::Test {
 protected:
  PlainPoolTest() {
    for (int& fd : listeners_) {
      fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr = {};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      ::listen(fd, 64);  // never accepted: the backlog holds them
      socklen_t len = sizeof(addr);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      targets_.push_back(*http1::ParseTarget(
          absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/")));
    }
  }
  ~PlainPoolTest() override {
    for (int fd : listeners_) ::close(fd);
  }

  const absl::Time t0_ = absl::FromUnixSeconds(1'000'000);
  int listeners_[2];
  std::vector<http1::Target> targets_;
  RecordingScheduler scheduler_;
};

TEST_F(PlainPoolTest, AKeptConnectionIsReusedUntilItIsTooOld) {
  Slots slots(10);
  PlainPool pool(&scheduler_, &slots);
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  PlainPool::Waiter w(&ctx);
  const http1::Target& a = targets_[0];

  PlainPool::Lease first = pool.Acquire(a, t0_, w);
  ASSERT_GE(first.fd, 0) << first.error;
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(slots.left, 9);
  pool.Release(a.key, first.fd, /*keep=*/true, t0_);
  EXPECT_EQ(pool.idle(), 1u);

  PlainPool::Lease again = pool.Acquire(a, t0_ + absl::Seconds(100), w);
  EXPECT_EQ(again.fd, first.fd);
  EXPECT_TRUE(again.reused);
  pool.Release(a.key, again.fd, true, t0_ + absl::Seconds(100));

  // Not reused when asked for a new one (a request's second try).
  PlainPool::Lease other = pool.Acquire(a, t0_ + absl::Seconds(100), w,
                                        /*reuse=*/false);
  ASSERT_GE(other.fd, 0);
  EXPECT_FALSE(other.reused);
  EXPECT_NE(other.fd, first.fd);
  pool.Release(a.key, other.fd, false, t0_ + absl::Seconds(100));

  // Past kMaxIdle it is closed and its slot taken for a new one.
  PlainPool::Lease fresh =
      pool.Acquire(a, t0_ + absl::Seconds(100) + PlainPool::kMaxIdle, w);
  ASSERT_GE(fresh.fd, 0);
  EXPECT_FALSE(fresh.reused);
  EXPECT_EQ(slots.left, 9);
  pool.Release(a.key, fresh.fd, false, t0_ + absl::Seconds(300));
  EXPECT_EQ(slots.left, 10);
  EXPECT_EQ(pool.idle(), 0u);
}

TEST_F(PlainPoolTest, IdleConnectionsAreSweptAndCapped) {
  Slots slots(1000);
  PlainPool pool(&scheduler_, &slots);
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  PlainPool::Waiter w(&ctx);
  // 300 at once, all kept: the cap is the most in use, not kMinIdleCap.
  std::vector<int> fds;
  for (int i = 0; i < 300; ++i) {
    PlainPool::Lease l = pool.Acquire(targets_[i % 2], t0_, w);
    ASSERT_GE(l.fd, 0) << l.error;
    fds.push_back(l.fd);
  }
  for (int i = 0; i < 300; ++i)
    pool.Release(targets_[i % 2].key, fds[i], true, t0_);
  EXPECT_EQ(pool.idle(), 300u);
  EXPECT_EQ(slots.left, 700);
  // A release two minutes on sweeps the old ones (and this one's kept).
  PlainPool::Lease l = pool.Acquire(targets_[0], t0_, w);
  ASSERT_GE(l.fd, 0);
  pool.Release(targets_[0].key, l.fd, true, t0_ + absl::Seconds(120));
  EXPECT_EQ(pool.idle(), 1u);
  EXPECT_EQ(slots.left, 999);
}

TEST_F(PlainPoolTest, AtTheCapRequestsQueueAndSlotsPassInOrder) {
  Slots slots(2);
  PlainPool pool(&scheduler_, &slots);
  TaskContext c1(1, 1, absl::InfiniteFuture()),
      c2(2, 1, absl::InfiniteFuture()), c3(3, 1, absl::InfiniteFuture()),
      c4(4, 1, absl::InfiniteFuture());
  PlainPool::Waiter w1(&c1), w2(&c2), w3(&c3), w4(&c4);
  const http1::Target& a = targets_[0];
  const http1::Target& b = targets_[1];
  PlainPool::Lease l1 = pool.Acquire(a, t0_, w1);
  PlainPool::Lease l2 = pool.Acquire(a, t0_, w2);
  ASSERT_GE(l1.fd, 0);
  ASSERT_GE(l2.fd, 0);
  // Both slots in use: the next ones wait, in order.
  EXPECT_TRUE(pool.Acquire(b, t0_, w3).wait);
  EXPECT_TRUE(pool.Acquire(a, t0_, w4).wait);
  EXPECT_TRUE(scheduler_.woken.empty());

  // A connection to a kept: w3 is woken; w4, asking before w3 has, waits
  // on (it is behind w3).
  pool.Release(a.key, l1.fd, true, t0_);
  ASSERT_EQ(scheduler_.woken, std::vector<TaskContext*>({&c3}));
  EXPECT_TRUE(pool.Acquire(a, t0_, w4).wait);
  // w3 wants b: the idle a is closed to make room for it.
  PlainPool::Lease l3 = pool.Acquire(b, t0_, w3);
  ASSERT_GE(l3.fd, 0) << l3.error;
  EXPECT_FALSE(l3.reused);
  EXPECT_EQ(pool.idle(), 0u);

  // w4 is woken next and cancelled before it asks: the slot passes on to
  // nobody (none left waiting), and a new request is served at once.
  pool.Release(a.key, l2.fd, false, t0_);
  ASSERT_EQ(scheduler_.woken.back(), &c4);
  pool.Forget(w4);
  TaskContext c5(5, 1, absl::InfiniteFuture());
  PlainPool::Waiter w5(&c5);
  PlainPool::Lease l5 = pool.Acquire(a, t0_, w5);
  EXPECT_GE(l5.fd, 0);
  pool.Release(a.key, l5.fd, false, t0_);
  pool.Release(b.key, l3.fd, false, t0_);
  EXPECT_EQ(slots.left, 2);
}

TEST_F(PlainPoolTest, WithNoSlotAndNoneOfItsOwnItSendsToCurl) {
  Slots slots(0);  // curl's shards hold every slot
  PlainPool pool(&scheduler_, &slots);
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  PlainPool::Waiter w(&ctx);
  PlainPool::Lease l = pool.Acquire(targets_[0], t0_, w);
  EXPECT_EQ(l.fd, -1);
  EXPECT_FALSE(l.wait);
}

}  // namespace
}  // namespace dexec::worker
