// The HTTP API's view of broker state (http_api.h's ApiBackend), answered
// by the broker loop: each call posts its question to the loop, which runs
// it on BrokerCore and hands the answer back, and the calling HTTP thread
// waits for it up to a deadline. HTTP threads thus never read BrokerCore
// (docs/DESIGN.md, "Threads and owners (broker)").
//
//   LoopApiBackend backend(&loop, absl::Seconds(5));
//   ApiReply reply = HandleApi(request, caller, backend, absl::Now());
//
// Answers are released like gRPC unary replies (broker_core.h, Outbox):
// Cancel once its change is durable, queries once what they read is. A
// question the loop does not answer within `timeout` (stopping, stalled,
// journal writes failing) returns UNAVAILABLE; the late answer is dropped.
//
// Thread-safe: any number of HTTP threads may call it at once.
#ifndef DEXEC_BROKER_LOOP_API_BACKEND_H_
#define DEXEC_BROKER_LOOP_API_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"
#include "broker/broker_loop.h"
#include "broker/http_api.h"

namespace dexec::broker {

class LoopApiBackend : public ApiBackend {
 public:
  // `loop` is borrowed and outlives the backend (main owns both).
  // `client_auth_failures` (may be null) is added to GetStats, as the gRPC
  // front end does with its own count.
  LoopApiBackend(BrokerLoop* loop, absl::Duration timeout,
                 const std::atomic<uint64_t>* client_auth_failures = nullptr);

  absl::StatusOr<v1::Stats> GetStats() override;
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const Caller& caller, const v1::ListJobsRequest& req) override;
  absl::StatusOr<v1::GetJobsResponse> GetJobs(
      const Caller& caller, const v1::GetJobsRequest& req) override;
  absl::StatusOr<v1::CancelResponse> Cancel(const Caller& caller,
                                            uint64_t job_id) override;
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers() override;
  // Stats, workers and the core's metrics in one question to the loop.
  absl::StatusOr<MetricsSnapshot> GetMetrics() override;

 private:
  // Runs `fill` on the loop and waits for its answer (released after the
  // journal like a unary reply; `read_only` as Outbox::query_replies).
  template <typename Response>
  absl::StatusOr<Response> Ask(
      std::function<Response(BrokerLoop::Context&)> fill, bool read_only);

  BrokerLoop* const loop_;
  const absl::Duration timeout_;
  const std::atomic<uint64_t>* const client_auth_failures_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_LOOP_API_BACKEND_H_
