// Coroutine tasks (C++20): a task that waits without holding a thread.
// Register one with RegisterAsync; it runs on the worker's event loop
// (coroutine_executor.h) with up to WorkerOptions::concurrency in flight
// on `threads` loop threads, and suspends on the awaitables of its
// TaskContext (task_context.h) or on other Task<T> coroutines:
//
//   #include "worker/task.h"
//   RETURN_IF_ERROR(dexec::worker::RegisterAsync(
//       registry, "wait.then.echo",
//       [](TaskContext& ctx, std::string in) -> Task<std::string> {
//         if (!co_await ctx.Sleep(absl::Seconds(1))) co_return "cut short";
//         co_return in;
//       }));
//
// A task returning Task<absl::StatusOr<std::string>> reports failure with a
// non-OK status (TaskError() chooses the kind), as a thread task does. An
// exception escaping the coroutine fails the job with kind "exception".
//
// A suspended coroutine holds no thread; cancel and the job's deadline
// resume it at once, with its awaitable answering false. Code between two
// co_awaits runs on a loop thread and must not block it.
//
// Only C++20 translation units may include this header (copts
// ["-std=c++20"]); task_registry.h itself stays C++17.
#ifndef DEXEC_WORKER_TASK_H_
#define DEXEC_WORKER_TASK_H_

#include <coroutine>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "worker/task_context.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"

namespace dexec::worker {

// A lazily started coroutine producing a T: it runs when awaited (or when
// the worker starts it), and resumes its awaiter when it finishes
// (symmetric transfer, so deep chains of co_await use no stack).
template <typename T>
class [[nodiscard]] Task {
 public:
  struct promise_type {
    std::optional<T> value;
    std::exception_ptr error;
    std::coroutine_handle<> continuation;

    Task get_return_object() {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct FinalAwaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(
          std::coroutine_handle<promise_type> h) noexcept {
        std::coroutine_handle<> next = h.promise().continuation;
        return next ? next : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {}; }
    template <typename U>
    void return_value(U&& v) {
      value.emplace(std::forward<U>(v));
    }
    void unhandled_exception() { error = std::current_exception(); }
  };

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      if (handle_) handle_.destroy();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (handle_) handle_.destroy();
  }

  // For the worker's loop (coroutine_executor.cc), which drives the
  // outermost task: resume handle() to start it; done() once it finished;
  // then await_resume() gives its value.
  std::coroutine_handle<> handle() const { return handle_; }
  bool done() const { return handle_.done(); }

  // co_await task: runs it, then gives its value (rethrows its exception).
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) {
    handle_.promise().continuation = awaiter;
    return handle_;
  }
  T await_resume() {
    if (handle_.promise().error) {
      std::rethrow_exception(handle_.promise().error);
    }
    return std::move(*handle_.promise().value);
  }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : handle_(h) {}
  std::coroutine_handle<promise_type> handle_;
};

// Drives `task` to its end on the calling thread: its TaskContext has no
// scheduler, so the context's awaitables block instead of suspending.
inline absl::StatusOr<std::string> RunBlocking(
    Task<absl::StatusOr<std::string>> task) {
  task.handle().resume();
  if (!task.done()) {
    return TaskError(kTaskErrorKind,
                     "a coroutine task run on a thread suspended on "
                     "something other than its TaskContext's awaitables");
  }
  return task.await_resume();  // an exception goes to TaskRegistry::Run
}

// Adds coroutine task `name` to `registry`: `fn(TaskContext&, std::string
// payload)` returns Task<std::string> or Task<absl::StatusOr<std::string>>.
// TaskRegistry::Run (and so a pool thread or a child process) runs it
// blocking; a Worker runs it on its event loop. Errors as
// TaskRegistry::Register.
template <typename Fn>
absl::Status RegisterAsync(TaskRegistry& registry, std::string name, Fn fn) {
  using Result = decltype(std::declval<Fn&>()(std::declval<TaskContext&>(),
                                              std::declval<std::string>())
                              .await_resume());
  static_assert(std::is_same_v<Result, std::string> ||
                    std::is_same_v<Result, absl::StatusOr<std::string>>,
                "an async task returns Task<std::string> or "
                "Task<absl::StatusOr<std::string>>");
  AsyncTaskFn async;
  if constexpr (std::is_same_v<Result, absl::StatusOr<std::string>>) {
    async = std::move(fn);
  } else {
    async = [fn = std::move(fn)](
                TaskContext& ctx,
                std::string payload) -> Task<absl::StatusOr<std::string>> {
      co_return co_await fn(ctx, std::move(payload));
    };
  }
  RawTaskFn blocking = [async](TaskContext& ctx, absl::string_view payload,
                               std::string* output) -> absl::Status {
    absl::StatusOr<std::string> r =
        RunBlocking(async(ctx, std::string(payload)));
    if (!r.ok()) {
      absl::Status failed = r.status();
      *output = TakeOutput(failed);
      return failed;
    }
    *output = *std::move(r);
    return absl::OkStatus();
  };
  return registry.RegisterAsync(std::move(name), std::move(async),
                                std::move(blocking));
}

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_TASK_H_
