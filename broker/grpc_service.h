// The client-facing gRPC service (dexec.v1.Broker, callback API). Every
// handler validates, posts a command to the broker loop and returns; the
// command answers on the loop thread. Nothing here blocks or reads broker
// state directly. See docs/DESIGN.md, "Client protocol".
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

#include "broker/broker_loop.h"
#include "grpcpp/support/byte_buffer.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::broker {

namespace internal {
// The generated service with every method the broker serves taking bytes
// (the credential methods, not served yet, stay typed).
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
    v1::Broker::WithCallbackMethod_ListWorkerKeys<
    v1::Broker::WithCallbackMethod_RevokeWorkerKey<
    v1::Broker::Service>>>>>>>>>>>>>;
}  // namespace internal

class BrokerService final : public internal::RawBrokerService {
 public:
  // `loop` is borrowed and must outlive the gRPC server using this service.
  explicit BrokerService(BrokerLoop* loop) : loop_(loop) {}

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

 private:
  BrokerLoop* const loop_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_GRPC_SERVICE_H_
