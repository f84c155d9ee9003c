// RETURN_IF_ERROR and ASSIGN_OR_RETURN: Debian's Abseil (20220623) lacks them.
//
//   RETURN_IF_ERROR(socket.Send(bytes));
//   ASSIGN_OR_RETURN(Frame frame, DecodeFrame(bytes));
#ifndef DEXEC_COMMON_STATUS_MACROS_H_
#define DEXEC_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status dexec_status_ = (expr);         \
    if (!dexec_status_.ok()) return dexec_status_; \
  } while (0)

#define DEXEC_CONCAT_INNER_(a, b) a##b
#define DEXEC_CONCAT_(a, b) DEXEC_CONCAT_INNER_(a, b)

#define ASSIGN_OR_RETURN(lhs, expr)                                           \
  DEXEC_ASSIGN_OR_RETURN_IMPL_(DEXEC_CONCAT_(dexec_statusor_, __LINE__), lhs, \
                               expr)

#define DEXEC_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#endif  // DEXEC_COMMON_STATUS_MACROS_H_
