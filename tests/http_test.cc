// The broker's --http_listen against a real broker and worker: the tokens
// and roles of gRPC on /api/ and /metrics, the login cookie, cancel from
// the API, the metrics' values, and hostile requests the broker outlives.
#include <httplib.h>
#include <signal.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/executor.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"

namespace dexec::testing {
namespace {

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok());
    const std::string& a = cluster_.http_address();
    const size_t colon = a.rfind(':');
    ASSERT_NE(colon, std::string::npos) << "http=" << a;
    ASSERT_TRUE(absl::SimpleAtoi(a.substr(colon + 1), &port_)) << a;
    ASSERT_TRUE(cluster_.StartWorker(2).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
    absl::StatusOr<std::unique_ptr<Executor>> ex =
        Executor::Connect(cluster_.executor_options());
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
  }
  void TearDown() override {
    if (executor_) executor_->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
  }

  httplib::Client Client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    return c;
  }
  httplib::Headers Bearer(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }
  std::string CreateToken(const std::string& name, const std::string& role) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + cluster_.admin_token());
    v1::CreateTokenRequest req;
    req.set_name(name);
    req.set_role(role);
    v1::CreateTokenResponse resp;
    grpc::Status s = cluster_.stub().CreateToken(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.token();
  }

  TestCluster cluster_;
  int port_ = 0;
  std::unique_ptr<Executor> executor_;
};

TEST_F(HttpTest, EveryDataRouteNeedsAToken) {
  httplib::Client c = Client();
  for (const char* path :
       {"/api/stats", "/api/jobs", "/api/workers", "/api/whoami", "/metrics"}) {
    auto none = c.Get(path);
    ASSERT_TRUE(none) << path;
    EXPECT_EQ(none->status, 401) << path << ": " << none->body;
    auto wrong = c.Get(path, Bearer("dexec_0000"));
    ASSERT_TRUE(wrong) << path;
    EXPECT_EQ(wrong->status, 401) << path;
    httplib::Headers bad_cookie = {{"Cookie", "dexec_token=dexec_1111"}};
    auto cookie = c.Get(path, bad_cookie);
    ASSERT_TRUE(cookie) << path;
    EXPECT_EQ(cookie->status, 401) << path;
    auto ok = c.Get(path, Bearer(cluster_.admin_token()));
    ASSERT_TRUE(ok) << path;
    EXPECT_EQ(ok->status, 200) << path << ": " << ok->body;
  }
  // The dashboard's page itself is public: it asks for a token.
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_TRUE(
      absl::StrContains(page->get_header_value("Content-Type"), "text/html"));
  auto unknown = c.Get("/nothing-here");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST_F(HttpTest, LoginSetsAStrictHttpOnlyCookieThatAuthenticates) {
  httplib::Client c = Client();
  auto bad =
      c.Post("/api/login", R"({"token":"dexec_nope"})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 401);
  EXPECT_FALSE(bad->has_header("Set-Cookie"));
  const std::string reader = CreateToken("viewer", "read");
  auto in = c.Post("/api/login", absl::StrCat(R"({"token":")", reader, "\"}"),
                   "application/json");
  ASSERT_TRUE(in);
  ASSERT_EQ(in->status, 200) << in->body;
  EXPECT_TRUE(absl::StrContains(in->body, "\"role\":\"read\"")) << in->body;
  const std::string cookie = in->get_header_value("Set-Cookie");
  EXPECT_TRUE(absl::StrContains(cookie, "HttpOnly")) << cookie;
  EXPECT_TRUE(absl::StrContains(cookie, "SameSite=Strict")) << cookie;
  httplib::Headers with_cookie = {
      {"Cookie", cookie.substr(0, cookie.find(';'))}};
  auto who = c.Get("/api/whoami", with_cookie);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->status, 200);
  EXPECT_TRUE(absl::StrContains(who->body, "viewer")) << who->body;
}

TEST_F(HttpTest, CancelFromTheApiFollowsTheRoles) {
  Future<std::string> f = executor_->Submit("sys.sleep", std::string("60000"));
  absl::StatusOr<uint64_t> id = f.JobId(absl::Seconds(20));
  ASSERT_TRUE(id.ok()) << id.status();
  httplib::Client c = Client();
  const std::string path = absl::StrCat("/api/jobs/", *id, "/cancel");
  const std::string reader = CreateToken("reader", "read");
  auto refused = c.Post(path, Bearer(reader), "", "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 403) << refused->body;
  const std::string other = CreateToken("other", "submit");
  auto unseen = c.Post(path, Bearer(other), "", "application/json");
  ASSERT_TRUE(unseen);
  EXPECT_EQ(unseen->status, 404) << unseen->body;
  EXPECT_NE(GetJob(cluster_.stub(), *id).state(), v1::Job::CANCELLED);

  auto done =
      c.Post(path, Bearer(cluster_.admin_token()), "", "application/json");
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 200) << done->body;
  EXPECT_EQ(GetJob(cluster_.stub(), *id).state(), v1::Job::CANCELLED);
  EXPECT_EQ(f.Exception(absl::Seconds(20)).code(),
            absl::StatusCode::kCancelled);
}

// A Prometheus text exposition, parsed: each sample by its name and its
// labels (sorted, values unescaped), and each family's TYPE. Malformed
// lines fail the test.
struct Exposition {
  // "name{a=\"x\",b=\"y\"}" (labels sorted by name) -> value.
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;

  bool Has(const std::string& key) const { return samples.count(key) > 0; }
  double At(const std::string& key) const {
    auto it = samples.find(key);
    if (it == samples.end()) {
      ADD_FAILURE() << "no sample " << key;
      return -1;
    }
    return it->second;
  }
  // The samples of `name` with label `label`, by its value, in the text's
  // order (for a histogram's buckets: le -> cumulative count).
  std::vector<std::pair<std::string, double>> Buckets(
      const std::string& name) const {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& [key, le, v] : order) {
      if (key == name) out.emplace_back(le, v);
    }
    return out;
  }
  // (name, le, value) of every sample with an le label, in order.
  std::vector<std::tuple<std::string, std::string, double>> order;
};

// Key of a sample: its name and its labels, sorted.
std::string Key(const std::string& name,
                std::map<std::string, std::string> labels = {}) {
  if (labels.empty()) return name;
  std::string k = name + "{";
  bool first = true;
  for (const auto& [l, v] : labels) {
    absl::StrAppend(&k, first ? "" : ",", l, "=\"", v, "\"");
    first = false;
  }
  return k + "}";
}

Exposition Parse(const std::string& text) {
  Exposition e;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      EXPECT_EQ(parts.size(), 2u) << line;
      if (parts.size() == 2) e.types[parts[0]] = parts[1];
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const std::string name(line.substr(0, i));
    std::map<std::string, std::string> labels;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == absl::string_view::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          ADD_FAILURE() << "bad label in: " << line;
          return e;
        }
        const std::string label(line.substr(i, eq - i));
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        if (j >= line.size()) {
          ADD_FAILURE() << "unterminated label value in: " << line;
          return e;
        }
        labels[label] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    absl::string_view rest = line.substr(std::min(i, line.size()));
    double v = 0;
    if (!absl::ConsumePrefix(&rest, " ") ||
        !(absl::SimpleAtod(rest, &v) || rest == "+Inf")) {
      ADD_FAILURE() << "bad sample line: " << line;
      continue;
    }
    auto le = labels.find("le");
    if (le != labels.end()) {
      e.order.emplace_back(name, le->second, v);
    }
    e.samples[Key(name, labels)] = v;
  }
  return e;
}

class HttpMetricsTest : public HttpTest {
 protected:
  Exposition Scrape() {
    httplib::Client c = Client();
    auto m = c.Get("/metrics", Bearer(cluster_.admin_token()));
    EXPECT_TRUE(m);
    if (!m) return {};
    EXPECT_EQ(m->status, 200) << m->body;
    return Parse(m->body);
  }
  // Scrapes until `done` holds of the exposition, for at most 20 s.
  Exposition ScrapeUntil(const std::function<bool(const Exposition&)>& done,
                         const std::string& what) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    Exposition e = Scrape();
    while (!done(e) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));  // polling, bounded
      e = Scrape();
    }
    EXPECT_TRUE(done(e)) << "within 20 s: " << what;
    return e;
  }
};

TEST_F(HttpMetricsTest, MetricsCountWhatRan) {
  std::vector<Future<std::string>> ok;
  for (int i = 0; i < 20; ++i) {
    ok.push_back(executor_->Submit("sys.echo", std::string("x")));
  }
  Future<std::string> bad = executor_->Submit("no.such.task.anywhere", "");
  for (auto& f : ok) ASSERT_TRUE(f.Result(absl::Seconds(20)).ok());
  httplib::Client c = Client();
  auto m = c.Get("/metrics", Bearer(cluster_.admin_token()));
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  EXPECT_TRUE(absl::StartsWith(m->get_header_value("Content-Type"),
                               "text/plain; version=0.0.4"));
  Exposition e = Parse(m->body);
  EXPECT_EQ(e.At("dexec_jobs_submitted_total"), 21);
  EXPECT_EQ(e.At(Key("dexec_jobs", {{"state", "succeeded"}})), 20);
  EXPECT_EQ(e.At(Key("dexec_jobs", {{"state", "queued"}})), 1);
  EXPECT_EQ(e.At(Key("dexec_jobs", {{"state", "running"}})), 0);
  EXPECT_EQ(e.At(Key("dexec_jobs_finished_total", {{"outcome", "succeeded"}})),
            20);
  EXPECT_EQ(e.At(Key("dexec_jobs_finished_total", {{"outcome", "failed"}})), 0);
  EXPECT_EQ(e.At(Key("dexec_jobs_finished_total", {{"outcome", "cancelled"}})),
            0);
  EXPECT_EQ(e.At(Key("dexec_workers", {{"state", "ready"}})), 1);
  EXPECT_EQ(e.At("dexec_worker_threads"), 2);
  EXPECT_EQ(e.types["dexec_jobs_submitted_total"], "counter");
  EXPECT_EQ(e.types["dexec_queue_wait_seconds"], "histogram");
  // The journal wrote the 21 jobs (a payload and a record each at least)
  // in rounds it timed.
  EXPECT_GT(e.At("dexec_journal_commit_seconds_count"), 0);
  EXPECT_EQ(e.At("dexec_journal_commit_seconds_count"),
            e.At("dexec_journal_round_records_count"));
  EXPECT_GE(e.At("dexec_journal_round_records_sum"), 42);
  // The unknown task waits: the oldest queued job is at least as old as
  // the twenty that ran after it were.
  EXPECT_GT(e.At("dexec_oldest_queued_job_age_seconds"), 0);
  // Refusals of this test's HTTP calls are counted with gRPC's.
  const double before =
      e.At(Key("dexec_auth_failures_total", {{"plane", "client"}}));
  auto refused = c.Get("/metrics", Bearer("dexec_wrong"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(
      Scrape().At(Key("dexec_auth_failures_total", {{"plane", "client"}})),
      before + 1);
}

TEST_F(HttpMetricsTest, ByTaskSeriesStayAtZeroAfterTheirQueueDrains) {
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 5; ++i) {
    fs.push_back(executor_->Submit("sys.echo", std::string("x")));
  }
  for (auto& f : fs) ASSERT_TRUE(f.Result(absl::Seconds(20)).ok());
  Exposition e = Scrape();
  const std::map<std::string, std::string> echo = {{"task", "sys.echo"}};
  EXPECT_EQ(e.At(Key("dexec_task_jobs_submitted_total", echo)), 5);
  EXPECT_EQ(e.At(Key("dexec_task_jobs_finished_total",
                     {{"task", "sys.echo"}, {"outcome", "succeeded"}})),
            5);
  EXPECT_EQ(e.At(Key("dexec_task_jobs_finished_total",
                     {{"task", "sys.echo"}, {"outcome", "failed"}})),
            0);
  // Drained, and still there at 0.
  EXPECT_EQ(
      e.At(Key("dexec_task_jobs", {{"task", "sys.echo"}, {"state", "queued"}})),
      0);
  EXPECT_EQ(e.At(Key("dexec_task_jobs",
                     {{"task", "sys.echo"}, {"state", "running"}})),
            0);
  EXPECT_EQ(e.At(Key("dexec_task_jobs_submitted_total", {{"task", "(other)"}})),
            0);
  EXPECT_EQ(e.types["dexec_task_jobs"], "gauge");
  EXPECT_EQ(e.At("dexec_oldest_queued_job_age_seconds"), 0);
}

TEST_F(HttpMetricsTest, HistogramBucketsAreCumulativeAndCountTheJobsThatRan) {
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 12; ++i) {
    fs.push_back(executor_->Submit("sys.echo", std::string("x")));
  }
  // One that runs for 300 ms: its run time lands above 0.25 s.
  fs.push_back(executor_->Submit("sys.sleep", std::string("300")));
  for (auto& f : fs) ASSERT_TRUE(f.Result(absl::Seconds(20)).ok());
  Exposition e = Scrape();
  for (const std::string name :
       {"dexec_queue_wait_seconds", "dexec_submit_to_start_seconds",
        "dexec_run_time_seconds"}) {
    EXPECT_EQ(e.types[name], "histogram") << name;
    std::vector<std::pair<std::string, double>> b = e.Buckets(name + "_bucket");
    ASSERT_EQ(b.size(), 25u) << name;  // 100 us .. 1 h, and +Inf
    EXPECT_EQ(b.front().first, "0.0001") << name;
    EXPECT_EQ(b[b.size() - 2].first, "3600") << name;
    EXPECT_EQ(b.back().first, "+Inf") << name;
    for (size_t i = 1; i < b.size(); ++i) {
      EXPECT_GE(b[i].second, b[i - 1].second) << name << " le=" << b[i].first;
    }
    EXPECT_EQ(b.back().second, e.At(name + "_count")) << name;
    EXPECT_EQ(e.At(name + "_count"), 13) << name;
  }
  EXPECT_GE(e.At("dexec_run_time_seconds_sum"), 0.3);
  // The sleep is the only attempt above 0.25 s.
  std::vector<std::pair<std::string, double>> run =
      e.Buckets("dexec_run_time_seconds_bucket");
  for (const auto& [le, n] : run) {
    if (le == "0.25") {
      EXPECT_EQ(n, 12);
    }
    if (le == "0.5") {
      EXPECT_EQ(n, 13);
    }
  }
}

TEST_F(HttpMetricsTest, ARequeueAfterItsWorkerIsKilledCountsAsWorkerLost) {
  Future<std::string> f = executor_->Submit("sys.sleep", std::string("60000"));
  ScrapeUntil(
      [](const Exposition& e) {
        return e.Has(Key("dexec_task_jobs",
                         {{"task", "sys.sleep"}, {"state", "running"}})) &&
               e.At(Key("dexec_task_jobs",
                        {{"task", "sys.sleep"}, {"state", "running"}})) == 1;
      },
      "the sleep runs");
  cluster_.workers()[0]->Signal(SIGKILL);
  ASSERT_TRUE(cluster_.workers()[0]->Wait(absl::Seconds(10)).ok());
  const std::string lost =
      Key("dexec_requeues_total", {{"reason", "worker_lost"}});
  Exposition e =
      ScrapeUntil([&lost](const Exposition& e) { return e.At(lost) == 1; },
                  "the broker requeues the job of the killed worker");
  EXPECT_EQ(e.At(Key("dexec_requeues_total", {{"reason", "timeout"}})), 0);
  EXPECT_EQ(e.At(Key("dexec_requeues_total", {{"reason", "task_failed"}})), 0);
  EXPECT_EQ(e.At(Key("dexec_task_jobs",
                     {{"task", "sys.sleep"}, {"state", "queued"}})),
            1);
  EXPECT_GT(e.At("dexec_oldest_queued_job_age_seconds"), 0);
  // No worker is left to run it (the executor's shutdown would wait).
  f.Cancel();
  EXPECT_EQ(f.Exception(absl::Seconds(20)).code(),
            absl::StatusCode::kCancelled);
}

TEST_F(HttpMetricsTest, ARefusedCallCountsByMethodAndCode) {
  std::unique_ptr<v1::Broker::Stub> stub =
      cluster_.StubWithToken("dexec_not_a_token");
  grpc::ClientContext ctx;
  v1::GetStatsRequest req;
  v1::Stats resp;
  grpc::Status s = stub->GetStats(&ctx, req, &resp);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A Session stream opened with it is refused too, and counted by the
  // service itself (streams are not intercepted).
  grpc::ClientContext session_ctx;
  auto stream = stub->Session(&session_ctx);
  v1::SessionResponse ignored;
  EXPECT_FALSE(stream->Read(&ignored));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  Exposition e = Scrape();
  EXPECT_EQ(e.At(Key("dexec_grpc_requests_total",
                     {{"method", "GetStats"}, {"code", "UNAUTHENTICATED"}})),
            1);
  EXPECT_EQ(e.At(Key("dexec_grpc_requests_total",
                     {{"method", "Session"}, {"code", "UNAUTHENTICATED"}})),
            1);
  EXPECT_EQ(e.types["dexec_grpc_requests_total"], "counter");
  ASSERT_TRUE(executor_->Submit("sys.echo", std::string("x"))
                  .Result(absl::Seconds(20))
                  .ok());
  e = Scrape();
  EXPECT_GE(e.At("dexec_grpc_session_streams_opened_total"), 1);
  EXPECT_GE(
      e.At(Key("dexec_grpc_session_requests_total", {{"kind", "submit"}})), 1);
}

// A task name is the client's: it reaches the exposition as a label value,
// escaped, and cannot end its label, its line or add a sample.
TEST_F(HttpMetricsTest, AHostileTaskNameStaysInsideItsLabel) {
  const std::string evil =
      "evil\"} 1\ndexec_jobs_submitted_total 999\n# TYPE x counter\\";
  Future<std::string> f = executor_->Submit(evil, std::string("x"));
  ASSERT_TRUE(f.JobId(absl::Seconds(20)).ok());
  httplib::Client c = Client();
  auto m = c.Get("/metrics", Bearer(cluster_.admin_token()));
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  Exposition e = Parse(m->body);
  EXPECT_EQ(e.At("dexec_jobs_submitted_total"), 1);
  EXPECT_EQ(e.At(Key("dexec_task_jobs_submitted_total", {{"task", evil}})), 1);
  EXPECT_EQ(e.types.count("x"), 0u);
  for (absl::string_view line : absl::StrSplit(m->body, '\n')) {
    EXPECT_FALSE(absl::StartsWith(line, "dexec_jobs_submitted_total 999"));
  }
  f.Cancel();
  EXPECT_EQ(f.Exception(absl::Seconds(20)).code(),
            absl::StatusCode::kCancelled);
}

// Task names beyond --max_task_series are counted under "(other)".
TEST(HttpMetricsCapTest, FoldsTaskNamesBeyondTheCapIntoOther) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--max_task_series=2"}).ok());
  const std::string& a = cluster.http_address();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(a.substr(a.rfind(':') + 1), &port)) << a;
  absl::StatusOr<std::unique_ptr<Executor>> ex =
      Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto scrape = [&] {
    httplib::Client c("127.0.0.1", port);
    auto m = c.Get("/metrics",
                   {{"Authorization", "Bearer " + cluster.admin_token()}});
    EXPECT_TRUE(m && m->status == 200);
    return m ? Parse(m->body) : Exposition{};
  };
  // No worker: every job stays queued, so no kept name can make room.
  std::vector<Future<std::string>> fs;
  for (const char* task : {"t.a", "t.b", "t.c", "t.c"}) {
    fs.push_back((*ex)->Submit(task, std::string("x")));
  }
  for (auto& f : fs) ASSERT_TRUE(f.JobId(absl::Seconds(20)).ok());
  Exposition e = scrape();
  auto submitted = [](const std::string& task) {
    return Key("dexec_task_jobs_submitted_total", {{"task", task}});
  };
  auto queued = [](const std::string& task) {
    return Key("dexec_task_jobs", {{"task", task}, {"state", "queued"}});
  };
  EXPECT_EQ(e.At(submitted("t.a")), 1);
  EXPECT_EQ(e.At(submitted("t.b")), 1);
  EXPECT_FALSE(e.Has(submitted("t.c")));
  EXPECT_EQ(e.At(submitted("(other)")), 2);
  EXPECT_EQ(e.At(queued("(other)")), 2);
  // t.a drains (cancelled): the next new name takes its place, and its
  // counts fold into (other) — no counter goes down.
  for (int i : {0, 2, 3}) fs[i].Cancel();
  for (int i : {0, 2, 3}) {
    EXPECT_EQ(fs[i].Exception(absl::Seconds(20)).code(),
              absl::StatusCode::kCancelled);
  }
  ASSERT_TRUE(
      (*ex)->Submit("t.d", std::string("x")).JobId(absl::Seconds(20)).ok());
  e = scrape();
  EXPECT_FALSE(e.Has(submitted("t.a")));
  EXPECT_EQ(e.At(submitted("t.d")), 1);
  EXPECT_EQ(e.At(queued("t.d")), 1);
  EXPECT_EQ(e.At(submitted("(other)")), 3);
  EXPECT_EQ(e.At(Key("dexec_task_jobs_finished_total",
                     {{"task", "(other)"}, {"outcome", "cancelled"}})),
            3);
  EXPECT_EQ(e.At(queued("(other)")), 0);
  (*ex)->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
}

// A worker's --http_listen: its own /metrics, no token, loopback only.
TEST(WorkerMetricsTest, ServesRunsFailuresThreadsAndHeartbeatAge) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  absl::StatusOr<size_t> w =
      cluster.StartWorker(3, {"--http_listen=127.0.0.1:0"});
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<std::string> line =
      cluster.workers()[*w]->ReadLine(absl::Seconds(20));
  ASSERT_TRUE(line.ok()) << line.status();
  const size_t at = line->find(" http=127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << *line;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      line->substr(at + std::string(" http=127.0.0.1:").size()), &port))
      << *line;
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  absl::StatusOr<std::unique_ptr<Executor>> ex =
      Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<Future<std::string>> ok;
  for (int i = 0; i < 4; ++i) {
    ok.push_back((*ex)->Submit("sys.echo", std::string("x")));
  }
  Future<std::string> failing = (*ex)->Submit("sys.fail", std::string("no"));
  for (auto& f : ok) ASSERT_TRUE(f.Result(absl::Seconds(20)).ok());
  EXPECT_FALSE(failing.Result(absl::Seconds(20)).ok());
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(10, 0);
  // The worker counts a run when worker-io collects it, before the result
  // reaches the broker, so the counts are there once the futures resolved.
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200) << m->body;
  EXPECT_TRUE(absl::StartsWith(m->get_header_value("Content-Type"),
                               "text/plain; version=0.0.4"));
  Exposition e = Parse(m->body);
  EXPECT_EQ(e.At(Key("dexec_worker_tasks_run_total", {{"task", "sys.echo"}})),
            4);
  EXPECT_EQ(
      e.At(Key("dexec_worker_tasks_failed_total", {{"task", "sys.echo"}})), 0);
  EXPECT_EQ(e.At(Key("dexec_worker_tasks_run_total", {{"task", "sys.fail"}})),
            1);
  EXPECT_EQ(
      e.At(Key("dexec_worker_tasks_failed_total", {{"task", "sys.fail"}})), 1);
  EXPECT_EQ(e.At(Key("dexec_worker_tasks_run_total", {{"task", "(other)"}})),
            0);
  EXPECT_EQ(e.At("dexec_worker_pool_threads"), 3);
  EXPECT_EQ(e.At("dexec_worker_busy_threads"), 0);
  EXPECT_EQ(e.At("dexec_worker_connected"), 1);
  // The broker heartbeats every second (a frame resets the age).
  EXPECT_GE(e.At("dexec_worker_heartbeat_age_seconds"), 0);
  EXPECT_LT(e.At("dexec_worker_heartbeat_age_seconds"), 3);
  EXPECT_EQ(e.types["dexec_worker_tasks_run_total"], "counter");
  auto other = c.Get("/api/stats");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  (*ex)->Shutdown(/*wait=*/true, /*cancel_futures=*/true);
}

TEST(WorkerMetricsTest, RefusesANonLoopbackListenerWithoutInsecure) {
  absl::StatusOr<CommandResult> r = RunCommand(
      {BinaryPath("worker/dexec-worker"), "--broker=tcp://127.0.0.1:1",
       "--http_listen=0.0.0.0:0", "--worker_key=/nonexistent"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "--insecure")) << r->err;
}

TEST_F(HttpTest, HostileRequestsGetErrorsAndTheBrokerServesOn) {
  httplib::Client c = Client();
  auto big = c.Post("/api/login", std::string(2 << 20, 'x'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  auto not_json = c.Post("/api/login", "{{{{", "application/json");
  ASSERT_TRUE(not_json);
  EXPECT_EQ(not_json->status, 400);
  auto bad_id = c.Get("/api/jobs/not-a-number", Bearer(cluster_.admin_token()));
  ASSERT_TRUE(bad_id);
  EXPECT_GE(bad_id->status, 400);
  EXPECT_LT(bad_id->status, 500);
  auto traversal = c.Get("/static/../../etc/passwd");
  ASSERT_TRUE(traversal);
  EXPECT_EQ(traversal->status, 404);
  // Still serving, gRPC too.
  auto stats = c.Get("/api/stats", Bearer(cluster_.admin_token()));
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->status, 200);
  Future<std::string> f = executor_->Submit("sys.echo", std::string("alive"));
  absl::StatusOr<std::string> r = f.Result(absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "alive");
}

}  // namespace
}  // namespace dexec::testing
