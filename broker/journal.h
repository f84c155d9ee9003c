// The broker's durable job journal: a RocksDB store (its write-ahead log is
// the journal proper) holding every job the broker has acknowledged, so a
// broker killed at any moment comes back with all of them.
//
// Group commit. The broker loop hands over, once per loop iteration, what
// changed (BrokerCore::TakeChanges) together with the replies that must not
// be seen before those changes are on disk (submit acknowledgements, job
// events, unary answers). The `journal` thread writes everything queued
// since its last round, syncs the log once, then runs those replies in
// order. While it syncs, the loop keeps going and the next round collects
// more: one fsync covers many iterations when load is high.
//
// Key layout (see docs/DESIGN.md, "Journal"):
//   "f"                      format version ("1")
//   "n"                      next job id (8 bytes, big-endian)
//   "j" <id BE64>            store.JobRecord (no payload)
//   "p" <id BE64>            payload of a job that has not finished
//   "b" <len BE16> <client> <seq BE64>   store.BatchRecord
//
// Thread-safe: Commit from one thread (the broker loop); Close once.
#ifndef DEXEC_BROKER_JOURNAL_H_
#define DEXEC_BROKER_JOURNAL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "broker/broker_core.h"
#include "broker/job_table.h"
#include "broker/journal_metrics.h"
#include "common/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace dexec::broker {

class Journal {
 public:
  using Reply = std::function<void()>;

  // Opens (creating if needed) the journal in `dir` and reads back what it
  // holds into `recovered`. Fails if another broker has it open. On a disk
  // too full to open it for writing, opens it read-only: the broker starts
  // and serves what it has, and writes wait until space returns (Full()).
  // Full() also holds while fewer than `min_free_bytes` are free on the
  // journal's file system (0: 64 MiB, or a quarter of a smaller one).
  static absl::StatusOr<std::unique_ptr<Journal>> Open(
      const std::string& dir, RecoveredState* recovered,
      uint64_t min_free_bytes = 0);

  ~Journal();  // Close()s
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Encodes `changes` (reading the jobs from `jobs`, on the calling thread)
  // and queues them; `replies` run once they are synced, after every reply
  // queued before. With nothing to write and nothing pending, the replies
  // run at once on the calling thread.
  // `query_replies` answer read-only calls: in order with the others,
  // except while writes fail, when they run at once.
  void Commit(const Changes& changes, const JobTable& jobs,
              std::vector<Reply> replies,
              std::vector<Reply> query_replies = {});

  // Whether new work should be refused: the disk is below its free-space
  // reserve (as of the last CheckSpace), or writes are failing (then they
  // are retried, their replies held, until they succeed: nothing is
  // acknowledged that is not stored). `why` says which, for a client.
  bool Full(std::string* why) const;
  // Reads the journal file system's free space (statvfs; microseconds).
  void CheckSpace();
  // Free bytes above the reserve, as of the last CheckSpace.
  uint64_t SubmitRoom() const;

  // Writes and syncs what is queued, runs its replies, stops the thread.
  void Close();

  // Written and synced so far (for tests and stats).
  uint64_t syncs() const;
  uint64_t records_written() const;
  // A copy of the metrics (thread-safe).
  JournalMetrics metrics() const;

 private:
  struct Pending {
    rocksdb::WriteBatch batch;
    std::vector<Reply> replies;
  };

  Journal(std::unique_ptr<rocksdb::DB> db, std::string dir,
          rocksdb::Options options, bool read_only, uint64_t min_free_bytes);
  void Run();
  // Writes round[from..] (syncing the last); the first failure's status.
  rocksdb::Status WriteRound(std::vector<Pending>& round, size_t* from);
  // After a failed write: reopens the store and writes the rest of `round`
  // again, with backoff, until it succeeds (true) or the journal closes.
  bool RecoverAndWrite(std::vector<Pending>& round, size_t from,
                       const rocksdb::Status& first_error);

  const std::string dir_;
  const rocksdb::Options options_;
  const uint64_t min_free_bytes_;
  std::unique_ptr<rocksdb::DB> db_;  // written only by the journal thread
  bool read_only_;                   // the journal thread's
  std::thread thread_;

  mutable Mutex mu_;
  // Guarded by mu_: what the loop queued and the journal thread has not
  // taken yet, whether the journal thread is working on a round, counters.
  std::vector<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t syncs_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t records_ ABSL_GUARDED_BY(mu_) = 0;
  // Written by the journal thread after each round, read by /metrics.
  JournalMetrics metrics_ ABSL_GUARDED_BY(mu_);
  // Why writes fail now; empty while they succeed.
  std::string failing_ ABSL_GUARDED_BY(mu_);
  bool failing_read_only_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t free_bytes_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_JOURNAL_H_
