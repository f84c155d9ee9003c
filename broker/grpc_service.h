// The client-facing gRPC service (dexec.v1.Broker, callback API). Every
// handler authenticates the call's bearer token (once per call or stream
// open), validates, posts a command to the broker loop and returns; the
// command answers on the loop thread. Nothing here reads broker state
// directly. See docs/DESIGN.md, "Client protocol" and "Security".
//
// The methods the broker serves take their messages as raw bytes and parse
// them here: gRPC 1.51's callback API answers a request it cannot parse with
// UNIMPLEMENTED and no message (and ends a Session stream whose message it
// cannot parse as if the client had closed it), which tells a client
// nothing. Parsed here, bad bytes get INVALID_ARGUMENT naming the method.
//
// Thread-safe.
#ifndef DEXEC_BROKER_GRPC_SERVICE_H_
#define DEXEC_BROKER_GRPC_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "auth/token_store.h"
#include "auth/worker_key_store.h"
#include "broker/broker_core.h"
#include "broker/broker_loop.h"
#include "broker/grpc_metrics.h"
#include "grpcpp/support/byte_buffer.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::broker {

namespace internal {
// The generated service with every job method taking bytes (the
// credential methods, admin-only, stay typed).
using RawBrokerService = v1::Broker::WithRawCallbackMethod_Submit<
    v1::Broker::WithRawCallbackMethod_GetJobs<
        v1::Broker::WithRawCallbackMethod_Cancel<
            v1::Broker::WithRawCallbackMethod_ListJobs<
                v1::Broker::WithRawCallbackMethod_ListWorkers<
                    v1::Broker::WithRawCallbackMethod_GetStats<
                        v1::Broker::WithRawCallbackMethod_Session<
                            v1::Broker::WithCallbackMethod_CreateToken<
                                v1::Broker::WithCallbackMethod_ListTokens<
                                    v1::Broker::WithCallbackMethod_RevokeToken<
                                        v1::Broker::WithCallbackMethod_CreateWorkerKey<
                                            v1::Broker::
                                                WithCallbackMethod_ListWorkerKeys<
                                                    v1::Broker::
                                                        WithCallbackMethod_RevokeWorkerKey<
                                                            v1::Broker::
                                                                Service>>>>>>>>>>>>>;
}  // namespace internal

// The credentials the service checks. Borrowed; both outlive the service.
struct BrokerAuth {
  // Null: --insecure (or an in-process test broker): every call is admin.
  auth::TokenStore* tokens = nullptr;
  // Null with --insecure: the worker-key RPCs answer FAILED_PRECONDITION.
  auth::WorkerKeyStore* worker_keys = nullptr;
};

class BrokerService final : public internal::RawBrokerService {
 public:
  // `loop` is borrowed and must outlive the gRPC server using this service.
  explicit BrokerService(BrokerLoop* loop, BrokerAuth auth = {})
      : loop_(loop), auth_(auth) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetJobs(grpc::CallbackServerContext* ctx,
                                    const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* req,
                                        grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Session(
      grpc::CallbackServerContext* ctx) override;

  grpc::ServerUnaryReactor* CreateToken(grpc::CallbackServerContext* ctx,
                                        const v1::CreateTokenRequest* req,
                                        v1::CreateTokenResponse* resp) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* ctx,
                                       const v1::ListTokensRequest* req,
                                       v1::ListTokensResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* ctx,
                                        const v1::RevokeTokenRequest* req,
                                        v1::RevokeTokenResponse* resp) override;
  grpc::ServerUnaryReactor* CreateWorkerKey(
      grpc::CallbackServerContext* ctx, const v1::CreateWorkerKeyRequest* req,
      v1::CreateWorkerKeyResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkerKeys(
      grpc::CallbackServerContext* ctx, const v1::ListWorkerKeysRequest* req,
      v1::ListWorkerKeysResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeWorkerKey(
      grpc::CallbackServerContext* ctx, const v1::RevokeWorkerKeyRequest* req,
      v1::RevokeWorkerKeyResponse* resp) override;

  // Calls and streams refused (no, unknown or revoked token; wrong role).
  uint64_t client_auth_failures() const { return client_auth_failures_.load(); }
  // The same count, for the HTTP side to add its refusals to and read
  // (one count of client authentication failures, gRPC and HTTP).
  std::atomic<uint64_t>* client_auth_failures_counter() {
    return &client_auth_failures_;
  }
  // Calls by method and code (counted by the interceptors of
  // MakeInterceptorCreators(&grpc_metrics()), which the server must be
  // built with), Session streams and requests (counted here).
  GrpcMetrics& grpc_metrics() { return grpc_metrics_; }

 private:
  // What a method asks of the caller's role.
  enum class Need { kAny, kSubmit, kAdmin };
  // The caller of `ctx`, or UNAUTHENTICATED / PERMISSION_DENIED (counted,
  // and logged at most once per 10 s).
  absl::StatusOr<Caller> Authorize(grpc::CallbackServerContext* ctx, Need need,
                                   absl::string_view method);
  static absl::Status NoAuth();

  BrokerLoop* const loop_;
  const BrokerAuth auth_;
  std::atomic<uint64_t> client_auth_failures_{0};
  std::atomic<int64_t> last_refusal_logged_s_{0};
  GrpcMetrics grpc_metrics_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_GRPC_SERVICE_H_
