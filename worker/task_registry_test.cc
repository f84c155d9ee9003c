#include "worker/task_registry.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

struct Ran {
  absl::Status status;
  std::string output;
};

Ran RunTask(const TaskRegistry& registry, absl::string_view name,
            absl::string_view payload) {
  TaskContext ctx(1, 1, absl::InfiniteFuture());
  Ran ran;
  ran.status = registry.Run(name, ctx, payload, &ran.output);
  return ran;
}

// A typed task through a lambda (kept out of ASSERT_TRUE, whose macro
// argument cannot hold a template's comma).
absl::Status RegisterSquare(TaskRegistry& registry) {
  return registry.RegisterTyped<int64_t, int64_t>(
      "square",
      [](TaskContext&, int64_t x) -> absl::StatusOr<int64_t> { return x * x; });
}

TEST(TaskRegistry, TypedTaskDecodesPayloadAndEncodesResult) {
  TaskRegistry registry;
  ASSERT_TRUE(RegisterSquare(registry).ok());
  Ran ran = RunTask(registry, "square", Codec<int64_t>::Encode(-7));
  ASSERT_TRUE(ran.status.ok()) << ran.status;
  EXPECT_EQ(Codec<int64_t>::Decode(ran.output).value(), 49);
}

TEST(TaskRegistry, TypedTaskRoundTripsProtobufMessages) {
  TaskRegistry registry;
  std::function<absl::StatusOr<tasks::ExecResult>(TaskContext&,
                                                  const tasks::ExecRequest&)>
      fn = [](TaskContext&, const tasks::ExecRequest& req)
      -> absl::StatusOr<tasks::ExecResult> {
    tasks::ExecResult result;
    result.set_stdout(req.argv(0));
    result.set_exit_code(req.argv_size());
    return result;
  };
  absl::Status registered =
      registry.Register<tasks::ExecResult, const tasks::ExecRequest&>(
          "count_args", fn);
  ASSERT_TRUE(registered.ok()) << registered;
  tasks::ExecRequest req;
  req.add_argv("ls");
  req.add_argv("-l");
  Ran ran = RunTask(registry, "count_args", req.SerializeAsString());
  ASSERT_TRUE(ran.status.ok()) << ran.status;
  tasks::ExecResult result =
      Codec<tasks::ExecResult>::Decode(ran.output).value();
  EXPECT_EQ(result.stdout(), "ls");
  EXPECT_EQ(result.exit_code(), 2);
}

TEST(TaskRegistry, PayloadThatDoesNotDecodeFailsWithBadPayload) {
  TaskRegistry registry;
  ASSERT_TRUE(RegisterSquare(registry).ok());
  Ran ran = RunTask(registry, "square", "seven");
  EXPECT_FALSE(ran.status.ok());
  EXPECT_EQ(ErrorKindOf(ran.status), "bad_payload");
  EXPECT_NE(ran.status.message().find("seven"), absl::string_view::npos);
}

TEST(TaskRegistry, ExceptionBecomesKindException) {
  TaskRegistry registry;
  ASSERT_TRUE(registry
                  .Register("throws",
                            [](TaskContext&, absl::string_view,
                               std::string*) -> absl::Status {
                              throw std::runtime_error("boom");
                            })
                  .ok());
  ASSERT_TRUE(registry
                  .Register("throws_int",
                            [](TaskContext&, absl::string_view,
                               std::string*) -> absl::Status { throw 42; })
                  .ok());
  Ran ran = RunTask(registry, "throws", "");
  EXPECT_EQ(ErrorKindOf(ran.status), "exception");
  EXPECT_NE(ran.status.message().find("boom"), absl::string_view::npos);
  EXPECT_EQ(ErrorKindOf(RunTask(registry, "throws_int", "").status),
            "exception");
}

TEST(TaskRegistry, UnknownTaskFailsWithUnknownTask) {
  TaskRegistry registry;
  Ran ran = RunTask(registry, "nope", "");
  EXPECT_EQ(ErrorKindOf(ran.status), "unknown_task");
}

TEST(TaskRegistry, RejectsDuplicateAndEmptyNames) {
  TaskRegistry registry;
  auto echo = [](TaskContext&, absl::string_view p, std::string* out) {
    *out = std::string(p);
    return absl::OkStatus();
  };
  EXPECT_TRUE(registry.Register("echo", echo).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(registry.Register("echo", echo)));
  EXPECT_TRUE(absl::IsInvalidArgument(registry.Register("", echo)));
  EXPECT_TRUE(absl::IsInvalidArgument(registry.Register("null", nullptr)));
  absl::Status typed = registry.RegisterTyped<std::string, std::string>(
      "echo", [](TaskContext&, std::string s) -> absl::StatusOr<std::string> {
        return s;
      });
  EXPECT_TRUE(absl::IsAlreadyExists(typed)) << typed;
  EXPECT_EQ(registry.Names(), std::vector<std::string>{"echo"});
}

TEST(TaskRegistry, OutputIsKeptWhenTheTaskFails) {
  TaskRegistry registry;
  ASSERT_TRUE(
      registry
          .Register("partial",
                    [](TaskContext&, absl::string_view, std::string* out) {
                      *out = "half done";
                      return TaskError("disk_full", "no space left");
                    })
          .ok());
  Ran ran = RunTask(registry, "partial", "");
  EXPECT_EQ(ran.output, "half done");
  EXPECT_EQ(ErrorKindOf(ran.status), "disk_full");
  EXPECT_EQ(ran.status.message(), "no space left");
}

TEST(TaskError, PlainStatusesAreTaskErrors) {
  EXPECT_EQ(ErrorKindOf(absl::OkStatus()), "");
  EXPECT_EQ(ErrorKindOf(absl::InternalError("x")), "task_error");
  EXPECT_EQ(ErrorKindOf(TaskError("", "x")), "task_error");
  EXPECT_EQ(ErrorKindOf(TaskError("timeout", "x")), "timeout");
}

}  // namespace
}  // namespace dexec::worker
