// Counts of the broker's gRPC traffic for /metrics (docs/DESIGN.md,
// "Metrics"): every call answered, by method and status code (a server
// interceptor sees each call's status as it is sent, refusals before the
// handler ran included), Session streams opened, and Session requests
// read, by kind (submit, watch, unparsable).
//
//   GrpcMetrics metrics;
//   builder.experimental().SetInterceptorCreators(
//       MakeInterceptorCreators(&metrics));
//   ... metrics.calls(kSubmitMethod, grpc::StatusCode::OK) ...
//
// Thread-safe: relaxed atomic counters, bumped by gRPC's threads.
#ifndef DEXEC_BROKER_GRPC_METRICS_H_
#define DEXEC_BROKER_GRPC_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace dexec::broker {

// The methods of dexec.v1.Broker, then "other" for any other path.
inline constexpr absl::string_view kGrpcMethods[] = {
    "Session",         "Submit",      "GetJobs",         "ListJobs",
    "ListWorkers",     "GetStats",    "Cancel",          "CreateToken",
    "ListTokens",      "RevokeToken", "CreateWorkerKey", "ListWorkerKeys",
    "RevokeWorkerKey", "other"};
inline constexpr size_t kGrpcMethodCount =
    sizeof(kGrpcMethods) / sizeof(kGrpcMethods[0]);
// grpc::StatusCode 0..16.
inline constexpr size_t kGrpcCodeCount = 17;
// "OK", "CANCELLED", ... as gRPC spells them.
absl::string_view GrpcCodeName(size_t code);

// Session requests by kind.
enum class SessionRequestKind { kSubmit, kWatch, kOther, kCount };
inline constexpr absl::string_view kSessionRequestKinds[] = {"submit", "watch",
                                                             "other"};

class GrpcMetrics {
 public:
  GrpcMetrics() = default;
  GrpcMetrics(const GrpcMetrics&) = delete;
  GrpcMetrics& operator=(const GrpcMetrics&) = delete;

  // The index in kGrpcMethods of "/dexec.v1.Broker/Submit" and the like.
  static size_t MethodIndex(absl::string_view full_method);

  void CountCall(size_t method, int code) {
    if (code < 0 || code >= static_cast<int>(kGrpcCodeCount)) code = 2;
    calls_[method][code].fetch_add(1, std::memory_order_relaxed);
  }
  void CountSessionRequest(SessionRequestKind kind) {
    session_requests_[static_cast<size_t>(kind)].fetch_add(
        1, std::memory_order_relaxed);
  }
  void CountSessionOpened() {
    sessions_opened_.fetch_add(1, std::memory_order_relaxed);
  }

  uint64_t calls(size_t method, size_t code) const {
    return calls_[method][code].load(std::memory_order_relaxed);
  }
  uint64_t session_requests(SessionRequestKind kind) const {
    return session_requests_[static_cast<size_t>(kind)].load(
        std::memory_order_relaxed);
  }
  uint64_t sessions_opened() const {
    return sessions_opened_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> calls_[kGrpcMethodCount][kGrpcCodeCount] = {};
  std::atomic<uint64_t>
      session_requests_[static_cast<size_t>(SessionRequestKind::kCount)] = {};
  std::atomic<uint64_t> sessions_opened_{0};
};

// For ServerBuilder::experimental().SetInterceptorCreators: one creator
// whose interceptors count each call's status in `metrics` (borrowed; it
// outlives the server).
std::vector<
    std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeInterceptorCreators(GrpcMetrics* metrics);

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_GRPC_METRICS_H_
