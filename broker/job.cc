#include "broker/job.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "common/mutex.h"
#include "common/proto_time.h"

namespace dexec::broker {
namespace {

void MaybeTime(absl::Time t, google::protobuf::Timestamp* out) {
  if (t != absl::InfinitePast()) ToProto(t, out);
}

const std::string& EmptyName() {
  static const auto* empty = new std::string();
  return *empty;
}

}  // namespace

struct TaskName::Entry {
  std::string name;
  // Changed from 0 (Intern) and to 0 (Release) only under the table's lock.
  std::atomic<int64_t> refs{0};
  double mean_us = -1;  // the broker loop's
};

namespace {

// Guards the table of interned names, and an entry's last release.
Mutex task_names_mu;
absl::flat_hash_map<absl::string_view, TaskName::Entry*>& TaskNames()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(task_names_mu) {
  static auto* names =
      new absl::flat_hash_map<absl::string_view, TaskName::Entry*>();
  return *names;
}

}  // namespace

TaskName TaskName::Intern(absl::string_view name) {
  if (name.empty()) return TaskName();
  MutexLock lock(&task_names_mu);
  auto& names = TaskNames();
  auto it = names.find(name);
  if (it == names.end()) {
    auto* entry = new Entry;
    entry->name = std::string(name);
    it = names.emplace(entry->name, entry).first;
  }
  it->second->refs.fetch_add(1, std::memory_order_relaxed);
  return TaskName(it->second);
}

TaskName::TaskName(const TaskName& o) : entry_(o.entry_) {
  // From a live reference: never from 0, so no lock.
  if (entry_ != nullptr) entry_->refs.fetch_add(1, std::memory_order_relaxed);
}

TaskName& TaskName::operator=(const TaskName& o) {
  if (entry_ == o.entry_) return *this;
  TaskName copy(o);
  return *this = std::move(copy);
}

TaskName& TaskName::operator=(TaskName&& o) noexcept {
  if (this != &o) {
    Release();
    entry_ = o.entry_;
    o.entry_ = nullptr;
  }
  return *this;
}

void TaskName::Release() {
  Entry* e = std::exchange(entry_, nullptr);
  if (e == nullptr) return;
  int64_t refs = e->refs.load(std::memory_order_relaxed);
  while (refs > 1) {
    if (e->refs.compare_exchange_weak(refs, refs - 1,
                                      std::memory_order_acq_rel)) {
      return;
    }
  }
  // Perhaps the last reference: decide under the lock, where Intern takes
  // references from 0.
  MutexLock lock(&task_names_mu);
  if (e->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    TaskNames().erase(e->name);
    delete e;
  }
}

const std::string& TaskName::str() const {
  return entry_ == nullptr ? EmptyName() : entry_->name;
}

double TaskName::mean_run_us() const {
  return entry_ == nullptr ? -1 : entry_->mean_us;
}

void TaskName::set_mean_run_us(double us) {
  if (entry_ != nullptr) entry_->mean_us = us;
}

size_t TaskName::InternedCount() {
  MutexLock lock(&task_names_mu);
  return TaskNames().size();
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
  out->set_owner(job.owner.str());
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
