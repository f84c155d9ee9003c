#include "client/map_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/future.h"
#include "protos/chunk.h"

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
    while (payloads.size() < options_.jobs_per_message && !inputs_done_) {
      if (options_.chunksize == 1) {
        if (!inputs_(&payload)) {
          inputs_done_ = true;
          break;
        }
        sizes.push_back(1);
        payloads.push_back(std::move(payload));
        continue;
      }
      // Straight into the chunk's wire form, no message object per item.
      chunk::ItemWriter items;
      while (items.size() < options_.chunksize && inputs_(&payload)) {
        items.Add(payload);
      }
      if (items.size() < options_.chunksize) inputs_done_ = true;
      if (items.size() == 0) break;
      sizes.push_back(items.size());
      payloads.push_back(std::move(items).Finish());
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

absl::Status MapStream::Split(std::shared_ptr<FutureState> job) {
  absl::StatusOr<std::vector<chunk::ItemResultView>> results =
      chunk::DecodeResults(job->result());
  if (!results.ok()) {
    return absl::DataLossError(
        absl::StrCat("map over '", task_,
                     "': a chunk's result is not a ChunkResult (is "
                     "the worker older than chunked maps?)"));
  }
  // Views into the job's result, which split_job_ keeps; no future per
  // item: a chunk's thousand items would cost a thousand locked states.
  split_ = *std::move(results);
  next_split_ = 0;
  split_job_ = std::move(job);
  return absl::OkStatus();
}

std::optional<absl::StatusOr<MapElement>> MapStream::Next() {
  if (finished_) return std::nullopt;
  if (next_split_ == split_.size()) {
    split_.clear();
    next_split_ = 0;
    split_job_.reset();
    Refill();
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
      return absl::StatusOr<MapElement>(std::move(timeout));
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
      return absl::StatusOr<MapElement>(std::move(failed));
    }
    if (options_.chunksize == 1) {
      ++yielded_;
      const absl::string_view result = state->result();
      return absl::StatusOr<MapElement>(MapElement{std::move(state), result});
    }
    absl::Status split = Split(std::move(state));
    if (!split.ok()) {
      Abort();
      return absl::StatusOr<MapElement>(split);
    }
    if (split_.empty()) return Next();  // an empty chunk: nothing to yield
  }
  const chunk::ItemResultView& item = split_[next_split_++];
  ++yielded_;
  if (!item.ok) {
    absl::StatusOr<uint64_t> id = split_job_->JobId(absl::InfinitePast());
    absl::Status failed = JobErrorToStatus(
        item.error_kind,
        absl::StrCat(item.error_message, " (map item ", yielded_, ", in job ",
                     id.ok() ? absl::StrCat(*id) : "?", ")"));
    Abort();
    return absl::StatusOr<MapElement>(std::move(failed));
  }
  return absl::StatusOr<MapElement>(MapElement{split_job_, item.output});
}

void MapStream::Abort() {
  finished_ = true;
  inputs_done_ = true;
  split_.clear();
  next_split_ = 0;
  split_job_.reset();
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
