// The HTTP API over a real, running broker loop (its own thread, a bound
// worker socket, no journal): questions cross threads as they do in the
// broker, and a loop that does not answer gives UNAVAILABLE in bounded time.
#include "broker/loop_api_backend.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

class LoopApiBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(loop_.BindWorkers("tcp://127.0.0.1:*").ok());
    loop_.Start();
  }

  // Submits on the loop thread and waits for the ids (with dexec::Mutex,
  // which TSan sees; Debian's absl::Notification it does not).
  std::vector<uint64_t> Submit(int n, const std::string& task) {
    Mutex mu;
    bool done = false;
    std::vector<uint64_t> ids;
    loop_.Post([&](BrokerLoop::Context& c) {
      google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
      for (int i = 0; i < n; ++i) specs.Add()->set_task(task);
      absl::StatusOr<std::vector<uint64_t>> r =
          c.core.Submit(specs, Caller{}, 0, c.now, &c.out);
      MutexLock lock(&mu);
      if (r.ok()) ids = *r;
      done = true;
    });
    MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithDeadline([&] { return done; },
                                     absl::Now() + absl::Seconds(10)))
        << "the loop did not run the submit";
    return ids;
  }

  ApiReply Call(const std::string& method, const std::string& path,
                const std::string& query = "") {
    return HandleApi(ApiRequest{method, path, query, ""}, Caller{}, backend_,
                     absl::Now());
  }

  BrokerLoop loop_{BrokerOptions()};
  LoopApiBackend backend_{&loop_, absl::Seconds(10)};
};

TEST_F(LoopApiBackendTest, AnswersEveryEndpointFromTheLoop) {
  const std::vector<uint64_t> ids = Submit(3, "t");
  ASSERT_EQ(ids.size(), 3u);
  ApiReply r = Call("GET", "/api/stats");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"queued\":3")) << r.body;
  r = Call("GET", "/api/jobs", "limit=2");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, absl::StrCat("\"id\":", ids[2])));
  EXPECT_TRUE(
      absl::StrContains(r.body, absl::StrCat("\"next_before_id\":", ids[1])));
  r = Call("GET", absl::StrCat("/api/jobs/", ids[0]));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"state\":\"queued\"")) << r.body;
  r = Call("POST", absl::StrCat("/api/jobs/", ids[0], "/cancel"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "\"cancelled\":true")) << r.body;
  r = Call("GET", absl::StrCat("/api/jobs/", ids[0]));
  EXPECT_TRUE(absl::StrContains(r.body, "\"state\":\"cancelled\"")) << r.body;
  r = Call("GET", "/api/workers");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"workers\":[]}");
}

TEST_F(LoopApiBackendTest, ManyHttpThreadsAskAtOnce) {
  Submit(10, "t");
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        if (Call("GET", "/api/jobs", "limit=5").status == 200) ++ok;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 400);
}

TEST(LoopApiBackend, AStoppedLoopGivesUnavailableInBoundedTime) {
  BrokerLoop loop{BrokerOptions()};  // never started: nothing answers
  LoopApiBackend backend(&loop, absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  ApiReply r = HandleApi(ApiRequest{"GET", "/api/stats", "", ""}, Caller{},
                         backend, absl::Now());
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "did not answer within")) << r.body;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

}  // namespace
}  // namespace dexec::broker
