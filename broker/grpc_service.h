// The client-facing gRPC service (dexec.v1.Broker, callback API). Every
// handler validates, posts a command to the broker loop and returns; the
// command answers on the loop thread. Nothing here blocks or reads broker
// state directly. See docs/DESIGN.md, "Client protocol".
//
// Thread-safe.
#ifndef DEXEC_BROKER_GRPC_SERVICE_H_
#define DEXEC_BROKER_GRPC_SERVICE_H_

#include "broker/broker_loop.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::broker {

class BrokerService final : public v1::Broker::CallbackService {
 public:
  // `loop` is borrowed and must outlive the gRPC server using this service.
  explicit BrokerService(BrokerLoop* loop) : loop_(loop) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const v1::SubmitRequest* req,
                                   v1::SubmitResponse* resp) override;
  grpc::ServerUnaryReactor* GetJobs(grpc::CallbackServerContext* ctx,
                                    const v1::GetJobsRequest* req,
                                    v1::GetJobsResponse* resp) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const v1::CancelRequest* req,
                                   v1::CancelResponse* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* req,
                                     v1::Stats* resp) override;
  grpc::ServerBidiReactor<v1::SessionRequest, v1::SessionResponse>* Session(
      grpc::CallbackServerContext* ctx) override;

 private:
  BrokerLoop* const loop_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_GRPC_SERVICE_H_
