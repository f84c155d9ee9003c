// http.get: an HTTP request made by a coroutine task (worker/task.h) on
// libcurl: on a worker's loop, one curl multi handle per loop thread whose
// sockets and timer the loop's epoll watches, so a waiting request holds
// no thread (docs/DESIGN.md, "Executors"); on a thread, a multi of its own.
// On a loop, plain http:// to an address literal skips curl: it is sent
// on the loop's own awaitables over pooled keep-alive connections
// (plain_http.h), with the same request headers and the same results.
//
// The payload is a URL (http:// or https://), or a dexec.tasks.HttpRequest
// (method, URL, headers, body, timeout). The output is always a
// dexec.tasks.HttpResponse (status, headers, body):
//   - 2xx: the task succeeds;
//   - another status: kind "http_status", the response kept as output;
//   - no answer (refused, reset, DNS): kind "http_error";
//   - the request's timeout_ms: kind "timeout"; cancel: "cancelled";
//   - a payload that is neither: kind "bad_payload".
// Bodies over kHttpMaxBodyBytes fail with kind "http_error".
#ifndef DEXEC_WORKER_HTTP_TASK_H_
#define DEXEC_WORKER_HTTP_TASK_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "worker/task_registry.h"

namespace dexec::worker {

inline constexpr size_t kHttpMaxBodyBytes = 64 << 20;

struct HttpTaskOptions {
  // The most connections http.get opens at once in this worker, split
  // between its loop threads (dexec-worker --http_max_connections); the
  // requests beyond wait for one, first come first served. 0: as many as
  // the file descriptor limit holds, less a reserve for the worker's own.
  long max_connections = 0;
  // Whether http:// requests to an address literal go the plain path
  // (plain_http.h) rather than through curl (dexec-worker --http_plain).
  bool plain = true;
};

// http.get's requests in this process so far, by the client that sent
// them (dexec_worker_http_requests_total), and the connections the plain
// path opened (its reuse: requests per connection).
struct HttpCounts {
  uint64_t plain_requests = 0;
  uint64_t curl_requests = 0;
  uint64_t plain_connections = 0;
};
HttpCounts HttpTaskCounts();

// Registers "http.get" (a coroutine task) in `registry`.
absl::Status RegisterHttpTask(TaskRegistry* registry,
                              HttpTaskOptions options = {});

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_HTTP_TASK_H_
