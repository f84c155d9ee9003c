// Options of the client library: of an Executor, of one submit, of a Map.
#ifndef DEXEC_CLIENT_OPTIONS_H_
#define DEXEC_CLIENT_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace dexec {

struct ExecutorOptions {
  // host:port of the broker's gRPC listener.
  std::string broker = "127.0.0.1:50051";
  // At most this many jobs per Submit message on the wire. A message is
  // also cut at ~3 MiB of payload so it stays under gRPC's default 4 MiB
  // receive limit.
  size_t max_batch = 1000;
  // How long Connect waits for the broker to answer.
  absl::Duration connect_timeout = absl::Seconds(5);
};

struct SubmitOptions {
  // Higher runs first; FIFO within one priority.
  int32_t priority = 0;
  // Wall-clock limit of one attempt; zero means none.
  absl::Duration timeout = absl::ZeroDuration();
  // Attempts before the job fails for good; 0 means the broker's default.
  int32_t max_attempts = 0;
  // If set, a second submit with the same key returns the first job.
  std::string idempotency_key;
};

struct MapOptions {
  // Jobs per Submit message.
  size_t chunksize = 256;
  // Per-result wait while iterating, like Python's map(timeout=...).
  absl::Duration timeout = absl::InfiniteDuration();
  // At most this many jobs submitted and not yet yielded.
  size_t window = 10000;
  // Applied to every job of the map (idempotency_key is ignored: one key
  // cannot name many jobs).
  SubmitOptions submit;
};

}  // namespace dexec

#endif  // DEXEC_CLIENT_OPTIONS_H_
