#include "common/mailbox.h"

#include <poll.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace dexec {
namespace {

bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

TEST(Mailbox, IsReadableOnlyWhileItemsWait) {
  Mailbox<int> box;
  EXPECT_FALSE(Readable(box.fd(), 0));
  box.Post(1);
  box.Post(2);
  EXPECT_TRUE(Readable(box.fd(), 0));
  std::vector<int> items = box.Drain();
  EXPECT_EQ(items, (std::vector<int>{1, 2}));
  EXPECT_FALSE(Readable(box.fd(), 0));
}

TEST(Mailbox, DeliversEveryItemFromManyThreadsInPerThreadOrder) {
  Mailbox<std::pair<int, int>> box;
  constexpr int kThreads = 4, kPerThread = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&box, t] {
      for (int i = 0; i < kPerThread; ++i) box.Post({t, i});
    });
  }
  std::vector<int> next(kThreads, 0);
  int received = 0;
  while (received < kThreads * kPerThread) {
    ASSERT_TRUE(Readable(box.fd(), 10000)) << "no item within 10 s";
    for (auto [t, i] : box.Drain()) {
      ASSERT_EQ(i, next[t]) << "thread " << t << " out of order";
      ++next[t];
      ++received;
    }
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace
}  // namespace dexec
