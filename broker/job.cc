#include "broker/job.h"

#include "absl/strings/ascii.h"
#include "common/proto_time.h"

namespace dexec::broker {
namespace {

void MaybeTime(absl::Time t, google::protobuf::Timestamp* out) {
  if (t != absl::InfinitePast()) ToProto(t, out);
}

}  // namespace

void JobToProto(const Job& job, bool include_result, v1::Job* out) {
  out->set_id(job.id);
  out->set_task(job.task);
  out->set_state(job.state);
  out->set_priority(job.priority);
  if (job.timeout > absl::ZeroDuration()) {
    ToProto(job.timeout, out->mutable_timeout());
  }
  out->set_max_attempts(job.max_attempts);
  out->set_attempts(static_cast<int32_t>(job.attempts.size()));
  MaybeTime(job.submitted_at, out->mutable_submitted_at());
  if (!job.attempts.empty()) {
    const AttemptRecord& last = job.attempts.back();
    out->set_worker(last.worker);
    MaybeTime(last.started_at, out->mutable_started_at());
  }
  MaybeTime(job.finished_at, out->mutable_finished_at());
  if (include_result) out->set_result(job.result);
  if (!job.error_kind.empty()) {
    out->mutable_error()->set_kind(job.error_kind);
    out->mutable_error()->set_message(job.error_message);
  }
  out->set_payload_size(job.payload.size());
  out->set_result_size(job.result.size());
  out->set_idempotency_key(job.idempotency_key);
  for (size_t i = 0; i < job.attempts.size(); ++i) {
    const AttemptRecord& a = job.attempts[i];
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
  out->set_attempts(static_cast<int32_t>(job.attempts.size()));
  if (!job.attempts.empty()) {
    out->set_worker(job.attempts.back().worker);
    MaybeTime(job.attempts.back().started_at, out->mutable_started_at());
  }
  if (IsTerminal(job.state)) {
    out->set_result(job.result);
    MaybeTime(job.finished_at, out->mutable_finished_at());
    if (!job.error_kind.empty()) {
      out->mutable_error()->set_kind(job.error_kind);
      out->mutable_error()->set_message(job.error_message);
    }
  }
}

std::string StateName(JobState s) {
  return absl::AsciiStrToLower(v1::Job::State_Name(s));
}

}  // namespace dexec::broker
