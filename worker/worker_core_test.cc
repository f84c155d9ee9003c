// WorkerCore's decisions, driven with a manual clock and real frames: no
// socket, no thread.
#include "worker/worker_core.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "protos/wire.h"

namespace dexec::worker {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

class WorkerCoreTest : public ::testing::Test {
 protected:
  WorkerCoreTest() : core_(Options(), kT0) {}

  static WorkerCoreOptions Options() {
    WorkerCoreOptions o;
    o.name = "w1";
    o.host = "h";
    o.pid = 42;
    o.threads = 2;
    o.prefetch = 8;
    o.tasks = {"a", "b"};
    o.heartbeat_interval = absl::Seconds(1);
    o.liveness = 3;
    o.drain_timeout = absl::Seconds(5);
    return o;
  }

  WorkerOutbox& Out() {
    out_.Clear();
    return out_;
  }

  void Advance(absl::Duration d) { now_ += d; }

  void Connect() { core_.OnConnected(now_, &Out()); }

  void Welcome(int64_t max_result_bytes = 0, int64_t max_frame_bytes = 0,
               int64_t max_chunk_bytes = 0) {
    wire::Frame f;
    f.mutable_welcome()->set_heartbeat_interval_ms(1000);
    f.mutable_welcome()->set_liveness(3);
    f.mutable_welcome()->set_max_result_bytes(max_result_bytes);
    f.mutable_welcome()->set_max_frame_bytes(max_frame_bytes);
    f.mutable_welcome()->set_max_chunk_bytes(max_chunk_bytes);
    core_.OnFrame(f, now_, &Out());
  }

  // Dispatches attempt 1 of each job; returns the starts decided.
  std::vector<TaskStart> Dispatch(std::vector<uint64_t> jobs,
                                  int64_t timeout_ms = 0,
                                  uint32_t attempt = 1) {
    wire::Frame f;
    for (uint64_t job : jobs) {
      wire::Task* t = f.mutable_dispatch()->add_tasks();
      t->set_job_id(job);
      t->set_attempt(attempt);
      t->set_name("a");
      t->set_timeout_ms(timeout_ms);
    }
    core_.OnFrame(f, now_, &Out());
    return out_.start;
  }

  void Abandon(uint64_t job, uint32_t attempt = 1) {
    wire::Frame f;
    wire::TaskRef* ref = f.mutable_abandon()->add_tasks();
    ref->set_job_id(job);
    ref->set_attempt(attempt);
    core_.OnFrame(f, now_, &Out());
  }

  void Finish(const TaskStart& start, bool ok = true,
              std::string output = "out") {
    wire::TaskResult r;
    r.set_job_id(start.task.job_id());
    r.set_attempt(start.task.attempt());
    r.set_ok(ok);
    r.set_output(std::move(output));
    core_.OnFinished(start.run_id, r);
  }

  // Kinds of the frames in the last outbox.
  std::vector<wire::Frame::BodyCase> Kinds() const {
    std::vector<wire::Frame::BodyCase> kinds;
    for (const wire::Frame& f : out_.frames) kinds.push_back(f.body_case());
    return kinds;
  }

  absl::Time now_ = kT0;
  WorkerCore core_;
  WorkerOutbox out_;
};

TEST_F(WorkerCoreTest, RegistersOnConnectWithItsTasksAndCredit) {
  Connect();
  ASSERT_EQ(out_.frames.size(), 1u);
  const wire::Register& r = out_.frames[0].register_();
  EXPECT_EQ(r.name(), "w1");
  EXPECT_EQ(r.pid(), 42);
  EXPECT_EQ(r.threads(), 2);
  EXPECT_EQ(r.prefetch(), 8);
  EXPECT_EQ(std::vector<std::string>(r.tasks().begin(), r.tasks().end()),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.held_size(), 0);
  EXPECT_TRUE(r.chunked_results());
}

TEST_F(WorkerCoreTest, HeartbeatsOnlyAfterWelcomeAndOnlyWhenSilent) {
  Connect();
  Advance(absl::Milliseconds(1500));
  core_.Tick(now_, &Out());
  EXPECT_TRUE(out_.frames.empty()) << "no heartbeat before the Welcome";
  Welcome();
  core_.Tick(now_, &Out());
  EXPECT_EQ(out_.frames.size(), 1u) << "silent since the Register";
  Advance(absl::Milliseconds(999));
  core_.Tick(now_, &Out());
  EXPECT_TRUE(out_.frames.empty());
  Advance(absl::Milliseconds(1));
  core_.set_busy(3);
  core_.Tick(now_, &Out());
  ASSERT_EQ(Kinds(),
            std::vector<wire::Frame::BodyCase>{wire::Frame::kHeartbeat});
  EXPECT_EQ(out_.frames[0].heartbeat().busy(), 3);
  EXPECT_EQ(core_.NextTimer(), now_ + absl::Seconds(1));
}

TEST_F(WorkerCoreTest, DispatchStartsEachAttemptOnceWithItsDeadline) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1, 2}, /*timeout_ms=*/500);
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_NE(starts[0].run_id, starts[1].run_id);
  EXPECT_EQ(starts[0].deadline, now_ + absl::Milliseconds(500));
  EXPECT_TRUE(Dispatch({1}).empty()) << "a repeated (job, attempt)";
  EXPECT_EQ(Dispatch({1}, 0, /*attempt=*/2).size(), 1u);
  EXPECT_EQ(Dispatch({3}, 0)[0].deadline, absl::InfiniteFuture());
  EXPECT_EQ(core_.held(), 4u);
}

TEST_F(WorkerCoreTest, ResultsWaitForTheWelcomeThenGoInOneFrame) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1, 2});
  // The broker goes silent; we reconnect and register again.
  Advance(absl::Seconds(3));
  core_.Tick(now_, &Out());
  EXPECT_EQ(out_.close_linger_ms, 0);
  Finish(starts[0]);
  Finish(starts[1]);
  core_.Flush(now_, &Out());
  EXPECT_TRUE(out_.frames.empty()) << "not registered: results wait";
  Advance(WorkerCore::kInitialBackoff);
  core_.Tick(now_, &Out());
  EXPECT_TRUE(out_.connect);
  Connect();
  ASSERT_EQ(out_.frames.size(), 1u);
  EXPECT_EQ(out_.frames[0].register_().held_size(), 2)
      << "unsent results count as held";
  Welcome();
  ASSERT_EQ(Kinds(), std::vector<wire::Frame::BodyCase>{wire::Frame::kResults});
  EXPECT_EQ(out_.frames[0].results().results_size(), 2);
}

TEST_F(WorkerCoreTest, ResultsFramesAreCutUnderTheBrokersFrameLimit) {
  Connect();
  // A broker taking frames of 1 MiB of output + the envelope.
  Welcome(/*max_result_bytes=*/1 << 20,
          /*max_frame_bytes=*/(1 << 20) + wire::kFrameEnvelopeBytes);
  std::vector<TaskStart> starts = Dispatch({1, 2, 3, 4, 5});
  for (int i = 0; i < 4; ++i) {
    Finish(starts[i], true, std::string(400 << 10, 'x'));  // 400 KiB
  }
  Finish(starts[4], true, std::string(1 << 20, 'y'));  // exactly the limit
  core_.Flush(now_, &Out());
  // 400+400 | 400+400 | 1024: no frame over 1 MiB of output, none empty.
  ASSERT_EQ(out_.frames.size(), 3u);
  std::vector<uint64_t> ids;
  for (const wire::Frame& f : out_.frames) {
    ASSERT_TRUE(f.has_results());
    size_t bytes = 0;
    for (const wire::TaskResult& r : f.results().results()) {
      bytes += r.output().size();
      ids.push_back(r.job_id());
      EXPECT_TRUE(r.ok());
    }
    EXPECT_LE(bytes, size_t{1} << 20);
    EXPECT_LE(f.ByteSizeLong(), (1u << 20) + wire::kFrameEnvelopeBytes);
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3, 4, 5})) << "in order";
}

// docs/DESIGN.md, "Frame sizes": an output longer than the broker's piece
// size goes in pieces, one after another, each frame under the limit.
TEST_F(WorkerCoreTest, ALongOutputGoesInPiecesBackToBack) {
  Connect();
  Welcome(/*max_result_bytes=*/64 << 20,
          /*max_frame_bytes=*/wire::kMaxWorkerFrameBytes,
          /*max_chunk_bytes=*/wire::kMaxResultChunkBytes);
  EXPECT_EQ(core_.max_chunk_bytes(), wire::kMaxResultChunkBytes);
  std::vector<TaskStart> starts = Dispatch({1, 2, 3});
  std::string big(3 * wire::kMaxResultChunkBytes + 12345, '?');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  Finish(starts[0], true, "small");
  wire::TaskResult r;
  r.set_job_id(2);
  r.set_attempt(1);
  r.set_ok(false);
  r.set_output(big);
  r.set_error_kind("exit_code");
  r.set_error_message("exit 3");
  r.set_started_at_us(10);
  r.set_finished_at_us(20);
  core_.OnFinished(starts[1].run_id, r);
  Finish(starts[2], true, "after");
  core_.Flush(now_, &Out());
  std::vector<wire::TaskResult> sent;
  for (const wire::Frame& f : out_.frames) {
    ASSERT_TRUE(f.has_results());
    EXPECT_LE(wire::EncodeFrame(f).size(), wire::kMaxWorkerFrameBytes);
    for (const wire::TaskResult& t : f.results().results()) sent.push_back(t);
  }
  ASSERT_EQ(sent.size(), 6u);  // small, 4 pieces, after
  EXPECT_EQ(sent[0].output(), "small");
  EXPECT_EQ(sent[0].output_size(), 0u);
  std::string joined;
  for (int i = 1; i <= 4; ++i) {
    EXPECT_EQ(sent[i].job_id(), 2u);
    EXPECT_EQ(sent[i].output_size(), big.size());
    EXPECT_EQ(sent[i].output_offset(), joined.size());
    EXPECT_LE(sent[i].output().size(), wire::kMaxResultChunkBytes);
    joined += sent[i].output();
    // Only the last piece says how the task ended.
    EXPECT_EQ(sent[i].error_kind(), i == 4 ? "exit_code" : "");
  }
  EXPECT_EQ(joined, big);
  EXPECT_EQ(sent[4].error_message(), "exit 3");
  EXPECT_EQ(sent[4].finished_at_us(), 20);
  EXPECT_EQ(sent[5].output(), "after");
  // In doubt, the result is kept whole and offered again in pieces.
  EXPECT_EQ(core_.in_doubt(), 3u);
}

TEST_F(WorkerCoreTest, AnOlderBrokerGetsWholeOutputs) {
  Connect();
  Welcome(/*max_result_bytes=*/0, /*max_frame_bytes=*/0,
          /*max_chunk_bytes=*/0);
  std::vector<TaskStart> starts = Dispatch({1});
  Finish(starts[0], true, std::string(3 << 20, 'x'));
  core_.Flush(now_, &Out());
  ASSERT_EQ(out_.frames.size(), 1u);
  ASSERT_EQ(out_.frames[0].results().results_size(), 1);
  EXPECT_EQ(out_.frames[0].results().results(0).output().size(), 3u << 20);
  EXPECT_EQ(out_.frames[0].results().results(0).output_size(), 0u);
}

// Error text counts against the frame budget too: 300 failures with the
// longest message (19 MiB) go in frames the broker takes.
TEST_F(WorkerCoreTest, ResultsFramesStayUnderTheLimitWhateverTheErrorText) {
  Connect();
  Welcome(/*max_result_bytes=*/64 << 20,
          /*max_frame_bytes=*/wire::kMaxWorkerFrameBytes,
          /*max_chunk_bytes=*/wire::kMaxResultChunkBytes);
  std::vector<uint64_t> jobs;
  for (uint64_t j = 1; j <= 300; ++j) jobs.push_back(j);
  std::vector<TaskStart> starts = Dispatch(jobs);
  for (const TaskStart& start : starts) {
    wire::TaskResult r;
    r.set_job_id(start.task.job_id());
    r.set_attempt(1);
    r.set_error_kind("task_error");
    r.set_error_message(std::string(wire::kMaxErrorMessageBytes, 'e'));
    core_.OnFinished(start.run_id, r);
  }
  core_.Flush(now_, &Out());
  size_t results = 0;
  for (const wire::Frame& f : out_.frames) {
    EXPECT_LE(wire::EncodeFrame(f).size(), WorkerCore::kResultsFrameBudget);
    results += f.results().results_size();
  }
  EXPECT_EQ(results, 300u);
  EXPECT_GE(out_.frames.size(), 5u);
}

TEST_F(WorkerCoreTest, AResultOverTheBrokersLimitIsSentAsAFailure) {
  Connect();
  Welcome(/*max_result_bytes=*/1000, /*max_frame_bytes=*/0);
  std::vector<TaskStart> starts = Dispatch({1, 2});
  Finish(starts[0], true, std::string(1001, 'x'));
  Finish(starts[1], true, std::string(1000, 'x'));
  core_.Flush(now_, &Out());
  ASSERT_EQ(out_.frames.size(), 1u);
  const wire::Results& rs = out_.frames[0].results();
  ASSERT_EQ(rs.results_size(), 2);
  EXPECT_FALSE(rs.results(0).ok());
  EXPECT_EQ(rs.results(0).error_kind(), "result_too_large");
  EXPECT_EQ(rs.results(0).output(), "");
  EXPECT_NE(rs.results(0).error_message().find("1001 bytes"),
            std::string::npos);
  EXPECT_NE(rs.results(0).error_message().find("--max_result_bytes"),
            std::string::npos);
  EXPECT_TRUE(rs.results(1).ok()) << "exactly the limit is kept";
  EXPECT_EQ(rs.results(1).output().size(), 1000u);
}

TEST_F(WorkerCoreTest, SilentBrokerIsPresumedDeadAndReconnectBacksOff) {
  Connect();
  Welcome();
  Advance(absl::Milliseconds(2999));
  core_.Tick(now_, &Out());
  EXPECT_EQ(out_.close_linger_ms, -1);
  Advance(absl::Milliseconds(1));
  core_.Tick(now_, &Out());
  EXPECT_EQ(out_.close_linger_ms, 0);
  EXPECT_FALSE(core_.connected());
  EXPECT_EQ(core_.NextTimer(), now_ + absl::Milliseconds(250));
  Advance(absl::Milliseconds(250));
  core_.Tick(now_, &Out());
  ASSERT_TRUE(out_.connect);
  core_.OnConnectFailed(now_);
  EXPECT_EQ(core_.NextTimer(), now_ + absl::Milliseconds(500));
  Advance(absl::Milliseconds(500));
  core_.Tick(now_, &Out());
  ASSERT_TRUE(out_.connect);
  Connect();
  // Still no Welcome: silent again, and the backoff keeps growing.
  Advance(absl::Seconds(3));
  core_.Tick(now_, &Out());
  EXPECT_EQ(core_.NextTimer(), now_ + absl::Seconds(1));
  // A Welcome resets it.
  Advance(absl::Seconds(1));
  core_.Tick(now_, &Out());
  Connect();
  Welcome();
  Advance(absl::Seconds(3));
  core_.Tick(now_, &Out());
  EXPECT_EQ(core_.NextTimer(), now_ + WorkerCore::kInitialBackoff);
}

TEST_F(WorkerCoreTest, ReRegisterListsEveryAttemptItStillHoldsSorted) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({7, 3, 5});
  Finish(starts[0]);  // unsent until Flush
  wire::Frame reconnect;
  reconnect.mutable_reconnect();
  core_.OnFrame(reconnect, now_, &Out());
  ASSERT_EQ(out_.frames.size(), 1u);
  const wire::Register& r = out_.frames[0].register_();
  ASSERT_EQ(r.held_size(), 3);
  EXPECT_EQ(r.held(0).job_id(), 3u);
  EXPECT_EQ(r.held(1).job_id(), 5u);
  EXPECT_EQ(r.held(2).job_id(), 7u);
}

TEST_F(WorkerCoreTest, AReconnectBeforeTheWelcomeIsIgnored) {
  Connect();
  wire::Frame reconnect;
  reconnect.mutable_reconnect();
  core_.OnFrame(reconnect, now_, &Out());
  EXPECT_TRUE(out_.frames.empty());
  Welcome();
  core_.OnFrame(reconnect, now_, &Out());
  EXPECT_EQ(Kinds(),
            std::vector<wire::Frame::BodyCase>{wire::Frame::kRegister});
}

// A long output in doubt is kept whole and offered again in pieces, all
// of them, from its start: the broker dropped whatever pieces it got from
// the connection it no longer knows.
TEST_F(WorkerCoreTest, ALongOutputInDoubtIsSentAgainInPiecesFromItsStart) {
  Connect();
  Welcome(64 << 20, wire::kMaxWorkerFrameBytes, wire::kMaxResultChunkBytes);
  std::vector<TaskStart> starts = Dispatch({1});
  Finish(starts[0], true, std::string(2 * wire::kMaxResultChunkBytes + 1, 'z'));
  core_.Flush(now_, &Out());
  EXPECT_EQ(core_.in_doubt(), 1u);
  Advance(absl::Milliseconds(500));
  wire::Frame reconnect;
  reconnect.mutable_reconnect();
  core_.OnFrame(reconnect, now_, &Out());
  ASSERT_EQ(out_.frames[0].register_().held_size(), 1);
  Welcome(64 << 20, wire::kMaxWorkerFrameBytes, wire::kMaxResultChunkBytes);
  std::vector<uint64_t> offsets;
  for (const wire::Frame& f : out_.frames) {
    for (const wire::TaskResult& r : f.results().results()) {
      EXPECT_EQ(r.job_id(), 1u);
      offsets.push_back(r.output_offset());
    }
  }
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, wire::kMaxResultChunkBytes,
                                            2 * wire::kMaxResultChunkBytes}));
}

TEST_F(WorkerCoreTest, ResultsInDoubtAreOfferedAgainUntilSettled) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1, 2});
  Finish(starts[0]);
  core_.Flush(now_, &Out());
  EXPECT_EQ(core_.in_doubt(), 1u);
  // The broker says nothing for a while, then asks us to register: the
  // result may be lost, so it is held again and resent after the Welcome.
  Advance(absl::Milliseconds(500));
  wire::Frame reconnect;
  reconnect.mutable_reconnect();
  core_.OnFrame(reconnect, now_, &Out());
  EXPECT_EQ(out_.frames[0].register_().held_size(), 2);
  Welcome();
  ASSERT_EQ(Kinds(), std::vector<wire::Frame::BodyCase>{wire::Frame::kResults});
  // A frame from the broker more than an interval after the send settles
  // it: it is not offered again.
  Finish(starts[1]);
  core_.Flush(now_, &Out());
  Advance(absl::Milliseconds(1500));
  wire::Frame hb;
  hb.mutable_heartbeat();
  core_.OnFrame(hb, now_, &Out());
  core_.Tick(now_, &Out());
  EXPECT_EQ(core_.in_doubt(), 0u);
  core_.OnFrame(reconnect, now_, &Out());
  EXPECT_EQ(out_.frames[0].register_().held_size(), 0);
}

TEST_F(WorkerCoreTest, AbandonCancelsARunningAttemptAndIgnoresItsResult) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1});
  Abandon(1);
  EXPECT_EQ(out_.cancel, std::vector<uint64_t>{starts[0].run_id});
  Finish(starts[0]);
  core_.Flush(now_, &Out());
  EXPECT_TRUE(out_.frames.empty()) << "an abandoned attempt reports nothing";
  EXPECT_EQ(core_.held(), 0u);
}

TEST_F(WorkerCoreTest, AbandonOfAnUnsentOrInDoubtResultDropsIt) {
  Connect();
  std::vector<TaskStart> starts = Dispatch({1, 2});
  Finish(starts[0]);
  Finish(starts[1]);
  Abandon(1);  // unsent (no Welcome yet)
  EXPECT_TRUE(out_.cancel.empty());
  Welcome();
  ASSERT_EQ(out_.frames.size(), 1u);
  ASSERT_EQ(out_.frames[0].results().results_size(), 1);
  EXPECT_EQ(out_.frames[0].results().results(0).job_id(), 2u);
  Abandon(2);  // in doubt
  EXPECT_EQ(core_.in_doubt(), 0u);
}

TEST_F(WorkerCoreTest, ARepeatedDispatchAfterAbandonIsANewRun) {
  Connect();
  Welcome();
  std::vector<TaskStart> first = Dispatch({1});
  Abandon(1);
  std::vector<TaskStart> second = Dispatch({1});
  ASSERT_EQ(second.size(), 1u);
  Finish(first[0]);  // the abandoned run's late result
  core_.Flush(now_, &Out());
  EXPECT_TRUE(out_.frames.empty());
  Finish(second[0]);
  core_.Flush(now_, &Out());
  EXPECT_EQ(Kinds(), std::vector<wire::Frame::BodyCase>{wire::Frame::kResults});
}

TEST_F(WorkerCoreTest, DrainSaysSoThenLeavesOnceEverythingIsReported) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1});
  core_.Drain(now_, &Out());
  ASSERT_EQ(Kinds(),
            std::vector<wire::Frame::BodyCase>{wire::Frame::kWorkerState});
  EXPECT_TRUE(out_.frames[0].worker_state().draining());
  EXPECT_FALSE(out_.left);
  Finish(starts[0]);
  core_.Flush(now_, &Out());
  core_.Tick(now_, &Out());
  EXPECT_TRUE(out_.left);
  EXPECT_EQ(out_.left_reason, "drained");
  ASSERT_EQ(Kinds(),
            std::vector<wire::Frame::BodyCase>{wire::Frame::kWorkerState});
  EXPECT_TRUE(out_.frames[0].worker_state().leaving());
  EXPECT_EQ(out_.close_linger_ms, WorkerCore::kLeaveLingerMs);
}

TEST_F(WorkerCoreTest, DrainTimeoutCancelsTheRestAndLeavesWithoutThem) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1, 2});
  Finish(starts[0]);
  core_.Drain(now_, &Out());
  Advance(absl::Seconds(5));
  core_.Tick(now_, &Out());
  EXPECT_TRUE(out_.left);
  EXPECT_EQ(out_.left_reason, "drain timeout");
  EXPECT_EQ(out_.cancel, std::vector<uint64_t>{starts[1].run_id});
  EXPECT_EQ(Kinds(), (std::vector<wire::Frame::BodyCase>{
                         wire::Frame::kResults, wire::Frame::kWorkerState}));
  Finish(starts[1]);
  core_.Flush(now_, &Out());
  EXPECT_TRUE(out_.frames.empty()) << "nothing after leaving";
}

TEST_F(WorkerCoreTest, StopSendsWhatFinishedThenLeaves) {
  Connect();
  Welcome();
  std::vector<TaskStart> starts = Dispatch({1, 2});
  Finish(starts[1]);
  core_.Stop(now_, &Out());
  EXPECT_TRUE(out_.left);
  EXPECT_EQ(out_.cancel, std::vector<uint64_t>{starts[0].run_id});
  EXPECT_EQ(Kinds(), (std::vector<wire::Frame::BodyCase>{
                         wire::Frame::kResults, wire::Frame::kWorkerState}));
  EXPECT_EQ(core_.NextTimer(), absl::InfiniteFuture());
}

TEST_F(WorkerCoreTest, BadFramesAreCountedAndLoggedOncePerBurst) {
  Connect();
  core_.OnBadFrame("garbage", now_, &Out());
  EXPECT_NE(out_.bad_frame_log.find("garbage"), std::string::npos);
  core_.OnBadFrame("garbage", now_, &Out());
  EXPECT_TRUE(out_.bad_frame_log.empty());
  Advance(WorkerCore::kBadFrameLogInterval);
  core_.OnBadFrame("garbage", now_, &Out());
  EXPECT_FALSE(out_.bad_frame_log.empty());
  EXPECT_EQ(core_.bad_frames(), 3);
  wire::Frame wrong;
  wrong.mutable_results();  // only workers send Results
  core_.OnFrame(wrong, now_, &Out());
  EXPECT_FALSE(out_.bad_frame_log.empty()) << "a good frame ends the burst";
}

}  // namespace
}  // namespace dexec::worker
