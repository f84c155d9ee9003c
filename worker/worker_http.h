// What a worker's --http_listen serves: GET /metrics, the Prometheus text
// exposition of Worker::Metrics() (docs/DESIGN.md, "Metrics"):
//
//   dexec_worker_tasks_run_total{task}      counter (capped, "(other)")
//   dexec_worker_tasks_failed_total{task}   counter
//   dexec_worker_pool_threads               gauge
//   dexec_worker_busy_threads               gauge
//   dexec_worker_running_coroutines         gauge
//   dexec_worker_heartbeat_age_seconds      gauge (since the broker's last
//                                           frame)
//   dexec_worker_connected                  gauge (1 once welcomed)
//   dexec_worker_uptime_seconds             gauge
//
// No token: the worker has no token store. The listener is plaintext and
// loopback-only unless the worker runs --insecure (worker/main.cc), as the
// broker's is; expose it beyond the host through a proxy that
// authenticates.
//
// Thread-safe (Worker::Metrics is).
#ifndef DEXEC_WORKER_WORKER_HTTP_H_
#define DEXEC_WORKER_WORKER_HTTP_H_

#include <string>

#include "common/http_listener.h"
#include "worker/worker.h"

namespace dexec::worker {

std::string RenderWorkerMetrics(const WorkerMetrics& m);

// Answers one request: /metrics, else 404.
http::Response ServeWorkerHttp(const http::Request& req, const Worker& worker);

}  // namespace dexec::worker

#endif  // DEXEC_WORKER_WORKER_HTTP_H_
