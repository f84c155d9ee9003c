// The dexec client: run jobs on a dexec broker the way Python's
// concurrent.futures.Executor runs calls.
//
//   absl::StatusOr<std::unique_ptr<dexec::Executor>> ex =
//       dexec::Executor::Connect({.broker = "127.0.0.1:50051"});
//   if (!ex.ok()) return ex.status();  // UNAVAILABLE: broker not reachable
//
//   // One job; returns at once.
//   dexec::Future<int64_t> f = (*ex)->Submit<int64_t>("square", 7);
//   absl::StatusOr<int64_t> r = f.Result(absl::Seconds(30));
//
//   // Many jobs, results in input order, at most `window` in flight.
//   std::vector<int64_t> xs = ...;
//   for (absl::StatusOr<int64_t> y : (*ex)->Map<int64_t>("square", xs)) {
//     if (!y.ok()) return y.status();  // the rest was cancelled
//   }
//
// Values are encoded with Codec<T> (common/codec.h); strings and anything
// convertible to absl::string_view travel as raw bytes.
//
// One Executor holds one gRPC Session stream to the broker and three threads:
// `client-send` (coalesces submits into batched messages), `client-recv`
// (reads acknowledgements and job events) and `client-callbacks` (runs done
// callbacks in order). See docs/DESIGN.md, "Client protocol".
//
// A broker restart is ridden over: the executor reconnects (for up to
// ExecutorOptions::reconnect_timeout), resends what the broker had not
// acknowledged (deduplicated by the broker) and follows its jobs again.
// Futures of jobs a broker without a journal lost fail with NOT_FOUND; if
// the broker stays away, every unresolved future fails with UNAVAILABLE.
//
// Executor is thread-safe.
#ifndef DEXEC_CLIENT_EXECUTOR_H_
#define DEXEC_CLIENT_EXECUTOR_H_

#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/future.h"
#include "client/future_state.h"
#include "client/map_stream.h"
#include "client/next_iterator.h"
#include "client/options.h"
#include "client/wait.h"
#include "common/codec.h"

namespace dexec {

namespace internal {
class Session;

template <typename In>
std::string EncodeInput(const In& input) {
  if constexpr (std::is_convertible_v<const In&, absl::string_view>) {
    return std::string(absl::string_view(input));
  } else {
    return Codec<std::decay_t<In>>::Encode(input);
  }
}

// Iterates `inputs` lazily. An lvalue range is borrowed (it must outlive the
// map); an rvalue range is moved in and owned.
template <typename Range>
MapStream::InputSource MakeInputSource(Range&& inputs) {
  if constexpr (std::is_lvalue_reference_v<Range>) {
    return [it = std::begin(inputs),
            end = std::end(inputs)](std::string* out) mutable {
      if (it == end) return false;
      *out = EncodeInput(*it);
      ++it;
      return true;
    };
  } else {
    auto owned = std::make_shared<std::decay_t<Range>>(std::move(inputs));
    return [owned, it = std::begin(*owned),
            end = std::end(*owned)](std::string* out) mutable {
      if (it == end) return false;
      *out = EncodeInput(*it);
      ++it;
      return true;
    };
  }
}
}  // namespace internal

// The results of Executor::Map, in input order. Next() returns nullopt at
// the end. On the first error (a failed job, an undecodable result, or no
// result within MapOptions::timeout) that element yields the error, the
// remaining outstanding jobs are cancelled with one Cancel RPC, and
// iteration ends. Destroying it early cancels what is outstanding.
// Range-for iterates absl::StatusOr<T>. Movable; not thread-safe (one
// consumer).
template <typename T>
class MapResults {
 public:
  explicit MapResults(std::unique_ptr<internal::MapStream> stream)
      : stream_(std::move(stream)) {}
  MapResults(MapResults&&) = default;
  MapResults& operator=(MapResults&&) = default;

  std::optional<absl::StatusOr<T>> Next() {
    if (!stream_) return std::nullopt;
    std::optional<absl::StatusOr<internal::MapElement>> e = stream_->Next();
    if (!e.has_value()) return std::nullopt;
    if (!e->ok()) return absl::StatusOr<T>(e->status());
    absl::StatusOr<T> v = internal::DecodeResult<T>(*(*e)->job, (*e)->result);
    if (!v.ok()) stream_->Abort();
    return v;
  }

  // Stops early and cancels outstanding jobs (also done by the destructor).
  void Cancel() {
    if (stream_) stream_->Abort();
  }

  using iterator = internal::NextIterator<MapResults, absl::StatusOr<T>>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(nullptr); }

 private:
  std::unique_ptr<internal::MapStream> stream_;
};

class Executor {
 public:
  // Connects to `options.broker` and opens the Session stream. UNAVAILABLE,
  // naming the address, if the broker does not answer within
  // options.connect_timeout.
  static absl::StatusOr<std::unique_ptr<Executor>> Connect(
      ExecutorOptions options = {});

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  // Shutdown(/*wait=*/true), unless Shutdown(/*wait=*/false) came first:
  // then it does not wait, and futures still pending fail with
  // FAILED_PRECONDITION (their jobs go on at the broker).
  ~Executor();

  // Submits `input` (encoded with Codec<In>) to `task`; returns at once.
  // Concurrent submits are coalesced into batched messages by the
  // `client-send` thread. If the broker is full (--max_queued) the future
  // fails with RESOURCE_EXHAUSTED (Map waits for room instead). After
  // Shutdown, returns a future already failed with FAILED_PRECONDITION;
  // after the executor gave up reconnecting, UNAVAILABLE.
  template <typename T = std::string, typename In>
  Future<T> Submit(absl::string_view task, const In& input,
                   SubmitOptions options = {}) {
    return internal::MakeFuture<T>(
        SubmitBytes(task, internal::EncodeInput(input), options));
  }

  // A future of an existing job (by id), e.g. one submitted by another
  // process. Fails with NOT_FOUND if the broker does not know the id.
  Future<std::string> Attach(uint64_t job_id);

  // Runs `task` over `inputs` lazily: inputs are read and submitted as
  // results are consumed, at most options.window at a time, in Submit
  // messages of options.jobs_per_message jobs (of options.chunksize items
  // each). A message the broker has no room for
  // waits in the client and is offered again (MapOptions). An lvalue `inputs`
  // must outlive the MapResults; an rvalue is moved in. The Executor must
  // outlive it too.
  template <typename T = std::string, typename Range>
  MapResults<T> Map(absl::string_view task, Range&& inputs,
                    MapOptions options = {}) {
    return MapResults<T>(
        StartMap(task, std::move(options),
                 internal::MakeInputSource(std::forward<Range>(inputs))));
  }

  // Stops accepting work: later Submit/Attach/Map return failed futures.
  // With cancel_futures, jobs not yet running are cancelled (queued ones
  // with one Cancel RPC). With wait, blocks until every future of this
  // executor is done (while the broker is away, up to reconnect_timeout),
  // then closes the stream and joins the threads; without, returns at once
  // and the destructor will not wait either. Idempotent; thread-safe.
  void Shutdown(bool wait = true, bool cancel_futures = false);

  // The broker address this executor talks to.
  const std::string& broker() const;

 private:
  explicit Executor(std::shared_ptr<internal::Session> session);
  std::shared_ptr<internal::FutureState> SubmitBytes(
      absl::string_view task, std::string payload,
      const SubmitOptions& options);
  std::unique_ptr<internal::MapStream> StartMap(
      absl::string_view task, MapOptions options,
      internal::MapStream::InputSource inputs);

  const std::shared_ptr<internal::Session> session_;
};

}  // namespace dexec

#endif  // DEXEC_CLIENT_EXECUTOR_H_
