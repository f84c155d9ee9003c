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
  // After the Session stream breaks (the broker restarted, the network
  // dropped), how long the executor keeps reconnecting (jittered backoff,
  // 50 ms doubling to 2 s) before it gives up. Giving up fails every
  // unresolved future with UNAVAILABLE, and later submits too.
  absl::Duration reconnect_timeout = absl::Seconds(60);

  // Credentials (docs/DESIGN.md, "Security"). The bearer token is the first
  // of: `token`, the file `token_file`, $DEXEC_TOKEN, the file
  // $DEXEC_TOKEN_FILE, ./dexec-data/client.token. None found: calls go
  // without one, which only an --insecure broker accepts.
  std::string token;
  std::string token_file;
  // TLS: the PEM CA that signed the broker's certificate (the broker's
  // generated one is <auth_dir>/tls/ca.pem); empty = $DEXEC_TLS_CA, else
  // plaintext (loopback only, unless the broker runs --insecure).
  std::string tls_ca;
  // This client's certificate and key (PEM files), for a broker that
  // requires them (--tls_client_ca).
  std::string tls_cert;
  std::string tls_key;
  // The name to check the broker's certificate against, when it differs
  // from the host in `broker` (e.g. connecting by IP).
  std::string tls_server_name;
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

// A Map waits for room: a chunk the broker refuses with RESOURCE_EXHAUSTED
// (its --max_queued is reached) is not an error of the map. It waits in the
// client, in input order, and is offered again with backoff (one probe at a
// time, halved while refused) until the broker takes it. The window bounds
// what waits, so this is backpressure, not unbounded buffering. A single
// Submit, which has no window, fails with RESOURCE_EXHAUSTED instead.
struct MapOptions {
  // Items per job, like ProcessPoolExecutor.map's chunksize: N > 1 puts N
  // inputs in one job (one dispatch, one result), split back in order. An
  // item's error fails that element as an unchunked map would (its message
  // names the item); cancel and retries act on whole chunks, and a job's
  // timeout covers its chunk. Needs a C++ dexec worker (protos/chunk.h).
  // Coroutine tasks run a chunk's items one after another.
  size_t chunksize = 1;
  // Jobs per Submit message on the wire (at most; the window may cut it).
  size_t jobs_per_message = 256;
  // Per-result wait while iterating, like Python's map(timeout=...).
  absl::Duration timeout = absl::InfiniteDuration();
  // At most this many items submitted and not yet yielded.
  size_t window = 10000;
  // Applied to every job of the map (idempotency_key is ignored: one key
  // cannot name many jobs).
  SubmitOptions submit;
};

}  // namespace dexec

#endif  // DEXEC_CLIENT_OPTIONS_H_
