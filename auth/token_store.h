// The broker's client tokens: who may call the gRPC API, and with which role.
//
// A token is a bearer secret, "dexec_" followed by 64 lowercase hex digits
// (256 random bits), with a name and a role. The broker keeps only the
// SHA-256 digest of each secret, in `<auth_dir>/tokens` (mode 0600):
//
//   # dexec tokens: hashes only
//   admin admin 3f2a...64 hex digits... 1700000000
//   ci submit 9b1c...64 hex digits... 1700000360
//
// one line per live token: `name role sha256hex created_unix_seconds`. Each
// change rewrites the file atomically (temporary, fsync, rename) before the
// call returns, so Create and Revoke are durable and take effect at once.
//
// First start: when `tokens` does not exist, Open creates an admin token
// named "admin" and writes its secret to `<auth_dir>/client.token` (mode
// 0600; the secret and "\n"), so a client run in the broker's directory
// finds it (client_credentials.h). Open never overwrites either file. If
// `tokens` exists and `client.token` does not, the operator removed it
// (say, after copying it elsewhere): it is not recreated.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<TokenStore> tokens,
//                    TokenStore::Open(auth_dir, absl::Now()));
//   if (tokens->created_admin()) {
//     DEXEC_LOG(INFO) << "admin token written path="
//                     << tokens->client_token_path();
//   }
//   // In each RPC:
//   absl::StatusOr<Principal> who = tokens->AuthenticateHeader(authorization);
//
// Authenticate hashes the presented secret and looks the digest up; the
// final comparison is constant-time (sodium_memcmp). Cost per
// AuthenticateHeader with 101 live tokens, best of 20 batches on the 2-core
// machine: 0.8-0.9 µs with -c opt, 2.2-2.6 µs in a fastbuild (SHA-256 is
// ~0.75 µs of it); token_store_test prints it. A refusal allocates nothing.
// Secrets appear in no error message.
//
// Thread-safe. Authenticate never waits for disk I/O: a mutation writes the
// file with only the writers' lock held, then swaps the change in.
#ifndef DEXEC_AUTH_TOKEN_STORE_H_
#define DEXEC_AUTH_TOKEN_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/name.h"
#include "common/mutex.h"

namespace dexec::auth {

// What a token may do (the broker maps RPCs to roles; docs/DESIGN.md,
// "Security"). kAdmin may also manage tokens and worker keys.
enum class Role { kAdmin, kSubmit, kRead };

// "admin", "submit" or "read".
absl::string_view RoleName(Role role);

// The Role named `name` (exactly as RoleName spells it); INVALID_ARGUMENT
// naming the three otherwise.
absl::StatusOr<Role> ParseRole(absl::string_view name);

// Who an authenticated caller is.
struct Principal {
  std::string name;
  Role role;
};

// A live token as List shows it (never its secret or digest).
struct TokenInfo {
  std::string name;
  Role role;
  absl::Time created_at;
};

// The length of a token secret: "dexec_" and 64 hex digits.
inline constexpr size_t kTokenSecretLength = 6 + 64;

class TokenStore {
 public:
  // Opens the tokens of `auth_dir`, creating the directory (mode 0700) and,
  // on first start, the admin token (see the top of this file); `now` is
  // its created_at. FAILED_PRECONDITION with what to do if `tokens` is
  // accessible to group or others, or is malformed (naming the line);
  // other codes for I/O errors, naming the path.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(
      const std::string& auth_dir, absl::Time now);

  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  // True if this Open created the admin token and wrote client.token.
  bool created_admin() const { return created_admin_; }
  // `<auth_dir>/client.token`, whether or not it exists.
  const std::string& client_token_path() const { return client_token_path_; }

  // The principal whose token `secret` is; UNAUTHENTICATED "unknown or
  // revoked token" otherwise.
  absl::StatusOr<Principal> Authenticate(absl::string_view secret) const;

  // Authenticate for the value of an `authorization` header: "Bearer
  // <secret>" (the scheme in any case, then one space). UNAUTHENTICATED
  // "missing bearer token (authorization: Bearer <token>)" if `authorization`
  // is empty or has no secret; UNAUTHENTICATED for another scheme.
  absl::StatusOr<Principal> AuthenticateHeader(
      absl::string_view authorization) const;

  // Creates a token named `name` with `role` and returns its secret (shown
  // once: the store keeps only its digest). Persisted before it returns.
  // INVALID_ARGUMENT for a bad name (ValidateName), ALREADY_EXISTS if a
  // live token has the name.
  absl::StatusOr<std::string> Create(const std::string& name, Role role,
                                     absl::Time now);

  // Revokes the token named `name`: from the return on, Authenticate
  // refuses it, and it stays revoked across restarts. NOT_FOUND if no live
  // token has the name; FAILED_PRECONDITION if it is the last admin token
  // (nobody could manage tokens any more).
  absl::Status Revoke(const std::string& name);

  // The live tokens, sorted by name.
  std::vector<TokenInfo> List() const;

 private:
  struct Entry {
    Role role;
    std::string digest;  // SHA-256 of the secret, 32 bytes
    absl::Time created_at;
  };
  using Entries = std::map<std::string, Entry>;  // by name

  TokenStore(std::string tokens_path, std::string client_token_path,
             bool created_admin, Entries entries);

  // Installs `entries` as the live set (rebuilding the digest index).
  void Install(Entries entries) ABSL_LOCKS_EXCLUDED(mu_);
  Entries Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string tokens_path_;
  const std::string client_token_path_;
  const bool created_admin_;

  // Serialises Create and Revoke, across the file rewrite; Authenticate
  // never takes it.
  Mutex write_mu_;

  // Guards the live tokens. Held only for lookups and swaps, never across
  // I/O.
  mutable Mutex mu_;
  Entries entries_ ABSL_GUARDED_BY(mu_);
  // Digest -> principal: the index Authenticate looks up.
  absl::flat_hash_map<std::string, Principal> by_digest_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_TOKEN_STORE_H_
