#include "client/map_stream.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/executor.h"
#include "client/future_state.h"
#include "client/local_host.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "protos/chunk.h"
#include "protos/tasks.pb.h"

namespace dexec {
namespace {

using internal::FutureState;
using internal::LocalHost;
using internal::MapStream;

// Inputs 0..n-1 as decimal payloads; counts how many were pulled.
MapStream::InputSource Counting(int n, int* pulled) {
  return [n, pulled](std::string* out) {
    if (*pulled == n) return false;
    *out = absl::StrCat((*pulled)++);
    return true;
  };
}

MapOptions Options(size_t jobs_per_message, size_t window) {
  MapOptions o;
  o.jobs_per_message = jobs_per_message;
  o.window = window;
  o.timeout = absl::Seconds(10);
  return o;
}

class MapStreamTest : public ::testing::Test {
 protected:
  std::shared_ptr<LocalHost> host_ = std::make_shared<LocalHost>();
};

TEST_F(MapStreamTest, YieldsInInputOrderWithinTheWindow) {
  // Holds every third job until the next job is submitted, so completion order
  // differs from input order.
  std::vector<std::shared_ptr<FutureState>> held;
  std::vector<std::string> held_payloads;
  host_->set_on_submit([&](const std::string& payload,
                           const std::shared_ptr<FutureState>& state) {
    const int i = std::stoi(payload);
    if (i % 3 == 0 && i != 9999) {
      held.push_back(state);
      held_payloads.push_back(payload);
      return;
    }
    state->Complete(absl::OkStatus(), payload);
    for (size_t i = 0; i < held.size(); ++i) {
      held[i]->Complete(absl::OkStatus(), held_payloads[i]);
    }
    held.clear();
    held_payloads.clear();
  });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(
      host_, "square", Options(10, 100), Counting(10000, &pulled)));
  int expected = 0;
  for (absl::StatusOr<int> v : results) {
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_EQ(*v, expected);
    ++expected;
    // Lazy: never more than `window` inputs ahead of the consumer.
    ASSERT_LE(pulled - expected, 100);
  }
  EXPECT_EQ(expected, 10000);
  for (size_t size : host_->batch_sizes()) EXPECT_LE(size, 10u);
  EXPECT_TRUE(host_->cancel_calls().empty());
}

TEST_F(MapStreamTest, KeepsAtMostWindowJobsInFlight) {
  int pulled = 0;
  MapStream stream(host_, "t", Options(4, 10), Counting(100, &pulled));
  host_->set_on_submit(
      [](const std::string& payload, const std::shared_ptr<FutureState>& s) {
        s->Complete(absl::OkStatus(), payload);
      });
  ASSERT_TRUE(stream.Next().has_value());
  // Whole chunks only: 8 submitted (two chunks of 4), 1 yielded.
  EXPECT_EQ(pulled, 8);
  EXPECT_EQ(stream.in_flight(), 7u);
  for (int i = 0; i < 99; ++i) {
    ASSERT_TRUE(stream.Next().has_value());
    ASSERT_LE(stream.in_flight(), 10u);
  }
  EXPECT_FALSE(stream.Next().has_value());
}

TEST_F(MapStreamTest, FirstErrorCancelsOutstandingJobsInOneRpc) {
  // Inputs 0..9: 0-2 succeed, 3 fails, the rest stay queued.
  host_->set_on_submit(
      [](const std::string& payload, const std::shared_ptr<FutureState>& s) {
        const int i = std::stoi(payload);
        if (i < 3) s->Complete(absl::OkStatus(), payload);
        if (i == 3) s->Complete(internal::JobErrorToStatus("task_error", "x"));
      });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(
      host_, "t", Options(5, 100), Counting(10, &pulled)));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(results.Next()->value(), i);
  std::optional<absl::StatusOr<int>> error = results.Next();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(ErrorKind(error->status()), "task_error");
  EXPECT_FALSE(results.Next().has_value());
  EXPECT_EQ(host_->cancel_calls(),
            (std::vector<std::vector<uint64_t>>{{5, 6, 7, 8, 9, 10}}));
}

TEST_F(MapStreamTest, UndecodableResultEndsTheMapAndCancels) {
  host_->set_on_submit(
      [](const std::string& payload, const std::shared_ptr<FutureState>& s) {
        if (payload == "0") s->Complete(absl::OkStatus(), "not an int");
      });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(host_, "t", Options(3, 3),
                                                      Counting(3, &pulled)));
  EXPECT_EQ(results.Next()->status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(results.Next().has_value());
  EXPECT_EQ(host_->cancel_calls(),
            (std::vector<std::vector<uint64_t>>{{2, 3}}));
}

TEST_F(MapStreamTest, TimeoutYieldsDeadlineExceededAndCancels) {
  int pulled = 0;
  MapOptions options = Options(2, 2);
  options.timeout = absl::Milliseconds(10);
  MapStream stream(host_, "t", options, Counting(5, &pulled));
  auto r = stream.Next();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(stream.Next().has_value());
  EXPECT_EQ(host_->cancel_calls(),
            (std::vector<std::vector<uint64_t>>{{1, 2}}));
  EXPECT_EQ(pulled, 2);  // nothing submitted past the window
}

TEST_F(MapStreamTest, DestroyingEarlyCancelsOutstanding) {
  host_->set_on_submit(
      [](const std::string& payload, const std::shared_ptr<FutureState>& s) {
        if (payload == "0") s->Complete(absl::OkStatus(), payload);
      });
  int pulled = 0;
  {
    MapResults<int> results(std::make_unique<MapStream>(
        host_, "t", Options(4, 8), Counting(1000, &pulled)));
    EXPECT_EQ(results.Next()->value(), 0);
  }
  EXPECT_EQ(host_->cancel_calls(),
            (std::vector<std::vector<uint64_t>>{{2, 3, 4, 5, 6, 7, 8}}));
  EXPECT_EQ(pulled, 8);
}

TEST_F(MapStreamTest, EmptyInputEndsAtOnce) {
  int pulled = 0;
  MapStream stream(host_, "t", Options(4, 8), Counting(0, &pulled));
  EXPECT_FALSE(stream.Next().has_value());
  EXPECT_EQ(host_->jobs_submitted(), 0u);
}

// What a worker does with a chunk (worker/task_registry.cc, RunChunk):
// runs each item ("fail" fails) until the first failure.
std::string RunChunkLikeAWorker(const std::string& payload) {
  absl::StatusOr<tasks::Chunk> chunk = chunk::Decode(payload);
  EXPECT_TRUE(chunk.ok()) << chunk.status();
  tasks::ChunkResult results;
  for (const std::string& item : chunk->items()) {
    tasks::ItemResult* r = results.add_results();
    if (item == "fail") {
      r->set_error_kind("task_error");
      r->set_error_message("item said so");
      break;
    }
    r->set_ok(true);
    r->set_output(item);
  }
  return results.SerializeAsString();
}

MapOptions Chunked(size_t chunksize, size_t window) {
  MapOptions o = Options(256, window);
  o.chunksize = chunksize;
  return o;
}

TEST_F(MapStreamTest, ChunkedMapPutsChunksizeItemsInAJobAndYieldsInOrder) {
  int jobs = 0;
  host_->set_on_submit(
      [&](const std::string& payload, const std::shared_ptr<FutureState>& s) {
        ++jobs;
        s->Complete(absl::OkStatus(), RunChunkLikeAWorker(payload));
      });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(
      host_, "t", Chunked(100, 500), Counting(1050, &pulled)));
  int expected = 0;
  for (absl::StatusOr<int> v : results) {
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_EQ(*v, expected++);
    ASSERT_LE(pulled - expected, 500);
  }
  EXPECT_EQ(expected, 1050);
  EXPECT_EQ(jobs, 11) << "10 chunks of 100 and one of 50";
}

TEST_F(MapStreamTest, AnItemsErrorFailsThatElementNamingItAndCancelsTheRest) {
  // Items are their index, except item 250 (0-based) which fails; chunks
  // after the third are never answered.
  int jobs = 0;
  host_->set_on_submit([&](const std::string& payload,
                           const std::shared_ptr<FutureState>& s) {
    if (++jobs > 3) return;
    absl::StatusOr<tasks::Chunk> chunk = chunk::Decode(payload);
    std::vector<std::string> items(chunk->items().begin(),
                                   chunk->items().end());
    for (std::string& item : items) {
      if (item == "250") item = "fail";
    }
    s->Complete(absl::OkStatus(), RunChunkLikeAWorker(chunk::Encode(items)));
  });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(
      host_, "t", Chunked(100, 1000), Counting(1000, &pulled)));
  for (int i = 0; i < 250; ++i) {
    std::optional<absl::StatusOr<int>> v = results.Next();
    ASSERT_TRUE(v.has_value() && v->ok()) << i;
    ASSERT_EQ(**v, i);
  }
  std::optional<absl::StatusOr<int>> error = results.Next();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(ErrorKind(error->status()), "task_error");
  EXPECT_THAT(std::string(error->status().message()),
              ::testing::HasSubstr("map item 251"));
  EXPECT_FALSE(results.Next().has_value());
  ASSERT_EQ(host_->cancel_calls().size(), 1u) << "one Cancel RPC";
  EXPECT_EQ(host_->cancel_calls()[0].size(), 7u) << "the 7 unanswered chunks";
}

TEST_F(MapStreamTest, AFailedChunkJobFailsItsFirstItemNamingItsItems) {
  host_->set_on_submit(
      [](const std::string&, const std::shared_ptr<FutureState>& s) {
        s->Complete(internal::JobErrorToStatus("worker_lost", "gone"));
      });
  int pulled = 0;
  MapResults<int> results(std::make_unique<MapStream>(
      host_, "t", Chunked(10, 100), Counting(30, &pulled)));
  std::optional<absl::StatusOr<int>> error = results.Next();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(error->status().message()),
              ::testing::HasSubstr("map items 1-10"));
}

}  // namespace
}  // namespace dexec
