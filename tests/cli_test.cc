// The dexec CLI against a real broker and real workers, run as a user runs
// it: a separate process, its stdout, stderr and exit code.
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace dexec {
namespace {

using ::dexec::testing::BinaryPath;
using ::dexec::testing::CommandResult;
using ::dexec::testing::RunCommand;
using ::dexec::testing::TestCluster;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.StartBroker().ok());
    ASSERT_TRUE(cluster_.StartWorker(4).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
  }

  CommandResult Cli(std::vector<std::string> args, const std::string& in = "") {
    absl::StatusOr<CommandResult> r = cluster_.Cli(std::move(args), in);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(CommandResult{});
  }

  // Submits and returns the printed id.
  std::string SubmitId(std::vector<std::string> args) {
    args.insert(args.begin(), "submit");
    CommandResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string id(absl::StripAsciiWhitespace(r.out));
    uint64_t n;
    EXPECT_TRUE(absl::SimpleAtoi(id, &n)) << "not an id: '" << r.out << "'";
    return id;
  }

  TestCluster cluster_;
};

TEST_F(CliTest, SubmitPrintsTheJobIdAlone) {
  std::string a = SubmitId({"sys.echo", "one"});
  std::string b = SubmitId({"sys.echo", "two"});
  EXPECT_NE(a, b);
}

TEST_F(CliTest, SubmitWaitPrintsTheResultBytes) {
  CommandResult r = Cli({"submit", "sys.echo", "hello world", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello world");
}

TEST_F(CliTest, AFailedJobPrintsItsErrorAndExitsNonZero) {
  CommandResult r = Cli({"submit", "--wait", "sys.fail", "out of cheese"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("out of cheese"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("task_error"), std::string::npos) << r.err;
}

TEST_F(CliTest, ExecRunsACommandOnAWorkerAndKeepsItsExitCode) {
  CommandResult r = Cli({"exec", "--wait", "--", "sh", "-c",
                         "echo to-out; echo to-err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "to-out\n");
  EXPECT_NE(r.err.find("to-err"), std::string::npos);
}

TEST_F(CliTest, MapPrintsOneResultPerLineInInputOrder) {
  std::string in;
  for (int i = 0; i < 500; ++i) absl::StrAppend(&in, "line ", i, "\n");
  CommandResult r = Cli({"map", "sys.echo"}, in);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, in);
}

TEST_F(CliTest, MapNamesTheFailedLine) {
  CommandResult r = Cli({"map", "sys.sleep"}, "1\nnot-a-number\n2\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
}

TEST_F(CliTest, StatusWaitResultAndListShowAJob) {
  std::string id = SubmitId({"sys.echo", "payload-1"});
  CommandResult wait = Cli({"wait", id, "--timeout=60s"});
  EXPECT_EQ(wait.exit_code, 0) << wait.err;
  CommandResult status = Cli({"status", id});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("SUCCEEDED"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("sys.echo"), std::string::npos) << status.out;
  CommandResult result = Cli({"result", id});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.out, "payload-1");
  CommandResult list = Cli({"list", "--state=succeeded"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find(id), std::string::npos) << list.out;
}

TEST_F(CliTest, WaitExitsNonZeroIfAJobFailed) {
  std::string ok = SubmitId({"sys.echo", "x"});
  std::string bad = SubmitId({"sys.fail", "nope"});
  CommandResult r = Cli({"wait", ok, bad});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
}

// `wait` follows the jobs through an Executor; one still queued at
// --timeout must not keep the command waiting for it on the way out.
TEST_F(CliTest, WaitWithATimeoutReturnsWhileAJobIsStillQueued) {
  std::string id = SubmitId({"nobody.offers.this"});
  const absl::Time start = absl::Now();
  CommandResult r = Cli({"wait", id, "--timeout=300ms"});
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out, id + " QUEUED\n");
  EXPECT_NE(r.err.find("1 of 1 jobs not finished"), std::string::npos) << r.err;
  CommandResult unknown = Cli({"wait", "987654"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.err;
  EXPECT_EQ(unknown.out, "987654 NOT_FOUND\n");
}

TEST_F(CliTest, CancelStopsAQueuedJob) {
  std::string id = SubmitId({"nobody.offers.this"});
  CommandResult r = Cli({"cancel", id});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  CommandResult status = Cli({"status", id, "--json"});
  EXPECT_NE(status.out.find("\"CANCELLED\""), std::string::npos) << status.out;
}

TEST_F(CliTest, FlagsMayFollowTheCommandAndItsArguments) {
  CommandResult r = Cli({"status", SubmitId({"sys.echo", "x"}), "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.front(), '{') << r.out;
  EXPECT_NE(r.out.find("\"task\":\"sys.echo\""), std::string::npos) << r.out;
}

TEST_F(CliTest, WorkersAndStatsDescribeTheCluster) {
  CommandResult workers = Cli({"workers"});
  EXPECT_EQ(workers.exit_code, 0) << workers.err;
  EXPECT_NE(workers.out.find("worker-0"), std::string::npos) << workers.out;
  CommandResult stats = Cli({"stats", "--json"});
  EXPECT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_NE(stats.out.find("\"workers\":1"), std::string::npos) << stats.out;
  // The table shows the worker-plane integrity counters, at 0 here
  // (tests/security_test.cc makes them rise).
  CommandResult table = Cli({"stats"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  for (const char* row : {"forged results", "bad result pieces"}) {
    EXPECT_NE(table.out.find(row), std::string::npos) << row << table.out;
  }
  // No job dispatched yet: no queue wait to show.
  EXPECT_NE(table.out.find("no job dispatched in the last 60 s"),
            std::string::npos)
      << table.out;
}

TEST_F(CliTest, StatsCountRefusedCallsAndShowTheQueueWait) {
  // A caller with a token the broker never issued is refused, and counted.
  CommandResult refused = Cli({"--token=not-a-token", "stats"});
  EXPECT_NE(refused.exit_code, 0) << refused.out;
  CommandResult done = Cli({"submit", "--wait", "sys.echo", "x"});
  ASSERT_EQ(done.exit_code, 0) << done.err;
  CommandResult table = Cli({"stats"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("client 1, worker 0"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("(1 jobs, last 60 s)"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("p50 "), std::string::npos) << table.out;
}

TEST_F(CliTest, AQueuedJobsStatusSaysWhyItWaits) {
  std::string id = SubmitId({"nobody.offers.this"});
  CommandResult r = Cli({"status", id});
  EXPECT_NE(r.out.find("no live worker offers task"), std::string::npos)
      << r.out;
}

// The seeds' crawler from the CLI, against a real HTTP server (Python's
// http.server from Debian, serving files of the test's own): one JSON
// line per URL, in order; a URL that fails ends the map naming its line;
// `submit --wait` prints the body, as curl does.
TEST(CliHttpTest, MapHttpGetPrintsAJsonLinePerUrl) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/www");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  std::ofstream(dir + "/a.txt") << "hello\n\"world\"\n";
  std::ofstream(dir + "/b.bin", std::ios::binary) << std::string("\xff\x00", 2);
  absl::StatusOr<::dexec::testing::Process> server =
      ::dexec::testing::Process::Start({"/usr/bin/python3", "-u", "-m",
                                        "http.server", "0", "--bind",
                                        "127.0.0.1", "--directory", dir});
  ASSERT_TRUE(server.ok()) << server.status();
  // "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
  absl::StatusOr<std::string> serving = server->ReadLine(absl::Seconds(30));
  ASSERT_TRUE(serving.ok()) << serving.status();
  const size_t at = serving->find("(http://");
  ASSERT_NE(at, std::string::npos) << *serving;
  const std::string base =
      serving->substr(at + 1, serving->find(')', at) - at - 1);

  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(2, {"--allow_http"}).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());

  absl::StatusOr<CommandResult> r = cluster.Cli(
      {"map", "http.get"}, absl::StrCat(base, "a.txt\n", base, "b.bin\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  std::vector<std::string> lines =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(r->out), '\n');
  ASSERT_EQ(lines.size(), 2u) << r->out;
  EXPECT_TRUE(absl::StartsWith(lines[0], "{\"status\":200,\"headers\":["))
      << lines[0];
  EXPECT_TRUE(
      absl::EndsWith(lines[0], ",\"body\":\"hello\\n\\\"world\\\"\\n\"}"))
      << lines[0];
  EXPECT_TRUE(absl::EndsWith(lines[1], ",\"body_base64\":\"/wA=\"}"))
      << lines[1];

  r = cluster.Cli({"map", "http.get"},
                  absl::StrCat(base, "a.txt\n", base, "missing\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1) << r->err;
  EXPECT_NE(r->err.find("line 2"), std::string::npos) << r->err;
  EXPECT_NE(r->err.find("404"), std::string::npos) << r->err;

  r = cluster.Cli({"submit", "--wait", "http.get", base + "a.txt"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_EQ(r->out, "hello\n\"world\"\n");
}

TEST(CliErrors, UnknownCommandBadFlagAndUnreachableBrokerExitTwo) {
  const std::string dexec = BinaryPath("cli/dexec");
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{dexec, "frobnicate"},
        std::vector<std::string>{dexec, "list", "--no-such-flag"},
        std::vector<std::string>{dexec, "status", "not-an-id"},
        std::vector<std::string>{dexec, "--broker=127.0.0.1:1", "stats"}}) {
    absl::StatusOr<CommandResult> r = RunCommand(argv, "", absl::Seconds(30));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 2) << absl::StrJoin(argv, " ") << ": " << r->err;
    std::vector<std::string> lines =
        absl::StrSplit(absl::StripTrailingAsciiWhitespace(r->err), '\n');
    EXPECT_EQ(lines.size(), 1u) << absl::StrJoin(argv, " ") << ": " << r->err;
  }
}

}  // namespace
}  // namespace dexec
