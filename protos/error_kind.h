// The error kinds of dexec.v1.JobError.kind, in one place: the short word
// a failed job carries beside its message, for programs to branch on. The
// worker reports the task's kinds, the broker its own; the client maps them
// to absl::Status codes (client/future.h) and the CLI prints them. The list
// and the mapping are written down in docs/DESIGN.md ("Client protocol").
// A task may also choose a word of its own (worker/task_error.h).
#ifndef DEXEC_PROTOS_ERROR_KIND_H_
#define DEXEC_PROTOS_ERROR_KIND_H_

#include "absl/strings/string_view.h"

namespace dexec::error_kind {

// Reported by the worker for the task.
inline constexpr absl::string_view kTaskError = "task_error";  // it failed
inline constexpr absl::string_view kException = "exception";   // it threw
inline constexpr absl::string_view kExitCode = "exit_code";    // sys.exec, != 0
inline constexpr absl::string_view kBadPayload = "bad_payload";
inline constexpr absl::string_view kUnknownTask = "unknown_task";
// Reported by the worker or the broker.
inline constexpr absl::string_view kTimeout = "timeout";
inline constexpr absl::string_view kCancelled = "cancelled";
// Reported by the broker.
inline constexpr absl::string_view kWorkerLost = "worker_lost";
inline constexpr absl::string_view kNotFound = "not_found";  // unknown id
// A process-isolated task's child died mid-task (the message names the
// signal); an http.get answer that was not 2xx (the response is kept).
inline constexpr absl::string_view kCrashed = "crashed";
inline constexpr absl::string_view kHttpStatus = "http_status";
// The task's output was over the broker's --max_result_bytes; not kept.
inline constexpr absl::string_view kResultTooLarge = "result_too_large";

// The absl::Status payload type URL under which the worker and the client
// library keep a status's kind.
inline constexpr absl::string_view kStatusPayloadUrl = "type.dexec/error_kind";

}  // namespace dexec::error_kind

#endif  // DEXEC_PROTOS_ERROR_KIND_H_
