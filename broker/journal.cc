#include "broker/journal.h"

#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/base/internal/endian.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "protos/store.pb.h"
#include "rocksdb/options.h"

namespace dexec::broker {
namespace {

constexpr char kFormatKey[] = "f";
constexpr char kFormatVersion[] = "1";
constexpr char kNextIdKey[] = "n";
constexpr char kJobPrefix = 'j';
constexpr char kPayloadPrefix = 'p';
constexpr char kBatchPrefix = 'b';

std::string Be64(uint64_t v) {
  char buf[8];
  absl::big_endian::Store64(buf, v);
  return std::string(buf, 8);
}

std::string IdKey(char prefix, uint64_t id) {
  return std::string(1, prefix) + Be64(id);
}

std::string BatchKeyString(const BatchKey& key) {
  std::string out(1, kBatchPrefix);
  char len[2];
  absl::big_endian::Store16(len, static_cast<uint16_t>(key.client_id.size()));
  out.append(len, 2);
  out.append(key.client_id);
  out.append(Be64(key.seq));
  return out;
}

int64_t ToUs(absl::Time t) {
  return t == absl::InfinitePast() ? 0 : absl::ToUnixMicros(t);
}

absl::Time FromUs(int64_t us) {
  return us == 0 ? absl::InfinitePast() : absl::FromUnixMicros(us);
}

void JobToRecord(const Job& job, store::JobRecord* r) {
  r->set_id(job.id);
  r->set_task(job.task.str());
  r->set_priority(job.priority);
  r->set_timeout_us(absl::ToInt64Microseconds(job.timeout));
  r->set_max_attempts(job.max_attempts);
  r->set_retry_task_errors(job.retry_task_errors);
  r->set_idempotency_key(job.info().idempotency_key);
  r->set_state(job.state);
  r->set_submitted_at_us(ToUs(job.submitted_at));
  r->set_finished_at_us(ToUs(job.info().finished_at));
  for (const AttemptRecord& a : job.info().attempts) {
    store::Attempt* p = r->add_attempts();
    p->set_worker(a.worker);
    p->set_started_at_us(ToUs(a.started_at));
    p->set_ended_at_us(ToUs(a.ended_at));
    p->set_outcome(a.outcome);
  }
  r->set_result(job.info().result);
  // A live job's payload is under its own key; a finished job keeps only
  // the size (Job.payload_size), so it reads the same after a restart.
  if (IsTerminal(job.state)) r->set_payload_size(job.payload_size());
  r->set_error_kind(job.info().error_kind);
  r->set_error_message(job.info().error_message);
}

Job RecordToJob(store::JobRecord&& r) {
  Job job;
  job.id = r.id();
  job.task = TaskName::Intern(r.task());
  job.priority = r.priority();
  job.timeout = absl::Microseconds(r.timeout_us());
  job.max_attempts = r.max_attempts();
  job.retry_task_errors = r.retry_task_errors();
  job.state = v1::Job::State_IsValid(r.state())
                  ? static_cast<JobState>(r.state())
                  : v1::Job::QUEUED;
  job.submitted_at = FromUs(r.submitted_at_us());
  // A queued job that never ran has no details (see Job::details).
  if (r.idempotency_key().empty() && r.attempts_size() == 0 &&
      r.finished_at_us() == 0 && r.result().empty() && r.error_kind().empty() &&
      r.payload_size() == 0) {
    return job;
  }
  JobDetails& d = job.mutable_info();
  d.idempotency_key = std::move(*r.mutable_idempotency_key());
  d.finished_at = FromUs(r.finished_at_us());
  for (store::Attempt& a : *r.mutable_attempts()) {
    d.attempts.push_back(AttemptRecord{std::move(*a.mutable_worker()),
                                       FromUs(a.started_at_us()),
                                       FromUs(a.ended_at_us()),
                                       std::move(*a.mutable_outcome())});
  }
  d.result = std::move(*r.mutable_result());
  d.payload_size = r.payload_size();
  d.error_kind = std::move(*r.mutable_error_kind());
  d.error_message = std::move(*r.mutable_error_message());
  return job;
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": ", s.ToString()));
}

// Reads every record back. Payloads come after job records in key order
// ('j' < 'p'), so they are matched to jobs by id.
absl::Status Recover(rocksdb::DB* db, RecoveredState* out) {
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  absl::flat_hash_map<uint64_t, size_t> index;  // job id -> position in out
  uint64_t skipped = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    const rocksdb::Slice value = it->value();
    if (key.size() == 9 && key[0] == kJobPrefix) {
      store::JobRecord r;
      if (!r.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        ++skipped;
        continue;
      }
      index[r.id()] = out->jobs.size();
      out->jobs.push_back(RecordToJob(std::move(r)));
    } else if (key.size() == 9 && key[0] == kPayloadPrefix) {
      auto found = index.find(absl::big_endian::Load64(key.data() + 1));
      if (found == index.end()) continue;
      out->jobs[found->second].payload.assign(value.data(), value.size());
    } else if (key.size() >= 11 && key[0] == kBatchPrefix) {
      const uint16_t len = absl::big_endian::Load16(key.data() + 1);
      if (key.size() != 3u + len + 8u) {
        ++skipped;
        continue;
      }
      store::BatchRecord r;
      if (!r.ParseFromArray(value.data(), static_cast<int>(value.size())) ||
          r.run_first_size() != r.run_count_size()) {
        ++skipped;
        continue;
      }
      BatchRecord b;
      b.key.client_id.assign(key.data() + 3, len);
      b.key.seq = absl::big_endian::Load64(key.data() + 3 + len);
      for (int i = 0; i < r.run_first_size(); ++i) {
        b.id_runs.emplace_back(r.run_first(i), r.run_count(i));
      }
      b.at = FromUs(r.at_us());
      out->batches.push_back(std::move(b));
    } else if (key == kNextIdKey && value.size() == 8) {
      out->next_id = std::max(out->next_id, absl::big_endian::Load64(value.data()));
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading the journal");
  if (skipped > 0) {
    DEXEC_LOG(ERROR) << "journal records that could not be decoded were "
                        "skipped count="
                     << skipped;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& dir, RecoveredState* recovered) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // A small machine: few background threads; one column family.
  options.IncreaseParallelism(2);
  options.max_background_jobs = 2;
  // Records are read only at startup: small memtables keep the broker's
  // memory close to its job table (two of 16 MiB instead of 64 MiB).
  options.write_buffer_size = 16 << 20;
  options.max_write_buffer_number = 2;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    std::string hint;
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
      hint = " (is another dexec-broker using this --data_dir?)";
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot open the job journal in ", dir, ": ", s.ToString(), hint,
        "; pass another --data_dir, or --in_memory to run without one"));
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string format;
  s = db->Get(rocksdb::ReadOptions(), kFormatKey, &format);
  if (s.IsNotFound()) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (absl::Status w = FromRocks(db->Put(wo, kFormatKey, kFormatVersion),
                                   "writing the journal's format");
        !w.ok()) {
      return w;
    }
  } else if (!s.ok()) {
    return FromRocks(s, absl::StrCat("reading the journal in ", dir));
  } else if (format != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the journal in ", dir, " has format '", format,
        "', which this dexec-broker does not read (it reads '",
        kFormatVersion, "')"));
  }
  if (absl::Status r = Recover(db.get(), recovered); !r.ok()) return r;
  return std::unique_ptr<Journal>(new Journal(std::move(db), dir));
}

Journal::Journal(std::unique_ptr<rocksdb::DB> db, std::string dir)
    : dir_(std::move(dir)), db_(std::move(db)) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "journal");
    Run();
  });
}

Journal::~Journal() { Close(); }

void Journal::Commit(const Changes& changes, const JobTable& jobs,
                     std::vector<Reply> replies) {
  Pending p;
  if (!changes.empty()) {
    store::JobRecord record;
    std::string bytes;
    for (uint64_t id : changes.new_jobs) {
      const Job* job = jobs.Find(id);
      if (job == nullptr || IsTerminal(job->state)) continue;
      p.batch.Put(IdKey(kPayloadPrefix, id), job->payload);
    }
    for (uint64_t id : changes.jobs) {
      const Job* job = jobs.Find(id);
      if (job == nullptr) continue;  // erased: below
      record.Clear();
      JobToRecord(*job, &record);
      record.SerializeToString(&bytes);
      p.batch.Put(IdKey(kJobPrefix, id), bytes);
      if (IsTerminal(job->state)) p.batch.Delete(IdKey(kPayloadPrefix, id));
    }
    for (uint64_t id : changes.erased) {
      p.batch.Delete(IdKey(kJobPrefix, id));
      p.batch.Delete(IdKey(kPayloadPrefix, id));
    }
    for (const BatchRecord& b : changes.batches_added) {
      store::BatchRecord r;
      for (auto [first, count] : b.id_runs) {
        r.add_run_first(first);
        r.add_run_count(count);
      }
      r.set_at_us(ToUs(b.at));
      p.batch.Put(BatchKeyString(b.key), r.SerializeAsString());
    }
    for (const BatchKey& k : changes.batches_removed) {
      p.batch.Delete(BatchKeyString(k));
    }
    p.batch.Put(kNextIdKey, Be64(changes.next_id));
  }
  p.replies = std::move(replies);
  {
    MutexLock lock(&mu_);
    if (p.batch.Count() > 0 || busy_ || !queue_.empty()) {
      queue_.push_back(std::move(p));
      return;
    }
  }
  // Nothing to write and nothing in flight: every earlier reply has run.
  for (Reply& r : p.replies) r();
}

void Journal::Run() {
  while (true) {
    std::vector<Pending> round;
    {
      MutexLock lock(&mu_);
      mu_.Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || closing_;
      });
      if (queue_.empty()) return;  // closing, and everything is done
      round.swap(queue_);
      busy_ = true;
    }
    // Write each batch; the last one that writes anything syncs the log,
    // which makes all of them durable.
    int last = -1;
    for (size_t i = 0; i < round.size(); ++i) {
      if (round[i].batch.Count() > 0) last = static_cast<int>(i);
    }
    uint64_t records = 0;
    for (int i = 0; i <= last; ++i) {
      if (round[i].batch.Count() == 0) continue;
      rocksdb::WriteOptions wo;
      wo.sync = i == last;
      records += round[i].batch.Count();
      rocksdb::Status s = db_->Write(wo, &round[i].batch);
      if (!s.ok()) {
        // Acknowledging what is not stored would break the one promise
        // the journal makes: stop, and let a restart recover what is.
        DEXEC_LOG(ERROR) << "journal write failed in " << dir_ << ": "
                         << s.ToString() << "; stopping the broker";
        std::_Exit(1);
      }
    }
    {
      MutexLock lock(&mu_);
      records_ += records;
      if (last >= 0) ++syncs_;
    }
    for (Pending& p : round) {
      for (Reply& r : p.replies) r();
    }
    MutexLock lock(&mu_);
    busy_ = false;
  }
}

void Journal::Close() {
  if (!thread_.joinable()) return;
  {
    MutexLock lock(&mu_);
    closing_ = true;
  }
  thread_.join();
  rocksdb::FlushOptions fo;
  db_->Flush(fo);
  db_->Close();
}

uint64_t Journal::syncs() const {
  MutexLock lock(&mu_);
  return syncs_;
}

uint64_t Journal::records_written() const {
  MutexLock lock(&mu_);
  return records_;
}

}  // namespace dexec::broker
