// absl::Status <-> grpc::Status. The canonical codes match one for one, so
// the conversion is by number.
#ifndef DEXEC_COMMON_STATUS_GRPC_H_
#define DEXEC_COMMON_STATUS_GRPC_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace dexec {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

}  // namespace dexec

#endif  // DEXEC_COMMON_STATUS_GRPC_H_
