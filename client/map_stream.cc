#include "client/map_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/future.h"

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
  // One key cannot name many jobs.
  options_.submit.idempotency_key.clear();
}

MapStream::~MapStream() { Abort(); }

void MapStream::Refill() {
  // Submit whole chunks only: topping the window up one job at a time would
  // send one-job messages in the steady state.
  while (!inputs_done_ &&
         options_.window - in_flight_.size() >= options_.chunksize) {
    std::vector<std::string> payloads;
    payloads.reserve(options_.chunksize);
    std::string payload;
    while (payloads.size() < options_.chunksize && inputs_(&payload)) {
      payloads.push_back(std::move(payload));
    }
    if (payloads.size() < options_.chunksize) inputs_done_ = true;
    if (payloads.empty()) break;
    batch_.clear();
    submitter_->SubmitBatch(task_, options_.submit, std::move(payloads),
                            &batch_);
    for (std::shared_ptr<FutureState>& state : batch_) {
      in_flight_.push_back(std::move(state));
    }
    batch_.clear();
  }
}

std::optional<absl::StatusOr<std::shared_ptr<FutureState>>> MapStream::Next() {
  if (finished_) return std::nullopt;
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
    return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(timeout));
  }
  in_flight_.pop_front();
  if (!state->status().ok()) {
    Abort();
    return absl::StatusOr<std::shared_ptr<FutureState>>(state->status());
  }
  return absl::StatusOr<std::shared_ptr<FutureState>>(std::move(state));
}

void MapStream::Abort() {
  finished_ = true;
  inputs_done_ = true;
  if (in_flight_.empty()) return;
  std::vector<std::shared_ptr<FutureState>> outstanding;
  outstanding.reserve(in_flight_.size());
  for (std::shared_ptr<FutureState>& state : in_flight_) {
    if (!state->Done()) outstanding.push_back(std::move(state));
  }
  in_flight_.clear();
  if (!outstanding.empty()) CancelStates(submitter_.get(), outstanding);
}

}  // namespace internal
}  // namespace dexec
