// What the broker's --http_listen serves (docs/DESIGN.md, "HTTP listener";
// docs/HTTP_API.md):
//
//   GET  /                     the dashboard (broker/dashboard/), no token
//   GET  /static/...           its assets, no token
//   POST /api/login            {"token":"..."} -> an HttpOnly, SameSite=Strict
//                              cookie dexec_token (401 for a bad token)
//   POST /api/logout           clears the cookie
//   /api/...                   the JSON API (broker/http_api.h)
//   GET  /metrics              Prometheus text exposition (broker state)
//
// Everything but the dashboard's files needs a token, as gRPC does:
// `authorization: Bearer <token>` or the cookie, with the same roles
// (admin, submit, read). An --insecure broker (no token store) lets every
// caller in as admin.
//
// Thread-safe if the backend is: ServeBrokerHttp keeps no state beyond the
// refusal counter.
#ifndef DEXEC_BROKER_HTTP_ROUTES_H_
#define DEXEC_BROKER_HTTP_ROUTES_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "broker/grpc_metrics.h"
#include "broker/http_api.h"
#include "common/http_listener.h"

namespace dexec::auth {
class TokenStore;
}

namespace dexec::broker {

struct HttpRoutes {
  const auth::TokenStore* tokens = nullptr;  // null: --insecure
  ApiBackend* backend = nullptr;
  // Requests refused for a missing or bad token (added to the broker's
  // client authentication failures).
  std::atomic<uint64_t>* auth_failures = nullptr;
  // The gRPC front end's counters, for /metrics (null: not shown).
  const GrpcMetrics* grpc = nullptr;
};

// Answers one request at `now`.
http::Response ServeBrokerHttp(const http::Request& req,
                               const HttpRoutes& routes, absl::Time now);

// The Prometheus text exposition of `snapshot` and `grpc` (may be null),
// docs/DESIGN.md "Metrics" (kept pure for its tests).
std::string RenderMetrics(const MetricsSnapshot& snapshot,
                          const GrpcMetrics* grpc, absl::Time now);

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_HTTP_ROUTES_H_
