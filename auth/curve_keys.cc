#include "auth/curve_keys.h"

#include <errno.h>
#include <zmq.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/name.h"
#include "auth/secret_file.h"
#include "common/status_macros.h"

namespace dexec::auth {
namespace {

constexpr absl::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&"
    "<>()[]{}@%$#";
constexpr absl::string_view kWorkerHeader =
    "# dexec worker credentials: keep secret (mode 0600)";
constexpr absl::string_view kBrokerHeader =
    "# dexec broker CURVE key: keep secret (mode 0600)";

// `key=value` lines -> map. Errors are INVALID_ARGUMENT naming the line and
// the key, never a value (values are secrets).
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> ParseKeyValues(
    absl::string_view text) {
  absl::flat_hash_map<std::string, std::string> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": expected key=value"));
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (!out.emplace(key, value).second) {
      // Only our own keys are echoed: Z85 has '=' in its alphabet, so a
      // pasted secret can look like "fragment=rest".
      const bool echo = key == "name" || key == "public" || key == "secret" ||
                        key == "broker_public";
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line_no, ": ", echo ? key : "a key", "= appears twice"));
    }
  }
  return out;
}

absl::StatusOr<std::string> Required(
    const absl::flat_hash_map<std::string, std::string>& kv,
    absl::string_view key) {
  const auto it = kv.find(key);
  if (it == kv.end() || it->second.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no ", key, "= line"));
  }
  return it->second;
}

// Checks that `key` holds a Z85 key and, with `secret`, that it is that
// secret's public key.
absl::Status CheckKeypair(const CurveKeypair& key, absl::string_view what) {
  if (!IsZ85Key(key.public_z85)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "public= is not a 40-character Z85 key"));
  }
  if (!IsZ85Key(key.secret_z85)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "secret= is not a 40-character Z85 key"));
  }
  ASSIGN_OR_RETURN(const std::string derived, PublicFromSecret(key.secret_z85));
  if (derived != key.public_z85) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "public= is not the public key of secret="));
  }
  return absl::OkStatus();
}

absl::Status WithPath(const absl::Status& s, const std::string& path,
                      absl::string_view advice) {
  return absl::FailedPreconditionError(
      absl::StrCat(path, ": ", s.message(), advice));
}

absl::StatusOr<CurveKeypair> ParseBrokerKey(absl::string_view text) {
  ASSIGN_OR_RETURN(const auto kv, ParseKeyValues(text));
  CurveKeypair key;
  ASSIGN_OR_RETURN(key.public_z85, Required(kv, "public"));
  ASSIGN_OR_RETURN(key.secret_z85, Required(kv, "secret"));
  RETURN_IF_ERROR(CheckKeypair(key, ""));
  return key;
}

// Creates broker.pub if missing; checks it otherwise.
absl::Status EnsureBrokerPub(const std::string& path, const CurveKeypair& key) {
  const std::string content = absl::StrCat("public=", key.public_z85, "\n");
  absl::Status created = CreateFileExclusive(path, content, 0644);
  if (!absl::IsAlreadyExists(created)) return created;
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path));
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> kv =
      ParseKeyValues(text);
  if (!kv.ok() || (*kv)["public"] != key.public_z85) {
    return absl::FailedPreconditionError(
        absl::StrCat(path,
                     " does not hold the public key of broker.key beside it; "
                     "delete it and restart the broker to recreate it"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CurveKeypair> NewCurveKeypair() {
  char pub[kZ85KeyLength + 1];
  char sec[kZ85KeyLength + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create a CURVE keypair (", zmq_strerror(errno),
        "): libzmq was built without CURVE; install Debian's libzmq5"));
  }
  CurveKeypair key{std::string(pub, kZ85KeyLength),
                   std::string(sec, kZ85KeyLength)};
  std::memset(sec, 0, sizeof(sec));
  return key;
}

absl::StatusOr<std::string> PublicFromSecret(absl::string_view secret_z85) {
  if (!IsZ85Key(secret_z85)) {
    return absl::InvalidArgumentError(
        "a CURVE secret key is 40 Z85 characters; this is not one");
  }
  const std::string secret(secret_z85);  // NUL-terminated for libzmq
  char pub[kZ85KeyLength + 1];
  if (zmq_curve_public(pub, secret.c_str()) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot derive a CURVE public key (", zmq_strerror(errno),
                     "): libzmq was built without CURVE"));
  }
  return std::string(pub, kZ85KeyLength);
}

bool IsZ85Key(absl::string_view s) {
  if (s.size() != kZ85KeyLength) return false;
  for (size_t group = 0; group < s.size(); group += 5) {
    uint64_t value = 0;
    for (size_t i = group; i < group + 5; ++i) {
      const size_t digit = kZ85Alphabet.find(s[i]);
      if (digit == absl::string_view::npos) return false;
      value = value * 85 + digit;
    }
    // Five characters can spell more than 32 bits; such a key decodes to
    // garbage (older libzmq does not check).
    if (value > UINT32_MAX) return false;
  }
  return true;
}

absl::StatusOr<std::string> Z85ToBinary(absl::string_view z85) {
  if (!IsZ85Key(z85)) {
    return absl::InvalidArgumentError(
        "a CURVE key is 40 Z85 characters; this is not one");
  }
  const std::string text(z85);
  std::string bin(kCurveKeyBytes, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), text.c_str()) ==
      nullptr) {
    return absl::InvalidArgumentError("not a Z85 key");
  }
  return bin;
}

std::string BinaryToZ85(absl::string_view bin32) {
  if (bin32.size() != kCurveKeyBytes) return "";
  char out[kZ85KeyLength + 1];
  if (zmq_z85_encode(out, reinterpret_cast<const uint8_t*>(bin32.data()),
                     bin32.size()) == nullptr) {
    return "";
  }
  return std::string(out, kZ85KeyLength);
}

absl::StatusOr<CurveKeypair> LoadOrCreateBrokerKey(
    const std::string& auth_dir) {
  RETURN_IF_ERROR(EnsureDirectory(auth_dir, 0700));
  const std::string key_path = auth_dir + "/broker.key";
  const std::string pub_path = auth_dir + "/broker.pub";
  absl::StatusOr<std::string> text = ReadSecretFile(key_path);
  if (absl::IsNotFound(text.status())) {
    ASSIGN_OR_RETURN(const CurveKeypair key, NewCurveKeypair());
    const absl::Status created = CreateFileExclusive(
        key_path,
        absl::StrCat(kBrokerHeader, "\npublic=", key.public_z85,
                     "\nsecret=", key.secret_z85, "\n"),
        0600);
    if (created.ok()) {
      RETURN_IF_ERROR(EnsureBrokerPub(pub_path, key));
      return key;
    }
    if (!absl::IsAlreadyExists(created)) return created;
    text = ReadSecretFile(key_path);  // another process made it first
  }
  if (!text.ok()) return text.status();
  absl::StatusOr<CurveKeypair> key = ParseBrokerKey(*text);
  if (!key.ok()) {
    return WithPath(key.status(), key_path,
                    "; restore it from a backup, or delete it and restart "
                    "the broker for a new key (every worker then needs a "
                    "new credentials file)");
  }
  RETURN_IF_ERROR(EnsureBrokerPub(pub_path, *key));
  return key;
}

std::string FormatWorkerCredentials(const WorkerCredentials& creds) {
  return absl::StrCat(kWorkerHeader, "\nname=", creds.name,
                      "\npublic=", creds.key.public_z85,
                      "\nsecret=", creds.key.secret_z85,
                      "\nbroker_public=", creds.broker_public_z85, "\n");
}

absl::StatusOr<WorkerCredentials> ParseWorkerCredentials(
    absl::string_view text) {
  ASSIGN_OR_RETURN(const auto kv, ParseKeyValues(text));
  WorkerCredentials creds;
  ASSIGN_OR_RETURN(creds.name, Required(kv, "name"));
  ASSIGN_OR_RETURN(creds.key.public_z85, Required(kv, "public"));
  ASSIGN_OR_RETURN(creds.key.secret_z85, Required(kv, "secret"));
  ASSIGN_OR_RETURN(creds.broker_public_z85, Required(kv, "broker_public"));
  if (const absl::Status s = ValidateName(creds.name); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("name=: ", s.message()));
  }
  RETURN_IF_ERROR(CheckKeypair(creds.key, ""));
  if (!IsZ85Key(creds.broker_public_z85)) {
    return absl::InvalidArgumentError(
        "broker_public= is not a 40-character Z85 key");
  }
  return creds;
}

absl::StatusOr<WorkerCredentials> ReadWorkerCredentials(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        path,
        " not found: start the broker with this --auth_dir first, or copy "
        "the broker's worker.key here (README, 'Running across machines')"));
  }
  if (!text.ok()) return text.status();
  absl::StatusOr<WorkerCredentials> creds = ParseWorkerCredentials(*text);
  if (!creds.ok()) {
    return WithPath(creds.status(), path,
                    "; copy the worker.key the broker wrote, unchanged");
  }
  return creds;
}

}  // namespace dexec::auth
