// The broker's --http_listen against a real broker and worker: the tokens
// and roles of gRPC on /api/ and /metrics, the login cookie, cancel from
// the API, the metrics' values, and hostile requests the broker outlives.
#include <httplib.h>

#include <memory>
#include <string>

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

// Reads one sample's value from a Prometheus text exposition.
double Sample(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, series) && absl::ConsumePrefix(&line, " ")) {
      double v = -1;
      if (absl::SimpleAtod(line, &v)) return v;
    }
  }
  ADD_FAILURE() << "no series " << series << " in:\n" << text;
  return -1;
}

TEST_F(HttpTest, MetricsCountWhatRan) {
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
  EXPECT_EQ(Sample(m->body, "dexec_jobs_submitted_total"), 21);
  EXPECT_EQ(Sample(m->body, "dexec_jobs{state=\"succeeded\"}"), 20);
  EXPECT_EQ(Sample(m->body, "dexec_jobs{state=\"queued\"}"), 1);
  EXPECT_EQ(Sample(m->body, "dexec_jobs{state=\"running\"}"), 0);
  EXPECT_EQ(Sample(m->body, "dexec_jobs_finished_total{outcome=\"succeeded\"}"),
            20);
  EXPECT_EQ(Sample(m->body, "dexec_jobs_finished_total{outcome=\"failed\"}"),
            0);
  EXPECT_EQ(Sample(m->body, "dexec_jobs_finished_total{outcome=\"cancelled\"}"),
            0);
  EXPECT_EQ(Sample(m->body, "dexec_workers{state=\"ready\"}"), 1);
  EXPECT_EQ(Sample(m->body, "dexec_worker_threads"), 2);
  // Refusals of this test's HTTP calls are counted with gRPC's.
  const double before =
      Sample(m->body, "dexec_auth_failures_total{plane=\"client\"}");
  auto refused = c.Get("/metrics", Bearer("dexec_wrong"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  auto again = c.Get("/metrics", Bearer(cluster_.admin_token()));
  ASSERT_TRUE(again);
  EXPECT_EQ(Sample(again->body, "dexec_auth_failures_total{plane=\"client\"}"),
            before + 1);
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
