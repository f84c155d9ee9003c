// The untyped engine behind MapResults<T>: pulls inputs lazily, keeps at most
// `window` items in flight, packs `chunksize` items per job (protos/chunk.h),
// submits `jobs_per_message` jobs per message, and hands back finished
// items in input order (a chunk's items as views into its job's result).
// Internal to the client library.
//
// Not thread-safe: owned by one MapResults, used by one consumer.
#ifndef DEXEC_CLIENT_MAP_STREAM_H_
#define DEXEC_CLIENT_MAP_STREAM_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/future_state.h"
#include "client/options.h"
#include "protos/chunk.h"

namespace dexec {
namespace internal {

// Where a map's jobs go (the executor's session; tests use a small real
// alternative). Thread-safe.
class BatchSubmitter : public FutureHost {
 public:
  // Queues `payloads` as jobs of `task`, sent as one Submit message of their
  // own. Appends one state per payload to `states`, in order. Never blocks
  // on the network; failures (e.g. shut down) complete the states.
  virtual void SubmitBatch(
      absl::string_view task, const SubmitOptions& options,
      std::vector<std::string> payloads,
      std::vector<std::shared_ptr<FutureState>>* states) = 0;
};

// Cancels every state of `states` that has not finished — or, without
// `running_too`, only those not running yet (Executor::Shutdown's
// cancel_futures, as Python's) — with one Cancel RPC through `host`
// (waiting for unacknowledged ids first), and completes the ones the broker
// cancelled as CANCELLED. Returns the per-state outcome of Future::Cancel.
std::vector<bool> CancelStates(
    FutureHost* host, const std::vector<std::shared_ptr<FutureState>>& states,
    bool running_too = true);

// One finished, successful map element: its result bytes, a view into the
// result of `job` (all of it, or a chunked item's output), which `job`
// keeps alive.
struct MapElement {
  std::shared_ptr<FutureState> job;
  absl::string_view result;
};

class MapStream {
 public:
  // Writes the next input's payload to *out; false when inputs are
  // exhausted.
  using InputSource = std::function<bool(std::string* out)>;

  MapStream(std::shared_ptr<BatchSubmitter> submitter, std::string task,
            MapOptions options, InputSource inputs);
  MapStream(const MapStream&) = delete;
  MapStream& operator=(const MapStream&) = delete;
  // Cancels what is still outstanding (see Abort).
  ~MapStream();

  // The next element in input order. nullopt when all were yielded. An
  // error (the job's or the item's own, or DEADLINE_EXCEEDED after
  // options.timeout) aborts the stream: later calls return nullopt.
  std::optional<absl::StatusOr<MapElement>> Next();

  // Stops submitting, cancels outstanding jobs (one Cancel RPC) and ends
  // the stream. Idempotent.
  void Abort();

  // Items submitted and not yet yielded (for tests: never above window).
  size_t in_flight() const {
    return in_flight_items_ + (split_.size() - next_split_);
  }

 private:
  void Refill();
  // The items of a finished chunk job, into split_ (views into its result,
  // held in split_job_); an error if its result is not a ChunkResult.
  absl::Status Split(std::shared_ptr<FutureState> job);

  const std::shared_ptr<BatchSubmitter> submitter_;
  const std::string task_;
  MapOptions options_;
  InputSource inputs_;
  bool inputs_done_ = false;
  bool finished_ = false;
  // Jobs submitted and not yet taken apart, with their item counts.
  std::deque<std::shared_ptr<FutureState>> in_flight_;
  std::deque<size_t> in_flight_sizes_;
  size_t in_flight_items_ = 0;
  // The chunk job being yielded, its item results, and the next to yield.
  std::shared_ptr<FutureState> split_job_;
  std::vector<chunk::ItemResultView> split_;
  size_t next_split_ = 0;
  size_t yielded_ = 0;  // items yielded so far, for error messages
  std::vector<std::shared_ptr<FutureState>> batch_;  // reused per message
};

}  // namespace internal
}  // namespace dexec

#endif  // DEXEC_CLIENT_MAP_STREAM_H_
