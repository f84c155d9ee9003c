#include "common/flag_help.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_listen, "127.0.0.1:1", "where to listen");
ABSL_FLAG(bool, test_switch, false, "turns it on");
ABSL_FLAG(bool, test_on, true, "on unless\n  turned off");
ABSL_FLAG(std::string, test_empty, "", "empty by default");
ABSL_FLAG(absl::Duration, test_interval, absl::Seconds(1), "how often");
ABSL_FLAG(int, test_ungrouped, 7, "in no group");

namespace dexec {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

FlagHelp TestHelp() {
  return {.program = "prog",
          .summary = "does things.",
          .groups = {{"Network", {"test_listen", "test_interval", "gone"}},
                     {"Switches", {"test_switch", "test_on", "test_empty"}}}};
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n');
}

TEST(FlagHelp, ListsEachGroupedFlagOnOneLineWithItsDefault) {
  const std::string text = FlagHelpText(TestHelp());
  EXPECT_THAT(text, HasSubstr("prog: does things.\n\nUsage: prog [FLAGS...]"));
  EXPECT_THAT(text, ContainsRegex("\nNetwork:\n  --test_listen=127.0.0.1:1 +"
                                  "where to listen\n  --test_interval=1s +"
                                  "how often\n\nSwitches:\n"));
  EXPECT_THAT(text, ContainsRegex("\n  --test_switch +turns it on\n"));
  EXPECT_THAT(text,
              ContainsRegex("\n  --test_on=true +on unless turned off\n"));
  EXPECT_THAT(text, ContainsRegex("\n  --test_empty='' +empty by default\n"));
}

TEST(FlagHelp, PutsUngroupedFlagsUnderOtherFlagsAndSkipsUnknownNames) {
  const std::string text = FlagHelpText(TestHelp());
  EXPECT_THAT(text, ContainsRegex("\nOther flags:\n(  --.*\n)*  "
                                  "--test_ungrouped=7 +in no group\n"));
  EXPECT_THAT(text, Not(HasSubstr("--gone")));
}

TEST(FlagHelp, LeavesAbslOwnFlagsToHelpfull) {
  const std::string text = FlagHelpText(TestHelp());
  EXPECT_THAT(text, Not(HasSubstr("--flagfile")));
  EXPECT_THAT(text, Not(HasSubstr("--helpfull=")));
  EXPECT_THAT(text, Not(HasSubstr("--undefok")));
}

TEST(FlagHelp, AlignsHelpTextInOneColumn) {
  size_t column = std::string::npos;
  for (const std::string& line : Lines(FlagHelpText(TestHelp()))) {
    if (line.rfind("  --test_", 0) != 0) continue;
    const size_t flag_end = line.find(' ', 2);
    const size_t text_start = line.find_first_not_of(' ', flag_end);
    if (column == std::string::npos) column = text_start;
    EXPECT_EQ(text_start, column) << line;
  }
  EXPECT_NE(column, std::string::npos);
}

TEST(FlagHelp, RecognisesHelpBeforeDoubleDashOnly) {
  auto requested = [](std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    return HelpRequested(static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_TRUE(requested({"prog", "--help"}));
  EXPECT_TRUE(requested({"prog", "--test_switch", "-h"}));
  EXPECT_TRUE(requested({"prog", "-help"}));
  EXPECT_TRUE(requested({"prog", "--helpshort"}));
  EXPECT_FALSE(requested({"prog"}));
  EXPECT_FALSE(requested({"prog", "--helpfull"}));
  EXPECT_FALSE(requested({"prog", "--", "--help"}));
  EXPECT_FALSE(requested({"prog", "--test_listen=--help"}));
}

}  // namespace
}  // namespace dexec
