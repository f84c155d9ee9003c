#include "common/http_listener.h"

#include <httplib.h>

#include <atomic>
#include <string>

#include "gtest/gtest.h"

namespace dexec::http {
namespace {

std::unique_ptr<HttpListener> StartEcho(std::atomic<int>* calls,
                                        HttpListener::Options options = {}) {
  auto l =
      HttpListener::Start("127.0.0.1:0", options, [calls](const Request& r) {
        calls->fetch_add(1);
        Response w;
        w.body = r.method + " " + r.path + " q=" + r.query +
                 " cookie=" + CookieValue(r, "dexec_token").value_or("-") +
                 " body=" + r.body;
        w.headers.push_back({"X-Test", "yes"});
        return w;
      });
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? std::move(*l) : nullptr;
}

TEST(HttpListenerTest, AnswersWithTheHandlersResponse) {
  std::atomic<int> calls{0};
  auto l = StartEcho(&calls);
  ASSERT_NE(l, nullptr);
  ASSERT_GT(l->port(), 0);
  httplib::Client c("127.0.0.1", l->port());
  httplib::Headers h = {{"Cookie", "a=1; dexec_token=tok; b=2"}};
  auto r = c.Get("/api/jobs?state=run%20ning&x=1", h);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "GET /api/jobs q=state=run%20ning&x=1 cookie=tok body=");
  EXPECT_EQ(r->get_header_value("X-Test"), "yes");
  auto p = c.Post("/x", "hello", "text/plain");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->body, "POST /x q= cookie=- body=hello");
  EXPECT_EQ(calls.load(), 2);
}

TEST(HttpListenerTest, AnOversizedBodyGets413AndNeverReachesTheHandler) {
  std::atomic<int> calls{0};
  HttpListener::Options o;
  o.max_body_bytes = 1000;
  auto l = StartEcho(&calls, o);
  ASSERT_NE(l, nullptr);
  httplib::Client c("127.0.0.1", l->port());
  auto r = c.Post("/api/login", std::string(5000, 'x'), "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpListenerTest, GarbageGets400AndTheListenerServesOn) {
  std::atomic<int> calls{0};
  auto l = StartEcho(&calls);
  ASSERT_NE(l, nullptr);
  {
    // A raw peer: not HTTP at all.
    httplib::Client raw("127.0.0.1", l->port());
    httplib::Request req;
    req.method = "NOT A METHOD\r\n\x01\x02";
    req.path = "/";
    auto r = raw.send(req);
    if (r) EXPECT_EQ(r->status, 400);
  }
  httplib::Client c("127.0.0.1", l->port());
  auto r = c.Get("/still");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(calls.load(), 1);
}

TEST(HttpListenerTest, ABadOrTakenAddressIsAClearError) {
  auto bad = HttpListener::Start("nonsense", {}, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  std::atomic<int> calls{0};
  auto l = StartEcho(&calls);
  ASSERT_NE(l, nullptr);
  auto taken = HttpListener::Start("127.0.0.1:" + std::to_string(l->port()), {},
                                   [](const Request&) { return Response{}; });
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(taken.status().message().find("--http_listen"), std::string::npos);
}

}  // namespace
}  // namespace dexec::http
