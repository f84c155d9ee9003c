// Drives a real Worker against a real ZeroMQ ROUTER socket that this test
// binds and speaks the broker's side of protos/wire.proto through.
#include "worker/worker.h"

#include <errno.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"
#include "tests/process.h"
#include "worker/builtin_tasks.h"
#include "worker/exec_task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"
#include "zmq.hpp"

namespace dexec::worker {
namespace {

using ::dexec::testing::ProcessGone;
using ::dexec::testing::WaitProcessGone;

constexpr absl::Duration kWait = absl::Seconds(10);

// The pid a shell command wrote to `path`, once the file holds a full line;
// 0 if it does not by `deadline`.
pid_t WaitForPidFile(const std::string& path, absl::Time deadline) {
  while (absl::Now() < deadline) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    int pid = 0;
    if (absl::EndsWith(text, "\n") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) && pid > 0) {
      return pid;
    }
    absl::SleepFor(absl::Milliseconds(10));  // the child writes it; poll
  }
  return 0;
}

// A sys.exec payload running `script` with /bin/sh.
std::string ShellPayload(const std::string& script) {
  tasks::ExecRequest req;
  req.add_argv("/bin/sh");
  req.add_argv("-c");
  req.add_argv(script);
  return req.SerializeAsString();
}

struct Received {
  std::string identity;
  wire::Frame frame;
};

// The broker's end: a ROUTER bound on a port the OS picks.
class FakeBroker {
 public:
  FakeBroker() : socket_(context_, zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("tcp://127.0.0.1:*");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
  }

  const std::string& endpoint() const { return endpoint_; }

  // The next frame, or nullopt if none arrives by `deadline`.
  std::optional<Received> Receive(absl::Time deadline) {
    for (;;) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return std::nullopt;
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1,
                std::chrono::milliseconds(absl::ToInt64Milliseconds(left) + 1));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      zmq::message_t identity, body;
      (void)socket_.recv(identity);
      EXPECT_TRUE(identity.more());
      (void)socket_.recv(body);
      EXPECT_FALSE(body.more()) << "a worker message has one body part";
      absl::StatusOr<wire::Frame> frame = wire::DecodeFrame(absl::string_view(
          static_cast<const char*>(body.data()), body.size()));
      EXPECT_TRUE(frame.ok()) << "worker sent a bad frame: " << frame.status();
      if (!frame.ok()) continue;
      return Received{identity.to_string(), *std::move(frame)};
    }
  }

  // The next frame with body `body`, skipping heartbeats; nullopt if
  // another kind arrives or nothing does by `deadline`.
  std::optional<Received> Expect(wire::Frame::BodyCase body,
                                 absl::Time deadline) {
    for (;;) {
      std::optional<Received> r = Receive(deadline);
      if (!r.has_value()) {
        ADD_FAILURE() << "no frame of kind " << body << " arrived in time";
        return std::nullopt;
      }
      if (r->frame.body_case() == body) return r;
      if (r->frame.body_case() == wire::Frame::kHeartbeat) continue;
      ADD_FAILURE() << "expected frame kind " << body << ", got "
                    << r->frame.ShortDebugString();
      return std::nullopt;
    }
  }

  void SendRaw(const std::string& identity, const std::string& bytes) {
    socket_.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(bytes), zmq::send_flags::none);
  }

  void Send(const std::string& identity, wire::Frame frame) {
    SendRaw(identity, wire::EncodeFrame(std::move(frame)));
  }

  void Welcome(const std::string& identity, absl::Duration interval,
               int liveness) {
    wire::Frame frame;
    frame.mutable_welcome()->set_heartbeat_interval_ms(
        absl::ToInt64Milliseconds(interval));
    frame.mutable_welcome()->set_liveness(liveness);
    Send(identity, std::move(frame));
  }

  void Dispatch(const std::string& identity, uint64_t job_id, uint32_t attempt,
                const std::string& task, const std::string& payload,
                int64_t timeout_ms = 0) {
    wire::Frame frame;
    wire::Task* t = frame.mutable_dispatch()->add_tasks();
    t->set_job_id(job_id);
    t->set_attempt(attempt);
    t->set_name(task);
    t->set_payload(payload);
    t->set_timeout_ms(timeout_ms);
    Send(identity, std::move(frame));
  }

  void Abandon(const std::string& identity, uint64_t job_id, uint32_t attempt) {
    wire::Frame frame;
    wire::TaskRef* ref = frame.mutable_abandon()->add_tasks();
    ref->set_job_id(job_id);
    ref->set_attempt(attempt);
    Send(identity, std::move(frame));
  }

  void Reconnect(const std::string& identity) {
    wire::Frame frame;
    frame.mutable_reconnect();
    Send(identity, std::move(frame));
  }

  // Collects results until `want` job ids have reported or `deadline`.
  std::vector<wire::TaskResult> Results(size_t want, absl::Time deadline,
                                        std::string* from = nullptr) {
    std::vector<wire::TaskResult> out;
    while (out.size() < want) {
      std::optional<Received> r = Receive(deadline);
      if (!r.has_value()) break;
      if (r->frame.body_case() == wire::Frame::kHeartbeat) continue;
      EXPECT_TRUE(r->frame.has_results()) << r->frame.ShortDebugString();
      if (from != nullptr) *from = r->identity;
      for (const wire::TaskResult& t : r->frame.results().results()) {
        out.push_back(t);
      }
    }
    return out;
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string endpoint_;
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RegisterBuiltinTasks(&registry_, {.allow_exec = true}).ok());
  }

  // Starts a worker and completes the Register/Welcome handshake; returns
  // the worker's identity at the broker.
  std::string StartAndRegister(WorkerOptions options,
                               absl::Duration interval = absl::Seconds(1),
                               int liveness = 3) {
    options.broker = broker_.endpoint();
    if (options.name.empty()) options.name = "test-worker";
    worker_ = std::make_unique<Worker>(options, &registry_);
    absl::Status started = worker_->Start();
    EXPECT_TRUE(started.ok()) << started;
    std::optional<Received> reg =
        broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
    if (!reg.has_value()) return "";
    registered_ = reg->frame.register_();
    broker_.Welcome(reg->identity, interval, liveness);
    return reg->identity;
  }

  // Waits for a heartbeat saying `busy` tasks run: proof that the worker
  // has the Welcome and the dispatched tasks. Needs a short heartbeat
  // interval (kFastBeat).
  void WaitUntilBusy(int busy) {
    for (;;) {
      std::optional<Received> hb =
          broker_.Expect(wire::Frame::kHeartbeat, absl::Now() + kWait);
      ASSERT_TRUE(hb.has_value()) << "no heartbeat with busy=" << busy;
      if (hb->frame.heartbeat().busy() == busy) return;
    }
  }

  // Registers "test.block", a task that runs until cancelled; the returned
  // notification fires when it starts. Call before StartAndRegister.
  std::shared_ptr<absl::Notification> RegisterBlocker() {
    auto started = std::make_shared<absl::Notification>();
    absl::Status s = registry_.Register(
        "test.block",
        [started](TaskContext& ctx, absl::string_view, std::string*) {
          if (!started->HasBeenNotified()) started->Notify();
          ctx.SleepFor(absl::InfiniteDuration());
          return TaskError(kCancelledKind, "test.block was cancelled");
        });
    EXPECT_TRUE(s.ok()) << s;
    return started;
  }

  static constexpr absl::Duration kFastBeat = absl::Milliseconds(20);

  TaskRegistry registry_;
  FakeBroker broker_;
  std::unique_ptr<Worker> worker_;
  wire::Register registered_;
};

TEST_F(WorkerTest, RegistersAndReturnsResultsOfDispatchedTasks) {
  WorkerOptions options;
  options.threads = 2;
  const std::string id = StartAndRegister(options);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(registered_.name(), "test-worker");
  EXPECT_EQ(registered_.threads(), 2);
  EXPECT_EQ(registered_.prefetch(), 256);  // max(256, 4 x threads)
  EXPECT_GT(registered_.pid(), 0);
  EXPECT_NE(std::find(registered_.tasks().begin(), registered_.tasks().end(),
                      "sys.exec"),
            registered_.tasks().end());

  constexpr int kTasks = 200;
  const int64_t before_us = absl::ToUnixMicros(absl::Now());
  for (int i = 1; i <= kTasks; ++i) {
    broker_.Dispatch(id, i, 3, "sys.echo", absl::StrCat("payload-", i));
  }
  std::vector<wire::TaskResult> results =
      broker_.Results(kTasks, absl::Now() + kWait);
  ASSERT_EQ(results.size(), size_t{kTasks});
  std::vector<bool> seen(kTasks + 1);
  for (const wire::TaskResult& r : results) {
    ASSERT_GE(r.job_id(), 1u);
    ASSERT_LE(r.job_id(), uint64_t{kTasks});
    EXPECT_FALSE(seen[r.job_id()]) << "two results for job " << r.job_id();
    seen[r.job_id()] = true;
    EXPECT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.attempt(), 3u);
    EXPECT_EQ(r.output(), absl::StrCat("payload-", r.job_id()));
    EXPECT_GE(r.started_at_us(), before_us);
    EXPECT_LE(r.started_at_us(), r.finished_at_us());
  }
}

TEST_F(WorkerTest, ReportsErrorKinds) {
  const std::string id = StartAndRegister(WorkerOptions{});
  broker_.Dispatch(id, 1, 1, "no.such.task", "");
  broker_.Dispatch(id, 2, 1, "sys.fail", "on purpose");
  broker_.Dispatch(id, 3, 1, "sys.sleep", "60000", /*timeout_ms=*/50);
  std::vector<wire::TaskResult> results =
      broker_.Results(3, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 3u);
  std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) {
    return a.job_id() < b.job_id();
  });
  EXPECT_EQ(results[0].error_kind(), "unknown_task");
  EXPECT_EQ(results[1].error_kind(), "task_error");
  EXPECT_EQ(results[1].error_message(), "on purpose");
  EXPECT_EQ(results[2].error_kind(), "timeout");
  for (const auto& r : results) EXPECT_FALSE(r.ok());
}

TEST_F(WorkerTest, AbandonedRunningTaskIsCancelledAndReportsNothing) {
  WorkerOptions options;
  options.threads = 1;  // job 2 can only run once job 1 let go of the thread
  options.prefetch = 1;
  const std::string id = StartAndRegister(options, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.sleep", "60000");
  WaitUntilBusy(1);
  const absl::Time abandoned_at = absl::Now();
  broker_.Abandon(id, 1, 1);
  broker_.Dispatch(id, 2, 1, "sys.echo", "after");

  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 2u);
  EXPECT_EQ(results[0].output(), "after");
  // The sleep woke at the Abandon, not at the end of its minute.
  EXPECT_LT(absl::Now() - abandoned_at, absl::Seconds(2));

  // Nothing about job 1 comes before the worker leaves.
  worker_->Stop();
  for (;;) {
    std::optional<Received> r = broker_.Receive(absl::Now() + kWait);
    ASSERT_TRUE(r.has_value()) << "the worker never said it was leaving";
    EXPECT_FALSE(r->frame.has_results()) << r->frame.ShortDebugString();
    if (r->frame.has_worker_state() && r->frame.worker_state().leaving()) break;
  }
  worker_->Wait();
}

TEST_F(WorkerTest, AbandonedRunningExecKillsItsWholeProcessGroup) {
  WorkerOptions options;
  options.threads = 1;  // job 2 can only run once job 1 let go of the thread
  options.prefetch = 1;
  const std::string id = StartAndRegister(options, kFastBeat, 100);
  const std::string shell_file = ::testing::TempDir() + "/abandon-shell.pid";
  const std::string child_file = ::testing::TempDir() + "/abandon-child.pid";
  std::remove(shell_file.c_str());
  std::remove(child_file.c_str());
  // A shell and a grandchild of the worker, both in the command's group.
  broker_.Dispatch(id, 1, 1, "sys.exec",
                   ShellPayload("sleep 300 & echo $! > " + child_file +
                                "; echo $$ > " + shell_file + "; wait"));
  const pid_t child = WaitForPidFile(child_file, absl::Now() + kWait);
  const pid_t shell = WaitForPidFile(shell_file, absl::Now() + kWait);
  ASSERT_GT(child, 0) << "the command never wrote " << child_file;
  ASSERT_GT(shell, 0) << "the command never wrote " << shell_file;
  ASSERT_FALSE(ProcessGone(child));

  const absl::Time abandoned_at = absl::Now();
  broker_.Abandon(id, 1, 1);
  EXPECT_TRUE(WaitProcessGone(shell, absl::Now() + kWait))
      << "shell " << shell << " still runs after Abandon";
  EXPECT_TRUE(WaitProcessGone(child, absl::Now() + kWait))
      << "grandchild " << child << " still runs after Abandon";
  // SIGTERM was enough: no wait for the SIGKILL grace.
  EXPECT_LT(absl::Now() - abandoned_at, kExecKillGrace);

  broker_.Dispatch(id, 2, 1, "sys.echo", "after");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u) << "the pool thread was not freed";
  EXPECT_EQ(results[0].job_id(), 2u) << "a result of the abandoned attempt";
}

TEST_F(WorkerTest, AbandonedExecThatIgnoresSigtermIsKilledAfterTheGrace) {
  WorkerOptions options;
  options.threads = 1;
  options.prefetch = 1;
  // The fake broker sends no heartbeats: a liveness far beyond the grace
  // keeps the worker from presuming it dead meanwhile.
  const std::string id = StartAndRegister(options, absl::Seconds(1), 60);
  const std::string shell_file = ::testing::TempDir() + "/stubborn-shell.pid";
  const std::string child_file = ::testing::TempDir() + "/stubborn-child.pid";
  std::remove(shell_file.c_str());
  std::remove(child_file.c_str());
  // The ignored SIGTERM is inherited by the background sleep too.
  broker_.Dispatch(
      id, 1, 1, "sys.exec",
      ShellPayload("trap '' TERM; sleep 300 & echo $! > " + child_file +
                   "; echo $$ > " + shell_file + "; wait"));
  const pid_t child = WaitForPidFile(child_file, absl::Now() + kWait);
  const pid_t shell = WaitForPidFile(shell_file, absl::Now() + kWait);
  ASSERT_GT(child, 0) << "the command never wrote " << child_file;
  ASSERT_GT(shell, 0) << "the command never wrote " << shell_file;

  broker_.Abandon(id, 1, 1);
  const absl::Time deadline = absl::Now() + kExecKillGrace + kWait;
  EXPECT_TRUE(WaitProcessGone(shell, deadline))
      << "shell " << shell << " survived SIGKILL";
  EXPECT_TRUE(WaitProcessGone(child, deadline))
      << "grandchild " << child << " survived SIGKILL";

  broker_.Dispatch(id, 2, 1, "sys.echo", "after");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u) << "the pool thread was not freed";
  EXPECT_EQ(results[0].job_id(), 2u) << "a result of the abandoned attempt";
}

TEST_F(WorkerTest, ReRegisterListsEveryAttemptItStillHolds) {
  std::shared_ptr<absl::Notification> blocker_started = RegisterBlocker();
  WorkerOptions options;
  options.threads = 1;  // job 2 holds the thread, so job 3 waits in the pool
  options.prefetch = 4;
  // Liveness 10 x 20 ms: a silent broker is given up on after 200 ms.
  const std::string id = StartAndRegister(options, kFastBeat, 10);
  EXPECT_EQ(registered_.held_size(), 0);

  // As a restarted broker would: from here on the worker is not welcomed,
  // so results must wait.
  broker_.Reconnect(id);
  std::optional<Received> reg =
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value());
  EXPECT_EQ(reg->frame.register_().held_size(), 0);
  broker_.Dispatch(id, 1, 1, "sys.echo", "one");
  broker_.Dispatch(id, 2, 3, "test.block", "");
  broker_.Dispatch(id, 3, 2, "sys.echo", "three");
  // Job 1 has finished (result unsent), job 2 runs, job 3 is queued.
  ASSERT_TRUE(blocker_started->WaitForNotificationWithTimeout(kWait));

  // No Welcome comes: the worker gives up on this broker and registers on
  // a new socket, listing everything it holds.
  reg = broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value()) << "no Register on a new socket, or a result "
                                  "was sent before the Welcome";
  EXPECT_NE(reg->identity, id);
  std::vector<std::pair<uint64_t, uint32_t>> held;
  for (const wire::TaskRef& ref : reg->frame.register_().held()) {
    held.emplace_back(ref.job_id(), ref.attempt());
  }
  EXPECT_EQ(held, (std::vector<std::pair<uint64_t, uint32_t>>{
                      {1, 1}, {2, 3}, {3, 2}}));

  // The held result goes out right after the Welcome.
  broker_.Welcome(reg->identity, kFastBeat, 100);
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 1u);
  EXPECT_EQ(results[0].output(), "one");
  broker_.Abandon(reg->identity, 2, 3);
  results = broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 3u);
  EXPECT_EQ(results[0].attempt(), 2u);
  EXPECT_EQ(results[0].output(), "three");
}

TEST_F(WorkerTest, ResultsSentJustBeforeAReconnectAreOfferedAgain) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.echo", "one");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  // A broker that crashed right after this result reached it may not have
  // journaled it. The restarted one answers the worker's next frame with
  // Reconnect; here the same socket plays both.
  broker_.Reconnect(id);
  std::optional<Received> reg =
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value());
  ASSERT_EQ(reg->frame.register_().held_size(), 1);
  EXPECT_EQ(reg->frame.register_().held(0).job_id(), 1u);
  broker_.Welcome(id, kFastBeat, 100);
  results = broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 1u);
  EXPECT_EQ(results[0].output(), "one");
}

TEST_F(WorkerTest, ResultsTheBrokerHasSurelySeenAreNotOfferedAgain) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.echo", "one");
  ASSERT_EQ(broker_.Results(1, absl::Now() + kWait).size(), 1u);
  // The rule is about time: a result sent more than one heartbeat interval
  // before a frame from the broker counts as seen. Let that interval pass.
  absl::SleepFor(3 * kFastBeat);
  broker_.Dispatch(id, 2, 1, "sys.echo", "two");
  ASSERT_EQ(broker_.Results(1, absl::Now() + kWait).size(), 1u);
  broker_.Reconnect(id);
  std::optional<Received> reg =
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value());
  // Job 2's result was sent after the broker's latest frame: still in doubt.
  ASSERT_EQ(reg->frame.register_().held_size(), 1);
  EXPECT_EQ(reg->frame.register_().held(0).job_id(), 2u);
}

TEST_F(WorkerTest, ARepeatedReconnectBeforeTheWelcomeIsIgnored) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  // A restarted broker answers every frame of an identity it does not know
  // with Reconnect; one Register answers them all.
  broker_.Reconnect(id);
  broker_.Reconnect(id);
  broker_.Reconnect(id);
  ASSERT_TRUE(
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait).has_value());
  broker_.Welcome(id, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.echo", "one");
  // Only the result follows (heartbeats aside): no second Register.
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  // Once welcomed, a Reconnect is a new request and is answered.
  broker_.Reconnect(id);
  EXPECT_TRUE(
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait).has_value());
}

TEST_F(WorkerTest, AbandonOfAnUnsentResultDropsIt) {
  std::shared_ptr<absl::Notification> blocker_started = RegisterBlocker();
  WorkerOptions options;
  options.threads = 1;
  const std::string id = StartAndRegister(options, kFastBeat, 100);
  broker_.Reconnect(id);
  ASSERT_TRUE(
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait).has_value());
  broker_.Dispatch(id, 1, 1, "sys.echo", "settled elsewhere");
  broker_.Dispatch(id, 2, 1, "test.block", "");
  // Job 1 finished before job 2 started; its result waits for a Welcome.
  ASSERT_TRUE(blocker_started->WaitForNotificationWithTimeout(kWait));
  broker_.Abandon(id, 1, 1);
  broker_.Abandon(id, 2, 1);
  broker_.Welcome(id, kFastBeat, 100);
  broker_.Dispatch(id, 3, 1, "sys.echo", "three");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 3u) << "an abandoned attempt was reported";
}

TEST_F(WorkerTest, AbandonOfAResultInDoubtKeepsItFromBeingOfferedAgain) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.echo", "one");
  ASSERT_EQ(broker_.Results(1, absl::Now() + kWait).size(), 1u);
  broker_.Abandon(id, 1, 1);
  broker_.Reconnect(id);
  std::optional<Received> reg =
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value());
  EXPECT_EQ(reg->frame.register_().held_size(), 0);
}

TEST_F(WorkerTest, GarbageFramesAreDroppedAndTheWorkerKeepsWorking) {
  const std::string id = StartAndRegister(WorkerOptions{});
  broker_.SendRaw(id, "this is not a protobuf \xff\xff");
  broker_.SendRaw(id, "");
  wire::Frame wrong_version;
  wrong_version.mutable_heartbeat();
  wrong_version.set_version(99);
  broker_.SendRaw(id, wrong_version.SerializeAsString());
  wire::Frame bad_dispatch;  // a task without a name
  bad_dispatch.mutable_dispatch()->add_tasks()->set_job_id(5);
  broker_.Send(id, std::move(bad_dispatch));

  broker_.Dispatch(id, 7, 1, "sys.echo", "still alive");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 7u);
  EXPECT_EQ(results[0].output(), "still alive");
}

TEST_F(WorkerTest, ReconnectFrameMakesTheWorkerRegisterAgainOnTheSameSocket) {
  const std::string id = StartAndRegister(WorkerOptions{});
  wire::Frame reconnect;
  reconnect.mutable_reconnect();
  broker_.Send(id, std::move(reconnect));
  std::optional<Received> reg =
      broker_.Expect(wire::Frame::kRegister, absl::Now() + kWait);
  ASSERT_TRUE(reg.has_value());
  EXPECT_EQ(reg->identity, id);
}

TEST_F(WorkerTest, SilentBrokerIsPresumedDeadAndResultsWaitForTheNextSession) {
  // 30 ms x 3: the worker gives up on a silent broker quickly.
  const std::string id =
      StartAndRegister(WorkerOptions{}, absl::Milliseconds(30), 3);
  // Still running when the worker reconnects; reported to the new session.
  broker_.Dispatch(id, 9, 2, "sys.sleep", "300");

  // Say nothing more. The worker must open a new socket and register again.
  std::optional<Received> again;
  const absl::Time deadline = absl::Now() + kWait;
  for (;;) {
    std::optional<Received> r = broker_.Receive(deadline);
    ASSERT_TRUE(r.has_value()) << "the worker never registered again";
    EXPECT_FALSE(r->frame.has_results())
        << "a result went to a broker presumed dead";
    if (r->frame.has_register_()) {
      again = std::move(r);
      break;
    }
  }
  EXPECT_NE(again->identity, id) << "expected a new DEALER socket";
  // Running or finished, job 9 is still ours: the new session hears of it.
  ASSERT_EQ(again->frame.register_().held_size(), 1);
  EXPECT_EQ(again->frame.register_().held(0).job_id(), 9u);
  EXPECT_EQ(again->frame.register_().held(0).attempt(), 2u);
  broker_.Welcome(again->identity, absl::Seconds(1), 3);
  std::string from;
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait, &from);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 9u);
  EXPECT_EQ(results[0].attempt(), 2u);
  EXPECT_TRUE(results[0].ok()) << results[0].error_message();
  EXPECT_EQ(from, again->identity);
}

TEST_F(WorkerTest, DrainFinishesReceivedTasksThenLeaves) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.sleep", "200");
  WaitUntilBusy(1);
  worker_->Drain();
  std::optional<Received> draining =
      broker_.Expect(wire::Frame::kWorkerState, absl::Now() + kWait);
  ASSERT_TRUE(draining.has_value());
  EXPECT_TRUE(draining->frame.worker_state().draining());
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok());
  std::optional<Received> leaving =
      broker_.Expect(wire::Frame::kWorkerState, absl::Now() + kWait);
  ASSERT_TRUE(leaving.has_value());
  EXPECT_TRUE(leaving->frame.worker_state().leaving());
  worker_->Wait();
}

TEST_F(WorkerTest, DrainTimeoutCancelsRunningTasksAndLeavesWithoutThem) {
  WorkerOptions options;
  options.drain_timeout = absl::Milliseconds(100);
  const std::string id = StartAndRegister(options, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.sleep", "60000");
  WaitUntilBusy(1);
  const absl::Time start = absl::Now();
  worker_->Drain();
  std::optional<Received> draining =
      broker_.Expect(wire::Frame::kWorkerState, absl::Now() + kWait);
  ASSERT_TRUE(draining.has_value());
  EXPECT_TRUE(draining->frame.worker_state().draining());
  std::optional<Received> leaving =
      broker_.Expect(wire::Frame::kWorkerState, absl::Now() + kWait);
  ASSERT_TRUE(leaving.has_value());
  EXPECT_TRUE(leaving->frame.worker_state().leaving());
  worker_->Wait();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(WorkerTest, ATaskIsolatedInAProcessCrashesAloneAndTheWorkerGoesOn) {
  ASSERT_TRUE(registry_
                  .Register("test.segv",
                            [](TaskContext&, absl::string_view, std::string*) {
                              ::raise(SIGSEGV);
                              return absl::OkStatus();
                            },
                            {.isolation = Isolation::kProcess})
                  .ok());
  WorkerOptions options;
  options.threads = 1;
  const std::string id = StartAndRegister(options);
  broker_.Dispatch(id, 1, 1, "test.segv", "");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error_kind(), "crashed") << results[0].error_message();
  // Thread tasks and the next isolated one both still run.
  broker_.Dispatch(id, 2, 1, "sys.echo", "thread");
  broker_.Dispatch(id, 3, 1, "test.segv", "");
  results = broker_.Results(2, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 2u);
  std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) {
    return a.job_id() < b.job_id();
  });
  EXPECT_EQ(results[0].output(), "thread");
  EXPECT_EQ(results[1].error_kind(), "crashed");
}

TEST_F(WorkerTest, ProcessIsolationAbandonKillsTheChildAndReportsNothing) {
  WorkerOptions options;
  options.threads = 1;
  options.prefetch = 1;
  options.isolation = Isolation::kProcess;
  RegisterBlocker();  // in a child: only a kill ends it
  const std::string id = StartAndRegister(options, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "test.block", "");
  WaitUntilBusy(1);
  const absl::Time abandoned_at = absl::Now();
  broker_.Abandon(id, 1, 1);
  broker_.Dispatch(id, 2, 1, "sys.echo", "after");
  std::vector<wire::TaskResult> results =
      broker_.Results(1, absl::Now() + kWait);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].job_id(), 2u);
  EXPECT_EQ(results[0].output(), "after");
  EXPECT_LT(absl::Now() - abandoned_at, absl::Seconds(2));
}

TEST_F(WorkerTest, StartRejectsBadOptions) {
  WorkerOptions options;
  options.broker = "not an endpoint";
  Worker bad_endpoint(options, &registry_);
  EXPECT_TRUE(absl::IsInvalidArgument(bad_endpoint.Start()));

  options.broker = broker_.endpoint();
  options.threads = -1;
  Worker bad_threads(options, &registry_);
  EXPECT_TRUE(absl::IsInvalidArgument(bad_threads.Start()));
}

TEST_F(WorkerTest, DestructorStopsAWorkerThatWasNeverDrained) {
  const std::string id = StartAndRegister(WorkerOptions{}, kFastBeat, 100);
  broker_.Dispatch(id, 1, 1, "sys.sleep", "60000");
  WaitUntilBusy(1);
  const absl::Time start = absl::Now();
  worker_.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace dexec::worker
