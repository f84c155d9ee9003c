// A job as the broker holds it, and its conversion to the API message.
// See docs/DESIGN.md, "Job states".
#ifndef DEXEC_BROKER_JOB_H_
#define DEXEC_BROKER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "protos/dexec.pb.h"
#include "protos/job_state.h"

namespace dexec::broker {

using JobState = v1::Job::State;

using ::dexec::IsTerminal;  // protos/job_state.h

// One dispatch of a job to a worker.
struct AttemptRecord {
  std::string worker;
  // The worker's authenticated identity (its CURVE public key, Z85; empty
  // on an --insecure broker): only a result from it completes the attempt.
  std::string worker_key;
  // ROUTER identity of the connection it went to (not journaled): a job
  // that timed out there avoids that connection for its next attempt.
  std::string worker_identity;
  absl::Time started_at = absl::InfinitePast();
  absl::Time ended_at = absl::InfinitePast();
  // Empty while the attempt runs; else "succeeded", "failed", "timeout",
  // "worker_lost", "cancelled", "abandoned", "broker_restarted".
  std::string outcome;
};

// A task name, interned: every job of a task points at one shared,
// reference-counted entry, so a queued job costs 8 bytes for its task name,
// not a std::string. An entry is freed when its last TaskName goes — no
// job and no worker names the task any more — so churning through distinct
// names does not grow the broker for good.
//
// Thread-safe (copies, Intern, destruction); mean_run_us is the broker
// loop's alone.
class TaskName {
 public:
  TaskName() = default;  // the empty name
  static TaskName Intern(absl::string_view name);

  TaskName(const TaskName& o);
  TaskName& operator=(const TaskName& o);
  TaskName(TaskName&& o) noexcept : entry_(o.entry_) { o.entry_ = nullptr; }
  TaskName& operator=(TaskName&& o) noexcept;
  ~TaskName() { Release(); }

  const std::string& str() const;
  bool operator==(const TaskName& o) const { return entry_ == o.entry_; }

  // Exponentially weighted mean run time of the task's recent attempts, in
  // microseconds; negative until one was reported. Kept with the name, so
  // it lasts while any job or worker names the task.
  double mean_run_us() const;
  void set_mean_run_us(double us);

  // Distinct names interned now (for tests and stats).
  static size_t InternedCount();

  struct Entry;  // job.cc's

 private:
  explicit TaskName(Entry* entry) : entry_(entry) {}
  void Release();

  Entry* entry_ = nullptr;
};

// What a job gathers once it has an idempotency key, has been dispatched or
// has finished. A queued job that never ran has none of it, and does not
// pay for it (see Job::details).
struct JobDetails {
  std::string idempotency_key;
  absl::Time finished_at = absl::InfinitePast();
  // One per dispatch; attempt numbers are 1-based indexes into this, and the
  // number is the fencing token sent to the worker.
  std::vector<AttemptRecord> attempts;
  std::string result;
  // The payload's size once the job finished (the payload itself is freed).
  uint64_t payload_size = 0;
  std::string error_kind;
  std::string error_message;
};

// A job as the broker holds it: about 100 bytes plus its payload while it
// waits, so a million queued jobs fit in little memory.
struct Job {
  uint64_t id = 0;
  TaskName task;
  // Name of the token that submitted it (interned like task names; empty
  // on an --insecure broker).
  TaskName owner;
  std::string payload;
  absl::Time submitted_at = absl::InfinitePast();
  absl::Duration timeout = absl::ZeroDuration();  // zero: none
  int32_t priority = 0;
  int32_t max_attempts = 0;  // resolved, >= 1
  JobState state = v1::Job::QUEUED;
  // Whether the submitter asked for max_attempts: only then are a task's own
  // failures retried (a lost worker is retried either way).
  bool retry_task_errors = false;
  // Changed since the journal last wrote it (see BrokerCore::TakeChanges).
  bool journal_dirty = false;
  // Null until the job needs any of it.
  std::unique_ptr<JobDetails> details;

  // The details, or empty ones (read only).
  const JobDetails& info() const;
  // The details, created if missing.
  JobDetails& mutable_info();

  // The payload's size, also once the job finished and the payload is gone.
  uint64_t payload_size() const {
    return IsTerminal(state) ? info().payload_size : payload.size();
  }

  uint32_t attempt_number() const {
    return details == nullptr ? 0
                              : static_cast<uint32_t>(details->attempts.size());
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
