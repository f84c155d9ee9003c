#include "cli/flags.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dexec::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<ParsedCommand> Parse(std::vector<std::string> args,
                                    std::optional<std::string> env = {}) {
  return ParseCommandLine(args, std::move(env));
}

// The error message of a command line that must not parse.
std::string ErrorOf(std::vector<std::string> args) {
  absl::StatusOr<ParsedCommand> cmd = Parse(std::move(args));
  EXPECT_FALSE(cmd.ok());
  if (cmd.ok()) return "";
  EXPECT_EQ(cmd.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(cmd.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos)
      << "not one line: " << message;
  return message;
}

TEST(CliFlags, FlagsMayComeBeforeOrAfterTheCommand) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"--json", "status", "5"},
                                             {"status", "--json", "5"},
                                             {"status", "5", "--json"}}) {
    absl::StatusOr<ParsedCommand> cmd = Parse(args);
    ASSERT_TRUE(cmd.ok()) << cmd.status();
    EXPECT_EQ(cmd->verb, Verb::kStatus);
    EXPECT_TRUE(cmd->json);
    EXPECT_THAT(cmd->job_ids, ElementsAre(5u));
  }
}

TEST(CliFlags, ValuesMayBeJoinedWithEqualsOrSeparate) {
  absl::StatusOr<ParsedCommand> joined =
      Parse({"submit", "t", "--priority=7", "--timeout=500ms", "--key=k1"});
  absl::StatusOr<ParsedCommand> separate = Parse(
      {"submit", "--priority", "7", "t", "--timeout", "500ms", "--key", "k1"});
  for (const auto* cmd : {&joined, &separate}) {
    ASSERT_TRUE(cmd->ok()) << cmd->status();
    EXPECT_EQ((*cmd)->task, "t");
    EXPECT_FALSE((*cmd)->payload.has_value());
    EXPECT_EQ((*cmd)->priority, 7);
    EXPECT_EQ((*cmd)->timeout, absl::Milliseconds(500));
    EXPECT_EQ((*cmd)->idempotency_key, "k1");
  }
}

TEST(CliFlags, AValueMayContainEqualsSigns) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"submit", "t", "--key=a=b"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->idempotency_key, "a=b");
}

TEST(CliFlags, NegativePriorityAsASeparateValue) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"submit", "t", "--priority", "-3"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->priority, -3);
}

TEST(CliFlags, DoubleDashEndsFlagParsing) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"exec", "--wait", "--", "sh", "-c", "echo hi", "--json"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->verb, Verb::kExec);
  EXPECT_TRUE(cmd->wait);
  EXPECT_FALSE(cmd->json);
  EXPECT_THAT(cmd->argv, ElementsAre("sh", "-c", "echo hi", "--json"));
}

TEST(CliFlags, DoubleDashLetsAPayloadLookLikeAFlag) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"submit", "sys.echo", "--", "--x"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->payload, "--x");
}

TEST(CliFlags, ASingleDashWordIsAnArgument) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"submit", "square", "-7"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->payload, "-7");
}

TEST(CliFlags, ExecWithoutDoubleDash) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"exec", "ls", "-l"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_THAT(cmd->argv, ElementsAre("ls", "-l"));
  EXPECT_FALSE(cmd->wait);
}

TEST(CliFlags, ExecStdinAndSubmitOptions) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"exec", "--stdin", "--retries=2", "--priority=1", "--", "cat"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_TRUE(cmd->forward_stdin);
  EXPECT_EQ(cmd->max_attempts, 3);
  EXPECT_EQ(cmd->priority, 1);
}

TEST(CliFlags, RetriesMeanExtraAttempts) {
  absl::StatusOr<ParsedCommand> none = Parse({"submit", "t"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->max_attempts, 0);  // The broker's default.
  absl::StatusOr<ParsedCommand> zero = Parse({"submit", "t", "--retries=0"});
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->max_attempts, 1);
  absl::StatusOr<ParsedCommand> two = Parse({"submit", "t", "--retries=2"});
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->max_attempts, 3);
}

TEST(CliFlags, BooleanFlagsAcceptTrueAndFalse) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"submit", "t", "--wait=false", "--json=true"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_FALSE(cmd->wait);
  EXPECT_TRUE(cmd->json);
  EXPECT_THAT(ErrorOf({"submit", "t", "--wait=soon"}), HasSubstr("--wait"));
}

TEST(CliFlags, ABooleanFlagNeverTakesTheNextWord) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"submit", "--wait", "t", "p"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_TRUE(cmd->wait);
  EXPECT_EQ(cmd->task, "t");
  EXPECT_EQ(cmd->payload, "p");
}

TEST(CliFlags, LastValueOfARepeatedFlagWins) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"submit", "t", "--priority=1", "--priority=2"});
  ASSERT_TRUE(cmd.ok());
  EXPECT_EQ(cmd->priority, 2);
}

TEST(CliFlags, BrokerComesFromFlagThenEnvironmentThenDefault) {
  absl::StatusOr<ParsedCommand> dflt = Parse({"stats"});
  ASSERT_TRUE(dflt.ok());
  EXPECT_EQ(dflt->broker, "127.0.0.1:50051");

  absl::StatusOr<ParsedCommand> empty_env = Parse({"stats"}, "");
  ASSERT_TRUE(empty_env.ok());
  EXPECT_EQ(empty_env->broker, "127.0.0.1:50051");

  absl::StatusOr<ParsedCommand> env = Parse({"stats"}, "envhost:1");
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->broker, "envhost:1");

  absl::StatusOr<ParsedCommand> flag =
      Parse({"stats", "--broker", "flaghost:2"}, "envhost:1");
  ASSERT_TRUE(flag.ok());
  EXPECT_EQ(flag->broker, "flaghost:2");
}

TEST(CliFlags, HelpInAnyFormAsksForUsage) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"},
           {"-h"},
           {"help"},
           {"help", "submit"},
           {"submit", "--help"},
           {"frobnicate", "--help"},
           {"--help", "--no-such-flag-after-help-is-fine"}}) {
    absl::StatusOr<ParsedCommand> cmd = Parse(args);
    ASSERT_TRUE(cmd.ok()) << args[0] << ": " << cmd.status();
    EXPECT_EQ(cmd->verb, Verb::kHelp);
  }
}

TEST(CliFlags, HelpAfterDoubleDashIsAnArgument) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"exec", "--", "ls", "--help"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->verb, Verb::kExec);
  EXPECT_THAT(cmd->argv, ElementsAre("ls", "--help"));
}

TEST(CliFlags, UsageMentionsEveryVerbAndFlag) {
  const std::string usage = UsageText();
  for (const char* word :
       {"submit",    "exec",           "map",          "status",
        "wait",      "result",         "cancel",       "list",
        "workers",   "stats",          "help",         "--broker",
        "--json",    "--payload_file", "--priority",   "--timeout",
        "--retries", "--key",          "--wait",       "--stdin",
        "--state",   "--limit",        "DEXEC_BROKER", "--reconnect_timeout"}) {
    EXPECT_THAT(usage, HasSubstr(word));
  }
}

TEST(CliFlags, NoCommand) {
  EXPECT_THAT(ErrorOf({}), HasSubstr("no command"));
  EXPECT_THAT(ErrorOf({"--json"}), HasSubstr("no command"));
}

TEST(CliFlags, UnknownCommand) {
  EXPECT_EQ(ErrorOf({"frob"}), "unknown command 'frob'; run 'dexec --help'");
}

TEST(CliFlags, UnknownFlag) {
  EXPECT_EQ(ErrorOf({"list", "--no-such-flag"}),
            "unknown flag --no-such-flag; run 'dexec --help'");
  EXPECT_THAT(ErrorOf({"--bogus=1", "stats"}), HasSubstr("--bogus"));
}

TEST(CliFlags, FlagOfAnotherVerb) {
  EXPECT_THAT(ErrorOf({"status", "5", "--priority=3"}),
              HasSubstr("--priority does not apply to 'status'"));
  EXPECT_THAT(ErrorOf({"list", "--wait"}),
              HasSubstr("--wait does not apply to 'list'"));
  EXPECT_THAT(ErrorOf({"map", "t", "--key=k"}),
              HasSubstr("--key does not apply to 'map'"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--stdin"}),
              HasSubstr("--stdin does not apply to 'submit'"));
}

TEST(CliFlags, MissingValue) {
  EXPECT_THAT(ErrorOf({"submit", "t", "--timeout"}),
              HasSubstr("--timeout needs a value"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--priority", "--wait"}),
              HasSubstr("--priority needs a value"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--key="}),
              HasSubstr("--key needs a non-empty value"));
  EXPECT_THAT(ErrorOf({"stats", "--broker"}),
              HasSubstr("--broker needs a value"));
}

TEST(CliFlags, BadDurations) {
  for (const char* bad : {"10", "ten", "-5s", "0s", "inf", "5 s"}) {
    EXPECT_THAT(ErrorOf({"submit", "t", absl::StrCat("--timeout=", bad)}),
                HasSubstr("invalid --timeout"))
        << bad;
  }
  absl::StatusOr<ParsedCommand> ok = Parse({"wait", "1", "--timeout=1h30m"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->timeout, absl::Minutes(90));
}

TEST(CliFlags, BadNumbers) {
  EXPECT_THAT(ErrorOf({"submit", "t", "--priority=high"}),
              HasSubstr("invalid --priority 'high'"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--priority=99999999999"}),
              HasSubstr("invalid --priority"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--retries=-1"}),
              HasSubstr("invalid --retries"));
  EXPECT_THAT(ErrorOf({"submit", "t", "--retries=2147483647"}),
              HasSubstr("invalid --retries"));
  EXPECT_THAT(ErrorOf({"list", "--limit=0"}), HasSubstr("invalid --limit"));
  EXPECT_THAT(ErrorOf({"list", "--limit=x"}), HasSubstr("invalid --limit"));
}

TEST(CliFlags, StatesAreCaseInsensitive) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"list", "--state=Succeeded"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->state_filter, v1::Job::SUCCEEDED);
  absl::StatusOr<ParsedCommand> q =
      Parse({"list", "--state", "QUEUED", "--limit", "5"});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->state_filter, v1::Job::QUEUED);
  EXPECT_EQ(q->limit, 5);
  EXPECT_THAT(ErrorOf({"list", "--state=done"}),
              HasSubstr("invalid --state 'done'"));
}

TEST(CliFlags, JobIdsArePositiveIntegers) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"cancel", "1", "22", "333"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_THAT(cmd->job_ids, ElementsAre(1u, 22u, 333u));
  for (const char* bad :
       {"not-an-id", "0", "-1", "1.5", "18446744073709551616", ""}) {
    EXPECT_THAT(ErrorOf({"status", bad}), HasSubstr("is not a job id")) << bad;
  }
}

TEST(CliFlags, SubmitArity) {
  EXPECT_THAT(ErrorOf({"submit"}), HasSubstr("needs a TASK"));
  EXPECT_THAT(ErrorOf({"submit", "a", "b", "c"}),
              HasSubstr("TASK [PAYLOAD], got 3"));
  absl::StatusOr<ParsedCommand> cmd = Parse({"submit", "sys.echo", "hi there"});
  ASSERT_TRUE(cmd.ok());
  EXPECT_EQ(cmd->verb, Verb::kSubmit);
  EXPECT_EQ(cmd->task, "sys.echo");
  EXPECT_EQ(cmd->payload, "hi there");
}

TEST(CliFlags, SubmitPayloadFromArgumentOrFileNotBoth) {
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"submit", "t", "--payload_file=/tmp/p"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->payload_file, "/tmp/p");
  EXPECT_FALSE(cmd->payload.has_value());
  EXPECT_THAT(ErrorOf({"submit", "t", "p", "--payload_file=/tmp/p"}),
              HasSubstr("not both"));
}

TEST(CliFlags, AnEmptyPayloadArgumentIsAPayload) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"submit", "t", ""});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->payload, "");
}

TEST(CliFlags, ExecArity) {
  EXPECT_THAT(ErrorOf({"exec"}), HasSubstr("'exec' needs a command"));
  EXPECT_THAT(ErrorOf({"exec", "--wait", "--"}),
              HasSubstr("'exec' needs a command"));
}

TEST(CliFlags, MapArity) {
  EXPECT_THAT(ErrorOf({"map"}), HasSubstr("'map' takes one TASK, got 0"));
  EXPECT_THAT(ErrorOf({"map", "a", "b"}), HasSubstr("'map' takes one TASK"));
  absl::StatusOr<ParsedCommand> cmd =
      Parse({"map", "sys.echo", "--timeout=5s", "--priority=2"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->verb, Verb::kMap);
  EXPECT_EQ(cmd->task, "sys.echo");
  EXPECT_EQ(cmd->timeout, absl::Seconds(5));
}

TEST(CliFlags, IdVerbsArity) {
  for (const char* verb : {"status", "wait", "result", "cancel"}) {
    EXPECT_THAT(ErrorOf({verb}), HasSubstr("needs a job id")) << verb;
  }
  EXPECT_THAT(ErrorOf({"result", "1", "2"}), HasSubstr("one job id"));
  for (const char* verb : {"status", "wait", "cancel"}) {
    absl::StatusOr<ParsedCommand> cmd = Parse({verb, "1", "2"});
    ASSERT_TRUE(cmd.ok()) << verb << ": " << cmd.status();
    EXPECT_EQ(VerbName(cmd->verb), verb);
    EXPECT_THAT(cmd->job_ids, ElementsAre(1u, 2u));
  }
}

TEST(CliFlags, WaitTakesATimeout) {
  absl::StatusOr<ParsedCommand> cmd = Parse({"wait", "3", "--timeout=60s"});
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(cmd->timeout, absl::Seconds(60));
  absl::StatusOr<ParsedCommand> none = Parse({"wait", "3"});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->timeout.has_value());
}

TEST(CliFlags, VerbsThatWaitTakeAReconnectTimeout) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"wait", "3", "--reconnect_timeout=5s"},
           {"submit", "t", "--wait", "--reconnect_timeout=5s"},
           {"exec", "--wait", "--reconnect_timeout=5s", "--", "true"},
           {"map", "t", "--reconnect_timeout", "5s"}}) {
    absl::StatusOr<ParsedCommand> cmd = Parse(args);
    ASSERT_TRUE(cmd.ok()) << args[0] << ": " << cmd.status();
    EXPECT_EQ(cmd->reconnect_timeout, absl::Seconds(5)) << args[0];
  }
  absl::StatusOr<ParsedCommand> default_cmd = Parse({"wait", "3"});
  ASSERT_TRUE(default_cmd.ok());
  EXPECT_EQ(default_cmd->reconnect_timeout, absl::Seconds(60));
  EXPECT_THAT(ErrorOf({"wait", "3", "--reconnect_timeout=0s"}),
              HasSubstr("invalid --reconnect_timeout"));
  EXPECT_THAT(ErrorOf({"status", "3", "--reconnect_timeout=5s"}),
              HasSubstr("does not apply to 'status'"));
}

TEST(CliFlags, VerbsWithoutArguments) {
  for (const char* verb : {"list", "workers", "stats"}) {
    absl::StatusOr<ParsedCommand> cmd = Parse({verb});
    ASSERT_TRUE(cmd.ok()) << verb;
    EXPECT_EQ(VerbName(cmd->verb), verb);
    EXPECT_THAT(ErrorOf({verb, "extra"}), HasSubstr("takes no arguments"))
        << verb;
  }
}

}  // namespace
}  // namespace dexec::cli
