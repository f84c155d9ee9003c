// How a task failure says *why* it failed. Every failed job carries an
// error kind, a short machine-readable word the client can branch on
// ("timeout", "exit_code", "bad_payload", ...), beside a human message.
//
// A task returns an ordinary absl::Status; a plain non-OK status becomes
// kind "task_error". To choose another kind, build the status with
// TaskError():
//
//   if (rows.empty()) return dexec::worker::TaskError("no_rows", "table
//   empty");
//
// The kind travels inside the status as a payload, so it survives
// RETURN_IF_ERROR and other code that forwards statuses unchanged.
#ifndef DEXEC_WORKER_TASK_ERROR_H_
#define DEXEC_WORKER_TASK_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "protos/error_kind.h"

namespace dexec::worker {

// Kinds the worker itself reports (protos/error_kind.h has every kind).
// Tasks may use any other short word too.
inline constexpr absl::string_view kTaskErrorKind = error_kind::kTaskError;
inline constexpr absl::string_view kBadPayloadKind = error_kind::kBadPayload;
inline constexpr absl::string_view kExceptionKind = error_kind::kException;
inline constexpr absl::string_view kUnknownTaskKind = error_kind::kUnknownTask;
inline constexpr absl::string_view kTimeoutKind = error_kind::kTimeout;
inline constexpr absl::string_view kCancelledKind = error_kind::kCancelled;
inline constexpr absl::string_view kExitCodeKind = error_kind::kExitCode;

// Status payload type URL under which the kind is stored.
inline constexpr absl::string_view kErrorKindUrl =
    error_kind::kStatusPayloadUrl;

// An UNKNOWN-code status whose error kind is `kind` (kTaskErrorKind if
// empty) and whose message is `message`.
absl::Status TaskError(absl::string_view kind, absl::string_view message);

// The error kind of `status`: "" for OK, the kind stored by TaskError() if
// any, otherwise "task_error".
std::string ErrorKindOf(const absl::Status& status);

// A failed coroutine task (worker/task.h) returns only a status; to keep
// output with the failure, as a raw task does through `output`, attach it:
//   co_return WithOutput(TaskError("http_status", "404"), response_bytes);
absl::Status WithOutput(absl::Status status, absl::string_view output);
// Removes the output WithOutput attached to `status` and returns it ("" if
// none).
std::string TakeOutput(absl::Status& status);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_ERROR_H_
