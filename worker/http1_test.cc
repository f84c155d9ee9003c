#include "worker/http1.h"

#include <arpa/inet.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"

namespace dexec::worker::http1 {
namespace {

using State = ResponseParser::State;

TEST(ParseTargetTest, TakesAddressLiterals) {
  std::optional<Target> t = ParseTarget("http://127.0.0.1:8080/a/b?x=1#frag");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->authority, "127.0.0.1:8080");
  EXPECT_EQ(t->path, "/a/b?x=1");
  EXPECT_EQ(t->key, "4/127.0.0.1/8080");
  const auto* a = reinterpret_cast<const sockaddr_in*>(&t->addr);
  EXPECT_EQ(a->sin_family, AF_INET);
  EXPECT_EQ(ntohs(a->sin_port), 8080);

  t = ParseTarget("HTTP://10.0.0.1");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->authority, "10.0.0.1");
  EXPECT_EQ(t->path, "/");
  t = ParseTarget("http://10.0.0.1:80?q");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->authority, "10.0.0.1");  // as curl: no :80 in Host
  EXPECT_EQ(t->path, "/?q");

  t = ParseTarget("http://[::1]:9000/x");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->authority, "[::1]:9000");
  EXPECT_EQ(t->key, "6/::1/9000");
  EXPECT_EQ(reinterpret_cast<const sockaddr_in6*>(&t->addr)->sin6_family,
            AF_INET6);
}

TEST(ParseTargetTest, LeavesTheRestToCurl) {
  for (const char* url :
       {"https://127.0.0.1/", "http://localhost/", "http://example.com/",
        "http://user:pw@127.0.0.1/", "http://127.0.0.1:/",
        "http://127.0.0.1:0/", "http://127.0.0.1:65536/",
        "http://127.0.0.1:8x/", "http://127.1/", "http://[::1/",
        "http://[::1]x/", "http://127.0.0.1/a b", "http://127.0.0.1/\r\nX: y",
        "http:///", "ftp://127.0.0.1/"}) {
    EXPECT_FALSE(ParseTarget(url).has_value()) << url;
  }
}

TEST(BuildRequestTest, MatchesCurlsRequest) {
  const Target t = *ParseTarget("http://127.0.0.1:81/p");
  tasks::HttpRequest req;
  req.set_url("http://127.0.0.1:81/p");
  EXPECT_EQ(*BuildRequest(req, t),
            "GET /p HTTP/1.1\r\nHost: 127.0.0.1:81\r\nAccept: */*\r\n\r\n");

  req.set_body("a=1");  // a body without a method: curl's POST
  EXPECT_EQ(*BuildRequest(req, t),
            "POST /p HTTP/1.1\r\nHost: 127.0.0.1:81\r\nAccept: */*\r\n"
            "Content-Length: 3\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\na=1");
  req.set_method("PATCH");  // curl's Content-Type with any method's body
  EXPECT_EQ(*BuildRequest(req, t),
            "PATCH /p HTTP/1.1\r\nHost: 127.0.0.1:81\r\nAccept: */*\r\n"
            "Content-Length: 3\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\na=1");
  req.set_method("PUT");
  req.add_headers("Content-Type: text/plain");
  req.add_headers("Accept:");        // removes Accept
  req.add_headers("X-Empty;");       // an empty header
  req.add_headers("Host:  other ");  // replaces Host
  EXPECT_EQ(*BuildRequest(req, t),
            "PUT /p HTTP/1.1\r\nContent-Length: 3\r\n"
            "Content-Type: text/plain\r\nX-Empty:\r\nHost: other\r\n\r\na=1");
}

TEST(BuildRequestTest, LeavesFramingAndOddMethodsToCurl) {
  const Target t = *ParseTarget("http://127.0.0.1/");
  for (const char* h :
       {"Content-Length: 5", "transfer-encoding: chunked", "Connection: close",
        "Expect: 100-continue", "no colon", "X-A; not empty", "Bad Name: 1"}) {
    tasks::HttpRequest req;
    req.add_headers(h);
    EXPECT_FALSE(BuildRequest(req, t).has_value()) << h;
  }
  tasks::HttpRequest req;
  req.set_method("GET /x HTTP/1.1\r\n");
  EXPECT_FALSE(BuildRequest(req, t).has_value());
  EXPECT_TRUE(HeaderIsUnsafe("X: a\r\nY: b"));
  EXPECT_TRUE(HeaderIsUnsafe(std::string("X: a\0b", 6)));
  EXPECT_FALSE(HeaderIsUnsafe("X: a b"));
}

TEST(ResponseParserTest, ContentLengthInPieces) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y:  z \r\n\r\nhello";
  ResponseParser p(false, 1 << 20);
  State s = State::kMore;
  for (size_t i = 0; i < wire.size(); ++i) {
    ASSERT_EQ(s, State::kMore) << i;
    s = p.Feed(wire.data() + i, 1);
  }
  ASSERT_EQ(s, State::kDone) << p.error();
  EXPECT_EQ(p.response().status(), 200);
  EXPECT_EQ(p.response().body(), "hello");
  ASSERT_EQ(p.response().headers_size(), 2);
  EXPECT_EQ(p.response().headers(0), "Content-Length: 5");
  EXPECT_EQ(p.response().headers(1), "X-Y: z");
  EXPECT_TRUE(p.reusable());
}

TEST(ResponseParserTest, ChunkedAfterAContinue) {
  const std::string wire =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  ResponseParser p(false, 1 << 20);
  ASSERT_EQ(p.Feed(wire.data(), wire.size()), State::kDone) << p.error();
  EXPECT_EQ(p.response().status(), 404);
  EXPECT_EQ(p.response().body(), "abcde");
  ASSERT_EQ(p.response().headers_size(), 1);
  EXPECT_TRUE(p.reusable());
}

TEST(ResponseParserTest, BodyToTheEndAndConnectionClose) {
  ResponseParser p(false, 1 << 20);
  const std::string wire = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nab";
  ASSERT_EQ(p.Feed(wire.data(), wire.size()), State::kMore);
  ASSERT_EQ(p.FeedEof(), State::kDone);
  EXPECT_EQ(p.response().body(), "ab");
  EXPECT_FALSE(p.reusable());

  ResponseParser q(false, 1 << 20);
  const std::string h10 = "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx";
  ASSERT_EQ(q.Feed(h10.data(), h10.size()), State::kDone);
  EXPECT_FALSE(q.reusable());  // HTTP/1.0 without keep-alive
}

TEST(ResponseParserTest, HeadHasNoBody) {
  ResponseParser p(true, 1 << 20);
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  ASSERT_EQ(p.Feed(wire.data(), wire.size()), State::kDone) << p.error();
  EXPECT_EQ(p.response().body(), "");
  EXPECT_TRUE(p.reusable());
}

TEST(ResponseParserTest, BytesPastTheResponseEndTheConnection) {
  ResponseParser p(false, 1 << 20);
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n";
  ASSERT_EQ(p.Feed(wire.data(), wire.size()), State::kDone);
  EXPECT_EQ(p.response().body(), "x");
  EXPECT_FALSE(p.reusable());
}

TEST(ResponseParserTest, BadInput) {
  struct Case {
    const char* name;
    std::string wire;
    bool eof;
  };
  const Case cases[] = {
      {"garbage", "SSH-2.0-OpenSSH\r\n", false},
      {"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", false},
      {"bad chunk",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false},
      {"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
      {"nothing", "", true},
      {"huge header",
       absl::StrCat("HTTP/1.1 200 OK\r\nX: ", std::string(200 << 10, 'a')),
       false},
      {"switched protocols",
       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: "
       "upgrade\r\n\r\nbinary",
       false},
      {"two lengths",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
       false},
  };
  for (const Case& c : cases) {
    ResponseParser p(false, 1 << 20);
    State s = p.Feed(c.wire.data(), c.wire.size());
    if (c.eof && s == State::kMore) s = p.FeedEof();
    EXPECT_EQ(s, State::kError) << c.name;
    EXPECT_FALSE(p.error().empty()) << c.name;
    EXPECT_FALSE(p.reusable()) << c.name;
  }
}

TEST(ResponseParserTest, BodyOverTheLimit) {
  ResponseParser p(false, 4);
  const std::string wire = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  EXPECT_EQ(p.Feed(wire.data(), wire.size()), State::kError);
  EXPECT_TRUE(p.too_large());
}

}  // namespace
}  // namespace dexec::worker::http1
