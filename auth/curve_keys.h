// ZeroMQ CURVE keys: the broker's keypair, and the credentials file a
// worker needs to join it.
//
// A CURVE key is 32 bytes, written as 40 characters of Z85 (ZeroMQ RFC 32).
// The broker's ROUTER socket is a CURVE server with the broker's keypair;
// a worker is a CURVE client that must know the broker's public key, and
// the broker admits it only if its public key is in worker_keys
// (worker_key_store.h).
//
// Files in the auth directory (all `key=value` lines; lines starting with
// '#' and blank lines are ignored):
//
//   broker.key   (0600)  # dexec broker CURVE key: keep secret (mode 0600)
//                        public=<z85>
//                        secret=<z85>
//   broker.pub   (0644)  public=<z85>
//   worker.key   (0600)  the worker credentials file, below
//
// The worker credentials file is the ONE file a worker needs, and a
// contract with workers in other languages (the Python worker reads it):
//
//   # dexec worker credentials: keep secret (mode 0600)
//   name=<key name>
//   public=<worker public z85>
//   secret=<worker secret z85>
//   broker_public=<broker public z85>
//
// Readers ignore keys they do not know (so fields can be added) and refuse
// a file missing one of these four, a key given twice, a line without '=',
// or a public key that does not belong to its secret. Error messages name
// the line, never a key's value.
//
//   ASSIGN_OR_RETURN(CurveKeypair broker, LoadOrCreateBrokerKey(auth_dir));
//   ASSIGN_OR_RETURN(WorkerCredentials creds,
//                    ReadWorkerCredentials(auth_dir + "/worker.key"));
//
// Thread-safe (no shared state).
#ifndef DEXEC_AUTH_CURVE_KEYS_H_
#define DEXEC_AUTH_CURVE_KEYS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dexec::auth {

inline constexpr size_t kCurveKeyBytes = 32;
inline constexpr size_t kZ85KeyLength = 40;

struct CurveKeypair {
  std::string public_z85;  // 40 characters
  std::string secret_z85;  // 40 characters
};

// A fresh keypair from libzmq (random bytes from libsodium).
// FAILED_PRECONDITION if libzmq was built without CURVE.
absl::StatusOr<CurveKeypair> NewCurveKeypair();

// The public key of the CURVE secret key `secret_z85`. INVALID_ARGUMENT if
// it is not a Z85 key.
absl::StatusOr<std::string> PublicFromSecret(absl::string_view secret_z85);

// True if `s` is 40 Z85 characters encoding 32 bytes.
bool IsZ85Key(absl::string_view s);

// The 32 bytes a Z85 key encodes (what ZAP hands the broker);
// INVALID_ARGUMENT if !IsZ85Key(z85).
absl::StatusOr<std::string> Z85ToBinary(absl::string_view z85);

// The Z85 form of the 32-byte key `bin32`; empty if `bin32` is not 32
// bytes.
std::string BinaryToZ85(absl::string_view bin32);

// The broker's keypair from `<auth_dir>/broker.key`, created (with
// `<auth_dir>/broker.pub` and the directory, 0700) on first start and only
// read afterwards. FAILED_PRECONDITION with what to do if broker.key is
// accessible to group or others, malformed, or its public key does not
// match its secret, or if broker.pub holds another key.
absl::StatusOr<CurveKeypair> LoadOrCreateBrokerKey(const std::string& auth_dir);

// What a worker needs to join a broker (the file format above).
struct WorkerCredentials {
  std::string name;  // the key's name in the broker's worker_keys
  CurveKeypair key;
  std::string broker_public_z85;
};

// The file's text, header comment included.
std::string FormatWorkerCredentials(const WorkerCredentials& creds);

// Parses the file's text. INVALID_ARGUMENT naming the line or the missing
// key.
absl::StatusOr<WorkerCredentials> ParseWorkerCredentials(
    absl::string_view text);

// Reads and parses the credentials file at `path`. NOT_FOUND: "<path> not
// found: start the broker with this --auth_dir first, or copy the broker's
// worker.key here (README, 'Running across machines')". FAILED_PRECONDITION
// "... chmod 600 <path>" if the group or others may access it, or if it is
// malformed (naming the path and the line).
absl::StatusOr<WorkerCredentials> ReadWorkerCredentials(
    const std::string& path);

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_CURVE_KEYS_H_
