// The broker's generated TLS files: OpenSSL verifies the server certificate
// against the CA with the names clients use, and a real gRPC server serving
// them completes a handshake with a client that trusts ca.pem, and with no
// client that does not.
#include "auth/tls_certs.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "auth/secret_file.h"
#include "auth/testing.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::auth {
namespace {

using ::dexec::auth::testing::FreshPath;
using ::dexec::auth::testing::ModeOf;

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> s = ReadSmallFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using CertPtr = std::unique_ptr<X509, X509Free>;

CertPtr ParseCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  CertPtr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return cert;
}

// X509_verify_cert of `server` against a store holding only `ca`, for a TLS
// server; "" if it verifies, else OpenSSL's reason.
std::string Verify(X509* ca, X509* server) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, server, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  const int ok = X509_verify_cert(ctx);
  std::string reason =
      ok == 1 ? ""
              : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return reason;
}

int DaysValid(X509* cert) {
  int days = 0, seconds = 0;
  ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert),
                 X509_get0_notAfter(cert));
  return days;
}

bool IsCritical(X509* cert, int nid) {
  const int i = X509_get_ext_by_NID(cert, nid, -1);
  return i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(cert, i)) == 1;
}

std::string Hostname() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

TEST(TlsCerts, CreatesACaAndAServerCertificateThatVerifies) {
  const std::string dir = FreshPath("auth");
  const absl::StatusOr<TlsServerFiles> files = LoadOrCreateServerTls(
      dir, {"broker.example.com", "10.1.2.3", "fd00::7", "*.dexec.test"});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->cert_path, dir + "/tls/server.pem");
  EXPECT_EQ(files->key_path, dir + "/tls/server.key");
  EXPECT_EQ(files->ca_path, dir + "/tls/ca.pem");
  EXPECT_EQ(ModeOf(dir + "/tls"), 0700);
  EXPECT_EQ(ModeOf(dir + "/tls/ca.pem"), 0644);
  EXPECT_EQ(ModeOf(dir + "/tls/ca.key"), 0600);
  EXPECT_EQ(ModeOf(dir + "/tls/server.pem"), 0644);
  EXPECT_EQ(ModeOf(dir + "/tls/server.key"), 0600);

  CertPtr ca = ParseCert(Read(files->ca_path));
  CertPtr server = ParseCert(Read(files->cert_path));
  ASSERT_NE(ca, nullptr);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Verify(ca.get(), server.get()), "");

  // The CA.
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_TRUE(IsCritical(ca.get(), NID_basic_constraints));
  EXPECT_TRUE(X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN);
  EXPECT_GE(DaysValid(ca.get()), 3650);
  EXPECT_LE(DaysValid(ca.get()), 3651);
  EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(ca.get())), EVP_PKEY_EC);

  // The server certificate.
  EXPECT_EQ(X509_check_ca(server.get()), 0);
  EXPECT_TRUE(X509_get_extended_key_usage(server.get()) & XKU_SSL_SERVER);
  EXPECT_GE(DaysValid(server.get()), 825);
  EXPECT_LE(DaysValid(server.get()), 826);
  for (const std::string& host :
       {std::string("localhost"), Hostname(), std::string("broker.example.com"),
        std::string("x.dexec.test")}) {
    EXPECT_EQ(
        X509_check_host(server.get(), host.c_str(), host.size(), 0, nullptr), 1)
        << host;
  }
  for (const char* ip : {"127.0.0.1", "::1", "10.1.2.3", "fd00::7"}) {
    EXPECT_EQ(X509_check_ip_asc(server.get(), ip, 0), 1) << ip;
  }
  EXPECT_NE(X509_check_host(server.get(), "other.example.com", 0, 0, nullptr),
            1);
  EXPECT_NE(X509_check_ip_asc(server.get(), "10.1.2.4", 0), 1);

  // 128-bit random serials.
  const ASN1_INTEGER* s1 = X509_get0_serialNumber(ca.get());
  const ASN1_INTEGER* s2 = X509_get0_serialNumber(server.get());
  EXPECT_EQ(ASN1_STRING_length(s1), 16);
  EXPECT_NE(ASN1_INTEGER_cmp(s1, s2), 0);
}

TEST(TlsCerts, RestartReturnsTheSameFilesUnchanged) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateServerTls(dir, {}).ok());
  const std::string ca = Read(dir + "/tls/ca.pem");
  const std::string cert = Read(dir + "/tls/server.pem");
  const std::string key = Read(dir + "/tls/server.key");
  const absl::StatusOr<TlsServerFiles> again =
      LoadOrCreateServerTls(dir, {"new.example.com"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Read(dir + "/tls/ca.pem"), ca);
  EXPECT_EQ(Read(dir + "/tls/server.pem"), cert);
  EXPECT_EQ(Read(dir + "/tls/server.key"), key);
}

TEST(TlsCerts, DeletedServerPairIsReissuedByTheSameCa) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateServerTls(dir, {}).ok());
  const std::string ca_pem = Read(dir + "/tls/ca.pem");
  const std::string old_cert = Read(dir + "/tls/server.pem");
  ASSERT_EQ(unlink((dir + "/tls/server.pem").c_str()), 0);
  ASSERT_EQ(unlink((dir + "/tls/server.key").c_str()), 0);
  ASSERT_TRUE(LoadOrCreateServerTls(dir, {"new.example.com"}).ok());
  EXPECT_EQ(Read(dir + "/tls/ca.pem"), ca_pem);
  EXPECT_NE(Read(dir + "/tls/server.pem"), old_cert);
  CertPtr ca = ParseCert(ca_pem);
  CertPtr server = ParseCert(Read(dir + "/tls/server.pem"));
  EXPECT_EQ(Verify(ca.get(), server.get()), "");
  EXPECT_EQ(X509_check_host(server.get(), "new.example.com", 0, 0, nullptr), 1);
}

TEST(TlsCerts, HalfAPairIsRefusedNotOverwritten) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateServerTls(dir, {}).ok());
  const std::string key = Read(dir + "/tls/server.key");
  ASSERT_EQ(unlink((dir + "/tls/server.pem").c_str()), 0);
  const absl::StatusOr<TlsServerFiles> files = LoadOrCreateServerTls(dir, {});
  ASSERT_TRUE(absl::IsFailedPrecondition(files.status())) << files.status();
  EXPECT_TRUE(absl::StrContains(files.status().message(),
                                dir + "/tls/server.pem is missing"));
  EXPECT_EQ(Read(dir + "/tls/server.key"), key);

  const std::string dir2 = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateServerTls(dir2, {}).ok());
  ASSERT_EQ(unlink((dir2 + "/tls/server.pem").c_str()), 0);
  ASSERT_EQ(unlink((dir2 + "/tls/server.key").c_str()), 0);
  ASSERT_EQ(unlink((dir2 + "/tls/ca.key").c_str()), 0);
  const absl::StatusOr<TlsServerFiles> no_ca_key =
      LoadOrCreateServerTls(dir2, {});
  ASSERT_TRUE(absl::IsFailedPrecondition(no_ca_key.status()));
  EXPECT_TRUE(absl::StrContains(no_ca_key.status().message(), "ca.key"));
}

TEST(TlsCerts, CaKeyMayBeMovedOfflineOnceTheServerPairExists) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateServerTls(dir, {}).ok());
  ASSERT_EQ(unlink((dir + "/tls/ca.key").c_str()), 0);
  EXPECT_TRUE(LoadOrCreateServerTls(dir, {}).ok());
}

TEST(TlsCerts, BadExtraNameIsRefusedBeforeWritingAnything) {
  const std::string dir = FreshPath("auth");
  for (const char* bad : {"two words", "", "-x.example", "a..b", "a_b.c"}) {
    const absl::StatusOr<TlsServerFiles> files =
        LoadOrCreateServerTls(dir, {bad});
    EXPECT_TRUE(absl::IsInvalidArgument(files.status())) << bad;
  }
  EXPECT_FALSE(PathExists(dir));
}

TEST(TlsCerts, ReadPemRefusesNonPem) {
  const std::string path = FreshPath("x.pem");
  testing::WriteTestFile(path, "hello", 0644);
  EXPECT_TRUE(absl::IsFailedPrecondition(ReadPem(path).status()));
  EXPECT_TRUE(absl::IsNotFound(ReadPem(path + ".nope").status()));
}

// ---- A real gRPC server with the generated files ----

// Every method UNIMPLEMENTED: a call that gets that far proves the TLS
// handshake worked.
class EmptyBroker : public v1::Broker::CallbackService {};

class TlsServer {
 public:
  explicit TlsServer(const TlsServerFiles& files) {
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back(
        {Read(files.key_path), Read(files.cert_path)});
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(options),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TlsServer() {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
  int port() const { return port_; }

 private:
  EmptyBroker service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

grpc::Status CallGetStats(const std::string& target,
                          std::shared_ptr<grpc::ChannelCredentials> creds,
                          const grpc::ChannelArguments& args = {}) {
  auto channel = grpc::CreateCustomChannel(target, creds, args);
  auto stub = v1::Broker::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetStatsRequest request;
  v1::Stats stats;
  return stub->GetStats(&ctx, request, &stats);
}

TEST(TlsCerts, GrpcClientTrustingCaPemCompletesTheHandshake) {
  const std::string dir = FreshPath("auth");
  const absl::StatusOr<TlsServerFiles> files = LoadOrCreateServerTls(dir, {});
  ASSERT_TRUE(files.ok()) << files.status();
  TlsServer server(*files);
  ASSERT_GT(server.port(), 0);

  grpc::SslCredentialsOptions trusting;
  trusting.pem_root_certs = Read(files->ca_path);
  const grpc::Status via_localhost =
      CallGetStats(absl::StrCat("localhost:", server.port()),
                   grpc::SslCredentials(trusting));
  EXPECT_EQ(via_localhost.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << via_localhost.error_message();
  const grpc::Status via_ip =
      CallGetStats(absl::StrCat("127.0.0.1:", server.port()),
                   grpc::SslCredentials(trusting));
  EXPECT_EQ(via_ip.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << via_ip.error_message();
}

TEST(TlsCerts, GrpcClientNotTrustingCaPemIsRefused) {
  const std::string dir = FreshPath("auth");
  const absl::StatusOr<TlsServerFiles> files = LoadOrCreateServerTls(dir, {});
  ASSERT_TRUE(files.ok()) << files.status();
  TlsServer server(*files);
  const std::string target = absl::StrCat("localhost:", server.port());

  // The system's roots (gRPC's default) do not include our CA.
  const grpc::Status default_roots =
      CallGetStats(target, grpc::SslCredentials({}));
  EXPECT_EQ(default_roots.error_code(), grpc::StatusCode::UNAVAILABLE)
      << default_roots.error_message();

  // Nor does another broker's CA.
  const absl::StatusOr<TlsServerFiles> other =
      LoadOrCreateServerTls(FreshPath("other"), {});
  ASSERT_TRUE(other.ok());
  grpc::SslCredentialsOptions wrong_ca;
  wrong_ca.pem_root_certs = Read(other->ca_path);
  const grpc::Status other_ca =
      CallGetStats(target, grpc::SslCredentials(wrong_ca));
  EXPECT_EQ(other_ca.error_code(), grpc::StatusCode::UNAVAILABLE)
      << other_ca.error_message();

  // Nor plaintext.
  const grpc::Status plaintext =
      CallGetStats(target, grpc::InsecureChannelCredentials());
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE)
      << plaintext.error_message();

  // The right CA but a name the certificate does not carry.
  grpc::SslCredentialsOptions trusting;
  trusting.pem_root_certs = Read(files->ca_path);
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("elsewhere.example.com");
  const grpc::Status wrong_name =
      CallGetStats(target, grpc::SslCredentials(trusting), args);
  EXPECT_EQ(wrong_name.error_code(), grpc::StatusCode::UNAVAILABLE)
      << wrong_name.error_message();
}

}  // namespace
}  // namespace dexec::auth
