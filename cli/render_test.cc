#include "cli/render.h"

#include <string>

#include "gtest/gtest.h"
#include "protos/tasks.pb.h"

namespace dexec::cli {
namespace {

std::string Response(int status, std::string body) {
  tasks::HttpResponse r;
  r.set_status(status);
  r.add_headers("Content-Type: text/plain");
  r.add_headers("X-Quote: \"q\"");
  r.set_body(std::move(body));
  return r.SerializeAsString();
}

TEST(RenderTest, OtherTasksPrintTheirBytes) {
  EXPECT_EQ(ResultText("sys.echo", "a\x01z"), "a\x01z");
  EXPECT_EQ(ResultLine("sys.echo", "a b"), "a b");
}

TEST(RenderTest, HttpGetPrintsTheBodyAlone) {
  EXPECT_EQ(ResultText("http.get", Response(200, "line 1\nline 2\n")),
            "line 1\nline 2\n");
}

TEST(RenderTest, HttpGetInAMapIsOneJsonLine) {
  EXPECT_EQ(
      ResultLine("http.get", Response(200, "a\n\"b\"\t\\c\x01")),
      "{\"status\":200,\"headers\":[\"Content-Type: text/plain\","
      "\"X-Quote: \\\"q\\\"\"],\"body\":\"a\\n\\\"b\\\"\\t\\\\c\\u0001\"}");
  // Not UTF-8: base64.
  EXPECT_EQ(ResultLine("http.get", Response(200, std::string("\xff\x00", 2))),
            "{\"status\":200,\"headers\":[\"Content-Type: text/plain\","
            "\"X-Quote: \\\"q\\\"\"],\"body_base64\":\"/wA=\"}");
  EXPECT_EQ(ResultLine("http.get", Response(200, "")).find('\n'),
            std::string::npos);
}

TEST(RenderTest, Utf8) {
  EXPECT_TRUE(IsUtf8(""));
  EXPECT_TRUE(IsUtf8("plain"));
  EXPECT_TRUE(IsUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsUtf8("\xc3"));              // cut short
  EXPECT_FALSE(IsUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsUtf8("\xe0\x80\xaf"));      // overlong
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsUtf8("\x80"));
  EXPECT_FALSE(IsUtf8("\xe2\x82"));
}

}  // namespace
}  // namespace dexec::cli
