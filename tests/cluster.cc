#include "tests/cluster.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "auth/client_credentials.h"
#include "auth/secret_file.h"
#include "grpcpp/grpcpp.h"

namespace dexec::testing {

absl::Status TestCluster::StartBroker(std::vector<std::string> extra_flags) {
  std::vector<std::string> flags = std::move(extra_flags);
  // Each broker gets its own fresh journal unless the test chose one.
  bool chose_store = false;
  data_dir_.clear();
  for (const std::string& f : flags) {
    absl::string_view flag = f;
    if (absl::ConsumePrefix(&flag, "--data_dir="))
      data_dir_ = std::string(flag);
    if (absl::StartsWith(f, "--data_dir") ||
        absl::StartsWith(f, "--in_memory")) {
      chose_store = true;
    }
  }
  static std::atomic<int> brokers{0};
  const int n = brokers++;
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string base = absl::StrCat(tmp != nullptr ? tmp : "/tmp",
                                        "/dexec-", ::getpid(), "-", n);
  if (!chose_store) {
    data_dir_ = base + "-data";
    flags.push_back("--data_dir=" + data_dir_);
  }
  insecure_ = false;
  auth_dir_.clear();
  bool chose_auth = false;
  bool tls = false;
  for (const std::string& f : flags) {
    absl::string_view flag = f;
    if (f == "--insecure") insecure_ = true;
    if (f == "--tls") tls = true;
    if (absl::ConsumePrefix(&flag, "--auth_dir=")) {
      auth_dir_ = std::string(flag);
      chose_auth = true;
    }
  }
  if (!chose_auth) {
    auth_dir_ = base + "-auth";
    flags.push_back("--auth_dir=" + auth_dir_);
  }
  tls_ca_ = tls ? auth_dir_ + "/tls/ca.pem" : "";
  std::vector<std::string> argv = {
      BinaryPath("broker/dexec-broker"), "--listen=127.0.0.1:0",
      "--http_listen=127.0.0.1:0", "--worker_listen=tcp://127.0.0.1:*"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::Status launched = LaunchBroker(argv);
  if (!launched.ok()) return launched;
  broker_flags_ = {"--listen=" + grpc_address_, "--http_listen=127.0.0.1:0",
                   "--worker_listen=" + worker_endpoint_};
  broker_flags_.insert(broker_flags_.end(), flags.begin(), flags.end());
  return absl::OkStatus();
}

absl::Status TestCluster::LaunchBroker(const std::vector<std::string>& argv) {
  absl::StatusOr<Process> p = Process::Start(argv);
  if (!p.ok()) return p.status();
  broker_ = std::make_unique<Process>(std::move(*p));
  absl::StatusOr<std::string> line = broker_->ReadLine(absl::Seconds(20));
  if (!line.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "broker did not report listening: ", line.status().message()));
  }
  // dexec-broker listening grpc=HOST:PORT workers=ENDPOINT
  std::string grpc_address, worker_endpoint;
  for (absl::string_view field : absl::StrSplit(*line, ' ')) {
    if (absl::ConsumePrefix(&field, "grpc=")) grpc_address = std::string(field);
    if (absl::ConsumePrefix(&field, "workers="))
      worker_endpoint = std::string(field);
    if (absl::ConsumePrefix(&field, "http="))
      http_address_ = std::string(field);
  }
  if (grpc_address.empty() || worker_endpoint.empty()) {
    return absl::InternalError(absl::StrCat("unexpected broker line: ", *line));
  }
  grpc_address_ = std::move(grpc_address);
  worker_endpoint_ = std::move(worker_endpoint);
  admin_token_.clear();
  if (!insecure_) {
    absl::StatusOr<std::string> token =
        auth::ReadSmallFile(auth_dir_ + "/client.token");
    if (!token.ok()) return token.status();
    admin_token_ = std::string(absl::StripAsciiWhitespace(*token));
  }
  // A fresh channel: the old one may sit in gRPC's reconnect backoff.
  stub_ = StubWithToken(admin_token_);
  return absl::OkStatus();
}

std::unique_ptr<v1::Broker::Stub> TestCluster::StubWithToken(
    const std::string& token) {
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!token.empty()) {
    interceptors.push_back(auth::MakeTokenInterceptorFactory(token));
  }
  auth::ClientAuthOptions tls;
  tls.tls_ca = tls_ca_;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      auth::MakeChannelCredentials(tls);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // Its own connection: a shared one may still be the dead broker's.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Broker::NewStub(
      grpc::experimental::CreateCustomChannelWithInterceptors(
          grpc_address_,
          credentials.ok() ? *credentials : grpc::InsecureChannelCredentials(),
          args, std::move(interceptors)));
}

absl::Status TestCluster::KillBroker(absl::Duration timeout) {
  if (broker_ == nullptr) {
    return absl::FailedPreconditionError("no broker was started");
  }
  broker_->Signal(SIGKILL);
  absl::StatusOr<int> code = broker_->Wait(timeout);
  if (!code.ok()) return code.status();
  return absl::OkStatus();
}

absl::Status TestCluster::RestartBroker() {
  if (broker_ == nullptr || broker_flags_.empty()) {
    return absl::FailedPreconditionError(
        "RestartBroker needs a broker started with StartBroker");
  }
  absl::StatusOr<int> exited = broker_->Wait(absl::ZeroDuration());
  if (!exited.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the broker (pid ", broker_->pid(),
        ") still runs; KillBroker() or signal it before RestartBroker()"));
  }
  const std::string want_grpc = grpc_address_;
  const std::string want_workers = worker_endpoint_;
  std::vector<std::string> argv = {BinaryPath("broker/dexec-broker")};
  argv.insert(argv.end(), broker_flags_.begin(), broker_flags_.end());
  absl::Status started = LaunchBroker(argv);
  if (!started.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "restarting the broker on grpc=", want_grpc, " workers=", want_workers,
        " failed (is the port taken?): ", started.message()));
  }
  if (grpc_address_ != want_grpc || worker_endpoint_ != want_workers) {
    return absl::InternalError(
        absl::StrCat("restarted broker listens on grpc=", grpc_address_,
                     " workers=", worker_endpoint_, ", not on grpc=", want_grpc,
                     " workers=", want_workers));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> TestCluster::StartWorker(
    int threads, std::vector<std::string> extra_flags) {
  std::vector<std::string> argv = {
      BinaryPath("worker/dexec-worker"), "--broker=" + worker_endpoint_,
      absl::StrCat("--threads=", threads),
      absl::StrCat("--name=worker-", workers_.size())};
  bool chose_auth = false;
  for (const std::string& f : extra_flags) {
    if (f == "--insecure" || absl::StartsWith(f, "--auth_dir") ||
        absl::StartsWith(f, "--worker_key")) {
      chose_auth = true;
    }
  }
  if (!chose_auth) {
    argv.push_back(insecure_ ? std::string("--insecure")
                             : "--auth_dir=" + auth_dir_);
  }
  // As the README's commands do; a later --allow_exec=false wins.
  argv.push_back("--allow_exec");
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  absl::StatusOr<Process> p = Process::Start(argv);
  if (!p.ok()) return p.status();
  workers_.push_back(std::make_unique<Process>(std::move(*p)));
  return workers_.size() - 1;
}

absl::Status TestCluster::WaitForWorkers(int n, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  int seen = 0;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListWorkersResponse resp;
    grpc::Status s = stub_->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    seen = s.ok() ? resp.workers_size() : -1;
    if (seen == n) return absl::OkStatus();
    // Registration is a message we cannot subscribe to; ask again shortly.
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("broker lists ", seen, " workers, expected ", n, " within ",
                   absl::FormatDuration(timeout)));
}

absl::StatusOr<CommandResult> TestCluster::Cli(std::vector<std::string> args,
                                               const std::string& stdin_data,
                                               absl::Duration timeout) {
  std::vector<std::string> argv = {BinaryPath("cli/dexec"),
                                   "--broker=" + grpc_address_};
  bool chose_token = false;
  for (const std::string& a : args) {
    if (a == "--") break;
    if (absl::StartsWith(a, "--token")) chose_token = true;
  }
  if (!insecure_ && !chose_token) {
    argv.push_back("--token_file=" + auth_dir_ + "/client.token");
  }
  if (!tls_ca_.empty()) argv.push_back("--tls_ca=" + tls_ca_);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, stdin_data, timeout);
}

}  // namespace dexec::testing
