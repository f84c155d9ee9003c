// Client credentials: the token lookup order with real environment variables
// and files, and real in-process gRPC servers (plaintext on loopback, and
// TLS with the files tls_certs makes) that see what the channel sends.
#include "auth/client_credentials.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/secret_file.h"
#include "auth/testing.h"
#include "auth/tls_certs.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::auth {
namespace {

using ::dexec::auth::testing::FreshPath;
using ::dexec::auth::testing::RunUnprivileged;
using ::dexec::auth::testing::WriteTestFile;

constexpr char kNoTokenMessage[] =
    "no dexec token: pass --token or --token_file, set DEXEC_TOKEN or "
    "DEXEC_TOKEN_FILE, or run where ./dexec-data/client.token is readable";

const std::string kTokenA = "dexec_" + std::string(64, 'a');
const std::string kTokenB = "dexec_" + std::string(64, 'b');
const std::string kTokenC = "dexec_" + std::string(64, 'c');
const std::string kTokenD = "dexec_" + std::string(64, 'd');
const std::string kTokenE = "dexec_" + std::string(64, 'e');

// Each test starts in a fresh working directory with none of our
// environment variables set, and leaves the process as it found it.
class ClientCredentials : public ::testing::Test {
 protected:
  void SetUp() override {
    char cwd[4096];
    ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
    old_cwd_ = cwd;
    dir_ = FreshPath("cwd");
    ASSERT_TRUE(EnsureDirectory(dir_, 0755).ok());
    ASSERT_EQ(chdir(dir_.c_str()), 0);
    for (const char* var :
         {"DEXEC_TOKEN", "DEXEC_TOKEN_FILE", "DEXEC_TLS_CA"}) {
      unsetenv(var);
    }
  }
  void TearDown() override {
    for (const char* var :
         {"DEXEC_TOKEN", "DEXEC_TOKEN_FILE", "DEXEC_TLS_CA"}) {
      unsetenv(var);
    }
    ASSERT_EQ(chdir(old_cwd_.c_str()), 0);
  }

  // A file in the test's directory holding `content`.
  std::string File(const std::string& name, const std::string& content,
                   mode_t mode = 0600) {
    const std::string path = dir_ + "/" + name;
    WriteTestFile(path, content, mode);
    return path;
  }
  void WriteDefaultTokenFile(const std::string& content) {
    ASSERT_TRUE(EnsureDirectory(dir_ + "/dexec-data", 0700).ok());
    File("dexec-data/client.token", content);
  }

  std::string dir_;
  std::string old_cwd_;
};

// ---- The lookup order ----

TEST_F(ClientCredentials, NothingSetIsOneLineSayingWhereTheTokenIsExpected) {
  const absl::StatusOr<FoundToken> token = FindClientToken({});
  ASSERT_TRUE(absl::IsNotFound(token.status())) << token.status();
  EXPECT_EQ(token.status().message(), kNoTokenMessage);
  EXPECT_FALSE(absl::StrContains(token.status().message(), "\n"));
}

TEST_F(ClientCredentials, EachSourceWinsOverTheOnesAfterIt) {
  WriteDefaultTokenFile(kTokenE + "\n");
  const std::string file_b = File("b.token", kTokenB + "\n");
  const std::string file_d = File("d.token", kTokenD + "\n");
  setenv("DEXEC_TOKEN", kTokenC.c_str(), 1);
  setenv("DEXEC_TOKEN_FILE", file_d.c_str(), 1);
  ClientAuthOptions options;
  options.token = kTokenA;
  options.token_file = file_b;

  absl::StatusOr<FoundToken> t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenA);
  EXPECT_EQ(t->source, "--token");

  options.token.clear();
  t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenB);
  EXPECT_EQ(t->source, "--token_file " + file_b);

  options.token_file.clear();
  t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenC);
  EXPECT_EQ(t->source, "DEXEC_TOKEN");

  unsetenv("DEXEC_TOKEN");
  t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenD);
  EXPECT_EQ(t->source, "DEXEC_TOKEN_FILE " + file_d);

  unsetenv("DEXEC_TOKEN_FILE");
  t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenE);
  EXPECT_EQ(t->source, "./dexec-data/client.token");
}

TEST_F(ClientCredentials, TokenFileGivesItsFirstLineTrimmed) {
  ClientAuthOptions options;
  options.token_file = File("t", "  " + kTokenA + " \r\nsecond line\n");
  absl::StatusOr<FoundToken> t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenA);
  options.token_file = File("u", kTokenB);  // no newline at all
  t = FindClientToken(options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, kTokenB);
}

TEST_F(ClientCredentials, MissingNamedTokenFileIsAnErrorNotAFallThrough) {
  setenv("DEXEC_TOKEN", kTokenC.c_str(), 1);
  ClientAuthOptions options;
  options.token_file = dir_ + "/nope.token";
  const absl::StatusOr<FoundToken> t = FindClientToken(options);
  ASSERT_TRUE(absl::IsNotFound(t.status())) << t.status();
  EXPECT_EQ(t.status().message(),
            "--token_file: " + dir_ + "/nope.token not found");

  unsetenv("DEXEC_TOKEN");
  setenv("DEXEC_TOKEN_FILE", (dir_ + "/gone").c_str(), 1);
  WriteDefaultTokenFile(kTokenE);
  const absl::StatusOr<FoundToken> env = FindClientToken({});
  ASSERT_TRUE(absl::IsNotFound(env.status())) << env.status();
  EXPECT_TRUE(absl::StartsWith(env.status().message(), "DEXEC_TOKEN_FILE: "));
  EXPECT_TRUE(absl::StrContains(env.status().message(), dir_ + "/gone"));
}

TEST_F(ClientCredentials, UnreadableNamedTokenFileIsPermissionDenied) {
  ClientAuthOptions options;
  options.token_file = File("root-only.token", kTokenA + "\n", 0600);
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  if (geteuid() != 0) {
    ASSERT_EQ(chmod(options.token_file.c_str(), 0), 0);
  }
  EXPECT_EQ(RunUnprivileged([&] { return FindClientToken(options).status(); }),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(ClientCredentials, UnreadableDefaultTokenFileIsNotFound) {
  WriteDefaultTokenFile(kTokenE);  // dexec-data is 0700, owned by us
  if (geteuid() != 0) {
    ASSERT_EQ(chmod((dir_ + "/dexec-data").c_str(), 0), 0);
  }
  EXPECT_EQ(RunUnprivileged([] { return FindClientToken({}).status(); }),
            absl::StatusCode::kNotFound);
  if (geteuid() != 0) chmod((dir_ + "/dexec-data").c_str(), 0700);
}

TEST_F(ClientCredentials, EmptyOrGarbledTokensAreRefusedWithoutEchoingThem) {
  ClientAuthOptions options;
  options.token_file = File("empty", "\n" + kTokenA);
  absl::StatusOr<FoundToken> t = FindClientToken(options);
  ASSERT_TRUE(absl::IsInvalidArgument(t.status())) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), options.token_file));
  EXPECT_TRUE(absl::StrContains(t.status().message(), "empty"));

  options.token_file.clear();
  options.token = kTokenA + " " + kTokenB;
  t = FindClientToken(options);
  ASSERT_TRUE(absl::IsInvalidArgument(t.status())) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "--token"));
  EXPECT_FALSE(absl::StrContains(t.status().message(), kTokenA));
  EXPECT_FALSE(absl::StrContains(t.status().message(), kTokenB));
}

// ---- Channel credentials ----

TEST_F(ClientCredentials, NoCaMeansInsecureCredentials) {
  const auto creds = MakeChannelCredentials({});
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_NE(*creds, nullptr);
}

TEST_F(ClientCredentials, CredentialErrorsNameTheOptionAndTheFile) {
  ClientAuthOptions options;
  options.tls_ca = dir_ + "/missing-ca.pem";
  auto creds = MakeChannelCredentials(options);
  ASSERT_TRUE(absl::IsNotFound(creds.status())) << creds.status();
  EXPECT_EQ(creds.status().message(),
            "--tls_ca: " + dir_ + "/missing-ca.pem not found");

  options.tls_ca.clear();
  setenv("DEXEC_TLS_CA", File("not.pem", "hello").c_str(), 1);
  creds = MakeChannelCredentials(options);
  ASSERT_TRUE(absl::IsFailedPrecondition(creds.status())) << creds.status();
  EXPECT_TRUE(absl::StartsWith(creds.status().message(), "DEXEC_TLS_CA: "));
  EXPECT_TRUE(absl::StrContains(creds.status().message(), dir_ + "/not.pem"));

  unsetenv("DEXEC_TLS_CA");
  options.tls_cert = File("c.pem", "-----BEGIN CERTIFICATE-----\n");
  creds = MakeChannelCredentials(options);
  EXPECT_TRUE(absl::IsInvalidArgument(creds.status())) << creds.status();
  options.tls_key = dir_ + "/no-key.pem";
  creds = MakeChannelCredentials(options);
  EXPECT_TRUE(absl::IsInvalidArgument(creds.status())) << creds.status();
  EXPECT_TRUE(absl::StrContains(creds.status().message(), "need --tls_ca"));
  options.tls_ca = File("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  creds = MakeChannelCredentials(options);
  ASSERT_TRUE(absl::IsNotFound(creds.status())) << creds.status();
  EXPECT_TRUE(absl::StartsWith(creds.status().message(), "--tls_key: "));
}

TEST_F(ClientCredentials, TlsServerNameWithoutTlsIsRefused) {
  ClientAuthOptions options;
  options.tls_server_name = "localhost";
  const auto channel = MakeBrokerChannel("127.0.0.1:1", options, {});
  EXPECT_TRUE(absl::IsInvalidArgument(channel.status())) << channel.status();
}

TEST_F(ClientCredentials, BrokerChannelReportsAnUnusableTokenSourceAtOnce) {
  ClientAuthOptions options;
  options.token_file = dir_ + "/nope";
  const auto channel = MakeBrokerChannel("127.0.0.1:1", options, {});
  EXPECT_TRUE(absl::IsNotFound(channel.status())) << channel.status();
  EXPECT_TRUE(absl::StartsWith(channel.status().message(), "--token_file: "));
}

// ---- Real servers ----

// GetStats answers OK if the call's `authorization` metadata is exactly
// `expected` (and appears once), UNAUTHENTICATED saying what it saw
// otherwise (this is a test: it may echo). It also records the TLS peer.
class AuthEchoBroker : public v1::Broker::CallbackService {
 public:
  explicit AuthEchoBroker(std::string expected)
      : expected_(std::move(expected)) {}

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest*,
                                     v1::Stats*) override {
    std::vector<std::string> seen;
    const auto range = ctx->client_metadata().equal_range("authorization");
    for (auto it = range.first; it != range.second; ++it) {
      seen.emplace_back(it->second.data(), it->second.size());
    }
    {
      MutexLock lock(&mu_);
      const std::vector<grpc::string_ref> peer =
          ctx->auth_context()->FindPropertyValues("x509_common_name");
      last_peer_cn_ =
          peer.empty() ? "" : std::string(peer[0].data(), peer[0].size());
    }
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (seen.size() == 1 && seen[0] == expected_) {
      reactor->Finish(grpc::Status::OK);
    } else {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                   absl::StrCat(seen.size(), " authorization: ",
                                                absl::StrJoin(seen, "|"))));
    }
    return reactor;
  }

  std::string last_peer_cn() {
    MutexLock lock(&mu_);
    return last_peer_cn_;
  }

 private:
  const std::string expected_;
  Mutex mu_;
  std::string last_peer_cn_ ABSL_GUARDED_BY(mu_);
};

class Server {
 public:
  Server(grpc::Service* service,
         std::shared_ptr<grpc::ServerCredentials> creds) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(creds), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~Server() {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

grpc::Status GetStats(const std::shared_ptr<grpc::Channel>& channel,
                      const char* explicit_authorization = nullptr) {
  auto stub = v1::Broker::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (explicit_authorization != nullptr) {
    ctx.AddMetadata("authorization", explicit_authorization);
  }
  v1::GetStatsRequest request;
  v1::Stats stats;
  return stub->GetStats(&ctx, request, &stats);
}

TEST_F(ClientCredentials, InterceptorSendsTheBearerTokenOnEveryCall) {
  AuthEchoBroker service("Bearer " + kTokenA);
  Server server(&service, grpc::InsecureServerCredentials());
  ClientAuthOptions options;
  options.token = kTokenA;
  const auto channel = MakeBrokerChannel(server.address(), options, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  for (int i = 0; i < 3; ++i) {
    const grpc::Status s = GetStats(*channel);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
}

TEST_F(ClientCredentials, TokenFromTheDefaultFileReachesTheBroker) {
  AuthEchoBroker service("Bearer " + kTokenE);
  Server server(&service, grpc::InsecureServerCredentials());
  WriteDefaultTokenFile(kTokenE + "\n");
  const auto channel = MakeBrokerChannel(server.address(), {}, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  const grpc::Status s = GetStats(*channel);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ClientCredentials, WithoutATokenTheChannelSendsNone) {
  AuthEchoBroker service("Bearer " + kTokenA);
  Server server(&service, grpc::InsecureServerCredentials());
  const auto channel = MakeBrokerChannel(server.address(), {}, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  const grpc::Status s = GetStats(*channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.error_message(), "0 authorization: ");
}

TEST_F(ClientCredentials, AnAuthorizationTheCallSetsItselfIsKept) {
  AuthEchoBroker service("Bearer " + kTokenB);
  Server server(&service, grpc::InsecureServerCredentials());
  ClientAuthOptions options;
  options.token = kTokenA;
  const auto channel = MakeBrokerChannel(server.address(), options, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  const std::string explicit_header = "Bearer " + kTokenB;
  const grpc::Status s = GetStats(*channel, explicit_header.c_str());
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ClientCredentials, TlsChannelTrustsTheCaAndCarriesTheToken) {
  const absl::StatusOr<TlsServerFiles> tls =
      LoadOrCreateServerTls(FreshPath("auth"), {});
  ASSERT_TRUE(tls.ok()) << tls.status();
  grpc::SslServerCredentialsOptions ssl(
      GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  ssl.pem_key_cert_pairs.push_back(
      {*ReadSmallFile(tls->key_path), *ReadSmallFile(tls->cert_path)});
  AuthEchoBroker service("Bearer " + kTokenA);
  Server server(&service, grpc::SslServerCredentials(ssl));

  // An IP address the certificate names, and a name override it also names.
  ClientAuthOptions options;
  options.token = kTokenA;
  options.tls_ca = tls->ca_path;
  options.tls_server_name = "localhost";
  auto channel = MakeBrokerChannel(server.address(), options, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  grpc::Status s = GetStats(*channel);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(service.last_peer_cn(), "");  // no client certificate

  // The CA from the environment, and a client certificate (the server's
  // own pair stands in for one: the server requests but does not verify).
  options.tls_ca.clear();
  setenv("DEXEC_TLS_CA", tls->ca_path.c_str(), 1);
  options.tls_cert = tls->cert_path;
  options.tls_key = tls->key_path;
  channel = MakeBrokerChannel(server.address(), options, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  s = GetStats(*channel);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_NE(service.last_peer_cn(), "");

  // A name the certificate does not carry fails the handshake.
  options.tls_server_name = "elsewhere.example.com";
  channel = MakeBrokerChannel(server.address(), options, {});
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_EQ(GetStats(*channel).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ClientCredentials, InterceptorFactoryWorksOnAnyChannel) {
  AuthEchoBroker service("Bearer " + kTokenC);
  Server server(&service, grpc::InsecureServerCredentials());
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(MakeTokenInterceptorFactory(kTokenC));
  const auto channel = grpc::experimental::CreateCustomChannelWithInterceptors(
      server.address(), grpc::InsecureChannelCredentials(), {},
      std::move(interceptors));
  const grpc::Status s = GetStats(channel);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

}  // namespace
}  // namespace dexec::auth
