#include "broker/journal.h"

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/base/internal/endian.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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
    p->set_worker_key(a.worker_key);
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
  r->set_owner(job.owner.str());
}

Job RecordToJob(store::JobRecord&& r) {
  Job job;
  job.id = r.id();
  job.task = TaskName::Intern(r.task());
  job.owner = TaskName::Intern(r.owner());
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
    d.attempts.push_back(AttemptRecord{
        std::move(*a.mutable_worker()), std::move(*a.mutable_worker_key()),
        /*worker_identity=*/"", FromUs(a.started_at_us()),
        FromUs(a.ended_at_us()), std::move(*a.mutable_outcome())});
  }
  d.result = std::move(*r.mutable_result());
  d.payload_size = r.payload_size();
  d.error_kind = std::move(*r.mutable_error_kind());
  d.error_message = std::move(*r.mutable_error_message());
  return job;
}

// RocksDB's own log goes to stderr (warnings and errors), never to a file
// in the data directory: on a full disk its file writer asserts on the
// write after a failed one (`sync_without_flush_called_`, seen in Debian's
// build) and aborts the broker, at open and mid-run.
class StderrLogger final : public rocksdb::Logger {
 public:
  StderrLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char line[1024];
    vsnprintf(line, sizeof(line), format, ap);
    DEXEC_LOG(WARNING) << "rocksdb: " << line;
  }
};

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": ", s.ToString()));
}

// Reads every record back. Payloads come after job records in key order
// ('j' < 'p'), so they are matched to jobs by id.
absl::Status Recover(rocksdb::DB* db, RecoveredState* out) {
  std::unique_ptr<rocksdb::Iterator> it(
      db->NewIterator(rocksdb::ReadOptions()));
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
      out->next_id =
          std::max(out->next_id, absl::big_endian::Load64(value.data()));
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
    const std::string& dir, RecoveredState* recovered,
    uint64_t min_free_bytes) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // A small machine: few background threads; one column family.
  options.IncreaseParallelism(2);
  options.max_background_jobs = 2;
  // Records are read only at startup: small memtables keep the broker's
  // memory close to its job table (two of 16 MiB instead of 64 MiB).
  options.write_buffer_size = 16 << 20;
  options.max_write_buffer_number = 2;
  // A restart on a full disk must start: recovered writes stay in the
  // memtable (and their log) instead of being flushed to a table first.
  options.avoid_flush_during_recovery = true;
  options.info_log = std::make_shared<StderrLogger>();
  // A small file system gets small memtables: flushing one writes a table
  // as large as it, beside the log it replaces, and that must fit in the
  // reserve kept free (min_free_bytes).
  uint64_t fs_size = 0;
  struct statvfs fs;
  if ((::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) &&
      ::statvfs(dir.c_str(), &fs) == 0) {
    fs_size = uint64_t{fs.f_blocks} * fs.f_frsize;
  }
  if (fs_size > 0) {
    options.write_buffer_size = static_cast<size_t>(
        std::clamp<uint64_t>(fs_size / 8, 1 << 20, 16 << 20));
  }
  if (min_free_bytes == 0) {
    min_free_bytes = uint64_t{64} << 20;
    if (fs_size > 0) min_free_bytes = std::min(min_free_bytes, fs_size / 4);
  }
  rocksdb::DB* raw = nullptr;
  bool read_only = false;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (s.IsIOError() &&
      (s.IsNoSpace() || s.ToString().find("No space") != std::string::npos)) {
    // Opening for writing writes (a new log, a table of what the old log
    // held). Read-only, the broker serves what it has; writes wait.
    rocksdb::Status ro = rocksdb::DB::OpenForReadOnly(options, dir, &raw);
    if (ro.ok()) {
      DEXEC_LOG(ERROR) << "journal opened read-only: the disk is full data_dir="
                       << dir << " error=\"" << s.ToString()
                       << "\"; submits are refused until space returns";
      read_only = true;
      s = ro;
    }
  }
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
  if (s.IsNotFound() && read_only) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot create the job journal in ", dir,
        ": the disk is full; free space, or pass another --data_dir"));
  }
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
    return absl::FailedPreconditionError(
        absl::StrCat("the journal in ", dir, " has format '", format,
                     "', which this dexec-broker does not read (it reads '",
                     kFormatVersion, "')"));
  }
  if (absl::Status r = Recover(db.get(), recovered); !r.ok()) return r;
  return std::unique_ptr<Journal>(
      new Journal(std::move(db), dir, options, read_only, min_free_bytes));
}

Journal::Journal(std::unique_ptr<rocksdb::DB> db, std::string dir,
                 rocksdb::Options options, bool read_only,
                 uint64_t min_free_bytes)
    : dir_(std::move(dir)),
      options_(std::move(options)),
      min_free_bytes_(min_free_bytes),
      db_(std::move(db)),
      read_only_(read_only) {
  if (read_only_) {
    MutexLock lock(&mu_);
    failing_ = "the journal's disk is full (it was opened read-only)";
    failing_read_only_ = true;
  }
  CheckSpace();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "journal");
    Run();
  });
}

Journal::~Journal() { Close(); }

rocksdb::Status Journal::WriteRound(std::vector<Pending>& round, size_t* from) {
  int last = -1;
  for (size_t i = *from; i < round.size(); ++i) {
    if (round[i].batch.Count() > 0) last = static_cast<int>(i);
  }
  for (int i = static_cast<int>(*from); i <= last; ++i) {
    *from = static_cast<size_t>(i);
    if (round[i].batch.Count() == 0) continue;
    rocksdb::WriteOptions wo;
    wo.sync = i == last;
    rocksdb::Status s = db_->Write(wo, &round[i].batch);
    if (!s.ok()) return s;
  }
  *from = round.size();
  return rocksdb::Status::OK();
}

bool Journal::RecoverAndWrite(std::vector<Pending>& round, size_t from,
                              const rocksdb::Status& first_error) {
  // Acknowledging what is not stored would break the one promise the
  // journal makes. So the replies wait, new submits are refused (Full),
  // and the writes are tried again — they are idempotent (whole records
  // put, keys deleted), so writing a batch twice is harmless.
  {
    MutexLock lock(&mu_);
    failing_ =
        first_error.IsNoSpace() ||
                first_error.ToString().find("No space") != std::string::npos ||
                read_only_
            ? "the journal's disk is full"
            : absl::StrCat("journal writes fail: ", first_error.ToString());
  }
  DEXEC_LOG(ERROR) << "journal write failed data_dir=" << dir_ << " error=\""
                   << first_error.ToString()
                   << "\"; refusing submits and holding replies until it "
                      "succeeds";
  absl::Duration backoff = absl::Milliseconds(100);
  for (int tries = 1;; ++tries) {
    {
      MutexLock lock(&mu_);
      // Waiting out the backoff (or Close), not synchronising.
      if (mu_.AwaitWithDeadline(
              [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closing_; },
              absl::Now() + backoff)) {
        DEXEC_LOG(ERROR) << "journal closing with writes that never "
                            "succeeded; their clients were not answered";
        return false;
      }
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
    rocksdb::Status s;
    if (read_only_) {
      s = rocksdb::Status::Incomplete("read-only");
    } else {
      s = db_->Resume();
    }
    if (!s.ok()) {
      // Not recoverable in place (or opened read-only): open it again.
      db_.reset();
      rocksdb::DB* raw = nullptr;
      s = rocksdb::DB::Open(options_, dir_, &raw);
      if (!s.ok()) {
        rocksdb::Status ro = rocksdb::DB::OpenForReadOnly(options_, dir_, &raw);
        if (!ro.ok()) {
          DEXEC_LOG(ERROR) << "journal cannot be reopened data_dir=" << dir_
                           << " error=\"" << ro.ToString() << "\"";
          std::_Exit(1);  // not even readable: nothing left to serve
        }
        db_.reset(raw);
        read_only_ = true;
        continue;
      }
      db_.reset(raw);
      read_only_ = false;
    }
    s = WriteRound(round, &from);
    if (s.ok()) {
      MutexLock lock(&mu_);
      failing_.clear();
      failing_read_only_ = false;
      DEXEC_LOG(INFO) << "journal writes resumed data_dir=" << dir_
                      << " tries=" << tries;
      return true;
    }
  }
}

uint64_t Journal::SubmitRoom() const {
  MutexLock lock(&mu_);
  return free_bytes_ > min_free_bytes_ ? free_bytes_ - min_free_bytes_ : 0;
}

bool Journal::Full(std::string* why) const {
  MutexLock lock(&mu_);
  // Opened read-only on a full disk, nothing is being written: once space
  // is back, let a submit through; its write reopens the store for writing.
  const bool waiting_for_a_write = failing_read_only_ && !busy_ &&
                                   queue_.empty() &&
                                   free_bytes_ >= min_free_bytes_;
  if (!failing_.empty() && !waiting_for_a_write) {
    *why = failing_;
    return true;
  }
  if (free_bytes_ < min_free_bytes_) {
    *why = absl::StrCat("the journal's disk is full: ", free_bytes_,
                        " bytes free in ", dir_, ", below the reserve of ",
                        min_free_bytes_, " (--journal_min_free_bytes)");
    return true;
  }
  return false;
}

void Journal::CheckSpace() {
  struct statvfs fs;
  if (::statvfs(dir_.c_str(), &fs) != 0) return;
  const uint64_t free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
  MutexLock lock(&mu_);
  free_bytes_ = free_bytes;
}

void Journal::Commit(const Changes& changes, const JobTable& jobs,
                     std::vector<Reply> replies,
                     std::vector<Reply> query_replies) {
  bool failing;
  {
    MutexLock lock(&mu_);
    failing = !failing_.empty();
  }
  if (failing) {
    // Writes are stuck until space returns: answer queries now, from what
    // the broker holds, rather than behind them (what they report may not
    // be durable yet: docs/DESIGN.md, "Disk full").
    for (Reply& r : query_replies) r();
  } else {
    for (Reply& r : query_replies) replies.push_back(std::move(r));
  }
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
    uint64_t records = 0;
    int last = -1;
    for (size_t i = 0; i < round.size(); ++i) {
      records += round[i].batch.Count();
      if (round[i].batch.Count() > 0) last = static_cast<int>(i);
    }
    size_t from = 0;
    const absl::Time write_started = absl::Now();
    rocksdb::Status s = last < 0 ? rocksdb::Status::OK()
                        : read_only_
                            ? rocksdb::Status::NotSupported("opened read-only")
                            : WriteRound(round, &from);
    if (!s.ok() && !RecoverAndWrite(round, from, s)) {
      // Closing with writes that never succeeded: their replies (what
      // would acknowledge them) never run. A restart recovers what is on
      // disk; clients resubmit what was not acknowledged.
      return;
    }
    {
      MutexLock lock(&mu_);
      records_ += records;
      if (last >= 0) {
        ++syncs_;
        metrics_.commit_seconds.Observe(
            absl::ToDoubleSeconds(absl::Now() - write_started));
        metrics_.round_records.Observe(static_cast<double>(records));
      }
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

JournalMetrics Journal::metrics() const {
  MutexLock lock(&mu_);
  return metrics_;
}

uint64_t Journal::records_written() const {
  MutexLock lock(&mu_);
  return records_;
}

}  // namespace dexec::broker
