#include "broker/http_routes.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "auth/token_store.h"
#include "broker/caller_of.h"
#include "broker/dashboard/dashboard_assets.h"
#include "common/prometheus_text.h"
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

}  // namespace

std::string RenderMetrics(const MetricsSnapshot& m, const GrpcMetrics* grpc,
                          absl::Time now) {
  const v1::Stats& s = m.stats;
  PrometheusText t;
  t.Family("dexec_jobs", "gauge",
           "Jobs the broker holds, by state (finished ones until their "
           "retention ends).");
  for (auto [state, n] :
       {std::pair<absl::string_view, uint64_t>{"queued", s.queued()},
        {"running", s.running()},
        {"succeeded", s.succeeded()},
        {"failed", s.failed()},
        {"cancelled", s.cancelled()}}) {
    t.Sample("dexec_jobs", {{"state", state}}, n);
  }
  t.Family("dexec_jobs_submitted_total", "counter",
           "Jobs accepted since the broker started.");
  t.Sample("dexec_jobs_submitted_total", s.submitted_total());
  t.Family("dexec_jobs_finished_total", "counter",
           "Jobs that reached a terminal state since the broker started, by "
           "outcome.");
  t.Sample("dexec_jobs_finished_total", {{"outcome", "succeeded"}},
           s.succeeded_total());
  t.Sample("dexec_jobs_finished_total", {{"outcome", "failed"}},
           s.failed_total());
  t.Sample("dexec_jobs_finished_total", {{"outcome", "cancelled"}},
           s.cancelled_total());

  // By task, for at most --max_task_series names (task_metrics.h), the
  // rest under task="(other)"; sorted so the text is stable.
  std::vector<const TaskSeries*> tasks;
  tasks.reserve(m.core.tasks.size());
  for (const TaskSeries& ts : m.core.tasks) tasks.push_back(&ts);
  std::sort(tasks.begin(), tasks.end(),
            [](const TaskSeries* a, const TaskSeries* b) {
              return a->task < b->task;
            });
  t.Family("dexec_task_jobs_submitted_total", "counter",
           "Jobs accepted since the broker started, by task (at most "
           "--max_task_series tasks; the rest, and tasks evicted to make "
           "room, under task=\"(other)\").");
  for (const TaskSeries* ts : tasks) {
    t.Sample("dexec_task_jobs_submitted_total", {{"task", ts->task}},
             ts->submitted);
  }
  t.Family("dexec_task_jobs_finished_total", "counter",
           "Jobs finished since the broker started, by task and outcome.");
  for (const TaskSeries* ts : tasks) {
    t.Sample("dexec_task_jobs_finished_total",
             {{"task", ts->task}, {"outcome", "succeeded"}}, ts->succeeded);
    t.Sample("dexec_task_jobs_finished_total",
             {{"task", ts->task}, {"outcome", "failed"}}, ts->failed);
    t.Sample("dexec_task_jobs_finished_total",
             {{"task", ts->task}, {"outcome", "cancelled"}}, ts->cancelled);
  }
  t.Family("dexec_task_jobs", "gauge",
           "Jobs queued and running now, by task (0 once drained).");
  for (const TaskSeries* ts : tasks) {
    t.Sample("dexec_task_jobs", {{"task", ts->task}, {"state", "queued"}},
             ts->queued);
    t.Sample("dexec_task_jobs", {{"task", ts->task}, {"state", "running"}},
             ts->running);
  }

  t.AddHistogram("dexec_queue_wait_seconds",
                 "Queue wait of each dispatch: from submit, or from the end "
                 "of the previous attempt, to dispatch.",
                 m.core.queue_wait);
  t.AddHistogram("dexec_submit_to_start_seconds",
                 "From submit to the first dispatch, once per job.",
                 m.core.submit_to_start);
  t.AddHistogram("dexec_run_time_seconds",
                 "Run time of each attempt whose result the broker took "
                 "(the worker's start to finish).",
                 m.core.run_time);
  t.Family("dexec_requeues_total", "counter",
           "Jobs put back in the queue for another attempt, by reason.");
  for (size_t i = 0; i < kRequeueReasonCount; ++i) {
    t.Sample("dexec_requeues_total", {{"reason", kRequeueReasons[i]}},
             m.core.requeues[i]);
  }
  t.Family("dexec_oldest_queued_job_age_seconds", "gauge",
           "Seconds since the submit of the queued job held longest (0 when "
           "none is queued).");
  t.Sample("dexec_oldest_queued_job_age_seconds",
           absl::ToDoubleSeconds(m.core.oldest_queued_age));

  uint64_t ready = 0, draining = 0, busy = 0, threads = 0;
  double oldest_heartbeat = 0;
  for (const v1::WorkerInfo& w : m.workers.workers()) {
    (w.state() == v1::WorkerInfo::DRAINING ? draining : ready)++;
    busy += static_cast<uint64_t>(std::max(0, w.busy()));
    threads += static_cast<uint64_t>(std::max(0, w.threads()));
    if (w.has_last_heartbeat()) {
      oldest_heartbeat = std::max(
          oldest_heartbeat,
          absl::ToDoubleSeconds(now - dexec::FromProto(w.last_heartbeat())));
    }
  }
  t.Family("dexec_workers", "gauge", "Connected workers, by state.");
  t.Sample("dexec_workers", {{"state", "ready"}}, ready);
  t.Sample("dexec_workers", {{"state", "draining"}}, draining);
  t.Family("dexec_worker_threads", "gauge",
           "Threads of the connected workers.");
  t.Sample("dexec_worker_threads", threads);
  t.Family("dexec_worker_busy", "gauge",
           "Jobs the connected workers hold (running or prefetched).");
  t.Sample("dexec_worker_busy", busy);
  t.Family("dexec_worker_heartbeat_age_max_seconds", "gauge",
           "Age of the stalest connected worker's last heartbeat.");
  t.Sample("dexec_worker_heartbeat_age_max_seconds", oldest_heartbeat);

  if (m.journal.has_value()) {
    t.AddHistogram("dexec_journal_commit_seconds",
                   "Per journal round that wrote anything: its writes and "
                   "its one sync.",
                   m.journal->commit_seconds);
    t.AddHistogram("dexec_journal_round_records",
                   "Records (job records, payloads, batch keys) written per "
                   "journal round.",
                   m.journal->round_records);
  }

  if (grpc != nullptr) {
    t.Family("dexec_grpc_requests_total", "counter",
             "gRPC calls answered, by method and status code (every "
             "method's OK always; other codes once seen). A Session stream "
             "counts once, when it ends.");
    for (size_t method = 0; method < kGrpcMethodCount; ++method) {
      for (size_t code = 0; code < kGrpcCodeCount; ++code) {
        const uint64_t n = grpc->calls(method, code);
        if (n == 0 && (code != 0 || method + 1 == kGrpcMethodCount)) continue;
        t.Sample(
            "dexec_grpc_requests_total",
            {{"method", kGrpcMethods[method]}, {"code", GrpcCodeName(code)}},
            n);
      }
    }
    t.Family("dexec_grpc_session_streams_opened_total", "counter",
             "Session streams opened (authenticated).");
    t.Sample("dexec_grpc_session_streams_opened_total",
             grpc->sessions_opened());
    t.Family("dexec_grpc_session_requests_total", "counter",
             "Messages read on Session streams, by kind (submit, watch, "
             "other: unparsable or empty).");
    for (size_t k = 0; k < static_cast<size_t>(SessionRequestKind::kCount);
         ++k) {
      t.Sample("dexec_grpc_session_requests_total",
               {{"kind", kSessionRequestKinds[k]}},
               grpc->session_requests(static_cast<SessionRequestKind>(k)));
    }
  }

  t.Family("dexec_auth_failures_total", "counter",
           "Refused credentials, by plane (client: gRPC and HTTP tokens; "
           "worker: CURVE handshakes).");
  t.Sample("dexec_auth_failures_total", {{"plane", "client"}},
           s.client_auth_failures());
  t.Sample("dexec_auth_failures_total", {{"plane", "worker"}},
           s.worker_auth_failures());
  t.Family("dexec_forged_results_total", "counter",
           "Worker results dropped because they came from a key their "
           "attempt was not dispatched to.");
  t.Sample("dexec_forged_results_total", s.forged_results());
  t.Family("dexec_bad_result_pieces_total", "counter",
           "Pieces of chunked worker results dropped as broken (out of "
           "order, interleaved, or from an unregistered identity).");
  t.Sample("dexec_bad_result_pieces_total", s.bad_result_pieces());
  t.Family("dexec_uptime_seconds", "gauge", "Seconds since start.");
  t.Sample("dexec_uptime_seconds",
           absl::ToDoubleSeconds(dexec::FromProto(s.uptime())));
  return t.Take();
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
    absl::StatusOr<MetricsSnapshot> snapshot = routes.backend->GetMetrics();
    if (!snapshot.ok()) {
      r.status = 503;
      r.body = absl::StrCat(snapshot.status().message(), "\n");
      return r;
    }
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = RenderMetrics(*snapshot, routes.grpc, now);
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
