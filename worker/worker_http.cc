#include "worker/worker_http.h"

#include <algorithm>
#include <vector>

#include "common/prometheus_text.h"
#include "worker/http_task.h"

namespace dexec::worker {

std::string RenderWorkerMetrics(const WorkerMetrics& m) {
  std::vector<const WorkerMetrics::TaskCounts*> tasks;
  for (const auto& t : m.tasks) tasks.push_back(&t);
  std::sort(tasks.begin(), tasks.end(),
            [](const auto* a, const auto* b) { return a->task < b->task; });
  PrometheusText t;
  t.Family("dexec_worker_tasks_run_total", "counter",
           "Task runs finished here since start, whatever the outcome, by "
           "task (at most 1000 names; the rest under task=\"(other)\").");
  for (const auto* c : tasks) {
    t.Sample("dexec_worker_tasks_run_total", {{"task", c->task}}, c->run);
  }
  t.Family("dexec_worker_tasks_failed_total", "counter",
           "Task runs finished here that failed (an error, a timeout, a "
           "crash, a cancel), by task.");
  for (const auto* c : tasks) {
    t.Sample("dexec_worker_tasks_failed_total", {{"task", c->task}}, c->failed);
  }
  t.Family("dexec_worker_pool_threads", "gauge",
           "Threads (or child processes) that run tasks (--threads).");
  t.Sample("dexec_worker_pool_threads", static_cast<uint64_t>(m.threads));
  t.Family("dexec_worker_busy_threads", "gauge",
           "Thread and process tasks running now.");
  t.Sample("dexec_worker_busy_threads", static_cast<uint64_t>(m.busy_threads));
  t.Family("dexec_worker_running_coroutines", "gauge",
           "Coroutine tasks (sys.sleep, http.get) in flight now.");
  t.Sample("dexec_worker_running_coroutines",
           static_cast<uint64_t>(m.coroutines));
  t.Family("dexec_worker_heartbeat_age_seconds", "gauge",
           "Seconds since the last frame from the broker (any frame counts "
           "as a heartbeat; the broker is presumed dead after interval x "
           "liveness).");
  t.Sample("dexec_worker_heartbeat_age_seconds",
           absl::ToDoubleSeconds(m.heartbeat_age));
  t.Family("dexec_worker_connected", "gauge",
           "1 while the broker has welcomed this worker's connection.");
  t.Sample("dexec_worker_connected", uint64_t{m.connected ? 1u : 0u});
  t.Family("dexec_worker_uptime_seconds", "gauge", "Seconds since start.");
  t.Sample("dexec_worker_uptime_seconds", absl::ToDoubleSeconds(m.uptime));
  const HttpCounts http = HttpTaskCounts();
  t.Family("dexec_worker_http_requests_total", "counter",
           "http.get requests, by the client that sent them: plain (dexec's "
           "own, http:// to an address) or curl.");
  t.Sample("dexec_worker_http_requests_total", {{"client", "plain"}},
           http.plain_requests);
  t.Sample("dexec_worker_http_requests_total", {{"client", "curl"}},
           http.curl_requests);
  t.Family("dexec_worker_http_connections_opened_total", "counter",
           "Connections http.get's plain path opened (the rest were reused).");
  t.Sample("dexec_worker_http_connections_opened_total",
           http.plain_connections);
  return t.Take();
}

http::Response ServeWorkerHttp(const http::Request& req, const Worker& worker) {
  http::Response r;
  if (req.path != "/metrics") {
    r.status = 404;
    r.body = "not found: a worker serves /metrics only\n";
    return r;
  }
  if (req.method != "GET") {
    r.status = 405;
    r.body = "GET /metrics\n";
    return r;
  }
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = RenderWorkerMetrics(worker.Metrics());
  return r;
}

}  // namespace dexec::worker
