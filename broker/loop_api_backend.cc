#include "broker/loop_api_backend.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/mutex.h"

namespace dexec::broker {
namespace {

// One question's answer, shared by the asking thread and the loop's reply
// closure (which may run after the asker gave up).
template <typename Response>
struct Answer {
  Mutex mu;
  // Set once, by the reply closure on the loop thread.
  std::optional<Response> value ABSL_GUARDED_BY(mu);
};

}  // namespace

LoopApiBackend::LoopApiBackend(
    BrokerLoop* loop, absl::Duration timeout,
    const std::atomic<uint64_t>* client_auth_failures)
    : loop_(loop),
      timeout_(timeout),
      client_auth_failures_(client_auth_failures) {}

template <typename Response>
absl::StatusOr<Response> LoopApiBackend::Ask(
    std::function<Response(BrokerLoop::Context&)> fill, bool read_only) {
  auto answer = std::make_shared<Answer<Response>>();
  loop_->Post(
      [answer, read_only, fill = std::move(fill)](BrokerLoop::Context& c) {
        auto response = std::make_shared<Response>(fill(c));
        (read_only ? c.out.query_replies : c.out.replies)
            .push_back([answer, response] {
              MutexLock lock(&answer->mu);
              answer->value = std::move(*response);
            });
      });
  MutexLock lock(&answer->mu);
  const bool answered = answer->mu.AwaitWithDeadline(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(answer->mu) {
        return answer->value.has_value();
      },
      absl::Now() + timeout_);
  if (!answered) {
    return absl::UnavailableError(absl::StrCat(
        "the broker did not answer within ", absl::FormatDuration(timeout_),
        " (stopping, or its journal is failing); try again"));
  }
  return *std::move(answer->value);
}

absl::StatusOr<v1::Stats> LoopApiBackend::GetStats() {
  absl::StatusOr<v1::Stats> s = Ask<v1::Stats>(
      [loop = loop_](BrokerLoop::Context& c) {
        v1::Stats stats = c.core.GetStats(c.now);
        stats.set_worker_auth_failures(loop->worker_auth_failures());
        return stats;
      },
      /*read_only=*/true);
  if (s.ok() && client_auth_failures_ != nullptr) {
    s->set_client_auth_failures(client_auth_failures_->load());
  }
  return s;
}

absl::StatusOr<MetricsSnapshot> LoopApiBackend::GetMetrics() {
  absl::StatusOr<MetricsSnapshot> m = Ask<MetricsSnapshot>(
      [loop = loop_](BrokerLoop::Context& c) {
        MetricsSnapshot s;
        s.stats = c.core.GetStats(c.now);
        s.stats.set_worker_auth_failures(loop->worker_auth_failures());
        s.workers = c.core.ListWorkers();
        s.core = c.core.Metrics(c.now);
        return s;
      },
      /*read_only=*/true);
  if (!m.ok()) return m;
  if (client_auth_failures_ != nullptr) {
    m->stats.set_client_auth_failures(client_auth_failures_->load());
  }
  m->journal = loop_->journal_metrics();
  return m;
}

absl::StatusOr<v1::ListJobsResponse> LoopApiBackend::ListJobs(
    const Caller& caller, const v1::ListJobsRequest& req) {
  return Ask<v1::ListJobsResponse>(
      [caller, req](BrokerLoop::Context& c) {
        return c.core.ListJobs(caller, req);
      },
      /*read_only=*/true);
}

absl::StatusOr<v1::GetJobsResponse> LoopApiBackend::GetJobs(
    const Caller& caller, const v1::GetJobsRequest& req) {
  return Ask<v1::GetJobsResponse>(
      [caller, req](BrokerLoop::Context& c) {
        return c.core.GetJobs(caller, req);
      },
      /*read_only=*/true);
}

absl::StatusOr<v1::CancelResponse> LoopApiBackend::Cancel(const Caller& caller,
                                                          uint64_t job_id) {
  return Ask<v1::CancelResponse>(
      [caller, job_id](BrokerLoop::Context& c) {
        google::protobuf::RepeatedField<uint64_t> ids;
        ids.Add(job_id);
        return c.core.Cancel(caller, ids, c.now, &c.out);
      },
      /*read_only=*/false);
}

absl::StatusOr<v1::ListWorkersResponse> LoopApiBackend::ListWorkers() {
  return Ask<v1::ListWorkersResponse>(
      [](BrokerLoop::Context& c) { return c.core.ListWorkers(); },
      /*read_only=*/true);
}

}  // namespace dexec::broker
