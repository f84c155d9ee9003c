// The worker CURVE public keys the broker admits: a worker's ZeroMQ
// handshake succeeds only if its public key is here (the broker's ZAP
// handler asks NameOfKey on every handshake).
//
// Kept in `<auth_dir>/worker_keys` (mode 0600: whoever can write it can
// admit a worker), one line per admitted key:
//
//   # dexec worker keys: public keys only
//   gpu-1 rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7 1700000000
//   local Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID 1700000000
//
// `name public_z85 created_unix_seconds`, rewritten atomically by each
// Create and Revoke before it returns. The broker never keeps a worker's
// secret key: Create hands it out once, in the credentials file's form.
//
// First start (no worker_keys): Open creates a key named "local", admits
// it, and writes `<auth_dir>/worker.key` (the credentials file of
// curve_keys.h, mode 0600, never overwritten), so a worker started on the
// broker's machine with the same --auth_dir joins with no step. If
// worker.key is already there (an earlier first start stopped before
// writing worker_keys), its key is admitted instead.
//
//   ASSIGN_OR_RETURN(CurveKeypair broker_key, LoadOrCreateBrokerKey(dir));
//   ASSIGN_OR_RETURN(std::unique_ptr<WorkerKeyStore> keys,
//                    WorkerKeyStore::Open(dir, broker_key, absl::Now()));
//   // In the ZAP handler, with the 32-byte key from the handshake:
//   std::optional<std::string> name = keys->NameOfKey(client_key);
//
// Thread-safe. NameOfKey never waits for disk I/O: a mutation writes the
// file with only the writers' lock held, then swaps the change in.
#ifndef DEXEC_AUTH_WORKER_KEY_STORE_H_
#define DEXEC_AUTH_WORKER_KEY_STORE_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "common/mutex.h"

namespace dexec::auth {

// An admitted key as List shows it.
struct WorkerKeyInfo {
  std::string name;
  std::string public_z85;
  absl::Time created_at;
};

class WorkerKeyStore {
 public:
  // Opens the admitted keys of `auth_dir` (creating the directory, 0700),
  // and on first start the "local" key and worker.key (above), whose
  // broker_public is `broker_key`'s. FAILED_PRECONDITION with what to do if
  // worker_keys is accessible to group or others or is malformed (naming
  // the line), or if an existing worker.key names another broker's key.
  static absl::StatusOr<std::unique_ptr<WorkerKeyStore>> Open(
      const std::string& auth_dir, const CurveKeypair& broker_key,
      absl::Time now);

  WorkerKeyStore(const WorkerKeyStore&) = delete;
  WorkerKeyStore& operator=(const WorkerKeyStore&) = delete;

  // True if this Open created the "local" key and wrote worker.key.
  bool created_local_key() const { return created_local_key_; }
  // `<auth_dir>/worker.key`, whether or not it exists.
  const std::string& worker_key_path() const { return worker_key_path_; }

  // The name of the admitted key whose 32 raw bytes are
  // `public_key_binary32` (as ZAP delivers it); nullopt if it is not
  // admitted (or not 32 bytes).
  std::optional<std::string> NameOfKey(
      absl::string_view public_key_binary32) const;

  // Admits a new keypair named `name` and returns the credentials a worker
  // needs (FormatWorkerCredentials gives the file); the secret is not kept.
  // Persisted before it returns. INVALID_ARGUMENT for a bad name,
  // ALREADY_EXISTS if the name is admitted.
  absl::StatusOr<WorkerCredentials> Create(const std::string& name,
                                           absl::Time now);

  // Stops admitting the key named `name`: NameOfKey refuses it from the
  // return on, across restarts too. Workers already connected with it stay
  // connected; dropping them is the broker's job. NOT_FOUND if unknown.
  absl::Status Revoke(const std::string& name);

  // The admitted keys, sorted by name.
  std::vector<WorkerKeyInfo> List() const;

  // Grows on every change of the admitted keys: a caller that cached
  // NameOfKey answers drops them when it moves.
  uint64_t generation() const {
    return generation_.load(std::memory_order_acquire);
  }

 private:
  struct Entry {
    std::string public_z85;
    std::string public_binary;  // 32 bytes
    absl::Time created_at;
  };
  using Entries = std::map<std::string, Entry>;  // by name

  WorkerKeyStore(std::string path, std::string worker_key_path,
                 std::string broker_public_z85, bool created_local_key,
                 Entries entries);

  void Install(Entries entries) ABSL_LOCKS_EXCLUDED(mu_);
  Entries Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string path_;
  const std::string worker_key_path_;
  const std::string broker_public_z85_;
  const bool created_local_key_;

  // Serialises Create and Revoke, across the file rewrite; NameOfKey never
  // takes it.
  Mutex write_mu_;
  std::atomic<uint64_t> generation_{0};

  // Guards the admitted keys. Held only for lookups and swaps, never across
  // I/O.
  mutable Mutex mu_;
  Entries entries_ ABSL_GUARDED_BY(mu_);
  // 32-byte public key -> name: the index NameOfKey looks up.
  absl::flat_hash_map<std::string, std::string> by_key_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_WORKER_KEY_STORE_H_
