#include "common/flag_check.h"

#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, check_threads, 1, "a number");
ABSL_FLAG(bool, check_switch, false, "a boolean");
ABSL_FLAG(std::string, check_name, "", "a string");

namespace dexec {
namespace {

// The check's verdict and its one line of complaint.
struct Checked {
  bool ok;
  std::string err;
};

Checked Check(std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream err;
  const bool ok = CheckFlagArguments(static_cast<int>(argv.size()), argv.data(),
                                     "prog", err);
  return {ok, err.str()};
}

TEST(FlagCheck, AcceptsEveryFormOfAKnownFlag) {
  EXPECT_TRUE(Check({"--check_threads=4", "--check_switch"}).ok);
  EXPECT_TRUE(Check({"--check_threads", "4", "-check_name=x"}).ok);
  EXPECT_TRUE(Check({"--nocheck_switch", "--check_switch=false"}).ok);
  EXPECT_TRUE(Check({"--help", "--flagfile", "f", "--only_check_args"}).ok);
  EXPECT_TRUE(Check({"--", "anything", "--bogus"}).ok);
  EXPECT_EQ(absl::GetFlag(FLAGS_check_threads), 4);
}

TEST(FlagCheck, RefusesWithOneLineNamingTheProblem) {
  EXPECT_EQ(Check({"--bogus"}).err,
            "prog: unknown flag --bogus (see --help)\n");
  EXPECT_EQ(Check({"--check_threads"}).err,
            "prog: flag --check_threads needs a value\n");
  Checked bad = Check({"--check_threads=many"});
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.err.rfind("prog: bad value 'many' for --check_threads: ", 0),
            0u)
      << bad.err;
  EXPECT_EQ(Check({"stray"}).err,
            "prog: unexpected argument 'stray'; prog takes only flags (see "
            "--help)\n");
  EXPECT_FALSE(Check({"--nocheck_name"}).ok);  // --no only for booleans
}

}  // namespace
}  // namespace dexec
