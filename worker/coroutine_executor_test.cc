// CoroutineExecutor with real event loops: thousands of suspended
// coroutines on two threads, cancel and deadline of a suspended one, fd
// readiness, nested coroutines.
#include "worker/coroutine_executor.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "protos/chunk.h"
#include "worker/task.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"
#include "worker/task_run.h"

namespace dexec::worker {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);

class Collector {
 public:
  RunDone Callback() {
    return [this](std::shared_ptr<TaskRun> run) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(std::move(run));
      cv_.notify_all();
    };
  }
  std::vector<std::shared_ptr<TaskRun>> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(kWait),
                 [&] { return done_.size() >= n; });
    return done_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<TaskRun>> done_;
};

// Whether done() turns true within kWait, polled: it reads counters, not
// signals.
template <typename Fn>
bool Eventually(Fn done) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

Task<int64_t> Twice(TaskContext& ctx, int64_t ms) {
  co_await ctx.Sleep(absl::Milliseconds(ms));
  co_await ctx.Sleep(absl::Milliseconds(ms));
  co_return 2 * ms;
}

std::atomic<int64_t> g_steps{0};

// test.span's record: how many are suspended now, the most at once, and
// each one's start and end.
std::atomic<int> g_spans_in_flight{0};
std::atomic<int> g_spans_most{0};
std::mutex g_spans_mu;
std::vector<std::pair<absl::Time, absl::Time>>
    g_spans;  // guarded by g_spans_mu

TaskRegistry& Registry() {
  static TaskRegistry* registry = [] {
    auto* r = new TaskRegistry();
    auto ok = [](absl::Status s) { ASSERT_TRUE(s.ok()) << s; };
    ok(RegisterAsync(*r, "test.sleep",
                     [](TaskContext& ctx,
                        std::string ms) -> Task<absl::StatusOr<std::string>> {
                       int64_t n = 0;
                       if (!absl::SimpleAtoi(ms, &n)) {
                         co_return TaskError(kBadPayloadKind, "not a number");
                       }
                       if (co_await ctx.Sleep(absl::Milliseconds(n)))
                         co_return "slept";
                       co_return TaskError(
                           ctx.cancelled() ? kCancelledKind : kTimeoutKind,
                           "woken early");
                     }));
    ok(RegisterAsync(*r, "test.nested",
                     [](TaskContext& ctx, std::string) -> Task<std::string> {
                       co_return absl::StrCat(co_await Twice(ctx, 5));
                     }));
    ok(RegisterAsync(*r, "test.read",
                     [](TaskContext& ctx, std::string fd) -> Task<std::string> {
                       int n = -1;
                       (void)absl::SimpleAtoi(fd, &n);
                       if (!co_await ctx.WaitReadable(n)) co_return "not ready";
                       char c = 0;
                       (void)::read(n, &c, 1);
                       co_return std::string(1, c);
                     }));
    // Its start and its resume after a zero sleep, as steps of one
    // counter shared by all runs: "start resume".
    ok(RegisterAsync(*r, "test.yield",
                     [](TaskContext& ctx, std::string) -> Task<std::string> {
                       const int64_t started = g_steps.fetch_add(1);
                       co_await ctx.Sleep(absl::ZeroDuration());
                       co_return absl::StrCat(started, " ",
                                              g_steps.fetch_add(1));
                     }));
    // "ID:MS": sleeps MS ms, answers ID (ID "fail": fails then); recorded
    // as above.
    ok(RegisterAsync(
        *r, "test.span",
        [](TaskContext& ctx,
           std::string in) -> Task<absl::StatusOr<std::string>> {
          std::vector<std::string> parts = absl::StrSplit(in, ':');
          int64_t ms = 0;
          if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &ms)) {
            co_return TaskError(kBadPayloadKind, "not ID:MS");
          }
          const absl::Time start = absl::Now();
          const int now = g_spans_in_flight.fetch_add(1) + 1;
          int most = g_spans_most.load();
          while (now > most && !g_spans_most.compare_exchange_weak(most, now)) {
          }
          const bool slept = co_await ctx.Sleep(absl::Milliseconds(ms));
          g_spans_in_flight.fetch_sub(1);
          {
            std::lock_guard<std::mutex> lock(g_spans_mu);
            g_spans.emplace_back(start, absl::Now());
          }
          if (!slept) {
            co_return TaskError(ctx.cancelled() ? kCancelledKind : kTimeoutKind,
                                "woken early");
          }
          if (parts[0] == "fail") co_return TaskError("test_failure", "fail");
          co_return parts[0];
        }));
    ok(RegisterAsync(*r, "test.throw",
                     [](TaskContext&, std::string) -> Task<std::string> {
                       throw std::runtime_error("boom");
                       co_return "";
                     }));
    return r;
  }();
  return *registry;
}

std::shared_ptr<TaskRun> MakeRun(uint64_t id, const std::string& task,
                                 const std::string& payload,
                                 absl::Time deadline = absl::InfiniteFuture()) {
  wire::Task t;
  t.set_job_id(id);
  t.set_attempt(1);
  t.set_name(task);
  t.set_payload(payload);
  return std::make_shared<TaskRun>(id, std::move(t), deadline);
}

class CoroutineExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    executor_ = std::make_unique<CoroutineExecutor>(&Registry(), 2,
                                                    collector_.Callback());
    ASSERT_TRUE(executor_->Start().ok());
  }
  void TearDown() override { executor_->Shutdown(); }

  Collector collector_;
  std::unique_ptr<CoroutineExecutor> executor_;
};

TEST_F(CoroutineExecutorTest, TenThousandOneSecondSleepsOverlapOnTwoThreads) {
  constexpr int kTasks = 10000;
  std::vector<std::shared_ptr<TaskRun>> runs;
  for (int i = 1; i <= kTasks; ++i) {
    runs.push_back(MakeRun(i, "test.sleep", "1000"));
  }
  const absl::Time start = absl::Now();
  executor_->Run(std::move(runs));
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(kTasks);
  const absl::Duration took = absl::Now() - start;
  ASSERT_EQ(done.size(), size_t{kTasks});
  int64_t latest_start = 0, earliest_end = INT64_MAX;
  for (const auto& run : done) {
    ASSERT_TRUE(run->result.ok()) << run->result.error_message();
    latest_start = std::max(latest_start, run->result.started_at_us());
    earliest_end = std::min(earliest_end, run->result.finished_at_us());
    EXPECT_GE(run->result.finished_at_us() - run->result.started_at_us(),
              999'000);
  }
  // Every sleep started before any ended: all 10,000 were suspended at
  // once, on two threads.
  EXPECT_LT(latest_start, earliest_end);
  EXPECT_LT(took, absl::Seconds(5)) << "10,000 x 1 s took " << took;
  std::printf("10000 x sys.sleep 1000 on 2 loop threads: %s\n",
              absl::FormatDuration(took).c_str());
}

TEST_F(CoroutineExecutorTest, CancelResumesASuspendedCoroutineAtOnce) {
  std::shared_ptr<TaskRun> run = MakeRun(1, "test.sleep", "60000");
  executor_->Run({run});
  ASSERT_TRUE(Eventually([&] { return executor_->running() > 0; }));
  const absl::Time cancelled_at = absl::Now();
  executor_->Cancel(run);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]->result.error_kind(), kCancelledKind);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Milliseconds(500));
}

TEST_F(CoroutineExecutorTest, TheDeadlineResumesASuspendedCoroutine) {
  const absl::Time start = absl::Now();
  executor_->Run(
      {MakeRun(1, "test.sleep", "60000", start + absl::Milliseconds(100))});
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]->result.error_kind(), kTimeoutKind);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(CoroutineExecutorTest, NestedCoroutinesFdReadinessAndExceptions) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  executor_->Run({MakeRun(1, "test.nested", ""),
                  MakeRun(2, "test.read", absl::StrCat(fds[0])),
                  MakeRun(3, "test.throw", ""), MakeRun(4, "no.such", "")});
  ASSERT_EQ(::write(fds[1], "z", 1), 1);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(4);
  ASSERT_EQ(done.size(), 4u);
  std::sort(done.begin(), done.end(),
            [](const auto& a, const auto& b) { return a->run_id < b->run_id; });
  EXPECT_EQ(done[0]->result.output(), "10");
  EXPECT_EQ(done[1]->result.output(), "z");
  EXPECT_EQ(done[2]->result.error_kind(), kExceptionKind);
  EXPECT_EQ(done[3]->result.error_kind(), kUnknownTaskKind);
  ::close(fds[0]);
  ::close(fds[1]);
}

// A burst of runs is started a slice at a time, with the loop's timers and
// fds served between slices: the first run's wake-up comes before the last
// run of the burst starts (before, a loop started all 2,000 first, so a
// burst of http.get connected every request before sending any).
// A chunked map's job: its items' results, checked to be a ChunkResult.
std::vector<chunk::ItemResultView> ItemsOf(const TaskRun& run) {
  EXPECT_TRUE(run.result.ok()) << run.result.error_message();
  absl::StatusOr<std::vector<chunk::ItemResultView>> items =
      chunk::DecodeResults(run.result.output());
  EXPECT_TRUE(items.ok()) << items.status();
  return items.ok() ? *items : std::vector<chunk::ItemResultView>{};
}

void ResetSpans() {
  g_spans_in_flight = 0;
  g_spans_most = 0;
  std::lock_guard<std::mutex> lock(g_spans_mu);
  g_spans.clear();
}

TEST_F(CoroutineExecutorTest, AChunksItemsOverlapAndComeBackInOrder) {
  ResetSpans();
  constexpr int kItems = 200;
  std::vector<std::string> items;
  for (int i = 0; i < kItems; ++i) items.push_back(absl::StrCat(i, ":300"));
  executor_->Run({MakeRun(1, "test.span", chunk::Encode(items))});
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  std::vector<chunk::ItemResultView> results = ItemsOf(*done[0]);
  ASSERT_EQ(results.size(), size_t{kItems});
  for (int i = 0; i < kItems; ++i) {
    ASSERT_TRUE(results[i].ok) << i << ": " << results[i].error_message;
    EXPECT_EQ(results[i].output, absl::StrCat(i));
  }
  // Every item started before any ended: one job, 200 suspended at once.
  std::lock_guard<std::mutex> lock(g_spans_mu);
  ASSERT_EQ(g_spans.size(), size_t{kItems});
  absl::Time latest_start = absl::InfinitePast();
  absl::Time earliest_end = absl::InfiniteFuture();
  for (const auto& [start, end] : g_spans) {
    latest_start = std::max(latest_start, start);
    earliest_end = std::min(earliest_end, end);
  }
  EXPECT_LT(latest_start, earliest_end);
}

TEST_F(CoroutineExecutorTest, AFailedItemIsTheLastAndCancelsTheItemsAfterIt) {
  ResetSpans();
  // Item 1 fails after 50 ms; item 0 still runs to its end at 100 ms and is
  // reported; item 2 (a minute) is cancelled then, so the job ends well
  // within kWait.
  executor_->Run({MakeRun(1, "test.span",
                          chunk::Encode({"a:100", "fail:50", "c:60000"}))});
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  std::vector<chunk::ItemResultView> results = ItemsOf(*done[0]);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_TRUE(results[0].ok);
  EXPECT_EQ(results[0].output, "a");
  EXPECT_FALSE(results[1].ok);
  EXPECT_EQ(results[1].error_kind, "test_failure");
  // The job ended after its cancelled item did, not before.
  EXPECT_EQ(g_spans_in_flight.load(), 0);
  std::lock_guard<std::mutex> lock(g_spans_mu);
  EXPECT_EQ(g_spans.size(), 3u);
}

TEST_F(CoroutineExecutorTest, AnItemThatFailsAtOnceStopsTheItemsAfterIt) {
  executor_->Run({MakeRun(1, "test.sleep",
                          chunk::Encode({"10", "not a number", "60000"}))});
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  std::vector<chunk::ItemResultView> results = ItemsOf(*done[0]);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].output, "slept");
  EXPECT_EQ(results[1].error_kind, kBadPayloadKind);
}

TEST_F(CoroutineExecutorTest, CancelResumesAChunksSuspendedItemsAtOnce) {
  ResetSpans();
  constexpr int kItems = 50;
  std::vector<std::string> items(kItems, "x:60000");
  std::shared_ptr<TaskRun> run = MakeRun(1, "test.span", chunk::Encode(items));
  executor_->Run({run});
  ASSERT_TRUE(Eventually([] { return g_spans_in_flight.load() == kItems; }));
  const absl::Time cancelled_at = absl::Now();
  executor_->Cancel(run);
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0]->result.error_kind(), kCancelledKind);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Milliseconds(500));
  EXPECT_EQ(g_spans_in_flight.load(), 0);
  EXPECT_EQ(executor_->running(), 0);
}

TEST_F(CoroutineExecutorTest, ShutdownDestroysAChunksSuspendedItems) {
  ResetSpans();
  std::vector<std::string> items(20, "x:60000");
  executor_->Run({MakeRun(1, "test.span", chunk::Encode(items)),
                  MakeRun(2, "test.sleep", "60000")});
  ASSERT_TRUE(Eventually([&] {
    return g_spans_in_flight.load() == 20 && executor_->running() == 2;
  }));
  executor_->Shutdown();  // frames destroyed unresumed, none reported
  EXPECT_EQ(executor_->running(), 0);
  EXPECT_TRUE(collector_.WaitFor(0).empty());
}

TEST_F(CoroutineExecutorTest, TheDeadlineEndsAChunksItems) {
  const absl::Time start = absl::Now();
  executor_->Run({MakeRun(1, "test.sleep", chunk::Encode({"60000", "60000"}),
                          start + absl::Milliseconds(100))});
  std::vector<std::shared_ptr<TaskRun>> done = collector_.WaitFor(1);
  ASSERT_EQ(done.size(), 1u);
  // The whole job timed out, as an unchunked one: retried as one.
  EXPECT_EQ(done[0]->result.error_kind(), kTimeoutKind);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(CoroutineExecutorChunks, ItemsInFlightStayWithinMaxCoroutines) {
  ResetSpans();
  Collector collector;
  CoroutineExecutor executor(&Registry(), 1, collector.Callback(),
                             /*max_coroutines=*/3);
  ASSERT_TRUE(executor.Start().ok());
  std::vector<std::string> items;
  for (int i = 0; i < 12; ++i) items.push_back(absl::StrCat(i, ":20"));
  executor.Run({MakeRun(1, "test.span", chunk::Encode(items)),
                MakeRun(2, "test.span", chunk::Encode(items))});
  std::vector<std::shared_ptr<TaskRun>> done = collector.WaitFor(2);
  executor.Shutdown();
  ASSERT_EQ(done.size(), 2u);
  for (const auto& run : done) {
    std::vector<chunk::ItemResultView> results = ItemsOf(*run);
    ASSERT_EQ(results.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(results[i].output, absl::StrCat(i));
    }
  }
  EXPECT_EQ(g_spans_most.load(), 3);
}

TEST(CoroutineExecutorBurst, TheFirstRunsResumeBeforeTheLastOnesStart) {
  Collector collector;
  CoroutineExecutor executor(&Registry(), 1, collector.Callback());
  ASSERT_TRUE(executor.Start().ok());
  constexpr int kRuns = 2000;
  std::vector<std::shared_ptr<TaskRun>> runs;
  for (int i = 0; i < kRuns; ++i)
    runs.push_back(MakeRun(i + 1, "test.yield", ""));
  executor.Run(std::move(runs));
  std::vector<std::shared_ptr<TaskRun>> done = collector.WaitFor(kRuns);
  ASSERT_EQ(done.size(), static_cast<size_t>(kRuns));
  std::sort(done.begin(), done.end(),
            [](const auto& a, const auto& b) { return a->run_id < b->run_id; });
  int64_t first_resumed = 0, last_started = 0;
  ASSERT_TRUE(absl::SimpleAtoi(done.front()->result.output().substr(
                                   done.front()->result.output().find(' ') + 1),
                               &first_resumed))
      << done.front()->result.output();
  ASSERT_TRUE(absl::SimpleAtoi(done.back()->result.output().substr(
                                   0, done.back()->result.output().find(' ')),
                               &last_started))
      << done.back()->result.output();
  EXPECT_LT(first_resumed, last_started);
  executor.Shutdown();
}

TEST(CoroutineTaskOnAThread, RunsBlockingThroughTheRegistry) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  std::string out;
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Registry().Run("test.sleep", ctx, "20", &out).ok());
  EXPECT_EQ(out, "slept");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(20));
}

}  // namespace
}  // namespace dexec::worker
