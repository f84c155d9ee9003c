// The broker's JSON API under /api/ (docs/HTTP_API.md): the gRPC queries
// and Cancel for the web dashboard and for scripts, one JSON document per
// answer.
//
//   GET  /api/stats                 counts, rates, workers, threads
//   GET  /api/jobs?state=&task=&limit=&before_id=
//                                   newest first, paged on the broker
//   GET  /api/jobs/{id}             one job: spec, attempts, error, a
//                                   bounded preview of its result
//   POST /api/jobs/{id}/cancel      admin, or submit for its own jobs
//   GET  /api/workers               threads, busy, heartbeat age, state
//   GET  /api/whoami                the caller's token name and role
//
// HandleApi is pure: it parses the request, asks an ApiBackend for broker
// state and renders JSON. In the broker the backend posts each question to
// the broker loop and waits for its answer (the HTTP threads never touch
// BrokerCore); its tests answer from a BrokerCore they own. Authentication
// is the caller's: HandleApi gets the Caller the token or cookie resolved to
// and enforces only what the role allows (a read token may not cancel).
//
// Errors are JSON too: {"error":{"code":"NOT_FOUND","message":"..."}} with
// the HTTP status of the Status code (400, 403, 404, 405, 413, 503...).
//
// Thread-safe if the backend is: HandleApi keeps no state.
#ifndef DEXEC_BROKER_HTTP_API_H_
#define DEXEC_BROKER_HTTP_API_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/broker_core.h"
#include "broker/journal_metrics.h"
#include "protos/dexec.pb.h"

namespace dexec::broker {

// What /metrics renders of the broker's state, gathered in one question to
// the loop (http_routes.h adds the gRPC counters, read where they are).
struct MetricsSnapshot {
  v1::Stats stats;
  v1::ListWorkersResponse workers;
  CoreMetrics core;
  std::optional<JournalMetrics> journal;  // none for an in-memory broker
};

// Broker state as the API reads it. Each call returns the answer, or
// UNAVAILABLE when the broker cannot answer in time (it is shutting down
// or its loop is stalled).
class ApiBackend {
 public:
  virtual ~ApiBackend() = default;
  virtual absl::StatusOr<v1::Stats> GetStats() = 0;
  virtual absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const Caller& caller, const v1::ListJobsRequest& req) = 0;
  virtual absl::StatusOr<v1::GetJobsResponse> GetJobs(
      const Caller& caller, const v1::GetJobsRequest& req) = 0;
  virtual absl::StatusOr<v1::CancelResponse> Cancel(const Caller& caller,
                                                    uint64_t job_id) = 0;
  virtual absl::StatusOr<v1::ListWorkersResponse> ListWorkers() = 0;
  // For /metrics. By default GetStats and ListWorkers, with empty core
  // metrics and no journal.
  virtual absl::StatusOr<MetricsSnapshot> GetMetrics();
};

struct ApiRequest {
  std::string method;  // "GET", "POST"...
  std::string path;    // starts with /api/, no query
  std::string query;   // raw, without '?'
  std::string body;
};

struct ApiReply {
  int status = 200;
  std::string body;  // JSON, application/json; charset=utf-8
};

// Limits on what one answer holds (docs/HTTP_API.md).
inline constexpr int kDefaultJobsLimit = 50;
inline constexpr int kMaxJobsLimit = 500;
inline constexpr size_t kPreviewBytes = 4096;
// Jobs one /api/jobs page examines at most (ListJobsRequest.max_scan): a
// filter matching few jobs of a million stops there (about 13 ms of the
// broker loop) and answers where to go on, instead of walking them all.
inline constexpr uint32_t kMaxJobsScan = 100'000;
// A body larger than this is refused with 413 before it is parsed (no
// endpoint takes a body today; cancel and login take a few bytes).
inline constexpr size_t kMaxApiBodyBytes = 4096;

// Answers one /api/ request for `caller` at `now` (heartbeat ages).
ApiReply HandleApi(const ApiRequest& req, const Caller& caller,
                   ApiBackend& backend, absl::Time now);

// The JSON error document and HTTP status for `status` (not OK).
ApiReply ErrorReply(const absl::Status& status);

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_HTTP_API_H_
