// Secure by default, tried as an attacker would (docs/DESIGN.md,
// "Security"): real brokers, workers and CLI on loopback (and in network
// namespaces for another host), raw gRPC and raw ZeroMQ peers without
// credentials, with wrong ones, and with valid ones doing what they must
// not.
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "auth/secret_file.h"
#include "client/executor.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"
#include "protos/tasks.pb.h"
#include "protos/wire.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"
#include "tests/netns.h"
#include "tests/process.h"
#include "tests/zmtp_peer.h"
#include "zmq.hpp"

namespace dexec::testing {
namespace {

constexpr absl::Duration kBound = absl::Seconds(30);
// A token of the right shape that the broker never issued.
constexpr char kWrongToken[] =
    "dexec_0000000000000000000000000000000000000000000000000000000000000000";

template <typename Fn>
bool PollUntil(Fn done, absl::Duration timeout = kBound) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + kBound));
  // A fresh channel right after a broker (re)start may still be connecting.
  ctx->set_wait_for_ready(true);
  return ctx;
}

v1::Stats Stats(v1::Broker::Stub& stub) {
  v1::Stats stats;
  grpc::Status s = stub.GetStats(Ctx().get(), v1::GetStatsRequest(), &stats);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return stats;
}

// The value of the unlabelled series `name` on the broker's /metrics, as
// an operator scrapes it with the admin token; -1 (and a failure) if the
// scrape fails or the series is absent.
double MetricValue(const TestCluster& cluster, const std::string& name) {
  const std::string& a = cluster.http_address();
  int port = 0;
  const size_t colon = a.rfind(':');
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(a.substr(colon + 1), &port)) {
    ADD_FAILURE() << "no HTTP listener: http=" << a;
    return -1;
  }
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(10, 0);
  auto m =
      c.Get("/metrics", {{"Authorization", "Bearer " + cluster.admin_token()}});
  if (!m || m->status != 200) {
    ADD_FAILURE() << "GET /metrics failed: " << (m ? m->body : "no answer");
    return -1;
  }
  for (absl::string_view line : absl::StrSplit(m->body, '\n')) {
    double v = 0;
    if (absl::ConsumePrefix(&line, name) && absl::ConsumePrefix(&line, " ") &&
        absl::SimpleAtod(line, &v)) {
      return v;
    }
  }
  ADD_FAILURE() << name << " is not on /metrics";
  return -1;
}

// Makes a token with the admin stub; returns its secret.
std::string CreateToken(v1::Broker::Stub& admin, const std::string& name,
                        const std::string& role) {
  v1::CreateTokenRequest req;
  req.set_name(name);
  req.set_role(role);
  v1::CreateTokenResponse resp;
  grpc::Status s = admin.CreateToken(Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(absl::StartsWith(resp.token(), "dexec_")) << resp.token();
  return resp.token();
}

uint64_t SubmitOne(v1::Broker::Stub& stub, const std::string& task,
                   const std::string& payload, const std::string& key = "") {
  v1::SubmitRequest req;
  v1::JobSpec* spec = req.add_jobs();
  spec->set_task(task);
  spec->set_payload(payload);
  spec->set_idempotency_key(key);
  v1::SubmitResponse resp;
  grpc::Status s = stub.Submit(Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.job_ids_size() == 1 ? resp.job_ids(0) : 0;
}

v1::Job GetWithResult(v1::Broker::Stub& stub, uint64_t id) {
  v1::GetJobsRequest req;
  req.add_job_ids(id);
  req.set_include_result(true);
  v1::GetJobsResponse resp;
  grpc::Status s = stub.GetJobs(Ctx().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.jobs_size() == 1 ? resp.jobs(0) : v1::Job();
}

bool Finished(const v1::Job& j) {
  return j.state() == v1::Job::SUCCEEDED || j.state() == v1::Job::FAILED ||
         j.state() == v1::Job::CANCELLED;
}

// Every RPC of the API, called with `stub`; the status of each.
std::vector<std::pair<std::string, grpc::Status>> CallEverything(
    v1::Broker::Stub& stub) {
  std::vector<std::pair<std::string, grpc::Status>> out;
  {
    v1::SubmitRequest req;
    req.add_jobs()->set_task("sys.echo");
    v1::SubmitResponse resp;
    out.emplace_back("Submit", stub.Submit(Ctx().get(), req, &resp));
  }
  {
    v1::GetJobsRequest req;
    req.add_job_ids(1);
    req.set_include_result(true);
    v1::GetJobsResponse resp;
    out.emplace_back("GetJobs", stub.GetJobs(Ctx().get(), req, &resp));
  }
  {
    v1::CancelRequest req;
    req.add_job_ids(1);
    v1::CancelResponse resp;
    out.emplace_back("Cancel", stub.Cancel(Ctx().get(), req, &resp));
  }
  {
    v1::ListJobsResponse resp;
    out.emplace_back("ListJobs",
                     stub.ListJobs(Ctx().get(), v1::ListJobsRequest(), &resp));
  }
  {
    v1::ListWorkersResponse resp;
    out.emplace_back(
        "ListWorkers",
        stub.ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &resp));
  }
  {
    v1::Stats resp;
    out.emplace_back("GetStats",
                     stub.GetStats(Ctx().get(), v1::GetStatsRequest(), &resp));
  }
  {
    v1::CreateTokenRequest req;
    req.set_name("intruder");
    req.set_role("admin");
    v1::CreateTokenResponse resp;
    out.emplace_back("CreateToken", stub.CreateToken(Ctx().get(), req, &resp));
  }
  {
    v1::ListTokensResponse resp;
    out.emplace_back(
        "ListTokens",
        stub.ListTokens(Ctx().get(), v1::ListTokensRequest(), &resp));
  }
  {
    v1::RevokeTokenRequest req;
    req.set_name("admin");
    v1::RevokeTokenResponse resp;
    out.emplace_back("RevokeToken", stub.RevokeToken(Ctx().get(), req, &resp));
  }
  {
    v1::CreateWorkerKeyRequest req;
    req.set_name("intruder");
    v1::CreateWorkerKeyResponse resp;
    out.emplace_back("CreateWorkerKey",
                     stub.CreateWorkerKey(Ctx().get(), req, &resp));
  }
  {
    v1::ListWorkerKeysResponse resp;
    out.emplace_back(
        "ListWorkerKeys",
        stub.ListWorkerKeys(Ctx().get(), v1::ListWorkerKeysRequest(), &resp));
  }
  {
    v1::RevokeWorkerKeyRequest req;
    req.set_name("local");
    v1::RevokeWorkerKeyResponse resp;
    out.emplace_back("RevokeWorkerKey",
                     stub.RevokeWorkerKey(Ctx().get(), req, &resp));
  }
  {
    // A Session stream: submit and watch, then see how it ends.
    auto ctx = Ctx();
    auto stream = stub.Session(ctx.get());
    v1::SessionRequest submit;
    submit.mutable_submit()->set_seq(1);
    submit.mutable_submit()->add_jobs()->set_task("sys.echo");
    (void)stream->Write(submit);
    v1::SessionRequest watch;
    watch.mutable_watch()->add_job_ids(1);
    (void)stream->Write(watch);
    stream->WritesDone();
    v1::SessionResponse resp;
    int answered = 0;
    while (stream->Read(&resp)) ++answered;
    grpc::Status s = stream->Finish();
    if (s.ok() && answered > 0) {
      s = grpc::Status(grpc::StatusCode::OK, "answered");
    }
    out.emplace_back("Session", s);
  }
  return out;
}

// ------------------------------------------------------------ tokens

TEST(SecurityTest, EveryCallAndStreamWithoutAValidTokenIsRefused) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  const std::string revoked =
      CreateToken(cluster.stub(), "short-lived", "admin");
  {
    v1::RevokeTokenRequest req;
    req.set_name("short-lived");
    v1::RevokeTokenResponse resp;
    ASSERT_TRUE(cluster.stub().RevokeToken(Ctx().get(), req, &resp).ok());
  }
  const uint64_t failures_before = Stats(cluster.stub()).client_auth_failures();
  int calls = 0;
  for (const std::string& token :
       {std::string(), std::string(kWrongToken), revoked, std::string("Bearer"),
        cluster.admin_token() + "x"}) {
    SCOPED_TRACE(token.empty() ? "no token" : "token " + token);
    std::unique_ptr<v1::Broker::Stub> stub = cluster.StubWithToken(token);
    for (const auto& [method, status] : CallEverything(*stub)) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method << ": " << status.error_message();
      ++calls;
    }
  }
  // Nothing got through: no job, no token, no key; every refusal counted.
  const v1::Stats after = Stats(cluster.stub());
  EXPECT_EQ(after.submitted_total(), 0u);
  EXPECT_EQ(after.client_auth_failures(), failures_before + calls);
  v1::ListTokensResponse tokens;
  ASSERT_TRUE(cluster.stub()
                  .ListTokens(Ctx().get(), v1::ListTokensRequest(), &tokens)
                  .ok());
  ASSERT_EQ(tokens.tokens_size(), 1);
  EXPECT_EQ(tokens.tokens(0).name(), "admin");
}

TEST(SecurityTest, TheCredentialFilesAreSecretAndSurviveARestart) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  for (const char* file :
       {"client.token", "tokens", "broker.key", "worker.key", "worker_keys"}) {
    struct stat st;
    const std::string path = cluster.auth_dir() + "/" + file;
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << path;
  }
  absl::StatusOr<std::string> token =
      auth::ReadSmallFile(cluster.auth_dir() + "/client.token");
  ASSERT_TRUE(token.ok());
  // 256 random bits, hex.
  EXPECT_EQ(absl::StripAsciiWhitespace(*token).size(), 6u + 64u);
  // The tokens file holds digests, never a secret.
  absl::StatusOr<std::string> tokens =
      auth::ReadSmallFile(cluster.auth_dir() + "/tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_FALSE(absl::StrContains(*tokens, absl::StripAsciiWhitespace(*token)));
  const std::string alice = CreateToken(cluster.stub(), "alice", "submit");
  EXPECT_FALSE(absl::StrContains(
      *auth::ReadSmallFile(cluster.auth_dir() + "/tokens"), alice));

  ASSERT_TRUE(cluster.KillBroker().ok());
  ASSERT_TRUE(cluster.RestartBroker().ok());
  // Same admin token (never overwritten), and alice still works.
  EXPECT_EQ(*auth::ReadSmallFile(cluster.auth_dir() + "/client.token"), *token);
  v1::Stats stats;
  EXPECT_TRUE(cluster.StubWithToken(alice)
                  ->GetStats(Ctx().get(), v1::GetStatsRequest(), &stats)
                  .ok());
}

TEST(SecurityTest, TheCliSaysWhereTheTokenIsExpectedAndExits2) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  const std::string dexec = BinaryPath("cli/dexec");
  const std::string broker = "--broker=" + cluster.grpc_address();
  // No token anywhere (the test's directory has no ./dexec-data).
  absl::StatusOr<CommandResult> none = RunCommand({dexec, broker, "stats"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->exit_code, 2) << none->err;
  EXPECT_EQ(std::count(none->err.begin(), none->err.end(), '\n'), 1)
      << none->err;
  EXPECT_TRUE(absl::StrContains(none->err, "--token")) << none->err;
  EXPECT_TRUE(absl::StrContains(none->err, "DEXEC_TOKEN")) << none->err;
  EXPECT_TRUE(absl::StrContains(none->err, "dexec-data/client.token"))
      << none->err;
  // A wrong one.
  absl::StatusOr<CommandResult> wrong =
      RunCommand({dexec, broker, std::string("--token=") + kWrongToken,
                  "submit", "sys.echo", "x"});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->exit_code, 2) << wrong->err;
  EXPECT_EQ(std::count(wrong->err.begin(), wrong->err.end(), '\n'), 1)
      << wrong->err;
  EXPECT_TRUE(absl::StrContains(wrong->err, "refused")) << wrong->err;
  EXPECT_FALSE(absl::StrContains(wrong->err, kWrongToken))
      << "a secret in an error message: " << wrong->err;
  // The environment, in its order: DEXEC_TOKEN, then DEXEC_TOKEN_FILE.
  absl::StatusOr<CommandResult> env =
      RunCommand({dexec, broker, "stats"}, "", absl::Seconds(60),
                 {"DEXEC_TOKEN=" + cluster.admin_token()});
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->exit_code, 0) << env->err;
  absl::StatusOr<CommandResult> env_file =
      RunCommand({dexec, broker, "stats"}, "", absl::Seconds(60),
                 {"DEXEC_TOKEN_FILE=" + cluster.auth_dir() + "/client.token"});
  ASSERT_TRUE(env_file.ok());
  EXPECT_EQ(env_file->exit_code, 0) << env_file->err;
  // A role that may not: exit 2 as well.
  absl::StatusOr<CommandResult> created =
      cluster.Cli({"token", "create", "--role=read", "reader"});
  ASSERT_TRUE(created.ok());
  ASSERT_EQ(created->exit_code, 0) << created->err;
  const std::string reader(absl::StripAsciiWhitespace(created->out));
  absl::StatusOr<CommandResult> denied = RunCommand(
      {dexec, broker, "--token=" + reader, "submit", "sys.echo", "x"});
  ASSERT_TRUE(denied.ok());
  EXPECT_EQ(denied->exit_code, 2) << denied->err;
  EXPECT_TRUE(absl::StrContains(denied->err, "role read")) << denied->err;
}

TEST(SecurityTest, ASubmitTokenSeesCancelsAndReusesOnlyItsOwnJobs) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto alice =
      cluster.StubWithToken(CreateToken(cluster.stub(), "alice", "submit"));
  auto bob =
      cluster.StubWithToken(CreateToken(cluster.stub(), "bob", "submit"));

  const uint64_t done = SubmitOne(*alice, "sys.echo", "alice's secret", "k1");
  const uint64_t running = SubmitOne(*alice, "sys.sleep", "30000");
  ASSERT_TRUE(PollUntil([&] {
    return Finished(GetWithResult(*alice, done)) &&
           GetWithResult(*alice, running).state() == v1::Job::RUNNING;
  }));
  EXPECT_EQ(GetWithResult(*alice, done).result(), "alice's secret");
  EXPECT_EQ(GetWithResult(cluster.stub(), done).owner(), "alice");

  // Bob reads nothing of hers: her jobs are unknown to him.
  for (uint64_t id : {done, running}) {
    const v1::Job seen = GetWithResult(*bob, id);
    EXPECT_EQ(seen.state(), v1::Job::STATE_UNSPECIFIED) << id;
    EXPECT_EQ(seen.error().kind(), "not_found") << id;
    EXPECT_TRUE(seen.result().empty());
    EXPECT_TRUE(seen.task().empty());
  }
  v1::ListJobsResponse listed;
  ASSERT_TRUE(bob->ListJobs(Ctx().get(), v1::ListJobsRequest(), &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0);
  // He cannot cancel hers.
  v1::CancelRequest cancel;
  cancel.add_job_ids(running);
  v1::CancelResponse cancelled;
  ASSERT_TRUE(bob->Cancel(Ctx().get(), cancel, &cancelled).ok());
  ASSERT_EQ(cancelled.cancelled_size(), 1);
  EXPECT_FALSE(cancelled.cancelled(0));
  EXPECT_EQ(GetWithResult(cluster.stub(), running).state(), v1::Job::RUNNING);
  // Her idempotency key is not his: he gets a job of his own.
  const uint64_t his = SubmitOne(*bob, "sys.echo", "bob's", "k1");
  EXPECT_NE(his, done);
  EXPECT_NE(his, 0u);
  EXPECT_EQ(GetWithResult(cluster.stub(), his).owner(), "bob");
  // Watching her jobs on a Session stream: not_found, no result.
  {
    auto ctx = Ctx();
    auto stream = bob->Session(ctx.get());
    v1::SessionRequest watch;
    watch.mutable_watch()->add_job_ids(done);
    watch.mutable_watch()->add_job_ids(running);
    ASSERT_TRUE(stream->Write(watch));
    int events = 0;
    v1::SessionResponse resp;
    while (events < 2 && stream->Read(&resp)) {
      for (const v1::JobEvent& e : resp.events().events()) {
        ++events;
        EXPECT_EQ(e.error().kind(), "not_found") << e.job_id();
        EXPECT_TRUE(e.result().empty());
      }
    }
    EXPECT_EQ(events, 2);
    stream->WritesDone();
    while (stream->Read(&resp)) {
    }
    EXPECT_TRUE(stream->Finish().ok());
  }
  // Replaying her Session batch key gives him nothing of hers either.
  {
    auto actx = Ctx();
    auto astream = alice->Session(actx.get());
    v1::SessionRequest submit;
    submit.mutable_submit()->set_client_id("alices-client");
    submit.mutable_submit()->set_seq(7);
    submit.mutable_submit()->add_jobs()->set_task("sys.echo");
    ASSERT_TRUE(astream->Write(submit));
    v1::SessionResponse resp;
    ASSERT_TRUE(astream->Read(&resp));
    ASSERT_EQ(resp.submitted().job_ids_size(), 1);
    const uint64_t hers = resp.submitted().job_ids(0);
    astream->WritesDone();
    while (astream->Read(&resp)) {
    }
    (void)astream->Finish();

    auto bctx = Ctx();
    auto bstream = bob->Session(bctx.get());
    ASSERT_TRUE(bstream->Write(submit));
    ASSERT_TRUE(bstream->Read(&resp));
    ASSERT_EQ(resp.submitted().job_ids_size(), 1);
    EXPECT_NE(resp.submitted().job_ids(0), hers);
    bstream->WritesDone();
    while (bstream->Read(&resp)) {
    }
    (void)bstream->Finish();
  }
  // Alice can cancel her own.
  ASSERT_TRUE(alice->Cancel(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_TRUE(cancelled.cancelled(0));
}

TEST(SecurityTest, AReadTokenSeesJobsButNoResultsAndCannotSubmit) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(1).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  auto reader =
      cluster.StubWithToken(CreateToken(cluster.stub(), "carol", "read"));
  auto submitter =
      cluster.StubWithToken(CreateToken(cluster.stub(), "dave", "submit"));
  const uint64_t id = SubmitOne(cluster.stub(), "sys.echo", "the answer");
  ASSERT_TRUE(
      PollUntil([&] { return Finished(GetWithResult(cluster.stub(), id)); }));

  const v1::Job seen = GetWithResult(*reader, id);
  EXPECT_EQ(seen.state(), v1::Job::SUCCEEDED);
  EXPECT_TRUE(seen.result().empty()) << "a read token got a result";
  EXPECT_GT(seen.result_size(), 0u);
  v1::ListJobsResponse listed;
  ASSERT_TRUE(
      reader->ListJobs(Ctx().get(), v1::ListJobsRequest(), &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 1);
  v1::ListWorkersResponse workers;
  EXPECT_TRUE(
      reader->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers)
          .ok());
  for (const auto& [method, status] : CallEverything(*reader)) {
    if (method == "GetJobs" || method == "ListJobs" ||
        method == "ListWorkers" || method == "GetStats") {
      EXPECT_TRUE(status.ok()) << method << ": " << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
          << method << ": " << status.error_message();
    }
  }
  // A submit token may not manage credentials either.
  for (const auto& [method, status] : CallEverything(*submitter)) {
    if (absl::StrContains(method, "Token") ||
        absl::StrContains(method, "WorkerKey")) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
          << method << ": " << status.error_message();
    }
  }
  EXPECT_EQ(Stats(cluster.stub()).submitted_total(), 3u)  // ours, dave's two
      << "the read token submitted something";
}

TEST(SecurityTest, ARevokedTokensOpenStreamEndsAtOnce) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  const std::string erin_secret = CreateToken(cluster.stub(), "erin", "submit");
  auto erin = cluster.StubWithToken(erin_secret);
  auto ctx = Ctx();
  auto stream = erin->Session(ctx.get());
  v1::SessionRequest submit;
  submit.mutable_submit()->set_seq(1);
  submit.mutable_submit()->add_jobs()->set_task("nobody.offers.this");
  ASSERT_TRUE(stream->Write(submit));
  v1::SessionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));  // the stream works
  ASSERT_EQ(resp.submitted().job_ids_size(), 1);

  absl::StatusOr<CommandResult> revoked =
      cluster.Cli({"token", "revoke", "erin"});
  ASSERT_TRUE(revoked.ok());
  ASSERT_EQ(revoked->exit_code, 0) << revoked->err;
  while (stream->Read(&resp)) {
  }
  const grpc::Status ended = stream->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << ended.error_message();
  // And for good, across a restart; other tokens live on.
  const std::string frank = CreateToken(cluster.stub(), "frank", "read");
  ASSERT_TRUE(cluster.KillBroker().ok());
  ASSERT_TRUE(cluster.RestartBroker().ok());
  v1::Stats stats;
  const grpc::Status after =
      cluster.StubWithToken(erin_secret)
          ->GetStats(Ctx().get(), v1::GetStatsRequest(), &stats);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << after.error_message();
  EXPECT_TRUE(cluster.StubWithToken(frank)
                  ->GetStats(Ctx().get(), v1::GetStatsRequest(), &stats)
                  .ok());
}

// ------------------------------------------------------------ workers

// A ZeroMQ peer on the worker port that speaks the wire protocol by hand.
class RawPeer {
 public:
  // With `credentials`, a CURVE client pinning `broker_public`.
  RawPeer(const std::string& endpoint,
          std::optional<auth::CurveKeypair> keypair = std::nullopt,
          const std::string& broker_public = "")
      : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    if (keypair.has_value()) {
      socket_.set(zmq::sockopt::curve_serverkey, broker_public);
      socket_.set(zmq::sockopt::curve_publickey, keypair->public_z85);
      socket_.set(zmq::sockopt::curve_secretkey, keypair->secret_z85);
    }
    socket_.connect(endpoint);
  }

  void Send(wire::Frame frame) {
    const std::string bytes = wire::EncodeFrame(std::move(frame));
    socket_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  }

  // From now on, watch for the broker closing this peer's connection.
  void WatchDisconnects() {
    const std::string ep = absl::StrCat("inproc://raw-peer-monitor-",
                                        reinterpret_cast<uintptr_t>(this));
    ASSERT_EQ(zmq_socket_monitor(socket_.handle(), ep.c_str(),
                                 ZMQ_EVENT_DISCONNECTED),
              0);
    monitor_ = zmq::socket_t(context_, zmq::socket_type::pair);
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(ep);
  }

  // Whether the connection was closed (by the broker) within `timeout`.
  bool Disconnected(absl::Duration timeout = kBound) {
    zmq::pollitem_t item = {monitor_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1,
              std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
    if ((item.revents & ZMQ_POLLIN) == 0) return false;
    zmq::message_t event;
    (void)monitor_.recv(event, zmq::recv_flags::none);
    return true;
  }

  void Register(const std::string& name, int threads,
                const std::vector<std::string>& tasks, int prefetch = 100000) {
    wire::Frame f;
    wire::Register* r = f.mutable_register_();
    r->set_name(name);
    r->set_host("attacker");
    r->set_pid(1);
    r->set_threads(threads);
    r->set_prefetch(prefetch);
    for (const std::string& t : tasks) r->add_tasks(t);
    Send(std::move(f));
  }

  // Bytes as they are, one message.
  void SendRaw(const std::string& bytes) {
    socket_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  }

  // One piece of a chunked output (docs/DESIGN.md, "Frame sizes").
  void SendPiece(uint64_t job_id, uint32_t attempt, uint64_t size,
                 uint64_t offset, const std::string& data) {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job_id);
    r->set_attempt(attempt);
    r->set_ok(true);
    r->set_output(data);
    r->set_output_size(size);
    r->set_output_offset(offset);
    Send(std::move(f));
  }

  void SendResult(uint64_t job_id, uint32_t attempt,
                  const std::string& output) {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job_id);
    r->set_attempt(attempt);
    r->set_ok(true);
    r->set_output(output);
    Send(std::move(f));
  }

  // The next frame within `timeout`.
  std::optional<wire::Frame> Recv(absl::Duration timeout) {
    zmq::pollitem_t item = {socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1,
              std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
    if ((item.revents & ZMQ_POLLIN) == 0) return std::nullopt;
    zmq::message_t m;
    (void)socket_.recv(m, zmq::recv_flags::none);
    absl::StatusOr<wire::Frame> f = wire::DecodeFrame(
        absl::string_view(static_cast<const char*>(m.data()), m.size()));
    if (!f.ok()) return std::nullopt;
    return *std::move(f);
  }

  // Reads until a frame with `pred` arrives (bounded).
  std::optional<wire::Frame> RecvUntil(
      const std::function<bool(const wire::Frame&)>& pred,
      absl::Duration timeout = kBound) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::optional<wire::Frame> f = Recv(deadline - absl::Now());
      if (f.has_value() && pred(*f)) return f;
    }
    return std::nullopt;
  }

  // Registers again and waits for the Welcome: the broker handles one
  // connection's frames in order, so everything sent before was handled.
  bool Barrier(const std::string& name, int threads,
               const std::vector<std::string>& tasks) {
    Register(name, threads, tasks);
    return RecvUntil([](const wire::Frame& f) { return f.has_welcome(); })
        .has_value();
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
  zmq::socket_t monitor_;
};

// A worker key made by the admin CLI, as an operator adds a machine.
auth::WorkerCredentials NewWorkerKey(TestCluster& cluster,
                                     const std::string& name) {
  const std::string file = cluster.auth_dir() + "-" + name + ".key";
  absl::StatusOr<CommandResult> r =
      cluster.Cli({"worker-key", "create", name, "--out=" + file});
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->err;
  absl::StatusOr<auth::WorkerCredentials> c = auth::ReadWorkerCredentials(file);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : auth::WorkerCredentials();
}

std::string BrokerPublic(TestCluster& cluster) {
  absl::StatusOr<auth::WorkerCredentials> local =
      auth::ReadWorkerCredentials(cluster.auth_dir() + "/worker.key");
  EXPECT_TRUE(local.ok()) << local.status();
  return local.ok() ? local->broker_public_z85 : "";
}

std::vector<std::string> WorkerNames(v1::Broker::Stub& stub) {
  v1::ListWorkersResponse resp;
  EXPECT_TRUE(
      stub.ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &resp).ok());
  std::vector<std::string> names;
  for (const v1::WorkerInfo& w : resp.workers()) names.push_back(w.name());
  return names;
}

TEST(SecurityTest, PeersWithoutAnAdmittedKeyNeverJoinNorSeeAPayload) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  const uint64_t failures = Stats(cluster.stub()).worker_auth_failures();

  // No CURVE at all, then CURVE with a keypair the broker never admitted.
  RawPeer plain(cluster.worker_endpoint());
  plain.Register("plain-intruder", 1000, {"sys.echo"});
  absl::StatusOr<auth::CurveKeypair> own = auth::NewCurveKeypair();
  ASSERT_TRUE(own.ok());
  RawPeer unknown(cluster.worker_endpoint(), *own, BrokerPublic(cluster));
  unknown.Register("keyed-intruder", 1000, {"sys.echo"});
  ASSERT_TRUE(PollUntil([&] {
    return Stats(cluster.stub()).worker_auth_failures() >= failures + 2;
  })) << "the broker did not count both refused handshakes";

  // Their jobs all run on the real worker; the intruders get nothing.
  absl::StatusOr<std::unique_ptr<Executor>> ex =
      Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 50; ++i) {
    fs.push_back((*ex)->Submit("sys.echo", absl::StrCat("secret-", i)));
  }
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<std::string> r = fs[i].Result(kBound);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, absl::StrCat("secret-", i));
  }
  EXPECT_EQ(WorkerNames(cluster.stub()), std::vector<std::string>{"worker-0"});
  for (uint64_t id : AllJobIds(cluster.stub())) {
    EXPECT_EQ(GetJob(cluster.stub(), id).worker(), "worker-0") << id;
  }
  EXPECT_FALSE(plain.Recv(absl::ZeroDuration()).has_value());
  EXPECT_FALSE(unknown.Recv(absl::ZeroDuration()).has_value());
}

// Frames on the worker port are bounded by what the protocol needs
// (wire::kMaxWorkerFrameBytes, 8 MiB), whatever the payload and result
// limits: workers cut their Results frames under it and send long outputs
// in pieces; a result over --max_result_bytes fails its job and nothing
// else; a peer sending a longer frame, even with an admitted key, loses
// its connection at the frame's header.
TEST(SecurityTest, WorkerFramesAreBoundedByWhatTheProtocolNeeds) {
  TestCluster cluster;
  ASSERT_TRUE(cluster
                  .StartBroker({"--max_payload_bytes=1048576",
                                "--max_result_bytes=1048576"})
                  .ok());
  ASSERT_TRUE(cluster.StartWorker(8).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  absl::StatusOr<std::unique_ptr<Executor>> ex =
      Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();

  // 24 results of 900 KiB finish about together: one frame would be 21 MiB.
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 24; ++i) {
    fs.push_back((*ex)->Submit(
        "sys.echo", std::string(900 << 10, static_cast<char>('a' + i))));
  }
  for (int i = 0; i < 24; ++i) {
    absl::StatusOr<std::string> r = fs[i].Result(kBound);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(*r, std::string(900 << 10, static_cast<char>('a' + i)));
  }

  // A result over the limit fails its own job, with a message to act on.
  tasks::ExecRequest req;
  for (const char* a : {"head", "-c", "3000000", "/dev/zero"}) req.add_argv(a);
  Future<std::string> big = (*ex)->Submit("sys.exec", req.SerializeAsString());
  absl::StatusOr<std::string> r = big.Result(kBound);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "--max_result_bytes"))
      << r.status();
  const std::vector<uint64_t> ids = AllJobIds(cluster.stub());
  EXPECT_EQ(GetWithResult(cluster.stub(), ids.back()).error().kind(),
            "result_too_large");

  // A peer with an admitted key sending a frame one byte over the limit
  // is cut off at its header, registered or not; the broker and its worker
  // carry on.
  const auth::WorkerCredentials greedy = NewWorkerKey(cluster, "greedy");
  const std::string over(wire::kMaxWorkerFrameBytes + 1, 'x');
  for (bool registered : {true, false}) {
    RawPeer peer(cluster.worker_endpoint(), greedy.key,
                 greedy.broker_public_z85);
    if (registered) {
      ASSERT_TRUE(peer.Barrier("greedy", 1, {"sys.echo"}));
    }
    peer.WatchDisconnects();
    peer.SendRaw(over);
    EXPECT_TRUE(peer.Disconnected())
        << "the broker took a frame over the limit, registered=" << registered;
  }
  Future<std::string> after = (*ex)->Submit("sys.echo", "still here");
  absl::StatusOr<std::string> a = after.Result(kBound);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, "still here");
}

// Before the CURVE handshake (no key offered at all) the same limit holds:
// a frame header claiming one byte more closes the connection at once, and
// one claiming the old limit (65 MiB) likewise.
TEST(SecurityTest, APeerWithoutAKeyCannotSendALongFrame) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  for (uint64_t size :
       {uint64_t{wire::kMaxWorkerFrameBytes} + 1, uint64_t{65} << 20}) {
    PreHandshakePeer peer(cluster.worker_endpoint());
    ASSERT_TRUE(peer.connected());
    ASSERT_TRUE(peer.SendFrameHeader(size));
    // What it sends after the header is never read.
    EXPECT_TRUE(peer.ClosedByBroker(kBound))
        << "a " << size << "-byte frame was accepted before the handshake";
  }
  // And a peer sending less than the limit is not cut off for its size
  // (the handshake timeout ends it later).
  PreHandshakePeer within(cluster.worker_endpoint());
  ASSERT_TRUE(within.SendFrameHeader(wire::kMaxWorkerFrameBytes - 1));
  EXPECT_FALSE(within.ClosedByBroker(absl::Milliseconds(500)));
}

// A registered worker with a valid key sending pieces against the rules:
// each broken result fails only its own attempt (run again), the broker
// stays up, and nothing is lost.
TEST(SecurityTest, BrokenResultPiecesFailOnlyTheirAttempt) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--max_result_bytes=3000000"}).ok());
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  const auth::WorkerCredentials key = NewWorkerKey(cluster, "sloppy");
  RawPeer peer(cluster.worker_endpoint(), key.key, key.broker_public_z85);
  ASSERT_TRUE(peer.Barrier("sloppy", 8, {"raw.task"}));
  EXPECT_EQ(Stats(cluster.stub()).bad_result_pieces(), 0u);
  EXPECT_EQ(MetricValue(cluster, "dexec_bad_result_pieces_total"), 0);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(SubmitOne(cluster.stub(), "raw.task", absl::StrCat(i)));
  }
  std::vector<std::pair<uint64_t, uint32_t>> got;
  ASSERT_TRUE(PollUntil([&] {
    std::optional<wire::Frame> f = peer.Recv(absl::Milliseconds(100));
    if (f.has_value() && f->has_dispatch()) {
      for (const wire::Task& t : f->dispatch().tasks()) {
        got.emplace_back(t.job_id(), t.attempt());
      }
    }
    return got.size() == 4;
  })) << "the peer got "
      << got.size() << " of 4 tasks";
  const std::string mib(1 << 20, 'p');
  const uint64_t size = 2 * mib.size() + 1;
  // 0: a gap. 1: another job's piece in the middle of it (2 then completes
  // from offset 0). 3: 4 MiB in pieces, over --max_result_bytes.
  peer.SendPiece(ids[0], 1, size, 0, mib);
  peer.SendPiece(ids[0], 1, size, 2 * mib.size(), "z");
  peer.SendPiece(ids[1], 1, size, 0, mib);
  peer.SendPiece(ids[2], 1, 3, 0, "ab");
  peer.SendPiece(ids[2], 1, 3, 2, "c");
  for (int i = 0; i < 4; ++i) {
    peer.SendPiece(ids[3], 1, 4 * mib.size(), i * mib.size(), mib);
  }
  v1::Job too_large;
  ASSERT_TRUE(PollUntil([&] {
    too_large = GetWithResult(cluster.stub(), ids[3]);
    return Finished(too_large);
  }));
  EXPECT_EQ(too_large.state(), v1::Job::FAILED);
  EXPECT_EQ(too_large.error().kind(), "result_too_large");
  EXPECT_EQ(GetWithResult(cluster.stub(), ids[2]).result(), "abc");
  // Operators see the two broken outputs (0's gap, 1's interruption), and
  // nothing here was forged.
  const v1::Stats broken = Stats(cluster.stub());
  EXPECT_EQ(broken.bad_result_pieces(), 2u);
  EXPECT_EQ(broken.forged_results(), 0u);
  EXPECT_EQ(MetricValue(cluster, "dexec_bad_result_pieces_total"), 2);
  EXPECT_EQ(MetricValue(cluster, "dexec_forged_results_total"), 0);
  for (int i : {0, 1}) {
    const v1::Job j = GetWithResult(cluster.stub(), ids[i]);
    ASSERT_GE(j.attempt_log_size(), 1) << i;
    EXPECT_EQ(j.attempt_log(0).outcome(), "bad_result") << i;
    EXPECT_NE(j.state(), v1::Job::SUCCEEDED) << i;
  }
  // The broken ones run again (here at the same peer, now sending them
  // right), and the real worker is unaffected.
  std::vector<uint64_t> again;
  ASSERT_TRUE(PollUntil([&] {
    std::optional<wire::Frame> f = peer.Recv(absl::Milliseconds(100));
    if (f.has_value() && f->has_dispatch()) {
      for (const wire::Task& t : f->dispatch().tasks()) {
        EXPECT_EQ(t.attempt(), 2u);
        peer.SendPiece(t.job_id(), t.attempt(), size, 0, mib);
        peer.SendPiece(t.job_id(), t.attempt(), size, mib.size(), mib);
        peer.SendPiece(t.job_id(), t.attempt(), size, 2 * mib.size(), "z");
        again.push_back(t.job_id());
      }
    }
    return again.size() == 2;
  })) << "the broken attempts were not run again";
  for (int i : {0, 1}) {
    v1::Job j;
    ASSERT_TRUE(PollUntil([&] {
      j = GetWithResult(cluster.stub(), ids[i]);
      return Finished(j);
    }));
    EXPECT_EQ(j.state(), v1::Job::SUCCEEDED) << i;
    EXPECT_EQ(j.result(), mib + mib + "z") << i;
  }
  const uint64_t echo = SubmitOne(cluster.stub(), "sys.echo", "alive");
  ASSERT_TRUE(
      PollUntil([&] { return Finished(GetWithResult(cluster.stub(), echo)); }));
  EXPECT_EQ(GetWithResult(cluster.stub(), echo).result(), "alive");
}

TEST(SecurityTest, AValidWorkerCannotCompleteAnAttemptItDoesNotHold) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(1).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  const uint64_t id = SubmitOne(cluster.stub(), "sys.sleep", "1500");
  ASSERT_TRUE(PollUntil([&] {
    return GetWithResult(cluster.stub(), id).state() == v1::Job::RUNNING;
  }));

  const auth::WorkerCredentials mallory = NewWorkerKey(cluster, "mallory");
  // A registered rogue, under the real worker's own name, and an
  // unregistered one: both send a result for the real worker's attempt.
  RawPeer registered(cluster.worker_endpoint(), mallory.key,
                     mallory.broker_public_z85);
  ASSERT_TRUE(registered.Barrier("worker-0", 1, {"sys.sleep"}));
  RawPeer stranger(cluster.worker_endpoint(), mallory.key,
                   mallory.broker_public_z85);
  EXPECT_EQ(Stats(cluster.stub()).forged_results(), 0u);
  EXPECT_EQ(MetricValue(cluster, "dexec_forged_results_total"), 0);
  for (uint32_t attempt : {1u, 2u, 0u}) {
    registered.SendResult(id, attempt, "forged");
    stranger.SendResult(id, attempt, "forged");
  }
  ASSERT_TRUE(registered.Barrier("worker-0", 1, {"sys.sleep"}));
  ASSERT_TRUE(stranger.Barrier("stranger", 1, {"sys.sleep"}));
  EXPECT_EQ(GetWithResult(cluster.stub(), id).state(), v1::Job::RUNNING)
      << "a forged result completed the job";
  // Only attempt 1 exists, so its two copies are forged; attempts 2 and 0
  // are merely stale. Operators see the forgeries.
  const v1::Stats forged = Stats(cluster.stub());
  EXPECT_EQ(forged.forged_results(), 2u);
  EXPECT_EQ(forged.bad_result_pieces(), 0u);
  EXPECT_EQ(MetricValue(cluster, "dexec_forged_results_total"), 2);
  EXPECT_EQ(MetricValue(cluster, "dexec_bad_result_pieces_total"), 0);

  ASSERT_TRUE(
      PollUntil([&] { return Finished(GetWithResult(cluster.stub(), id)); }));
  const v1::Job job = GetWithResult(cluster.stub(), id);
  EXPECT_EQ(job.state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(job.result(), "");
  EXPECT_EQ(job.attempts(), 1);
}

TEST(SecurityTest, AWorkerClaimingHugeCapacityGetsNoMoreThanTheCap) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--max_worker_credit=8"}).ok());
  const auth::WorkerCredentials greedy = NewWorkerKey(cluster, "greedy");
  RawPeer peer(cluster.worker_endpoint(), greedy.key, greedy.broker_public_z85);
  // A million threads is not even a valid Register (the wire decoder takes
  // at most 100,000); the most a valid one may claim, plus as much
  // prefetch, is cut to the cap.
  peer.Register("greedy", 1000000, {"sys.echo"});
  ASSERT_TRUE(peer.Barrier("greedy", 100000, {"sys.echo"}));
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(cluster.stub()
                  .ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers)
                  .ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).threads(), 8);

  v1::SubmitRequest req;
  for (int i = 0; i < 100; ++i) req.add_jobs()->set_task("sys.echo");
  v1::SubmitResponse resp;
  ASSERT_TRUE(cluster.stub().Submit(Ctx().get(), req, &resp).ok());
  int received = 0;
  while (received < 8) {
    std::optional<wire::Frame> f =
        peer.RecvUntil([](const wire::Frame& f) { return f.has_dispatch(); });
    ASSERT_TRUE(f.has_value()) << "got " << received << " tasks";
    received += f->dispatch().tasks_size();
  }
  EXPECT_EQ(received, 8);
  const v1::Stats stats = Stats(cluster.stub());
  EXPECT_EQ(stats.running(), 8u);
  EXPECT_EQ(stats.queued(), 92u);
}

TEST(SecurityTest, ABlackHoleWorkersJobsTimeOutAndFinishElsewhere) {
  TestCluster cluster;
  // A long liveness: the black hole stays "alive", so only the jobs'
  // timeouts can move them.
  ASSERT_TRUE(cluster.StartBroker({"--liveness=60"}).ok());
  const auth::WorkerCredentials hole_key = NewWorkerKey(cluster, "hole");
  RawPeer hole(cluster.worker_endpoint(), hole_key.key,
               hole_key.broker_public_z85);
  ASSERT_TRUE(hole.Barrier("black-hole", 4, {"sys.echo"}));
  ASSERT_TRUE(cluster.StartWorker(2).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(2).ok());

  ExecutorOptions options = cluster.executor_options();
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
  ASSERT_TRUE(ex.ok()) << ex.status();
  SubmitOptions submit;
  // Long enough that a loaded (or sanitized) real worker answers in time,
  // and attempts enough for that too; the black hole never answers at all.
  submit.timeout = absl::Seconds(1);
  submit.max_attempts = 5;
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 12; ++i) {
    fs.push_back((*ex)->Submit("sys.echo", absl::StrCat("job-", i), submit));
  }
  for (int i = 0; i < 12; ++i) {
    absl::StatusOr<std::string> r = fs[i].Result(kBound);
    ASSERT_TRUE(r.ok()) << "job " << i << ": " << r.status();
    EXPECT_EQ(*r, absl::StrCat("job-", i));
  }
  int moved = 0;
  for (uint64_t id : AllJobIds(cluster.stub())) {
    const v1::Job job = GetJob(cluster.stub(), id);
    EXPECT_EQ(job.worker(), "worker-0") << id;
    if (job.attempt_log_size() > 1) {
      EXPECT_EQ(job.attempt_log(0).worker(), "black-hole");
      EXPECT_EQ(job.attempt_log(0).outcome(), "timeout");
      ++moved;
    }
  }
  EXPECT_GT(moved, 0)
      << "the black hole never got a job: the test proves nothing";
}

TEST(SecurityTest, RevokingAWorkerKeyDropsItsWorkersAndTheirJobsRunElsewhere) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  const auth::WorkerCredentials key = NewWorkerKey(cluster, "doomed");
  const std::string file = cluster.auth_dir() + "-doomed.key";
  ASSERT_TRUE(cluster.StartWorker(2, {"--worker_key=" + file}).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  const uint64_t id = SubmitOne(cluster.stub(), "sys.sleep", "60000");
  ASSERT_TRUE(PollUntil([&] {
    return GetWithResult(cluster.stub(), id).state() == v1::Job::RUNNING;
  }));
  absl::StatusOr<CommandResult> revoked =
      cluster.Cli({"worker-key", "revoke", "doomed"});
  ASSERT_TRUE(revoked.ok());
  ASSERT_EQ(revoked->exit_code, 0) << revoked->err;
  // Dropped at once, without a restart; the job waits for another worker.
  ASSERT_TRUE(PollUntil([&] { return WorkerNames(cluster.stub()).empty(); }));
  EXPECT_EQ(GetWithResult(cluster.stub(), id).state(), v1::Job::QUEUED);
  // It cannot come back with that key.
  RawPeer again(cluster.worker_endpoint(), key.key, key.broker_public_z85);
  again.Register("doomed-again", 1, {"sys.sleep"});
  const uint64_t failures = Stats(cluster.stub()).worker_auth_failures();
  ASSERT_TRUE(PollUntil(
      [&] { return Stats(cluster.stub()).worker_auth_failures() > failures; }));
  ASSERT_TRUE(cluster.StartWorker(1).ok());  // the local key
  ASSERT_TRUE(PollUntil([&] {
    const v1::Job j = GetWithResult(cluster.stub(), id);
    return j.state() == v1::Job::RUNNING && j.worker() == "worker-1";
  })) << "the job did not move to the other worker";
}

TEST(SecurityTest, AWorkerNeverTalksToABrokerWithoutTheKeyItPins) {
  // An impostor broker on the real broker's worker port... simplest: a
  // second broker with credentials of its own, and a worker holding the
  // first broker's worker.key.
  TestCluster real;
  ASSERT_TRUE(real.StartBroker().ok());
  TestCluster impostor;
  ASSERT_TRUE(impostor.StartBroker().ok());
  ASSERT_TRUE(impostor.StartWorker(1, {"--auth_dir=" + real.auth_dir()}).ok());
  const uint64_t failures = Stats(impostor.stub()).worker_auth_failures();
  ASSERT_TRUE(PollUntil([&] {
    return Stats(impostor.stub()).worker_auth_failures() > failures;
  })) << "the handshake with the wrong broker was not even tried";
  EXPECT_TRUE(WorkerNames(impostor.stub()).empty());
}

TEST(SecurityTest, SysExecRunsOnlyOnWorkersStartedWithAllowExec) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker().ok());
  ASSERT_TRUE(cluster.StartWorker(1, {"--allow_exec=false"}).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  tasks::ExecRequest req;
  req.add_argv("id");
  const uint64_t id =
      SubmitOne(cluster.stub(), "sys.exec", req.SerializeAsString());
  v1::Job job = GetWithResult(cluster.stub(), id);
  EXPECT_EQ(job.state(), v1::Job::QUEUED);
  EXPECT_TRUE(absl::StrContains(job.waiting_reason(), "--allow_exec"))
      << job.waiting_reason();
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(cluster.stub()
                  .ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &workers)
                  .ok());
  for (const std::string& t : workers.workers(0).tasks())
    EXPECT_NE(t, "sys.exec");
  // A worker that allows it runs it.
  ASSERT_TRUE(cluster.StartWorker(1).ok());
  ASSERT_TRUE(
      PollUntil([&] { return Finished(GetWithResult(cluster.stub(), id)); }));
  EXPECT_EQ(GetWithResult(cluster.stub(), id).worker(), "worker-1");
}

// ------------------------------------------------------------ TLS

TEST(SecurityTest, TlsWithTheGeneratedCertificate) {
  TestCluster cluster;
  ASSERT_TRUE(cluster.StartBroker({"--tls"}).ok());
  ASSERT_TRUE(cluster.StartWorker(1).ok());
  ASSERT_TRUE(cluster.WaitForWorkers(1).ok());
  // With the CA: works (Executor and CLI).
  absl::StatusOr<std::unique_ptr<Executor>> ex =
      Executor::Connect(cluster.executor_options());
  ASSERT_TRUE(ex.ok()) << ex.status();
  absl::StatusOr<std::string> r =
      (*ex)->Submit("sys.echo", std::string("over tls")).Result(kBound);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "over tls");
  absl::StatusOr<CommandResult> cli = cluster.Cli({"stats"});
  ASSERT_TRUE(cli.ok());
  EXPECT_EQ(cli->exit_code, 0) << cli->err;
  // Without it: a clear error, not a hang.
  ExecutorOptions plain = cluster.executor_options();
  plain.tls_ca.clear();
  plain.connect_timeout = absl::Seconds(3);
  absl::StatusOr<std::unique_ptr<Executor>> refused = Executor::Connect(plain);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable)
      << refused.status();
  absl::StatusOr<CommandResult> no_ca =
      RunCommand({BinaryPath("cli/dexec"), "--broker=" + cluster.grpc_address(),
                  "--token=" + cluster.admin_token(), "stats"});
  ASSERT_TRUE(no_ca.ok());
  EXPECT_EQ(no_ca->exit_code, 2) << no_ca->err;
  // A CA that did not sign it.
  TestCluster other;
  ASSERT_TRUE(other.StartBroker({"--tls"}).ok());
  ExecutorOptions wrong_ca = plain;
  wrong_ca.tls_ca = other.tls_ca();
  EXPECT_FALSE(Executor::Connect(wrong_ca).ok());
}

// openssl(1) makes a client CA and a client certificate for mutual TLS.
bool MakeClientCertificate(const std::string& dir) {
  const std::vector<std::vector<std::string>> steps = {
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/client-ca.key",
       "-out", dir + "/client-ca.pem", "-subj", "/CN=dexec test client CA",
       "-days", "2"},
      {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", dir + "/client.key", "-out", dir + "/client.csr",
       "-subj", "/CN=dexec test client"},
      {"openssl", "x509", "-req", "-in", dir + "/client.csr", "-CA",
       dir + "/client-ca.pem", "-CAkey", dir + "/client-ca.key",
       "-CAcreateserial", "-out", dir + "/client.pem", "-days", "2"},
  };
  for (std::vector<std::string> step : steps) {
    step[0] = "/usr/bin/openssl";
    absl::StatusOr<CommandResult> r = RunCommand(step);
    if (!r.ok() || r->exit_code != 0) return false;
  }
  return true;
}

TEST(SecurityTest, MutualTlsNeedsAClientCertificateSignedByTheClientCa) {
  if (::access("/usr/bin/openssl", X_OK) != 0) {
    GTEST_SKIP() << "no /usr/bin/openssl to make a client certificate";
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/mtls-", ::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_TRUE(MakeClientCertificate(dir));
  TestCluster cluster;
  ASSERT_TRUE(
      cluster
          .StartBroker({"--tls", "--tls_client_ca=" + dir + "/client-ca.pem"})
          .ok());
  ExecutorOptions with_cert = cluster.executor_options();
  with_cert.tls_cert = dir + "/client.pem";
  with_cert.tls_key = dir + "/client.key";
  EXPECT_TRUE(Executor::Connect(with_cert).ok());
  ExecutorOptions without = cluster.executor_options();
  without.connect_timeout = absl::Seconds(3);
  EXPECT_FALSE(Executor::Connect(without).ok());
}

TEST(SecurityTest, PlaintextOffLoopbackIsRefusedUnlessInsecure) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/refused-", ::getpid());
  absl::StatusOr<CommandResult> refused = RunCommand(
      {BinaryPath("broker/dexec-broker"), "--listen=0.0.0.0:0",
       "--worker_listen=tcp://127.0.0.1:*", "--http_listen=127.0.0.1:0",
       "--in_memory", "--auth_dir=" + dir});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 2) << refused->err;
  EXPECT_TRUE(absl::StrContains(refused->err, "--tls")) << refused->err;
  EXPECT_TRUE(absl::StrContains(refused->err, "--insecure")) << refused->err;
  // --insecure is the way out, and it says so.
  TestCluster insecure;
  ASSERT_TRUE(insecure
                  .StartBroker({"--insecure", "--in_memory",
                                "--auth_dir=" + dir + "-insecure"})
                  .ok());
  v1::Stats stats;
  EXPECT_TRUE(insecure.StubWithToken("")
                  ->GetStats(Ctx().get(), v1::GetStatsRequest(), &stats)
                  .ok());
  // With TLS, any address will do.
  TestCluster tls;
  EXPECT_TRUE(tls.StartBroker({"--tls", "--listen=0.0.0.0:0"}).ok());
}

// ------------------------------------------------------------ two hosts

TEST(SecurityTest, AWorkerOnAnotherHostJoinsWithTheCopiedWorkerKey) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to create network namespaces (ip netns)";
  }
  const std::string ip = IpBinary();
  if (ip.empty()) GTEST_SKIP() << "no `ip` binary (iproute2) on this machine";
  NetnsPair net(ip);
  if (absl::Status s = net.Probe(); !s.ok()) {
    GTEST_SKIP() << "network namespaces are not available here: "
                 << s.message();
  }
  ASSERT_TRUE(net.Build().ok());
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string base =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/twohosts-", ::getpid());
  const std::string broker_dir = base + "-broker";
  // The broker on "host b": gRPC over TLS on the link to us, workers on the
  // b-w link, both off loopback.
  absl::StatusOr<Process> broker = net.StartIn(
      net.broker_ns(),
      {BinaryPath("broker/dexec-broker"),
       absl::StrCat("--listen=", net.broker_control_ip(), ":0"),
       absl::StrCat("--worker_listen=tcp://", net.broker_ip(), ":*"),
       "--http_listen=", "--tls", "--data_dir=" + broker_dir});
  ASSERT_TRUE(broker.ok()) << broker.status();
  absl::StatusOr<std::string> line = broker->ReadLine(absl::Seconds(20));
  ASSERT_TRUE(line.ok()) << line.status();
  std::string grpc_address, worker_endpoint;
  for (absl::string_view field : absl::StrSplit(*line, ' ')) {
    if (absl::ConsumePrefix(&field, "grpc=")) grpc_address = std::string(field);
    if (absl::ConsumePrefix(&field, "workers=")) {
      worker_endpoint = std::string(field);
    }
  }
  ASSERT_FALSE(grpc_address.empty() || worker_endpoint.empty()) << *line;

  // The README's one step: copy dexec-data/worker.key to the other host.
  const std::string worker_dir = base + "-worker";
  ASSERT_EQ(::mkdir(worker_dir.c_str(), 0700), 0);
  absl::StatusOr<std::string> key =
      auth::ReadSmallFile(broker_dir + "/worker.key");
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_TRUE(
      auth::CreateFileExclusive(worker_dir + "/worker.key", *key, 0600).ok());
  absl::StatusOr<Process> worker = net.StartIn(
      net.worker_ns(),
      {BinaryPath("worker/dexec-worker"), "--broker=" + worker_endpoint,
       "--threads=2", "--name=far-worker", "--auth_dir=" + worker_dir});
  ASSERT_TRUE(worker.ok()) << worker.status();
  // A worker on that host without the key gets nowhere.
  absl::StatusOr<Process> keyless = net.StartIn(
      net.worker_ns(),
      {BinaryPath("worker/dexec-worker"), "--broker=" + worker_endpoint,
       "--threads=2", "--name=keyless", "--insecure"});
  ASSERT_TRUE(keyless.ok()) << keyless.status();

  ExecutorOptions options;
  options.broker = grpc_address;
  options.token = std::string(absl::StripAsciiWhitespace(
      *auth::ReadSmallFile(broker_dir + "/client.token")));
  options.tls_ca = broker_dir + "/tls/ca.pem";
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Connect(options);
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<Future<std::string>> fs;
  for (int i = 0; i < 10; ++i) {
    fs.push_back((*ex)->Submit("sys.echo", absl::StrCat("far-", i)));
  }
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<std::string> r = fs[i].Result(kBound);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, absl::StrCat("far-", i));
  }
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      grpc_address,
      grpc::SslCredentials(grpc::SslCredentialsOptions{
          *auth::ReadSmallFile(options.tls_ca), "", ""}),
      args);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + options.token);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kBound));
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(v1::Broker::NewStub(channel)
                  ->ListWorkers(&ctx, v1::ListWorkersRequest(), &workers)
                  .ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).name(), "far-worker");
}

}  // namespace
}  // namespace dexec::testing
