#include "broker/grpc_metrics.h"

namespace dexec::broker {
namespace {

constexpr absl::string_view kCodeNames[kGrpcCodeCount] = {"OK",
                                                          "CANCELLED",
                                                          "UNKNOWN",
                                                          "INVALID_ARGUMENT",
                                                          "DEADLINE_EXCEEDED",
                                                          "NOT_FOUND",
                                                          "ALREADY_EXISTS",
                                                          "PERMISSION_DENIED",
                                                          "RESOURCE_EXHAUSTED",
                                                          "FAILED_PRECONDITION",
                                                          "ABORTED",
                                                          "OUT_OF_RANGE",
                                                          "UNIMPLEMENTED",
                                                          "INTERNAL",
                                                          "UNAVAILABLE",
                                                          "DATA_LOSS",
                                                          "UNAUTHENTICATED"};

// Counts the status a call sends; otherwise passes everything on.
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(GrpcMetrics* metrics, size_t method)
      : metrics_(metrics), method_(method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->CountCall(method_, m->GetSendStatus().error_code());
    }
    m->Proceed();
  }

 private:
  GrpcMetrics* const metrics_;
  const size_t method_;
};

class CountingFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingFactory(GrpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(metrics_,
                                   GrpcMetrics::MethodIndex(info->method()));
  }

 private:
  GrpcMetrics* const metrics_;
};

}  // namespace

absl::string_view GrpcCodeName(size_t code) {
  return code < kGrpcCodeCount ? kCodeNames[code] : "UNKNOWN";
}

size_t GrpcMetrics::MethodIndex(absl::string_view full_method) {
  constexpr absl::string_view kPrefix = "/dexec.v1.Broker/";
  if (full_method.substr(0, kPrefix.size()) == kPrefix) {
    const absl::string_view name = full_method.substr(kPrefix.size());
    for (size_t i = 0; i + 1 < kGrpcMethodCount; ++i) {
      if (kGrpcMethods[i] == name) return i;
    }
  }
  return kGrpcMethodCount - 1;
}

std::vector<
    std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeInterceptorCreators(GrpcMetrics* metrics) {
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      creators;
  creators.push_back(std::make_unique<CountingFactory>(metrics));
  return creators;
}

}  // namespace dexec::broker
