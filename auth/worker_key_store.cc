#include "auth/worker_key_store.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/name.h"
#include "auth/secret_file.h"
#include "common/status_macros.h"

namespace dexec::auth {
namespace {

constexpr absl::string_view kHeader = "# dexec worker keys: public keys only";
constexpr absl::string_view kLocalKeyName = "local";

template <typename Entries>
std::string FormatKeys(const Entries& entries) {
  std::string out = absl::StrCat(kHeader, "\n");
  for (const auto& [name, e] : entries) {
    absl::StrAppend(&out, name, " ", e.public_z85, " ",
                    absl::ToUnixSeconds(e.created_at), "\n");
  }
  return out;
}

}  // namespace

WorkerKeyStore::WorkerKeyStore(std::string path, std::string worker_key_path,
                               std::string broker_public_z85,
                               bool created_local_key, Entries entries)
    : path_(std::move(path)),
      worker_key_path_(std::move(worker_key_path)),
      broker_public_z85_(std::move(broker_public_z85)),
      created_local_key_(created_local_key) {
  Install(std::move(entries));
}

absl::StatusOr<std::unique_ptr<WorkerKeyStore>> WorkerKeyStore::Open(
    const std::string& auth_dir, const CurveKeypair& broker_key,
    absl::Time now) {
  if (!IsZ85Key(broker_key.public_z85)) {
    return absl::InvalidArgumentError(
        "the broker's public key is not a 40-character Z85 key");
  }
  RETURN_IF_ERROR(EnsureDirectory(auth_dir, 0700));
  std::string path = auth_dir + "/worker_keys";
  std::string worker_key_path = auth_dir + "/worker.key";

  absl::StatusOr<std::string> text = ReadSecretFile(path, 4 << 20);
  if (text.ok()) {
    Entries entries;
    absl::flat_hash_map<std::string, int> key_line;
    int line_no = 0;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      ++line_no;
      line = absl::StripTrailingAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      auto bad = [&](absl::string_view what) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, " line ", line_no, ": ", what,
            "; each line is `name public_z85 created_unix_seconds`. Fix or "
            "delete the line (deleting revokes that key)"));
      };
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
      if (f.size() != 3) return bad(absl::StrCat(f.size(), " fields, not 3"));
      if (!ValidateName(f[0]).ok()) return bad("invalid name");
      absl::StatusOr<std::string> binary = Z85ToBinary(f[1]);
      if (!binary.ok()) return bad("the key is not a 40-character Z85 key");
      int64_t created = 0;
      if (!absl::SimpleAtoi(f[2], &created)) {
        return bad("created_unix_seconds is not an integer");
      }
      const std::string name(f[0]);
      if (entries.count(name) != 0) return bad("the name appears twice");
      if (!key_line.emplace(*binary, line_no).second) {
        return bad(absl::StrCat("the same key as line ", key_line[*binary]));
      }
      entries[name] = Entry{std::string(f[1]), *std::move(binary),
                            absl::FromUnixSeconds(created)};
    }
    return std::unique_ptr<WorkerKeyStore>(
        new WorkerKeyStore(std::move(path), std::move(worker_key_path),
                           broker_key.public_z85, false, std::move(entries)));
  }
  if (!absl::IsNotFound(text.status())) return text.status();

  // First start. worker.key first, then worker_keys: `worker_keys`
  // existing means the first start finished.
  WorkerCredentials local;
  bool created = false;
  absl::StatusOr<WorkerCredentials> existing =
      ReadWorkerCredentials(worker_key_path);
  if (existing.ok()) {
    if (existing->broker_public_z85 != broker_key.public_z85) {
      return absl::FailedPreconditionError(
          absl::StrCat(worker_key_path,
                       " is for another broker key (its broker_public= "
                       "is not broker.key's); delete it and restart the "
                       "broker to make a new one"));
    }
    local = *std::move(existing);
  } else if (absl::IsNotFound(existing.status())) {
    local.name = std::string(kLocalKeyName);
    ASSIGN_OR_RETURN(local.key, NewCurveKeypair());
    local.broker_public_z85 = broker_key.public_z85;
    RETURN_IF_ERROR(CreateFileExclusive(worker_key_path,
                                        FormatWorkerCredentials(local), 0600));
    created = true;
  } else {
    return existing.status();
  }
  ASSIGN_OR_RETURN(std::string binary, Z85ToBinary(local.key.public_z85));
  Entries entries;
  entries[local.name] = Entry{local.key.public_z85, std::move(binary), now};
  RETURN_IF_ERROR(CreateFileExclusive(path, FormatKeys(entries), 0600));
  return std::unique_ptr<WorkerKeyStore>(
      new WorkerKeyStore(std::move(path), std::move(worker_key_path),
                         broker_key.public_z85, created, std::move(entries)));
}

void WorkerKeyStore::Install(Entries entries) {
  absl::flat_hash_map<std::string, std::string> by_key;
  by_key.reserve(entries.size());
  for (const auto& [name, e] : entries) by_key.emplace(e.public_binary, name);
  {
    MutexLock lock(&mu_);
    entries_.swap(entries);
    by_key_.swap(by_key);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

WorkerKeyStore::Entries WorkerKeyStore::Snapshot() const {
  MutexLock lock(&mu_);
  return entries_;
}

std::optional<std::string> WorkerKeyStore::NameOfKey(
    absl::string_view public_key_binary32) const {
  if (public_key_binary32.size() != kCurveKeyBytes) return std::nullopt;
  MutexLock lock(&mu_);
  const auto it = by_key_.find(public_key_binary32);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<WorkerCredentials> WorkerKeyStore::Create(
    const std::string& name, absl::Time now) {
  RETURN_IF_ERROR(ValidateName(name));
  WorkerCredentials creds;
  creds.name = name;
  ASSIGN_OR_RETURN(creds.key, NewCurveKeypair());
  creds.broker_public_z85 = broker_public_z85_;
  ASSIGN_OR_RETURN(std::string binary, Z85ToBinary(creds.key.public_z85));

  MutexLock write(&write_mu_);
  Entries entries = Snapshot();
  if (entries.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a worker key named \"", name,
        "\" already exists; choose another name, or revoke it first"));
  }
  entries[name] = Entry{creds.key.public_z85, std::move(binary), now};
  RETURN_IF_ERROR(WriteFileAtomically(path_, FormatKeys(entries), 0600));
  Install(std::move(entries));
  return creds;
}

absl::Status WorkerKeyStore::Revoke(const std::string& name) {
  MutexLock write(&write_mu_);
  Entries entries = Snapshot();
  if (entries.erase(name) == 0) {
    if (!ValidateName(name).ok()) {
      return absl::NotFoundError(
          "no worker key has that name (names are [A-Za-z0-9._-]{1,64}); "
          "ListWorkerKeys shows the admitted ones");
    }
    return absl::NotFoundError(
        absl::StrCat("no worker key named \"", name,
                     "\"; ListWorkerKeys shows the admitted ones"));
  }
  RETURN_IF_ERROR(WriteFileAtomically(path_, FormatKeys(entries), 0600));
  Install(std::move(entries));
  return absl::OkStatus();
}

std::vector<WorkerKeyInfo> WorkerKeyStore::List() const {
  std::vector<WorkerKeyInfo> out;
  MutexLock lock(&mu_);
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_) {
    out.push_back(WorkerKeyInfo{name, e.public_z85, e.created_at});
  }
  return out;
}

}  // namespace dexec::auth
