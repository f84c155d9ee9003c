// The embedded dashboard is byte for byte the files in broker/dashboard/.
#include "broker/dashboard/dashboard_assets.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

std::string ReadSource(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  const std::string path = std::string(srcdir ? srcdir : ".") + "/" +
                           (ws ? ws : "dexec") + "/broker/dashboard/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(DashboardAssetsTest, ServesEachFileWithItsType) {
  const struct {
    const char* url;
    const char* file;
    const char* type;
  } kWant[] = {
      {"/", "index.html", "text/html; charset=utf-8"},
      {"/static/app.js", "app.js", "text/javascript; charset=utf-8"},
      {"/static/app.css", "app.css", "text/css; charset=utf-8"},
  };
  for (const auto& w : kWant) {
    const DashboardAsset* a = FindDashboardAsset(w.url);
    ASSERT_NE(a, nullptr) << w.url;
    EXPECT_EQ(a->content_type, w.type) << w.url;
    const std::string source = ReadSource(w.file);
    ASSERT_FALSE(source.empty()) << w.file;
    EXPECT_EQ(a->body, source) << w.url;  // non-ASCII bytes (µ, →) too
  }
}

TEST(DashboardAssetsTest, UnknownPathsAreNull) {
  EXPECT_EQ(FindDashboardAsset("/index.html"), nullptr);
  EXPECT_EQ(FindDashboardAsset("/static/"), nullptr);
  EXPECT_EQ(FindDashboardAsset("/static/../app.js"), nullptr);
  EXPECT_EQ(FindDashboardAsset(""), nullptr);
}

}  // namespace
}  // namespace dexec::broker
