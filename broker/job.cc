#include "broker/job.h"

#include "absl/container/node_hash_set.h"
#include "absl/strings/ascii.h"
#include "common/mutex.h"
#include "common/proto_time.h"

namespace dexec::broker {
namespace {

void MaybeTime(absl::Time t, google::protobuf::Timestamp* out) {
  if (t != absl::InfinitePast()) ToProto(t, out);
}

// Guards the interned task names (never erased, so pointers stay valid).
Mutex task_names_mu;
absl::node_hash_set<std::string>& TaskNames() {
  static auto* names = new absl::node_hash_set<std::string>();
  return *names;
}

const std::string& EmptyName() {
  static const auto* empty = new std::string();
  return *empty;
}

}  // namespace

TaskName::TaskName() : name_(&EmptyName()) {}

TaskName TaskName::Intern(absl::string_view name) {
  MutexLock lock(&task_names_mu);
  return TaskName(&*TaskNames().emplace(name).first);
}

const JobDetails& Job::info() const {
  static const auto* empty = new JobDetails();
  return details != nullptr ? *details : *empty;
}

JobDetails& Job::mutable_info() {
  if (details == nullptr) details = std::make_unique<JobDetails>();
  return *details;
}

void JobToProto(const Job& job, bool include_result, v1::Job* out) {
  out->set_id(job.id);
  out->set_task(job.task.str());
  out->set_state(job.state);
  out->set_priority(job.priority);
  if (job.timeout > absl::ZeroDuration()) {
    ToProto(job.timeout, out->mutable_timeout());
  }
  out->set_max_attempts(job.max_attempts);
  out->set_attempts(static_cast<int32_t>(job.info().attempts.size()));
  MaybeTime(job.submitted_at, out->mutable_submitted_at());
  if (!job.info().attempts.empty()) {
    const AttemptRecord& last = job.info().attempts.back();
    out->set_worker(last.worker);
    MaybeTime(last.started_at, out->mutable_started_at());
  }
  MaybeTime(job.info().finished_at, out->mutable_finished_at());
  if (include_result) out->set_result(job.info().result);
  if (!job.info().error_kind.empty()) {
    out->mutable_error()->set_kind(job.info().error_kind);
    out->mutable_error()->set_message(job.info().error_message);
  }
  out->set_payload_size(job.payload_size());
  out->set_result_size(job.info().result.size());
  out->set_idempotency_key(job.info().idempotency_key);
  for (size_t i = 0; i < job.info().attempts.size(); ++i) {
    const AttemptRecord& a = job.info().attempts[i];
    v1::Attempt* p = out->add_attempt_log();
    p->set_number(static_cast<int32_t>(i + 1));
    p->set_worker(a.worker);
    MaybeTime(a.started_at, p->mutable_started_at());
    MaybeTime(a.ended_at, p->mutable_ended_at());
    p->set_outcome(a.outcome);
  }
}

void JobToEvent(const Job& job, v1::JobEvent* out) {
  out->set_job_id(job.id);
  out->set_state(job.state);
  out->set_attempts(static_cast<int32_t>(job.info().attempts.size()));
  if (!job.info().attempts.empty()) {
    out->set_worker(job.info().attempts.back().worker);
    MaybeTime(job.info().attempts.back().started_at, out->mutable_started_at());
  }
  if (IsTerminal(job.state)) {
    out->set_result(job.info().result);
    MaybeTime(job.info().finished_at, out->mutable_finished_at());
    if (!job.info().error_kind.empty()) {
      out->mutable_error()->set_kind(job.info().error_kind);
      out->mutable_error()->set_message(job.info().error_message);
    }
  }
}

std::string StateName(JobState s) {
  return absl::AsciiStrToLower(v1::Job::State_Name(s));
}

}  // namespace dexec::broker
