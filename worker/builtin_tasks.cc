#include "worker/builtin_tasks.h"

#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "worker/exec_task.h"
#include "worker/http_task.h"
#include "worker/task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

// Parses a non-negative decimal count for a task whose payload is a number.
absl::Status ParseCount(absl::string_view task, absl::string_view payload,
                        absl::string_view unit, int64_t* out) {
  if (!absl::SimpleAtoi(payload, out) || *out < 0) {
    return TaskError(kBadPayloadKind,
                     absl::StrCat(task, " expects ", unit,
                                  " as a non-negative decimal number, got '",
                                  payload.substr(0, 64), "'"));
  }
  return absl::OkStatus();
}

absl::Status Echo(TaskContext&, absl::string_view payload,
                  std::string* output) {
  output->assign(payload.data(), payload.size());
  return absl::OkStatus();
}

// A coroutine: a sleeping job holds no thread.
Task<absl::StatusOr<std::string>> Sleep(TaskContext& ctx, std::string payload) {
  int64_t ms;
  absl::Status parsed = ParseCount("sys.sleep", payload, "milliseconds", &ms);
  if (!parsed.ok()) co_return parsed;
  if (co_await ctx.Sleep(absl::Milliseconds(ms))) co_return std::string();
  if (ctx.cancelled()) {
    co_return TaskError(kCancelledKind, "sys.sleep was cancelled");
  }
  co_return TaskError(
      kTimeoutKind, absl::StrCat("sys.sleep of ", ms,
                                 " ms did not finish before the job deadline"));
}

absl::Status Fail(TaskContext&, absl::string_view payload, std::string*) {
  return TaskError(kTaskErrorKind, payload);
}

absl::Status Spin(TaskContext& ctx, absl::string_view payload, std::string*) {
  int64_t us;
  RETURN_IF_ERROR(ParseCount("bench.spin", payload, "microseconds", &us));
  // Busy on purpose: this task measures scheduling with real CPU load.
  const absl::Time end = absl::Now() + absl::Microseconds(us);
  while (absl::Now() < end) {
    if (ctx.cancelled()) {
      return TaskError(kCancelledKind, "bench.spin was cancelled");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RegisterBuiltinTasks(TaskRegistry* registry,
                                  BuiltinTaskOptions options) {
  RETURN_IF_ERROR(registry->Register("sys.echo", Echo));
  RETURN_IF_ERROR(RegisterAsync(*registry, "sys.sleep", Sleep));
  RETURN_IF_ERROR(registry->Register("sys.fail", Fail));
  if (options.allow_exec) {
    RETURN_IF_ERROR(registry->Register("sys.exec", ExecTask));
  }
  if (options.allow_http) {
    RETURN_IF_ERROR(RegisterHttpTask(
        registry, {.max_connections = options.http_max_connections,
                   .plain = options.http_plain}));
  }
  RETURN_IF_ERROR(registry->Register("bench.spin", Spin));
  return absl::OkStatus();
}

}  // namespace dexec::worker
