#include "auth/token_store.h"

#include <sodium.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "auth/secret_file.h"
#include "common/status_macros.h"

namespace dexec::auth {
namespace {

constexpr absl::string_view kTokensHeader = "# dexec tokens: hashes only";
constexpr absl::string_view kSecretPrefix = "dexec_";
constexpr size_t kSecretBytes = 32;
constexpr size_t kDigestBytes = crypto_hash_sha256_BYTES;
// Longer presented secrets are refused before hashing, so a hostile caller
// cannot make a check cost more than hashing this much.
constexpr size_t kMaxPresentedSecret = 1024;

absl::Status EnsureSodium() {
  static std::once_flag once;
  static int rc = -1;
  std::call_once(once, [] { rc = sodium_init(); });
  // 1 means "already initialised" (by libzmq, say): fine too.
  if (rc < 0) {
    return absl::InternalError(
        "libsodium failed to initialise (sodium_init); is /dev/urandom "
        "readable?");
  }
  return absl::OkStatus();
}

std::string Sha256(absl::string_view data) {
  std::string digest(kDigestBytes, '\0');
  crypto_hash_sha256(reinterpret_cast<unsigned char*>(digest.data()),
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size());
  return digest;
}

std::string ToHex(absl::string_view bin) {
  std::string hex(bin.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(),
                 reinterpret_cast<const unsigned char*>(bin.data()),
                 bin.size());
  hex.pop_back();  // the terminating NUL
  return hex;
}

bool IsLowerHex(absl::string_view s) {
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Hex to bytes; the caller has checked IsLowerHex and the even length.
std::string FromHex(absl::string_view hex) {
  std::string bin(hex.size() / 2, '\0');
  for (size_t i = 0; i < bin.size(); ++i) {
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    bin[i] =
        static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  }
  return bin;
}

bool IsTokenSecret(absl::string_view s) {
  return s.size() == kTokenSecretLength && absl::StartsWith(s, kSecretPrefix) &&
         IsLowerHex(s.substr(kSecretPrefix.size()));
}

absl::StatusOr<std::string> NewSecret() {
  RETURN_IF_ERROR(EnsureSodium());
  unsigned char bytes[kSecretBytes];
  randombytes_buf(bytes, sizeof(bytes));
  std::string secret = absl::StrCat(
      kSecretPrefix,
      ToHex(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes))));
  sodium_memzero(bytes, sizeof(bytes));
  return secret;
}

// One shared instance: copying it is a reference-count increment, where
// building a Status with a message allocates, on the path a hostile caller
// drives.
const absl::Status& Unauthenticated() {
  static const absl::Status* const kStatus =
      new absl::Status(absl::UnauthenticatedError("unknown or revoked token"));
  return *kStatus;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kSubmit:
      return "submit";
    case Role::kRead:
      return "read";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (const Role role : {Role::kAdmin, Role::kSubmit, Role::kRead}) {
    if (name == RoleName(role)) return role;
  }
  // Not echoed: a confused caller may have passed a secret here.
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role (", name.size(),
                   " characters): use admin, submit or read"));
}

namespace {

// The text of the tokens file for `entries`.
template <typename Entries>
std::string FormatTokens(const Entries& entries) {
  std::string out = absl::StrCat(kTokensHeader, "\n");
  for (const auto& [name, e] : entries) {
    absl::StrAppend(&out, name, " ", RoleName(e.role), " ", ToHex(e.digest),
                    " ", absl::ToUnixSeconds(e.created_at), "\n");
  }
  return out;
}

}  // namespace

TokenStore::TokenStore(std::string tokens_path, std::string client_token_path,
                       bool created_admin, Entries entries)
    : tokens_path_(std::move(tokens_path)),
      client_token_path_(std::move(client_token_path)),
      created_admin_(created_admin) {
  Install(std::move(entries));
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(
    const std::string& auth_dir, absl::Time now) {
  RETURN_IF_ERROR(EnsureSodium());
  RETURN_IF_ERROR(EnsureDirectory(auth_dir, 0700));
  const std::string tokens_path = auth_dir + "/tokens";
  const std::string client_token_path = auth_dir + "/client.token";

  // Hashes of 256-bit secrets are not secrets, but a tokens file others
  // can read (or write) says the directory's permissions were not thought
  // about: refuse it.
  absl::StatusOr<std::string> text = ReadSecretFile(tokens_path, 4 << 20);
  if (text.ok()) {
    Entries entries;
    int line_no = 0;
    absl::flat_hash_map<std::string, int> digest_line;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      ++line_no;
      line = absl::StripTrailingAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      auto bad = [&](absl::string_view what) {
        return absl::FailedPreconditionError(absl::StrCat(
            tokens_path, " line ", line_no, ": ", what,
            "; each line is `name role sha256hex created_unix_seconds`. "
            "Fix or delete the line (deleting revokes that token)"));
      };
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
      if (f.size() != 4) return bad(absl::StrCat(f.size(), " fields, not 4"));
      if (!ValidateName(f[0]).ok()) return bad("invalid name");
      absl::StatusOr<Role> role = ParseRole(f[1]);
      if (!role.ok()) return bad("unknown role (admin, submit or read)");
      if (f[2].size() != 2 * kDigestBytes || !IsLowerHex(f[2])) {
        return bad("the hash is not 64 lowercase hex digits");
      }
      int64_t created = 0;
      if (!absl::SimpleAtoi(f[3], &created)) {
        return bad("created_unix_seconds is not an integer");
      }
      const std::string name(f[0]);
      if (entries.count(name) != 0) return bad("the name appears twice");
      std::string digest = FromHex(f[2]);
      if (!digest_line.emplace(digest, line_no).second) {
        return bad(absl::StrCat("the same hash as line ", digest_line[digest]));
      }
      entries[name] =
          Entry{*role, std::move(digest), absl::FromUnixSeconds(created)};
    }
    return std::unique_ptr<TokenStore>(new TokenStore(
        tokens_path, client_token_path, false, std::move(entries)));
  }
  if (!absl::IsNotFound(text.status())) return text.status();

  // First start. client.token first, then tokens: `tokens` existing means
  // the first start finished. A client.token already here means an earlier
  // first start stopped between the two: adopt its secret rather than
  // overwrite it.
  std::string secret;
  bool created_admin = false;
  absl::StatusOr<std::string> existing = ReadSecretFile(client_token_path);
  if (existing.ok()) {
    secret = std::string(absl::StripAsciiWhitespace(
        absl::string_view(*existing).substr(0, existing->find('\n'))));
    if (!IsTokenSecret(secret)) {
      return absl::FailedPreconditionError(absl::StrCat(
          client_token_path, " exists but holds no dexec token (", tokens_path,
          " is missing); remove it and start the broker again to create a "
          "new admin token"));
    }
  } else if (absl::IsNotFound(existing.status())) {
    ASSIGN_OR_RETURN(secret, NewSecret());
    RETURN_IF_ERROR(CreateFileExclusive(client_token_path,
                                        absl::StrCat(secret, "\n"), 0600));
    created_admin = true;
  } else {
    return existing.status();
  }
  Entries entries;
  entries["admin"] = Entry{Role::kAdmin, Sha256(secret), now};
  sodium_memzero(secret.data(), secret.size());
  RETURN_IF_ERROR(
      CreateFileExclusive(tokens_path, FormatTokens(entries), 0600));
  return std::unique_ptr<TokenStore>(new TokenStore(
      tokens_path, client_token_path, created_admin, std::move(entries)));
}

void TokenStore::Install(Entries entries) {
  absl::flat_hash_map<std::string, Principal> by_digest;
  by_digest.reserve(entries.size());
  for (const auto& [name, e] : entries) {
    by_digest.emplace(e.digest, Principal{name, e.role});
  }
  MutexLock lock(&mu_);
  entries_.swap(entries);
  by_digest_.swap(by_digest);
  // The old maps are destroyed after the lock is released.
}

TokenStore::Entries TokenStore::Snapshot() const {
  MutexLock lock(&mu_);
  return entries_;
}

absl::StatusOr<Principal> TokenStore::Authenticate(
    absl::string_view secret) const {
  if (secret.empty() || secret.size() > kMaxPresentedSecret) {
    return Unauthenticated();
  }
  // On the stack: no allocation per check.
  unsigned char digest[kDigestBytes];
  crypto_hash_sha256(digest,
                     reinterpret_cast<const unsigned char*>(secret.data()),
                     secret.size());
  const absl::string_view key(reinterpret_cast<const char*>(digest),
                              sizeof(digest));
  MutexLock lock(&mu_);
  // The hash lookup compares digests in variable time; that reveals
  // nothing usable (finding a secret from its digest's prefix is a
  // preimage attack on SHA-256). The last compare is constant-time anyway.
  const auto it = by_digest_.find(key);
  if (it == by_digest_.end() ||
      sodium_memcmp(it->first.data(), digest, kDigestBytes) != 0) {
    return Unauthenticated();
  }
  return it->second;
}

absl::StatusOr<Principal> TokenStore::AuthenticateHeader(
    absl::string_view authorization) const {
  constexpr absl::string_view kScheme = "bearer ";
  if (absl::StripAsciiWhitespace(authorization).empty() ||
      absl::EqualsIgnoreCase(absl::StripTrailingAsciiWhitespace(authorization),
                             "bearer")) {
    return absl::UnauthenticatedError(
        "missing bearer token (authorization: Bearer <token>)");
  }
  if (authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()),
                              kScheme)) {
    // Not echoed: it may be someone's password.
    return absl::UnauthenticatedError(
        "unsupported authorization scheme; send authorization: Bearer "
        "<token>");
  }
  return Authenticate(authorization.substr(kScheme.size()));
}

absl::StatusOr<std::string> TokenStore::Create(const std::string& name,
                                               Role role, absl::Time now) {
  RETURN_IF_ERROR(ValidateName(name));
  ASSIGN_OR_RETURN(std::string secret, NewSecret());
  MutexLock write(&write_mu_);
  Entries entries = Snapshot();
  if (entries.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a token named \"", name,
        "\" already exists; choose another name, or revoke it first"));
  }
  entries[name] = Entry{role, Sha256(secret), now};
  RETURN_IF_ERROR(
      WriteFileAtomically(tokens_path_, FormatTokens(entries), 0600));
  Install(std::move(entries));
  return secret;
}

absl::Status TokenStore::Revoke(const std::string& name) {
  MutexLock write(&write_mu_);
  Entries entries = Snapshot();
  const auto it = entries.find(name);
  if (it == entries.end()) {
    // Only a valid name is echoed: it cannot be a whole secret (64 < 70
    // characters), and a caller may have passed a secret by mistake.
    if (!ValidateName(name).ok()) {
      return absl::NotFoundError(
          "no token has that name (names are [A-Za-z0-9._-]{1,64}); "
          "ListTokens shows the live ones");
    }
    return absl::NotFoundError(absl::StrCat(
        "no token named \"", name, "\"; ListTokens shows the live ones"));
  }
  if (it->second.role == Role::kAdmin) {
    int admins = 0;
    for (const auto& [n, e] : entries) admins += e.role == Role::kAdmin;
    if (admins == 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "\"", name,
          "\" is the last admin token; create another admin token before "
          "revoking it, or nobody could manage tokens any more"));
    }
  }
  entries.erase(it);
  RETURN_IF_ERROR(
      WriteFileAtomically(tokens_path_, FormatTokens(entries), 0600));
  Install(std::move(entries));
  return absl::OkStatus();
}

std::vector<TokenInfo> TokenStore::List() const {
  std::vector<TokenInfo> out;
  MutexLock lock(&mu_);
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) {  // std::map: sorted by name
    out.push_back(TokenInfo{name, e.role, e.created_at});
  }
  return out;
}

}  // namespace dexec::auth
