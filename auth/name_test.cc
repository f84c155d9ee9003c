#include "auth/name.h"

#include <string>

#include "gtest/gtest.h"

namespace dexec::auth {
namespace {

TEST(ValidateName, AcceptsLettersDigitsDotUnderscoreDash) {
  EXPECT_TRUE(ValidateName("admin").ok());
  EXPECT_TRUE(ValidateName("ci-runner_2.prod").ok());
  EXPECT_TRUE(ValidateName(std::string(64, 'a')).ok());
}

TEST(ValidateName, RefusesEmptyLongAndOtherCharacters) {
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateName("")));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateName(std::string(65, 'a'))));
  for (const char* bad : {"a b", "a\nb", "a/b", "é", "a\tb", "a:b", "*"}) {
    const absl::Status s = ValidateName(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << bad;
    EXPECT_NE(s.message().find("[A-Za-z0-9._-]"), absl::string_view::npos) << s;
  }
}

}  // namespace
}  // namespace dexec::auth
