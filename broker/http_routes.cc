#include "broker/http_routes.h"

#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "auth/token_store.h"
#include "broker/caller_of.h"
#include "broker/dashboard/dashboard_assets.h"
#include "common/proto_time.h"

namespace dexec::broker {
namespace {

constexpr absl::string_view kCookie = "dexec_token";
constexpr absl::string_view kJson = "application/json; charset=utf-8";

http::Response FromApi(const ApiReply& a) {
  http::Response r;
  r.status = a.status;
  r.content_type = std::string(kJson);
  r.body = a.body;
  r.headers.push_back({"Cache-Control", "no-store"});
  return r;
}

// The caller of `req`: its bearer header, else its cookie.
absl::StatusOr<Caller> Authenticate(const http::Request& req,
                                    const HttpRoutes& routes) {
  if (routes.tokens == nullptr) return Caller{};  // --insecure
  absl::StatusOr<auth::Principal> p;
  auto h = req.headers.find("authorization");
  if (h != req.headers.end()) {
    p = routes.tokens->AuthenticateHeader(h->second);
  } else if (std::optional<std::string> c = http::CookieValue(req, kCookie)) {
    p = routes.tokens->Authenticate(*c);
  } else {
    p = absl::UnauthenticatedError(
        "missing token: send 'authorization: Bearer <token>' or log in at / "
        "(the broker's admin token is in its --auth_dir, client.token)");
  }
  if (!p.ok()) {
    if (routes.auth_failures != nullptr) routes.auth_failures->fetch_add(1);
    return p.status();
  }
  return CallerOf(*p);
}

// The "token" of a login body {"token":"..."}, empty if the body is not
// that. Tokens are `dexec_` and hex, so a string with escapes is refused
// rather than decoded. (By hand: protobuf's JSON parser goes through its
// Map, whose inline code does not match Debian's library under TSan.)
std::string TokenOfLoginBody(absl::string_view body) {
  auto skip_ws = [&body] {
    while (!body.empty() && absl::ascii_isspace(body.front())) {
      body.remove_prefix(1);
    }
  };
  skip_ws();
  if (!absl::ConsumePrefix(&body, "{")) return "";
  skip_ws();
  if (!absl::ConsumePrefix(&body, "\"token\"")) return "";
  skip_ws();
  if (!absl::ConsumePrefix(&body, ":")) return "";
  skip_ws();
  if (!absl::ConsumePrefix(&body, "\"")) return "";
  const size_t end = body.find('"');
  if (end == absl::string_view::npos) return "";
  absl::string_view token = body.substr(0, end);
  if (absl::StrContains(token, '\\')) return "";
  body.remove_prefix(end + 1);
  skip_ws();
  if (body != "}") return "";
  return std::string(token);
}

http::Response Login(const http::Request& req, const HttpRoutes& routes,
                     absl::Time now) {
  if (req.method != "POST") {
    return FromApi(ErrorReply(absl::InvalidArgumentError(
        "POST /api/login with {\"token\":\"...\"}")));
  }
  if (req.body.size() > kMaxApiBodyBytes) {
    return FromApi(ErrorReply(absl::ResourceExhaustedError(
        absl::StrCat("body of ", req.body.size(), " bytes; the limit is ",
                     kMaxApiBodyBytes))));
  }
  std::string token = TokenOfLoginBody(req.body);
  if (token.empty()) {
    return FromApi(ErrorReply(absl::InvalidArgumentError(
        "the body must be JSON {\"token\":\"...\"} with a dexec token")));
  }
  Caller caller;
  if (routes.tokens != nullptr) {
    absl::StatusOr<auth::Principal> p = routes.tokens->Authenticate(token);
    if (!p.ok()) {
      if (routes.auth_failures != nullptr) routes.auth_failures->fetch_add(1);
      return FromApi(ErrorReply(p.status()));
    }
    caller = CallerOf(*p);
  }
  // The answer is whoami's for the token just checked.
  http::Response r = FromApi(HandleApi(ApiRequest{"GET", "/api/whoami", "", ""},
                                       caller, *routes.backend, now));
  r.headers.push_back(
      {"Set-Cookie", absl::StrCat(kCookie, "=", token,
                                  "; HttpOnly; SameSite=Strict; Path=/")});
  return r;
}

http::Response Logout() {
  http::Response r;
  r.content_type = std::string(kJson);
  r.body = "{}";
  r.headers.push_back(
      {"Set-Cookie",
       absl::StrCat(kCookie,
                    "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")});
  return r;
}

void Series(std::string* out, absl::string_view name, absl::string_view type,
            absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type,
                  "\n");
}

}  // namespace

std::string RenderMetrics(const v1::Stats& s,
                          const v1::ListWorkersResponse& workers,
                          absl::Time now) {
  std::string out;
  Series(&out, "dexec_jobs", "gauge", "Jobs the broker holds, by state.");
  for (auto [state, n] :
       {std::pair<absl::string_view, uint64_t>{"queued", s.queued()},
        {"running", s.running()},
        {"succeeded", s.succeeded()},
        {"failed", s.failed()},
        {"cancelled", s.cancelled()}}) {
    absl::StrAppend(&out, "dexec_jobs{state=\"", state, "\"} ", n, "\n");
  }
  Series(&out, "dexec_jobs_submitted_total", "counter",
         "Jobs accepted since the broker started.");
  absl::StrAppend(&out, "dexec_jobs_submitted_total ", s.submitted_total(),
                  "\n");
  Series(&out, "dexec_jobs_finished_total", "counter",
         "Jobs that reached a terminal state since the broker started, by "
         "outcome.");
  absl::StrAppend(&out, "dexec_jobs_finished_total{outcome=\"succeeded\"} ",
                  s.succeeded_total(), "\n",
                  "dexec_jobs_finished_total{outcome=\"failed\"} ",
                  s.failed_total(), "\n",
                  "dexec_jobs_finished_total{outcome=\"cancelled\"} ",
                  s.cancelled_total(), "\n");
  Series(&out, "dexec_queue_wait_seconds", "summary",
         "Queue wait of the dispatches of the last 60 s.");
  absl::StrAppend(&out, "dexec_queue_wait_seconds{quantile=\"0.5\"} ",
                  absl::ToDoubleSeconds(dexec::FromProto(s.wait_p50())), "\n",
                  "dexec_queue_wait_seconds{quantile=\"0.99\"} ",
                  absl::ToDoubleSeconds(dexec::FromProto(s.wait_p99())), "\n",
                  "dexec_queue_wait_seconds_count ", s.wait_samples(), "\n");
  uint64_t ready = 0, draining = 0, busy = 0, threads = 0;
  double oldest_heartbeat = 0;
  for (const v1::WorkerInfo& w : workers.workers()) {
    (w.state() == v1::WorkerInfo::DRAINING ? draining : ready)++;
    busy += static_cast<uint64_t>(std::max(0, w.busy()));
    threads += static_cast<uint64_t>(std::max(0, w.threads()));
    if (w.has_last_heartbeat()) {
      oldest_heartbeat = std::max(
          oldest_heartbeat,
          absl::ToDoubleSeconds(now - dexec::FromProto(w.last_heartbeat())));
    }
  }
  Series(&out, "dexec_workers", "gauge", "Connected workers, by state.");
  absl::StrAppend(&out, "dexec_workers{state=\"ready\"} ", ready, "\n",
                  "dexec_workers{state=\"draining\"} ", draining, "\n");
  Series(&out, "dexec_worker_threads", "gauge",
         "Threads of the connected workers.");
  absl::StrAppend(&out, "dexec_worker_threads ", threads, "\n");
  Series(&out, "dexec_worker_busy", "gauge",
         "Jobs the connected workers hold (running or prefetched).");
  absl::StrAppend(&out, "dexec_worker_busy ", busy, "\n");
  Series(&out, "dexec_worker_heartbeat_age_max_seconds", "gauge",
         "Age of the stalest connected worker's last heartbeat.");
  absl::StrAppend(&out, "dexec_worker_heartbeat_age_max_seconds ",
                  oldest_heartbeat, "\n");
  Series(&out, "dexec_auth_failures_total", "counter",
         "Refused credentials, by plane (client: gRPC and HTTP tokens; "
         "worker: CURVE handshakes).");
  absl::StrAppend(&out, "dexec_auth_failures_total{plane=\"client\"} ",
                  s.client_auth_failures(), "\n",
                  "dexec_auth_failures_total{plane=\"worker\"} ",
                  s.worker_auth_failures(), "\n");
  Series(&out, "dexec_uptime_seconds", "gauge", "Seconds since start.");
  absl::StrAppend(&out, "dexec_uptime_seconds ",
                  absl::ToDoubleSeconds(dexec::FromProto(s.uptime())), "\n");
  return out;
}

http::Response ServeBrokerHttp(const http::Request& req,
                               const HttpRoutes& routes, absl::Time now) {
  if (req.method == "GET" &&
      (req.path == "/" || absl::StartsWith(req.path, "/static/"))) {
    const DashboardAsset* a = FindDashboardAsset(req.path);
    http::Response r;
    if (a == nullptr) {
      r.status = 404;
      r.body = "not found\n";
      return r;
    }
    r.content_type = std::string(a->content_type);
    r.body = std::string(a->body);
    r.headers.push_back(
        {"Content-Security-Policy",
         "default-src 'self'; frame-ancestors 'none'; form-action 'self'"});
    r.headers.push_back({"X-Frame-Options", "DENY"});
    return r;
  }
  if (req.path == "/api/login") return Login(req, routes, now);
  if (req.path == "/api/logout") return Logout();
  absl::StatusOr<Caller> caller = Authenticate(req, routes);
  if (req.path == "/metrics") {
    http::Response r;
    if (!caller.ok()) {
      r.status = 401;
      r.body = absl::StrCat(caller.status().message(), "\n");
      return r;
    }
    absl::StatusOr<v1::Stats> stats = routes.backend->GetStats();
    absl::StatusOr<v1::ListWorkersResponse> workers =
        routes.backend->ListWorkers();
    if (!stats.ok() || !workers.ok()) {
      r.status = 503;
      r.body = absl::StrCat(
          (!stats.ok() ? stats.status() : workers.status()).message(), "\n");
      return r;
    }
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = RenderMetrics(*stats, *workers, now);
    return r;
  }
  if (absl::StartsWith(req.path, "/api/")) {
    if (!caller.ok()) return FromApi(ErrorReply(caller.status()));
    ApiRequest a{req.method, req.path, req.query, req.body};
    return FromApi(HandleApi(a, *caller, *routes.backend, now));
  }
  http::Response r;
  r.status = 404;
  r.body = "not found: the broker serves /, /api/ and /metrics\n";
  return r;
}

}  // namespace dexec::broker
