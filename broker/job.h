// A job as the broker holds it, and its conversion to the API message.
// See docs/DESIGN.md, "Job states".
#ifndef DEXEC_BROKER_JOB_H_
#define DEXEC_BROKER_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "protos/dexec.pb.h"

namespace dexec::broker {

using JobState = v1::Job::State;

inline bool IsTerminal(JobState s) {
  return s == v1::Job::SUCCEEDED || s == v1::Job::FAILED ||
         s == v1::Job::CANCELLED;
}

// One dispatch of a job to a worker.
struct AttemptRecord {
  std::string worker;
  absl::Time started_at = absl::InfinitePast();
  absl::Time ended_at = absl::InfinitePast();
  // Empty while the attempt runs; else "succeeded", "failed", "timeout",
  // "worker_lost", "cancelled", "abandoned", "broker_restarted".
  std::string outcome;
};

struct Job {
  uint64_t id = 0;
  std::string task;
  std::string payload;
  int32_t priority = 0;
  absl::Duration timeout = absl::ZeroDuration();  // zero: none
  int32_t max_attempts = 0;                       // resolved, >= 1
  // Whether the submitter asked for max_attempts: only then are a task's own
  // failures retried (a lost worker is retried either way).
  bool retry_task_errors = false;
  // Changed since the journal last wrote it (see BrokerCore::TakeChanges).
  bool journal_dirty = false;
  std::string idempotency_key;

  JobState state = v1::Job::QUEUED;
  absl::Time submitted_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
  // One per dispatch; attempt numbers are 1-based indexes into this, and the
  // number is the fencing token sent to the worker.
  std::vector<AttemptRecord> attempts;

  std::string result;
  std::string error_kind;
  std::string error_message;

  uint32_t attempt_number() const {
    return static_cast<uint32_t>(attempts.size());
  }
};

// Fills the API message. `include_result` copies the result bytes.
void JobToProto(const Job& job, bool include_result, v1::Job* out);

// The event a watcher receives for the job's current state.
void JobToEvent(const Job& job, v1::JobEvent* out);

// "queued", "running", ... (lower case, for logs and messages).
std::string StateName(JobState s);

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_JOB_H_
