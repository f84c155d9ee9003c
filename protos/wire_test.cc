#include "protos/wire.h"

#include <cstdint>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dexec::wire {
namespace {

Frame RegisterFrame() {
  Frame f;
  Register* r = f.mutable_register_();
  r->set_name("w1");
  r->set_threads(4);
  r->add_tasks("sys.echo");
  return f;
}

TEST(Wire, RoundTripsARegister) {
  absl::StatusOr<Frame> f = DecodeFrame(EncodeFrame(RegisterFrame()));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), kProtocolVersion);
  EXPECT_EQ(f->register_().name(), "w1");
  EXPECT_EQ(f->register_().tasks(0), "sys.echo");
}

TEST(Wire, RejectsEmptyBytes) {
  EXPECT_EQ(DecodeFrame("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Wire, RejectsGarbage) {
  // 0xff is an invalid wire type / field tag: not a protobuf.
  std::string garbage = "\xff\xff\xff\xff garbage \x01\x02";
  absl::StatusOr<Frame> f = DecodeFrame(garbage);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Wire, RejectsEveryTruncationOfAValidFrame) {
  Frame frame = RegisterFrame();
  frame.mutable_register_()->add_tasks("a.much.longer.task.name");
  std::string bytes = EncodeFrame(frame);
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<Frame> f = DecodeFrame(bytes.substr(0, n));
    EXPECT_FALSE(f.ok()) << "a truncation to " << n << " of " << bytes.size()
                         << " bytes decoded";
  }
}

TEST(Wire, RejectsAnotherProtocolVersion) {
  Frame frame = RegisterFrame();
  frame.set_version(kProtocolVersion + 1);
  absl::StatusOr<Frame> f = DecodeFrame(frame.SerializeAsString());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("protocol version"), std::string::npos);
}

TEST(Wire, RejectsAFrameWithoutBody) {
  Frame frame;
  absl::StatusOr<Frame> f = DecodeFrame(EncodeFrame(frame));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Wire, RejectsARegisterWithoutThreads) {
  Frame frame = RegisterFrame();
  frame.mutable_register_()->set_threads(0);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(frame)).ok());
}

TEST(Wire, ChecksARegistersCoroutineTasks) {
  Frame ok = RegisterFrame();
  ok.mutable_register_()->add_tasks("co");
  ok.mutable_register_()->add_async_tasks("co");
  ok.mutable_register_()->set_concurrency(10000);
  EXPECT_TRUE(DecodeFrame(EncodeFrame(ok)).ok());
  Frame not_offered = ok;
  not_offered.mutable_register_()->add_async_tasks("elsewhere");
  EXPECT_FALSE(DecodeFrame(EncodeFrame(not_offered)).ok());
  Frame no_slots = ok;
  no_slots.mutable_register_()->set_concurrency(0);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(no_slots)).ok());
  Frame negative = ok;
  negative.mutable_register_()->set_concurrency(-1);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(negative)).ok());
}

TEST(Wire, RejectsARegisterTooBigToHold) {
  Frame long_name = RegisterFrame();
  long_name.mutable_register_()->set_name(std::string(257, 'n'));
  EXPECT_FALSE(DecodeFrame(EncodeFrame(long_name)).ok());
  Frame long_task = RegisterFrame();
  long_task.mutable_register_()->add_tasks(std::string(257, 't'));
  EXPECT_FALSE(DecodeFrame(EncodeFrame(long_task)).ok());
  Frame many_tasks = RegisterFrame();
  for (int i = 0; i <= kMaxRegisterTasks; ++i) {
    many_tasks.mutable_register_()->add_tasks(absl::StrCat("t", i));
  }
  absl::StatusOr<Frame> f = DecodeFrame(EncodeFrame(many_tasks));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("4096"), std::string::npos) << f.status();
  // At the limits it is fine.
  Frame at_limit = RegisterFrame();
  at_limit.mutable_register_()->set_name(std::string(256, 'n'));
  at_limit.mutable_register_()->add_tasks(std::string(256, 't'));
  EXPECT_TRUE(DecodeFrame(EncodeFrame(at_limit)).ok());
}

TEST(Wire, AResultWithInvalidUtf8ErrorTextStillParses) {
  Frame frame;
  TaskResult* r = frame.mutable_results()->add_results();
  r->set_job_id(1);
  r->set_attempt(1);
  r->set_error_kind("task_error");
  r->set_error_message(std::string("bad \xff\xfe bytes \xc3", 14));
  TaskResult* ok = frame.mutable_results()->add_results();
  ok->set_job_id(2);
  ok->set_attempt(1);
  ok->set_ok(true);
  ok->set_output(std::string("\xff\x00\xfe", 3));  // bytes: untouched
  absl::StatusOr<Frame> f = DecodeFrame(EncodeFrame(frame));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->results().results_size(), 2);
  EXPECT_EQ(f->results().results(0).error_message(),
            "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes \xEF\xBF\xBD");
  EXPECT_EQ(f->results().results(1).output(), std::string("\xff\x00\xfe", 3));
  EXPECT_EQ(ValidUtf8("h\xC3\xA9llo \xE2\x82\xAC"),
            "h\xC3\xA9llo \xE2\x82\xAC");
  EXPECT_EQ(ValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(ValidUtf8("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(Wire, RejectsADispatchedTaskWithoutName) {
  Frame frame;
  Task* t = frame.mutable_dispatch()->add_tasks();
  t->set_job_id(7);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(frame)).ok());
}

TEST(Wire, RejectsAResultWithoutJobId) {
  Frame frame;
  frame.mutable_results()->add_results()->set_ok(true);
  EXPECT_FALSE(DecodeFrame(EncodeFrame(frame)).ok());
}

TEST(Wire, AResultsErrorTextIsCutToItsBoundOnAUtf8Boundary) {
  EXPECT_EQ(TruncateUtf8("abc", 5), "abc");
  EXPECT_EQ(TruncateUtf8("abc", 2), "ab");
  // "é" is two bytes: a cut inside it drops it whole.
  EXPECT_EQ(TruncateUtf8("a\xC3\xA9", 2), "a");
  EXPECT_EQ(TruncateUtf8("a\xC3\xA9", 3), "a\xC3\xA9");
  Frame frame;
  TaskResult* r = frame.mutable_results()->add_results();
  r->set_job_id(1);
  r->set_attempt(1);
  r->set_error_kind(std::string(1000, 'k'));
  r->set_error_message(std::string(kMaxErrorMessageBytes + 10, 'm'));
  absl::StatusOr<Frame> back = DecodeFrame(EncodeFrame(frame));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->results().results(0).error_message().size(),
            kMaxErrorMessageBytes);
  EXPECT_EQ(back->results().results(0).error_kind().size(), kMaxErrorKindBytes);
}

// The biggest frames a legitimate worker sends fit the broker's worker
// socket limit, so no worker at its limits loses its connection.
TEST(Wire, TheBiggestLegitimateWorkerFramesFitTheFrameLimit) {
  Frame reg;
  Register* r = reg.mutable_register_();
  r->set_name(std::string(kMaxRegisterNameBytes, 'n'));
  r->set_host(std::string(kMaxRegisterNameBytes, 'h'));
  r->set_pid(INT32_MAX);
  r->set_threads(100000);
  r->set_prefetch(100000);
  r->set_concurrency(1000000);
  r->set_chunked_results(true);
  for (int i = 0; i < kMaxRegisterTasks; ++i) {
    std::string name = absl::StrCat(i, "-");
    name.resize(kMaxRegisterNameBytes, 't');
    r->add_tasks(name);
    r->add_async_tasks(name);
  }
  for (int i = 0; i < kMaxRegisterHeld; ++i) {
    TaskRef* ref = r->add_held();
    ref->set_job_id(UINT64_MAX - i);  // the longest varints there are
    ref->set_attempt(UINT32_MAX);
  }
  const std::string reg_bytes = EncodeFrame(reg);
  ASSERT_TRUE(DecodeFrame(reg_bytes).ok());
  EXPECT_LE(reg_bytes.size(), kMaxWorkerFrameBytes);
  std::cerr << "largest Register: " << reg_bytes.size() << " bytes of "
            << kMaxWorkerFrameBytes << "\n";

  // One whole output of a chunk's length, or one piece, with the longest
  // error text: well under the limit, as EncodeFrame cuts the text.
  for (bool piece : {false, true}) {
    Frame results;
    TaskResult* t = results.mutable_results()->add_results();
    t->set_job_id(UINT64_MAX);
    t->set_attempt(UINT32_MAX);
    t->set_output(std::string(kMaxResultChunkBytes, 'o'));
    if (piece) {
      t->set_output_size(UINT64_MAX);
      t->set_output_offset(UINT64_MAX - kMaxResultChunkBytes);
    }
    t->set_error_kind(std::string(10 * kMaxErrorKindBytes, 'k'));
    t->set_error_message(std::string(10 * kMaxErrorMessageBytes, 'm'));
    t->set_started_at_us(INT64_MAX);
    t->set_finished_at_us(INT64_MAX);
    const std::string bytes = EncodeFrame(results);
    ASSERT_TRUE(DecodeFrame(bytes).ok());
    EXPECT_LE(bytes.size(), kMaxResultChunkBytes + kFrameEnvelopeBytes);
  }
}

TEST(Wire, RejectsAPieceOutsideItsOutput) {
  auto piece = [](uint64_t size, uint64_t offset, size_t len) {
    Frame f;
    TaskResult* t = f.mutable_results()->add_results();
    t->set_job_id(1);
    t->set_attempt(1);
    t->set_output(std::string(len, 'x'));
    t->set_output_size(size);
    t->set_output_offset(offset);
    return DecodeFrame(EncodeFrame(f)).ok();
  };
  EXPECT_TRUE(piece(10, 0, 4));
  EXPECT_TRUE(piece(10, 6, 4));   // the last piece
  EXPECT_FALSE(piece(10, 8, 4));  // past the end
  EXPECT_FALSE(piece(10, 4, 0));  // empty
  EXPECT_FALSE(piece(10, 10, 1));
  EXPECT_FALSE(piece(UINT64_MAX, UINT64_MAX - 1, 4));  // no overflow
  EXPECT_FALSE(piece(0, 3, 4));  // an offset without a size
  EXPECT_TRUE(piece(0, 0, 4));   // a whole output
}

}  // namespace
}  // namespace dexec::wire
