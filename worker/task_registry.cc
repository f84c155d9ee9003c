#include "worker/task_registry.h"

#include <algorithm>
#include <exception>

#include "absl/time/clock.h"
#include "protos/chunk.h"
#include "protos/tasks.pb.h"

namespace dexec::worker {

absl::Status TaskRegistry::CheckNewName(const std::string& name) const {
  if (name.empty()) {
    return absl::InvalidArgumentError("a task name must not be empty");
  }
  if (tasks_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "task '", name, "' is already registered; task names are unique"));
  }
  return absl::OkStatus();
}

absl::Status TaskRegistry::Register(std::string name, RawTaskFn fn,
                                    TaskOptions options) {
  absl::Status ok = CheckNewName(name);
  if (!ok.ok()) return ok;
  if (!fn) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", name, "' has no function"));
  }
  tasks_.emplace(std::move(name), Entry{std::move(fn), nullptr, options});
  return absl::OkStatus();
}

absl::Status TaskRegistry::RegisterAsync(std::string name, AsyncTaskFn fn,
                                         RawTaskFn blocking) {
  absl::Status ok = CheckNewName(name);
  if (!ok.ok()) return ok;
  if (!fn || !blocking) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", name, "' has no function"));
  }
  tasks_.emplace(std::move(name),
                 Entry{std::move(blocking), std::move(fn), {}});
  return absl::OkStatus();
}

const AsyncTaskFn* TaskRegistry::AsyncTask(absl::string_view name) const {
  auto it = tasks_.find(name);
  if (it == tasks_.end() || !it->second.async) return nullptr;
  return &it->second.async;
}

absl::Status TaskRegistry::Run(absl::string_view name, TaskContext& ctx,
                               absl::string_view payload,
                               std::string* output) const {
  if (chunk::IsChunk(payload)) return RunChunk(name, ctx, payload, output);
  return RunOne(name, ctx, payload, output);
}

absl::Status TaskRegistry::RunChunk(absl::string_view name, TaskContext& ctx,
                                    absl::string_view payload,
                                    std::string* output) const {
  // Items as views into the payload and results written straight to their
  // wire form (protos/chunk.h): no message object per item.
  absl::StatusOr<std::vector<absl::string_view>> items =
      chunk::DecodeItems(payload);
  if (!items.ok()) return TaskError(kBadPayloadKind, items.status().message());
  auto it = tasks_.find(name);
  // A deadline is read from the clock per item only if the job has one.
  const bool has_deadline = ctx.deadline() != absl::InfiniteFuture();
  chunk::ResultWriter results;
  std::string out;
  for (const absl::string_view item : *items) {
    // Cancel and the deadline end the whole job: its items are one attempt.
    if (ctx.cancelled()) {
      return TaskError(kCancelledKind, "the chunk was cancelled");
    }
    if (has_deadline && absl::Now() >= ctx.deadline()) {
      return TaskError(
          kTimeoutKind,
          absl::StrCat("the chunk's deadline passed after ", results.size(),
                       " of ", items->size(), " items"));
    }
    out.clear();
    const absl::Status status = it == tasks_.end()
                                    ? UnknownTask(name)
                                    : Invoke(name, it->second, ctx, item, &out);
    if (!status.ok()) {
      results.AddError(out, ErrorKindOf(status), status.message());
      break;  // as an unchunked map stops at its first error
    }
    results.AddOk(out);
  }
  *output = std::move(results).Finish();
  return absl::OkStatus();
}

absl::Status TaskRegistry::RunOne(absl::string_view name, TaskContext& ctx,
                                  absl::string_view payload,
                                  std::string* output) const {
  auto it = tasks_.find(name);
  if (it == tasks_.end()) return UnknownTask(name);
  return Invoke(name, it->second, ctx, payload, output);
}

absl::Status TaskRegistry::UnknownTask(absl::string_view name) {
  return TaskError(kUnknownTaskKind,
                   absl::StrCat("this worker has no task named '", name, "'"));
}

absl::Status TaskRegistry::Invoke(absl::string_view name, const Entry& entry,
                                  TaskContext& ctx, absl::string_view payload,
                                  std::string* output) {
  // A task's exception is its own failure, not the worker's: catch it here,
  // on the thread that ran the task, so it never unwinds a pool thread.
  try {
    return entry.fn(ctx, payload, output);
  } catch (const std::exception& e) {
    return TaskError(kExceptionKind,
                     absl::StrCat("task '", name, "' threw: ", e.what()));
  } catch (...) {
    return TaskError(kExceptionKind,
                     absl::StrCat("task '", name,
                                  "' threw something not derived from "
                                  "std::exception"));
  }
}

Isolation TaskRegistry::IsolationOf(absl::string_view name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? Isolation::kDefault
                            : it->second.options.isolation;
}

std::vector<std::string> TaskRegistry::Names() const {
  std::vector<std::string> names;
  names.reserve(tasks_.size());
  for (const auto& [name, entry] : tasks_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace dexec::worker
