#include "client/map_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/future.h"
#include "protos/chunk.h"
#include "protos/tasks.pb.h"

namespace dexec {
namespace internal {

MapStream::MapStream(std::shared_ptr<BatchSubmitter> submitter,
                     std::string task, MapOptions options, InputSource inputs)
    : submitter_(std::move(submitter)),
      task_(std::move(task)),
      options_(std::move(options)),
      inputs_(std::move(inputs)) {
  options_.window = std::max<size_t>(1, options_.window);
  options_.chunksize =
      std::clamp<size_t>(options_.chunksize, 1, options_.window);
  // A message's worth of chunks must fit the window, or nothing is sent.
  options_.jobs_per_message = std::clamp<size_t>(
      options_.jobs_per_message, 1,
      std::max<size_t>(1, options_.window / options_.chunksize));
  // One key cannot name many jobs.
  options_.submit.idempotency_key.clear();
}

MapStream::~MapStream() { Abort(); }

void MapStream::Refill() {
  // Submit whole messages only: topping the window up one job at a time
  // would send one-job messages in the steady state.
  const size_t per_message = options_.jobs_per_message * options_.chunksize;
  while (!inputs_done_ && options_.window - in_flight() >= per_message) {
    std::vector<std::string> payloads;
    std::vector<size_t> sizes;
    payloads.reserve(options_.jobs_per_message);
    std::string payload;
    std::vector<std::string> items;
    while (payloads.size() < options_.jobs_per_message && !inputs_done_) {
      items.clear();
      while (items.size() < options_.chunksize && inputs_(&payload)) {
        items.push_back(std::move(payload));
      }
      if (items.size() < options_.chunksize) inputs_done_ = true;
      if (items.empty()) break;
      sizes.push_back(items.size());
      if (options_.chunksize == 1) {
        payloads.push_back(std::move(items[0]));
      } else {
        payloads.push_back(chunk::Encode(items));
      }
    }
    if (payloads.empty()) break;
    batch_.clear();
    submitter_->SubmitBatch(task_, options_.submit, std::move(payloads),
                            &batch_);
    for (size_t i = 0; i < batch_.size(); ++i) {
      in_flight_.push_back(std::move(batch_[i]));
      in_flight_sizes_.push_back(sizes[i]);
      in_flight_items_ += sizes[i];
    }
    batch_.clear();
  }
}

absl::Status MapStream::Split(const std::shared_ptr<FutureState>& job) {
  tasks::ChunkResult results;
  if (!results.ParseFromString(job->result())) {
    return absl::DataLossError(
        absl::StrCat("map over '", task_,
                     "': a chunk's result is not a ChunkResult (is "
                     "the worker older than chunked maps?)"));
  }
  absl::StatusOr<uint64_t> id = job->JobId(absl::InfinitePast());
  size_t item = yielded_;
  for (const tasks::ItemResult& r : results.results()) {
    auto state = std::make_shared<FutureState>();
    if (id.ok()) state->SetJobId(*id);
    ++item;
    if (r.ok()) {
      state->Complete(absl::OkStatus(), r.output());
    } else {
      state->Complete(
          JobErrorToStatus(
              r.error_kind(),
              absl::StrCat(r.error_message(), " (map item ", item, ", in job ",
                           id.ok() ? absl::StrCat(*id) : "?", ")")),
          r.output());
    }
    split_.push_back(std::move(state));
  }
  return absl::OkStatus();
}

std::optional<absl::StatusOr<std::shared_ptr<FutureState>>> MapStream::Next() {
  if (finished_) return std::nullopt;
  if (split_.empty()) Refill();
  if (split_.empty()) {
    if (in_flight_.empty()) {
      finished_ = true;
      return std::nullopt;
    }
    std::shared_ptr<FutureState> state = in_flight_.front();
    if (!state->WaitDone(DeadlineFrom(options_.timeout))) {
      absl::StatusOr<uint64_t> id = state->JobId(absl::InfinitePast());
      absl::Status timeout = absl::DeadlineExceededError(absl::StrCat(
          "map over '", task_, "': job ",
          id.ok() ? absl::StrCat(*id) : "(not yet acknowledged)",
          " not done after ", absl::FormatDuration(options_.timeout)));
      Abort();
      return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(timeout));
    }
    const size_t items = in_flight_sizes_.front();
    in_flight_.pop_front();
    in_flight_items_ -= items;
    in_flight_sizes_.pop_front();
    if (!state->status().ok()) {
      // A failed job (chunked or not) fails its first item, and the map.
      absl::Status failed = state->status();
      if (options_.chunksize > 1) {
        // Say which items it held; keep the code and the kind.
        absl::Status named(
            failed.code(),
            absl::StrCat(failed.message(), " (map items ", yielded_ + 1, "-",
                         yielded_ + items, ", one chunked job)"));
        failed.ForEachPayload(
            [&named](absl::string_view url, const absl::Cord& payload) {
              named.SetPayload(url, payload);
            });
        failed = std::move(named);
      }
      Abort();
      return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(failed));
    }
    if (options_.chunksize == 1) {
      ++yielded_;
      return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(state));
    }
    absl::Status split = Split(state);
    if (!split.ok()) {
      Abort();
      return absl::StatusOr<std::shared_ptr<FutureState>>(split);
    }
    if (split_.empty()) return Next();  // an empty chunk: nothing to yield
  }
  std::shared_ptr<FutureState> item = std::move(split_.front());
  split_.pop_front();
  ++yielded_;
  if (!item->status().ok()) {
    Abort();
    return absl::StatusOr<std::shared_ptr<FutureState>>(item->status());
  }
  return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(item));
}

void MapStream::Abort() {
  finished_ = true;
  inputs_done_ = true;
  split_.clear();
  if (in_flight_.empty()) return;
  std::vector<std::shared_ptr<FutureState>> outstanding;
  outstanding.reserve(in_flight_.size());
  for (std::shared_ptr<FutureState>& state : in_flight_) {
    if (!state->Done()) outstanding.push_back(std::move(state));
  }
  in_flight_.clear();
  in_flight_sizes_.clear();
  in_flight_items_ = 0;
  if (!outstanding.empty()) CancelStates(submitter_.get(), outstanding);
}

}  // namespace internal
}  // namespace dexec
