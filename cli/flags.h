// The dexec command line, parsed: which verb, its arguments and its flags.
// Pure: no I/O, no environment, no clock, so every rule is unit-tested.
//
//   absl::StatusOr<ParsedCommand> cmd =
//       ParseCommandLine({"status", "5", "--json"}, getenv("DEXEC_BROKER"));
//   if (!cmd.ok()) { std::cerr << "dexec: " << cmd.status().message(); ... }
//
// Rules (the names are a contract with users and scripts; see UsageText()):
//  - Flags may come before or after the verb and its arguments, in the forms
//    `--flag=value` and `--flag value`. A bare `--` ends flag parsing; every
//    later word is an argument, even if it starts with "--".
//  - The broker address is --broker, else the DEXEC_BROKER value passed in,
//    else 127.0.0.1:50051.
//  - `--help`, `-h` anywhere (before `--`) or the verb `help` asks for usage.
//  - A flag that does not apply to the verb is an error, as is an unknown
//    flag, a missing or malformed value, or a wrong number of arguments.
//    The error message is one line written for the user; the caller prints
//    it after "dexec: " and exits 2.
#ifndef DEXEC_CLI_FLAGS_H_
#define DEXEC_CLI_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/client_credentials.h"
#include "protos/dexec.pb.h"

namespace dexec::cli {

inline constexpr char kDefaultBroker[] = "127.0.0.1:50051";

enum class Verb {
  kHelp,
  kSubmit,
  kExec,
  kMap,
  kStatus,
  kWait,
  kResult,
  kCancel,
  kList,
  kWorkers,
  kStats,
  kToken,      // token create|list|revoke
  kWorkerKey,  // worker-key create|list|revoke
};

// The verb's name as typed on the command line ("submit").
absl::string_view VerbName(Verb verb);

struct ParsedCommand {
  Verb verb = Verb::kHelp;

  // Global flags.
  std::string broker = kDefaultBroker;
  bool json = false;
  // --token, --token_file, --tls_ca, --tls_cert, --tls_key,
  // --tls_server_name. The token's lookup order (env, the default file) is
  // applied when connecting (auth/client_credentials.h), not here.
  auth::ClientAuthOptions auth;

  // token, worker-key: "create", "list" or "revoke", and the NAME.
  std::string action;
  std::string name;
  std::string role;      // token create --role
  std::string out_file;  // worker-key create --out

  // submit, exec, map: what to run and how.
  std::string task;                         // submit, map
  std::optional<std::string> payload;       // submit's PAYLOAD argument
  std::optional<std::string> payload_file;  // submit --payload_file
  int32_t priority = 0;
  // submit/exec/map: the job's per-attempt limit. wait: how long to wait.
  // Unset means none.
  std::optional<absl::Duration> timeout;
  // From --retries=N: N + 1. 0 means the broker's default.
  int32_t max_attempts = 0;
  std::string idempotency_key;  // submit, exec --key
  bool wait = false;            // submit, exec --wait
  // submit --wait, exec --wait, wait, map: how long to keep reconnecting
  // when the broker goes away (e.g. restarts) before giving up (exit 2).
  absl::Duration reconnect_timeout = absl::Seconds(60);
  bool forward_stdin = false;     // exec --stdin
  int32_t chunksize = 1;          // map --chunksize: lines per job
  std::vector<std::string> argv;  // exec: the command and its args

  // status, wait, result, cancel.
  std::vector<uint64_t> job_ids;

  // list.
  v1::Job::State state_filter = v1::Job::STATE_UNSPECIFIED;
  int32_t limit = 0;  // 0 means the broker's default (100).
};

// Parses `args` (argv without the program name). `env_broker` is the value
// of DEXEC_BROKER, or nullopt/empty when unset. Returns INVALID_ARGUMENT
// with a one-line message on any usage error.
absl::StatusOr<ParsedCommand> ParseCommandLine(
    const std::vector<std::string>& args,
    std::optional<std::string> env_broker);

// The full usage text printed by `dexec --help`, ending in a newline.
std::string UsageText();

}  // namespace dexec::cli

#endif  // DEXEC_CLI_FLAGS_H_
