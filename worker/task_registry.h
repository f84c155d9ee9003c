// The tasks a worker can run, by name. Build one registry, register every
// task, then hand it to a Worker (worker.h), which runs tasks from its pool
// threads through Run().
//
//   TaskRegistry registry;
//   // Raw: bytes in, bytes out.
//   registry.Register("upper", [](TaskContext&, absl::string_view in,
//                                 std::string* out) {
//     *out = absl::AsciiStrToUpper(in);
//     return absl::OkStatus();
//   });
//   // Typed: the payload is decoded, and the result encoded, with
//   // dexec::Codec<T> (common/codec.h), the same codec the client uses.
//   registry.RegisterTyped<int64_t, int64_t>(
//       "square", [](TaskContext&, int64_t x) -> absl::StatusOr<int64_t> {
//         return x * x;
//       });
//
// A task reports failure by returning a non-OK status; TaskError()
// (task_error.h) chooses its error kind. Whatever the task wrote to
// `output` is kept even when it fails, so a failed job can still return
// data (sys.exec keeps the command's stdout and stderr that way).
//
// Thread-safety: Register() is not thread-safe and must finish before any
// Worker using the registry starts; Run() and the other const methods are
// thread-safe.
#ifndef DEXEC_WORKER_TASK_REGISTRY_H_
#define DEXEC_WORKER_TASK_REGISTRY_H_

#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/codec.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {

// A task over raw bytes. `output` starts empty.
using RawTaskFn = std::function<absl::Status(
    TaskContext& ctx, absl::string_view payload, std::string* output)>;

// Where a task runs (docs/DESIGN.md, "Executors").
enum class Isolation {
  // The worker's choice: WorkerOptions::isolation (dexec-worker
  // --isolation).
  kDefault,
  // On a pool thread of the worker process: cheapest, but a crash takes
  // the worker and every job on it.
  kThread,
  // In a child process of the worker: a crash fails this job only (kind
  // "crashed"); cancel and timeout kill the child. The payload and result
  // cross a socket.
  kProcess,
};

struct TaskOptions {
  Isolation isolation = Isolation::kDefault;
};

// A coroutine task (worker/task.h, C++20). Declared here without its
// definition so this header stays C++17; only C++20 code constructs or
// calls one.
template <typename T>
class Task;
using AsyncTaskFn = std::function<Task<absl::StatusOr<std::string>>(
    TaskContext& ctx, std::string payload)>;

class TaskRegistry {
 public:
  TaskRegistry() = default;
  TaskRegistry(const TaskRegistry&) = delete;
  TaskRegistry& operator=(const TaskRegistry&) = delete;

  // Adds a raw task. INVALID_ARGUMENT for an empty name or an empty
  // function, ALREADY_EXISTS if `name` is taken.
  absl::Status Register(std::string name, RawTaskFn fn,
                        TaskOptions options = {});

  // Adds a typed task: the payload is decoded as `In` with Codec<In> (a
  // payload that does not decode fails the job with kind "bad_payload"),
  // and a returned value is encoded with Codec<Out>. Errors as above.
  template <typename Out, typename In>
  absl::Status Register(
      std::string name,
      std::function<absl::StatusOr<Out>(TaskContext&, In)> fn);

  // Same, for any callable such as a lambda (which cannot be deduced into
  // a std::function): RegisterTyped<int64_t, int64_t>("square", lambda).
  template <typename Out, typename In, typename Fn>
  absl::Status RegisterTyped(std::string name, Fn fn) {
    return Register<Out, In>(
        std::move(name),
        std::function<absl::StatusOr<Out>(TaskContext&, In)>(std::move(fn)));
  }

  // Adds a coroutine task; use the RegisterAsync() of worker/task.h, which
  // builds `blocking` (the same task driven on the calling thread, for
  // Run()) and takes lambdas returning Task<std::string>. A worker runs it
  // on its event loop, whatever the isolation. Errors as Register.
  absl::Status RegisterAsync(std::string name, AsyncTaskFn fn,
                             RawTaskFn blocking);

  // True if `name` is a coroutine task.
  bool IsAsync(absl::string_view name) const {
    return AsyncTask(name) != nullptr;
  }

  // The coroutine task `name`; null if there is none by that name.
  const AsyncTaskFn* AsyncTask(absl::string_view name) const;

  // Runs task `name` on the calling thread. Returns the task's status;
  // kind "unknown_task" if no task has that name, and kind "exception" if
  // the task threw (the exception never leaves Run()). A chunked map's
  // payload (protos/chunk.h) runs the task once per item, in order, until
  // one fails, and returns OK with a tasks.ChunkResult as output.
  absl::Status Run(absl::string_view name, TaskContext& ctx,
                   absl::string_view payload, std::string* output) const;

  bool Has(absl::string_view name) const { return tasks_.contains(name); }

  // The isolation `name` was registered with; kDefault for an unknown name.
  Isolation IsolationOf(absl::string_view name) const;

  // Registered names, sorted.
  std::vector<std::string> Names() const;

 private:
  absl::Status CheckNewName(const std::string& name) const;
  absl::Status RunOne(absl::string_view name, TaskContext& ctx,
                      absl::string_view payload, std::string* output) const;
  absl::Status RunChunk(absl::string_view name, TaskContext& ctx,
                        absl::string_view payload, std::string* output) const;

  struct Entry {
    RawTaskFn fn;  // for a coroutine task, it driven on the caller's thread
    AsyncTaskFn async;
    TaskOptions options;
  };
  static absl::Status UnknownTask(absl::string_view name);
  // Runs `entry` (named `name`) on the calling thread; its exception
  // becomes kind "exception".
  static absl::Status Invoke(absl::string_view name, const Entry& entry,
                             TaskContext& ctx, absl::string_view payload,
                             std::string* output);
  absl::flat_hash_map<std::string, Entry> tasks_;
};

template <typename Out, typename In>
absl::Status TaskRegistry::Register(
    std::string name, std::function<absl::StatusOr<Out>(TaskContext&, In)> fn) {
  using InValue = std::remove_cv_t<std::remove_reference_t<In>>;
  if (!fn) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", name, "' has no function"));
  }
  return Register(
      std::move(name),
      [fn = std::move(fn)](TaskContext& ctx, absl::string_view payload,
                           std::string* output) -> absl::Status {
        absl::StatusOr<InValue> in = Codec<InValue>::Decode(payload);
        if (!in.ok()) {
          return TaskError(
              kBadPayloadKind,
              absl::StrCat("payload does not decode: ", in.status().message()));
        }
        absl::StatusOr<Out> out = fn(ctx, std::move(*in));
        if (!out.ok()) return out.status();
        *output = Codec<Out>::Encode(*out);
        return absl::OkStatus();
      });
}

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_REGISTRY_H_
