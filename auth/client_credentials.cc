#include "auth/client_credentials.h"

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "auth/secret_file.h"
#include "auth/tls_certs.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/interceptor.h"

namespace dexec::auth {
namespace {

constexpr char kNoToken[] =
    "no dexec token: pass --token or --token_file, set DEXEC_TOKEN or "
    "DEXEC_TOKEN_FILE, or run where ./dexec-data/client.token is readable";

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

// A token goes into an HTTP/2 header: printable ASCII without spaces (our
// tokens are "dexec_" and hex). Checked here so a pasted token with a stray
// character fails with a message instead of inside gRPC.
absl::StatusOr<FoundToken> Checked(std::string token, std::string source) {
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the token from ", source, " is empty"));
  }
  for (const char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          "the token from ", source,
          " holds a space or a non-printable character; a dexec token is "
          "\"dexec_\" and 64 hex digits"));
    }
  }
  return FoundToken{std::move(token), std::move(source)};
}

// The first line of the file at `path`, trimmed. `what` names the option.
absl::StatusOr<FoundToken> FromFile(const std::string& path,
                                    absl::string_view what) {
  const std::string source = absl::StrCat(what, " ", path);
  absl::StatusOr<std::string> text = ReadSmallFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat(what, ": ", text.status().message()));
  }
  absl::string_view first = *text;
  first = first.substr(0, first.find('\n'));
  return Checked(std::string(absl::StripAsciiWhitespace(first)), source);
}

struct CaSource {
  std::string path;
  std::string what;  // "--tls_ca" or "DEXEC_TLS_CA"
};

CaSource CaOf(const ClientAuthOptions& options) {
  if (!options.tls_ca.empty()) return {options.tls_ca, "--tls_ca"};
  return {Env("DEXEC_TLS_CA"), "DEXEC_TLS_CA"};
}

absl::StatusOr<std::string> ReadPemFor(const std::string& path,
                                       absl::string_view what) {
  absl::StatusOr<std::string> pem = ReadPem(path);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(),
                        absl::StrCat(what, ": ", pem.status().message()));
  }
  return pem;
}

class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(std::shared_ptr<const std::string> header)
      : header_(std::move(header)) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      std::multimap<std::string, std::string>* metadata =
          methods->GetSendInitialMetadata();
      if (metadata->find("authorization") == metadata->end()) {
        metadata->emplace("authorization", *header_);
      }
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<const std::string> header_;
};

class TokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token)
      : header_(std::make_shared<const std::string>(
            absl::StrCat("Bearer ", token))) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new TokenInterceptor(header_);  // gRPC owns it
  }

 private:
  // Shared with each call's interceptor: one copy of the secret.
  const std::shared_ptr<const std::string> header_;
};

// FindClientToken, with nullopt for "nothing is set".
absl::StatusOr<std::optional<FoundToken>> LookUpToken(
    const ClientAuthOptions& options) {
  if (!options.token.empty()) {
    return Checked(std::string(absl::StripAsciiWhitespace(options.token)),
                   "--token");
  }
  if (!options.token_file.empty()) {
    return FromFile(options.token_file, "--token_file");
  }
  if (std::string token = Env("DEXEC_TOKEN"); !token.empty()) {
    return Checked(std::string(absl::StripAsciiWhitespace(token)),
                   "DEXEC_TOKEN");
  }
  if (const std::string file = Env("DEXEC_TOKEN_FILE"); !file.empty()) {
    return FromFile(file, "DEXEC_TOKEN_FILE");
  }
  // The default file counts only if it can be read; an unreadable one (a
  // broker's directory owned by another user) means "not found here".
  absl::StatusOr<std::string> text = ReadSmallFile(kDefaultClientTokenPath);
  if (text.ok()) {
    absl::string_view first = *text;
    first = first.substr(0, first.find('\n'));
    return Checked(std::string(absl::StripAsciiWhitespace(first)),
                   kDefaultClientTokenPath);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<FoundToken> FindClientToken(const ClientAuthOptions& options) {
  ASSIGN_OR_RETURN(std::optional<FoundToken> token, LookUpToken(options));
  if (!token.has_value()) return absl::NotFoundError(kNoToken);
  return *std::move(token);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientAuthOptions& options) {
  const CaSource ca = CaOf(options);
  const bool has_cert = !options.tls_cert.empty();
  const bool has_key = !options.tls_key.empty();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both (the client "
        "certificate and its key) or neither");
  }
  if (ca.path.empty()) {
    if (has_cert) {
      return absl::InvalidArgumentError(
          "--tls_cert and --tls_key need --tls_ca (or DEXEC_TLS_CA): the CA "
          "that signed the broker's certificate");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFor(ca.path, ca.what));
  if (has_cert) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                     ReadPemFor(options.tls_cert, "--tls_cert"));
    ASSIGN_OR_RETURN(ssl.pem_private_key,
                     ReadPemFor(options.tls_key, "--tls_key"));
  }
  return grpc::SslCredentials(ssl);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeTokenInterceptorFactory(std::string token) {
  return std::make_unique<TokenInterceptorFactory>(std::move(token));
}

namespace {

// What both kinds of broker channel need: the channel credentials, the TLS
// name override in `args`, and the token if one is found (a token source
// that is set but unusable is an error now, rather than an UNAUTHENTICATED
// from the broker later).
struct ChannelParts {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::optional<FoundToken> token;
};

absl::StatusOr<ChannelParts> PrepareChannel(const ClientAuthOptions& options,
                                            grpc::ChannelArguments* args) {
  ChannelParts parts;
  ASSIGN_OR_RETURN(parts.creds, MakeChannelCredentials(options));
  if (!options.tls_server_name.empty()) {
    if (CaOf(options).path.empty()) {
      return absl::InvalidArgumentError(
          "--tls_server_name needs --tls_ca (or DEXEC_TLS_CA): without TLS "
          "there is no certificate to check the name against");
    }
    args->SetSslTargetNameOverride(options.tls_server_name);
  }
  ASSIGN_OR_RETURN(parts.token, LookUpToken(options));
  return parts;
}

}  // namespace

absl::StatusOr<BareBrokerChannel> MakeBareBrokerChannel(
    const std::string& address, const ClientAuthOptions& options,
    grpc::ChannelArguments args) {
  ASSIGN_OR_RETURN(ChannelParts parts, PrepareChannel(options, &args));
  BareBrokerChannel out;
  out.channel = grpc::CreateCustomChannel(address, parts.creds, args);
  if (parts.token.has_value())
    out.authorization = "Bearer " + parts.token->token;
  return out;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeBrokerChannel(
    const std::string& address, const ClientAuthOptions& options,
    grpc::ChannelArguments args) {
  ASSIGN_OR_RETURN(ChannelParts parts, PrepareChannel(options, &args));
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (parts.token.has_value()) {
    interceptors.push_back(
        MakeTokenInterceptorFactory(std::move(parts.token->token)));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, parts.creds, args, std::move(interceptors));
}

}  // namespace dexec::auth
