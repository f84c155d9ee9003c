// How every dexec client (the C++ Executor, the CLI) finds its credentials
// and dials the broker with them.
//
// The token. FindClientToken takes the first of these that is set, in this
// order, and never falls through past one that is set but unusable (a
// named file that cannot be read is an error naming it):
//
//   1. ClientAuthOptions::token            (--token)
//   2. ClientAuthOptions::token_file       (--token_file)
//   3. $DEXEC_TOKEN
//   4. $DEXEC_TOKEN_FILE
//   5. ./dexec-data/client.token, if it is readable (the broker's default
//      --auth_dir: a client run beside a broker just works)
//
// A token file's first line, whitespace trimmed, is the token.
//
// The channel. TLS when ClientAuthOptions::tls_ca (or $DEXEC_TLS_CA) names
// the CA that signed the broker's certificate (tls_certs.h: the broker's
// <auth_dir>/tls/ca.pem), with the client's own certificate for mutual TLS
// if tls_cert and tls_key are given; plaintext otherwise (for loopback).
// The token rides in every call's metadata as `authorization: Bearer
// <token>`, added by a client interceptor rather than grpc::CallCredentials
// because gRPC 1.51 drops call credentials on insecure channels.
//
//   ClientAuthOptions auth;
//   auth.token_file = absl::GetFlag(FLAGS_token_file);
//   ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
//                    MakeBrokerChannel("localhost:50051", auth, {}));
//   // If the broker answers UNAUTHENTICATED, tell the user where the token
//   // came from, or where it is expected:
//   absl::StatusOr<FoundToken> token = FindClientToken(auth);
//   std::cerr << (token.ok() ? "token from " + token->source
//                            : std::string(token.status().message()));
//
// Nothing here logs, and no message holds a token, only where it came from.
//
// Thread-safe (reads the environment; no shared state).
#ifndef DEXEC_AUTH_CLIENT_CREDENTIALS_H_
#define DEXEC_AUTH_CLIENT_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_interceptor.h"

namespace dexec::auth {

// The token file a client finds without being told (step 5 above).
inline constexpr char kDefaultClientTokenPath[] = "./dexec-data/client.token";

// What the user gave; empty means not given.
struct ClientAuthOptions {
  std::string token;            // the secret itself
  std::string token_file;       // a file whose first line is the secret
  std::string tls_ca;           // PEM CA to trust; empty: $DEXEC_TLS_CA
  std::string tls_cert;         // PEM client certificate (mutual TLS)
  std::string tls_key;          // PEM key of tls_cert
  std::string tls_server_name;  // the name to verify, if not the address's
};

struct FoundToken {
  std::string token;
  // Where it came from, for messages: "--token", "--token_file <path>",
  // "DEXEC_TOKEN", "DEXEC_TOKEN_FILE <path>" or the default path.
  std::string source;
};

// The client's token by the order above. NOT_FOUND, one line, if nothing is
// set: "no dexec token: pass --token or --token_file, set DEXEC_TOKEN or
// DEXEC_TOKEN_FILE, or run where ./dexec-data/client.token is readable".
// A named file that cannot be read keeps its code (NOT_FOUND,
// PERMISSION_DENIED, ...) with a message naming the option and the path;
// a token that is empty or holds spaces or control characters is
// INVALID_ARGUMENT naming its source.
absl::StatusOr<FoundToken> FindClientToken(const ClientAuthOptions& options);

// TLS credentials trusting tls_ca ($DEXEC_TLS_CA), with the client
// certificate if given; insecure credentials if no CA is given. Errors
// name the option and the file: a file that cannot be read or is not PEM;
// INVALID_ARGUMENT if only one of tls_cert/tls_key is given, or either
// without a CA.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientAuthOptions& options);

// A client interceptor factory whose interceptors add `authorization:
// Bearer <token>` to each call's initial metadata (unless the call already
// set `authorization` itself).
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeTokenInterceptorFactory(std::string token);

// A channel to the broker at `address` ("host:port") with `args`, the
// credentials of MakeChannelCredentials, tls_server_name as the TLS target
// name override, and the token interceptor if FindClientToken finds a
// token. With no token at all it still returns a channel (the broker will
// answer UNAUTHENTICATED; report FindClientToken's message then). Errors:
// those of MakeChannelCredentials, FindClientToken's other than NOT_FOUND,
// and INVALID_ARGUMENT for tls_server_name without TLS.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeBrokerChannel(
    const std::string& address, const ClientAuthOptions& options,
    grpc::ChannelArguments args);

// As MakeBrokerChannel, but without the interceptor: the caller adds
// `authorization` (the "Bearer <token>" value; empty when no token was
// found) to every call's ClientContext itself. For hot paths: an
// interceptor runs on every operation of every call — each message of a
// stream too — and cost the Executor's round trip several microseconds.
struct BareBrokerChannel {
  std::shared_ptr<grpc::Channel> channel;
  std::string authorization;
};
absl::StatusOr<BareBrokerChannel> MakeBareBrokerChannel(
    const std::string& address, const ClientAuthOptions& options,
    grpc::ChannelArguments args);

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_CLIENT_CREDENTIALS_H_
