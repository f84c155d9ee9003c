// `dexec-broker --help` and `dexec-worker --help` (issue 13): every flag the
// binary defines is listed, one line each, in named groups; absl's default
// help printed "No flags matched" for these mains.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/process.h"

namespace dexec::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n');
}

// The flags absl's --helpfull lists from our own sources (not absl's): the
// ground truth, so a flag someone adds later is checked too.
std::set<std::string> OwnFlagsFromHelpfull(const std::string& binary) {
  absl::StatusOr<CommandResult> full =
      RunCommand({BinaryPath(binary), "--helpfull"});
  EXPECT_TRUE(full.ok()) << full.status();
  std::set<std::string> names;
  if (!full.ok()) return names;
  bool ours = false;
  for (const std::string& line : Lines(full->out)) {
    if (absl::StartsWith(line, "  Flags from ")) {
      ours = !absl::StrContains(line, "absl/");
    } else if (ours && absl::StartsWith(line, "    --")) {
      absl::string_view rest = absl::string_view(line).substr(6);
      names.insert(std::string(rest.substr(0, rest.find(' '))));
    }
  }
  return names;
}

void ExpectEveryFlagOnOneLine(const std::string& binary,
                              const std::vector<std::string>& groups) {
  SCOPED_TRACE(binary);
  absl::StatusOr<CommandResult> help =
      RunCommand({BinaryPath(binary), "--help"});
  ASSERT_TRUE(help.ok()) << help.status();
  EXPECT_EQ(help->exit_code, 0) << help->err;
  EXPECT_EQ(help->err, "");
  EXPECT_THAT(help->out, Not(HasSubstr("No flags matched")));
  EXPECT_THAT(help->out, Not(HasSubstr("Other flags:")))
      << "every flag should be in a named group";
  for (const std::string& group : groups) {
    EXPECT_THAT(help->out, HasSubstr("\n" + group + ":\n"));
  }

  std::multiset<std::string> listed;
  for (const std::string& line : Lines(help->out)) {
    if (!absl::StartsWith(line, "  --") || absl::StartsWith(line, "  --help"))
      continue;
    absl::string_view rest = absl::string_view(line).substr(4);
    const std::string name(rest.substr(0, rest.find_first_of("= ")));
    listed.insert(name);
    // The help text follows on the same line.
    EXPECT_NE(line.find("  ", 4 + name.size()), std::string::npos) << line;
  }
  const std::set<std::string> defined = OwnFlagsFromHelpfull(binary);
  EXPECT_GE(defined.size(), 5u);
  for (const std::string& name : defined) {
    EXPECT_EQ(listed.count(name), 1u) << "--" << name;
  }
  EXPECT_EQ(listed.size(), defined.size());
}

TEST(HelpFlag, BrokerListsEveryFlagInGroups) {
  ExpectEveryFlagOnOneLine(
      "broker/dexec-broker",
      {"Listening", "Jobs and workers", "Limits", "Storage", "Security"});
}

TEST(HelpFlag, WorkerListsEveryFlagInGroups) {
  ExpectEveryFlagOnOneLine("worker/dexec-worker",
                           {"Broker", "Capacity", "Security", "Tasks"});
}

TEST(HelpFlag, ShortFormAndFlagsAroundItAlsoPrintHelp) {
  for (const std::string& binary : {std::string("broker/dexec-broker"),
                                    std::string("worker/dexec-worker")}) {
    absl::StatusOr<CommandResult> help =
        RunCommand({BinaryPath(binary), "--insecure", "-h"});
    ASSERT_TRUE(help.ok()) << help.status();
    EXPECT_EQ(help->exit_code, 0) << binary << ": " << help->err;
    EXPECT_THAT(help->out, HasSubstr("Usage: "));
  }
}

// A wrong flag value is a usage error (exit 2) with one line naming the
// flag, before the binary binds or connects to anything.
TEST(FlagErrors, BadValuesExitTwoWithOneLineNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{BinaryPath("worker/dexec-worker"), "--isolation=bogus"}, "--isolation"},
      {{BinaryPath("worker/dexec-worker"), "--http_max_connections=-1"},
       "--http_max_connections"},
      {{BinaryPath("worker/dexec-worker"), "--no_such_flag"}, "no_such_flag"},
      {{BinaryPath("broker/dexec-broker"), "--max_worker_credit=0"},
       "--max_worker_credit"}};
  for (const auto& [argv, flag] : cases) {
    SCOPED_TRACE(argv[1]);
    absl::StatusOr<CommandResult> r = RunCommand(argv, "", absl::Seconds(30));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 2) << r->err;
    EXPECT_THAT(r->err, HasSubstr(flag));
    EXPECT_EQ(
        Lines(std::string(absl::StripTrailingAsciiWhitespace(r->err))).size(),
        1u)
        << r->err;
  }
}

}  // namespace
}  // namespace dexec::testing
