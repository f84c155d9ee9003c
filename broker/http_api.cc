#include "broker/http_api.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json_writer.h"
#include "common/proto_time.h"
#include "protos/job_state.h"
#include "protos/tasks.pb.h"

namespace dexec::broker {
namespace {

constexpr absl::string_view kSysExec = "sys.exec";

// Parsed "a=b&c=d" with %XX and '+' decoded; a repeated name keeps the
// last value. A malformed escape is an error the user can fix.
using QueryMap = std::vector<std::pair<std::string, std::string>>;

absl::StatusOr<std::string> Unescape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      int v = 0;
      if (i + 2 >= s.size() || !absl::ascii_isxdigit(s[i + 1]) ||
          !absl::ascii_isxdigit(s[i + 2]) ||
          !absl::SimpleHexAtoi(s.substr(i + 1, 2), &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad %-escape in the query at byte ", i,
                         ": write %XX with two hex digits"));
      }
      out.push_back(static_cast<char>(v));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

absl::StatusOr<QueryMap> ParseQuery(absl::string_view query) {
  QueryMap map;
  if (query.empty()) return map;
  for (absl::string_view part : absl::StrSplit(query, '&')) {
    if (part.empty()) continue;
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits('=', 1));
    absl::StatusOr<std::string> k = Unescape(kv.first);
    if (!k.ok()) return k.status();
    absl::StatusOr<std::string> v = Unescape(kv.second);
    if (!v.ok()) return v.status();
    map.emplace_back(*std::move(k), *std::move(v));
  }
  return map;
}

std::optional<std::string> Param(const QueryMap& map, absl::string_view name) {
  std::optional<std::string> found;
  for (const auto& [k, v] : map) {
    if (k == name) found = v;
  }
  return found;
}

const char* StateName(v1::Job::State s) {
  switch (s) {
    case v1::Job::QUEUED:
      return "queued";
    case v1::Job::RUNNING:
      return "running";
    case v1::Job::SUCCEEDED:
      return "succeeded";
    case v1::Job::FAILED:
      return "failed";
    case v1::Job::CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

absl::StatusOr<v1::Job::State> ParseState(absl::string_view s) {
  const std::string lower = absl::AsciiStrToLower(s);
  if (lower.empty() || lower == "all") return v1::Job::STATE_UNSPECIFIED;
  for (v1::Job::State st :
       {v1::Job::QUEUED, v1::Job::RUNNING, v1::Job::SUCCEEDED, v1::Job::FAILED,
        v1::Job::CANCELLED}) {
    if (lower == StateName(st)) return st;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("state='", s,
                   "' is not a job state: use queued, running, succeeded, "
                   "failed, cancelled or all"));
}

absl::StatusOr<uint64_t> ParseId(absl::string_view name, absl::string_view s) {
  uint64_t v = 0;
  if (!absl::SimpleAtoi(s, &v) || v == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, "='", s.substr(0, 40), "' is not a job id (a positive integer)"));
  }
  return v;
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 413;
    case absl::StatusCode::kUnimplemented:
      return 405;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return 503;
    default:
      return 500;
  }
}

void TimeMs(JsonWriter& w, absl::string_view key,
            const google::protobuf::Timestamp& t) {
  w.Key(key);
  if (t.seconds() == 0 && t.nanos() == 0) {
    w.Null();
  } else {
    w.Int(absl::ToUnixMillis(FromProto(t)));
  }
}

// At most kPreviewBytes of `bytes` as text (invalid UTF-8 shown as U+FFFD by
// the writer), with its full size and whether it was cut.
void Preview(JsonWriter& w, absl::string_view bytes) {
  w.BeginObject();
  w.Key("text");
  w.String(bytes.substr(0, kPreviewBytes));
  w.Key("bytes");
  w.Uint(bytes.size());
  w.Key("truncated");
  w.Bool(bytes.size() > kPreviewBytes);
  w.EndObject();
}

// The fields every job listing carries.
void JobSummary(JsonWriter& w, const v1::Job& j) {
  w.Key("id");
  w.Uint(j.id());
  w.Key("task");
  w.String(j.task());
  w.Key("state");
  w.String(StateName(j.state()));
  w.Key("owner");
  w.String(j.owner());
  w.Key("priority");
  w.Int(j.priority());
  w.Key("attempts");
  w.Int(j.attempts());
  w.Key("max_attempts");
  w.Int(j.max_attempts());
  w.Key("worker");
  w.String(j.worker());
  TimeMs(w, "submitted_at_ms", j.submitted_at());
  TimeMs(w, "started_at_ms", j.started_at());
  TimeMs(w, "finished_at_ms", j.finished_at());
  w.Key("payload_size");
  w.Uint(j.payload_size());
  w.Key("result_size");
  w.Uint(j.result_size());
  w.Key("waiting_reason");
  w.String(j.waiting_reason());
  w.Key("error");
  if (j.has_error() && !j.error().kind().empty()) {
    w.BeginObject();
    w.Key("kind");
    w.String(j.error().kind());
    w.Key("message");
    w.String(j.error().message());
    w.EndObject();
  } else {
    w.Null();
  }
}

ApiReply Json(JsonWriter&& w) { return ApiReply{200, std::move(w).Take()}; }

ApiReply Stats(ApiBackend& backend) {
  absl::StatusOr<v1::Stats> s = backend.GetStats();
  if (!s.ok()) return ErrorReply(s.status());
  JsonWriter w;
  w.BeginObject();
  w.Key("queued");
  w.Uint(s->queued());
  w.Key("running");
  w.Uint(s->running());
  w.Key("succeeded");
  w.Uint(s->succeeded());
  w.Key("failed");
  w.Uint(s->failed());
  w.Key("cancelled");
  w.Uint(s->cancelled());
  w.Key("submitted_total");
  w.Uint(s->submitted_total());
  w.Key("finished_total");
  w.Uint(s->finished_total());
  // finished_total by outcome (they add up to it).
  w.Key("succeeded_total");
  w.Uint(s->succeeded_total());
  w.Key("failed_total");
  w.Uint(s->failed_total());
  w.Key("cancelled_total");
  w.Uint(s->cancelled_total());
  w.Key("finish_rate");
  w.Double(s->finish_rate());
  w.Key("workers");
  w.Int(s->workers());
  w.Key("threads");
  w.Int(s->threads());
  w.Key("uptime_s");
  w.Double(absl::ToDoubleSeconds(FromProto(s->uptime())));
  w.Key("wait_samples");
  w.Uint(s->wait_samples());
  for (auto [key, d] : {std::pair{"wait_p50_ms", &s->wait_p50()},
                        std::pair{"wait_p99_ms", &s->wait_p99()}}) {
    w.Key(key);
    if (s->wait_samples() == 0) {
      w.Null();
    } else {
      w.Double(absl::ToDoubleMilliseconds(FromProto(*d)));
    }
  }
  w.Key("client_auth_failures");
  w.Uint(s->client_auth_failures());
  w.Key("worker_auth_failures");
  w.Uint(s->worker_auth_failures());
  w.Key("forged_results");
  w.Uint(s->forged_results());
  w.Key("bad_result_pieces");
  w.Uint(s->bad_result_pieces());
  w.EndObject();
  return Json(std::move(w));
}

ApiReply Jobs(const QueryMap& q, const Caller& caller, ApiBackend& backend) {
  v1::ListJobsRequest list;
  if (std::optional<std::string> s = Param(q, "state")) {
    absl::StatusOr<v1::Job::State> st = ParseState(*s);
    if (!st.ok()) return ErrorReply(st.status());
    list.set_state(*st);
  }
  if (std::optional<std::string> t = Param(q, "task")) list.set_task(*t);
  int limit = kDefaultJobsLimit;
  if (std::optional<std::string> l = Param(q, "limit")) {
    if (!absl::SimpleAtoi(*l, &limit) || limit < 1 || limit > kMaxJobsLimit) {
      return ErrorReply(absl::InvalidArgumentError(absl::StrCat(
          "limit='", l->substr(0, 40), "' must be 1 to ", kMaxJobsLimit)));
    }
  }
  if (std::optional<std::string> b = Param(q, "before_id")) {
    absl::StatusOr<uint64_t> id = ParseId("before_id", *b);
    if (!id.ok()) return ErrorReply(id.status());
    list.set_before_id(*id);
  }
  // One more than asked tells whether there is a next page.
  list.set_limit(limit + 1);
  list.set_max_scan(kMaxJobsScan);
  absl::StatusOr<v1::ListJobsResponse> resp = backend.ListJobs(caller, list);
  if (!resp.ok()) return ErrorReply(resp.status());
  const int shown = std::min(resp->jobs_size(), limit);
  JsonWriter w;
  w.BeginObject();
  w.Key("jobs");
  w.BeginArray();
  for (int i = 0; i < shown; ++i) {
    w.BeginObject();
    JobSummary(w, resp->jobs(i));
    w.EndObject();
  }
  w.EndArray();
  w.Key("next_before_id");
  if (resp->jobs_size() > limit || (resp->truncated() && shown > 0)) {
    w.Uint(resp->jobs(shown - 1).id());
  } else if (resp->resume_before_id() != 0) {
    w.Uint(resp->resume_before_id());
  } else {
    w.Null();
  }
  // The scan bound stopped the walk: older jobs were not looked at yet
  // (the page may hold fewer than `limit`, even none).
  w.Key("scan_stopped");
  w.Bool(resp->jobs_size() <= limit && resp->resume_before_id() != 0);
  w.EndObject();
  return Json(std::move(w));
}

ApiReply OneJob(uint64_t id, const Caller& caller, ApiBackend& backend) {
  v1::GetJobsRequest get;
  get.add_job_ids(id);
  get.set_include_result(true);
  absl::StatusOr<v1::GetJobsResponse> resp = backend.GetJobs(caller, get);
  if (!resp.ok()) return ErrorReply(resp.status());
  if (resp->jobs_size() != 1 ||
      resp->jobs(0).state() == v1::Job::STATE_UNSPECIFIED) {
    return ErrorReply(absl::NotFoundError(absl::StrCat(
        "job ", id, " is unknown: never submitted, or its retention ended")));
  }
  const v1::Job& j = resp->jobs(0);
  JsonWriter w;
  w.BeginObject();
  JobSummary(w, j);
  w.Key("spec");
  w.BeginObject();
  w.Key("task");
  w.String(j.task());
  w.Key("priority");
  w.Int(j.priority());
  w.Key("timeout_ms");
  if (j.has_timeout()) {
    w.Int(absl::ToInt64Milliseconds(FromProto(j.timeout())));
  } else {
    w.Null();
  }
  w.Key("max_attempts");
  w.Int(j.max_attempts());
  w.Key("idempotency_key");
  w.String(j.idempotency_key());
  w.Key("payload_size");
  w.Uint(j.payload_size());
  w.EndObject();
  w.Key("attempt_log");
  w.BeginArray();
  for (const v1::Attempt& a : j.attempt_log()) {
    w.BeginObject();
    w.Key("number");
    w.Int(a.number());
    w.Key("worker");
    w.String(a.worker());
    TimeMs(w, "started_at_ms", a.started_at());
    TimeMs(w, "ended_at_ms", a.ended_at());
    w.Key("outcome");
    w.String(a.outcome());
    w.EndObject();
  }
  w.EndArray();
  w.Key("can_cancel");
  w.Bool(caller.role != Caller::kRead && !IsTerminal(j.state()));
  // The result is there only for roles that may read it (admin, the
  // owner); a read token sees its size only.
  const bool result_visible = caller.SeesResultsOf(j.owner());
  w.Key("result_visible");
  w.Bool(result_visible);
  const bool show = result_visible && IsTerminal(j.state());
  w.Key("result");
  if (show) {
    Preview(w, j.result());
  } else {
    w.Null();
  }
  // sys.exec keeps an ExecResult (its result, and a failed run's too):
  // exit code and the streams, each previewed.
  ::dexec::tasks::ExecResult exec;
  w.Key("exec");
  if (show && j.task() == kSysExec && !j.result().empty() &&
      exec.ParseFromString(j.result())) {
    w.BeginObject();
    w.Key("exit_code");
    w.Int(exec.exit_code());
    w.Key("signal");
    w.Int(exec.signal());
    w.Key("timed_out");
    w.Bool(exec.timed_out());
    w.Key("stdout");
    Preview(w, exec.stdout());
    w.Key("stderr");
    Preview(w, exec.stderr());
    w.EndObject();
  } else {
    w.Null();
  }
  w.EndObject();
  return Json(std::move(w));
}

ApiReply CancelJob(uint64_t id, const Caller& caller, ApiBackend& backend) {
  if (caller.role == Caller::kRead) {
    return ErrorReply(absl::PermissionDeniedError(absl::StrCat(
        "token '", caller.name,
        "' has role read, which may not cancel jobs (admin or submit)")));
  }
  absl::StatusOr<v1::CancelResponse> resp = backend.Cancel(caller, id);
  if (!resp.ok()) return ErrorReply(resp.status());
  if (resp->states_size() != 1 ||
      resp->states(0) == v1::Job::STATE_UNSPECIFIED) {
    return ErrorReply(absl::NotFoundError(absl::StrCat(
        "job ", id, " is unknown: never submitted, or its retention ended")));
  }
  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.Uint(id);
  w.Key("cancelled");
  w.Bool(resp->cancelled_size() == 1 && resp->cancelled(0));
  w.Key("state");
  w.String(StateName(resp->states(0)));
  w.EndObject();
  return Json(std::move(w));
}

ApiReply Workers(ApiBackend& backend, absl::Time now) {
  absl::StatusOr<v1::ListWorkersResponse> resp = backend.ListWorkers();
  if (!resp.ok()) return ErrorReply(resp.status());
  JsonWriter w;
  w.BeginObject();
  w.Key("workers");
  w.BeginArray();
  for (const v1::WorkerInfo& wi : resp->workers()) {
    w.BeginObject();
    w.Key("name");
    w.String(wi.name());
    w.Key("host");
    w.String(wi.host());
    w.Key("pid");
    w.Int(wi.pid());
    w.Key("threads");
    w.Int(wi.threads());
    w.Key("busy");
    w.Int(wi.busy());
    w.Key("done");
    w.Uint(wi.done());
    w.Key("heartbeat_age_ms");
    w.Int(std::max<int64_t>(
        0, absl::ToInt64Milliseconds(now - FromProto(wi.last_heartbeat()))));
    TimeMs(w, "registered_at_ms", wi.registered_at());
    // Listed workers are live (a lost one leaves the registry): full when
    // every thread holds a job, busy when some do.
    w.Key("state");
    w.String(wi.busy() == 0              ? "idle"
             : wi.busy() >= wi.threads() ? "full"
                                         : "busy");
    w.Key("tasks");
    w.BeginArray();
    for (const std::string& t : wi.tasks()) w.String(t);
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Json(std::move(w));
}

ApiReply MethodNotAllowed(absl::string_view method, absl::string_view path,
                          absl::string_view allowed) {
  return ErrorReply(absl::UnimplementedError(
      absl::StrCat(method.substr(0, 16), " ", path.substr(0, 200),
                   " is not served: use ", allowed)));
}

}  // namespace

ApiReply ErrorReply(const absl::Status& status) {
  JsonWriter w;
  w.BeginObject();
  w.Key("error");
  w.BeginObject();
  w.Key("code");
  w.String(absl::StatusCodeToString(status.code()));
  w.Key("message");
  w.String(status.message());
  w.EndObject();
  w.EndObject();
  return ApiReply{HttpStatusOf(status.code()), std::move(w).Take()};
}

ApiReply HandleApi(const ApiRequest& req, const Caller& caller,
                   ApiBackend& backend, absl::Time now) {
  if (req.body.size() > kMaxApiBodyBytes) {
    return ErrorReply(absl::ResourceExhaustedError(
        absl::StrCat("request body is ", req.body.size(),
                     " bytes; the API takes at most ", kMaxApiBodyBytes)));
  }
  absl::StatusOr<QueryMap> q = ParseQuery(req.query);
  if (!q.ok()) return ErrorReply(q.status());
  const absl::string_view path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  if (path == "/api/stats") {
    if (!get) return MethodNotAllowed(req.method, path, "GET");
    return Stats(backend);
  }
  if (path == "/api/whoami") {
    if (!get) return MethodNotAllowed(req.method, path, "GET");
    JsonWriter w;
    w.BeginObject();
    w.Key("name");
    w.String(caller.name);
    w.Key("role");
    w.String(caller.role == Caller::kAdmin    ? "admin"
             : caller.role == Caller::kSubmit ? "submit"
                                              : "read");
    w.EndObject();
    return Json(std::move(w));
  }
  if (path == "/api/workers") {
    if (!get) return MethodNotAllowed(req.method, path, "GET");
    return Workers(backend, now);
  }
  if (path == "/api/jobs" || path == "/api/jobs/") {
    if (!get) return MethodNotAllowed(req.method, path, "GET");
    return Jobs(*q, caller, backend);
  }
  constexpr absl::string_view kJobPrefix = "/api/jobs/";
  if (absl::StartsWith(path, kJobPrefix)) {
    absl::string_view rest = path.substr(kJobPrefix.size());
    constexpr absl::string_view kCancel = "/cancel";
    const bool cancel = absl::EndsWith(rest, kCancel);
    if (cancel) rest.remove_suffix(kCancel.size());
    absl::StatusOr<uint64_t> id = ParseId("job id", rest);
    if (!id.ok()) return ErrorReply(id.status());
    if (cancel) {
      if (req.method != "POST")
        return MethodNotAllowed(req.method, path, "POST");
      return CancelJob(*id, caller, backend);
    }
    if (!get) return MethodNotAllowed(req.method, path, "GET");
    return OneJob(*id, caller, backend);
  }
  return ErrorReply(absl::NotFoundError(
      absl::StrCat("no API at ", path.substr(0, 200),
                   ": see docs/HTTP_API.md (/api/stats, /api/jobs, "
                   "/api/jobs/{id}, /api/jobs/{id}/cancel, /api/workers)")));
}

absl::StatusOr<MetricsSnapshot> ApiBackend::GetMetrics() {
  MetricsSnapshot m;
  absl::StatusOr<v1::Stats> stats = GetStats();
  if (!stats.ok()) return stats.status();
  absl::StatusOr<v1::ListWorkersResponse> workers = ListWorkers();
  if (!workers.ok()) return workers.status();
  m.stats = *std::move(stats);
  m.workers = *std::move(workers);
  return m;
}

}  // namespace dexec::broker
