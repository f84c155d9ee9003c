#include "cli/flags.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dexec::cli {
namespace {

constexpr char kSeeHelp[] = "; run 'dexec --help'";

struct VerbSpec {
  Verb verb;
  absl::string_view name;
};

constexpr VerbSpec kVerbs[] = {
    {Verb::kHelp, "help"},
    {Verb::kSubmit, "submit"},
    {Verb::kExec, "exec"},
    {Verb::kMap, "map"},
    {Verb::kStatus, "status"},
    {Verb::kWait, "wait"},
    {Verb::kResult, "result"},
    {Verb::kCancel, "cancel"},
    {Verb::kList, "list"},
    {Verb::kWorkers, "workers"},
    {Verb::kStats, "stats"},
    {Verb::kToken, "token"},
    {Verb::kWorkerKey, "worker-key"},
};

// A flag, and the verbs it applies to (empty: every verb).
struct FlagSpec {
  absl::string_view name;
  bool takes_value;
  std::vector<Verb> verbs;
};

const std::vector<FlagSpec>& Flags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"broker", true, {}},
      {"json", false, {}},
      {"token", true, {}},
      {"token_file", true, {}},
      {"tls_ca", true, {}},
      {"tls_cert", true, {}},
      {"tls_key", true, {}},
      {"tls_server_name", true, {}},
      {"role", true, {Verb::kToken}},
      {"out", true, {Verb::kWorkerKey}},
      // --help never gets here: AsksForHelp() answers it first.
      {"payload_file", true, {Verb::kSubmit}},
      {"priority", true, {Verb::kSubmit, Verb::kExec, Verb::kMap}},
      {"timeout", true, {Verb::kSubmit, Verb::kExec, Verb::kMap, Verb::kWait}},
      {"retries", true, {Verb::kSubmit, Verb::kExec, Verb::kMap}},
      {"key", true, {Verb::kSubmit, Verb::kExec}},
      {"wait", false, {Verb::kSubmit, Verb::kExec}},
      {"reconnect_timeout",
       true,
       {Verb::kSubmit, Verb::kExec, Verb::kMap, Verb::kWait}},
      {"stdin", false, {Verb::kExec}},
      {"chunksize", true, {Verb::kMap}},
      {"state", true, {Verb::kList}},
      {"limit", true, {Verb::kList}},
  };
  return *flags;
}

const FlagSpec* FindFlag(absl::string_view name) {
  for (const FlagSpec& f : Flags()) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// One flag as written, before we know the verb it must apply to.
struct FlagUse {
  const FlagSpec* spec;
  std::string value;  // "true" for a bare boolean flag.
};

// The command line split into words that are arguments and flags.
struct Scanned {
  std::vector<std::string> positional;
  std::vector<FlagUse> flags;
};

absl::StatusOr<Scanned> Scan(const std::vector<std::string>& args) {
  Scanned s;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      s.positional.insert(s.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    // A single dash is an argument ("-" or a negative number as payload).
    if (!absl::StartsWith(arg, "--")) {
      s.positional.push_back(arg);
      continue;
    }
    absl::string_view body = absl::string_view(arg).substr(2);
    const size_t eq = body.find('=');
    const absl::string_view name = body.substr(0, eq);
    const FlagSpec* spec = FindFlag(name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, kSeeHelp));
    }
    FlagUse use{spec, ""};
    if (!spec->takes_value) {
      if (eq == absl::string_view::npos) {
        use.value = "true";
      } else {
        bool b;
        if (!absl::SimpleAtob(body.substr(eq + 1), &b)) {
          return absl::InvalidArgumentError(
              absl::StrCat("--", name, " takes no value (or true/false), got '",
                           body.substr(eq + 1), "'"));
        }
        use.value = b ? "true" : "false";
      }
    } else if (eq != absl::string_view::npos) {
      use.value = std::string(body.substr(eq + 1));
    } else if (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) {
      use.value = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a value, e.g. --", name, "=",
                       name == "timeout" ? "10s" : "VALUE"));
    }
    if (spec->takes_value && use.value.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a non-empty value"));
    }
    s.flags.push_back(std::move(use));
  }
  return s;
}

// --help or -h before any "--": usage wins over every other mistake on the
// line, so `dexec frob --help` still helps.
bool AsksForHelp(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") return false;
    if (arg == "-h" || arg == "--help" || absl::StartsWith(arg, "--help=")) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<Verb> ParseVerb(absl::string_view word) {
  for (const VerbSpec& v : kVerbs) {
    if (v.name == word) return v.verb;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown command '", word, "'", kSeeHelp));
}

absl::StatusOr<int32_t> ParseInt32(absl::string_view flag,
                                   absl::string_view value, int32_t min) {
  int32_t n;
  if (!absl::SimpleAtoi(value, &n) || n < min) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --", flag, " '", value, "': expected ",
                     min == 0   ? "an integer >= 0"
                     : min == 1 ? "a positive integer"
                                : "an integer"));
  }
  return n;
}

absl::StatusOr<absl::Duration> ParsePositiveDuration(absl::string_view flag,
                                                     absl::string_view value) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d <= absl::ZeroDuration() ||
      d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --", flag, " '", value,
                     "': expected a positive duration like 500ms, 10s or 1h"));
  }
  return d;
}

absl::StatusOr<v1::Job::State> ParseState(absl::string_view value) {
  static constexpr std::pair<absl::string_view, v1::Job::State> kStates[] = {
      {"queued", v1::Job::QUEUED},       {"running", v1::Job::RUNNING},
      {"succeeded", v1::Job::SUCCEEDED}, {"failed", v1::Job::FAILED},
      {"cancelled", v1::Job::CANCELLED},
  };
  const std::string lower = absl::AsciiStrToLower(value);
  for (const auto& [name, state] : kStates) {
    if (name == lower) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid --state '", value,
      "': expected queued, running, succeeded, failed or cancelled"));
}

absl::StatusOr<uint64_t> ParseJobId(absl::string_view word) {
  uint64_t id;
  if (!absl::SimpleAtoi(word, &id) || id == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", word, "' is not a job id; job ids are positive integers"));
  }
  return id;
}

bool Applies(const FlagSpec& spec, Verb verb) {
  return spec.verbs.empty() || std::find(spec.verbs.begin(), spec.verbs.end(),
                                         verb) != spec.verbs.end();
}

absl::Status ApplyFlag(const FlagUse& use, ParsedCommand* cmd) {
  const absl::string_view name = use.spec->name;
  const std::string& v = use.value;
  if (!Applies(*use.spec, cmd->verb)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " does not apply to '", VerbName(cmd->verb),
                     "'", kSeeHelp));
  }
  if (name == "broker") {
    cmd->broker = v;
  } else if (name == "token") {
    cmd->auth.token = v;
  } else if (name == "token_file") {
    cmd->auth.token_file = v;
  } else if (name == "tls_ca") {
    cmd->auth.tls_ca = v;
  } else if (name == "tls_cert") {
    cmd->auth.tls_cert = v;
  } else if (name == "tls_key") {
    cmd->auth.tls_key = v;
  } else if (name == "tls_server_name") {
    cmd->auth.tls_server_name = v;
  } else if (name == "role") {
    cmd->role = v;
  } else if (name == "out") {
    cmd->out_file = v;
  } else if (name == "json") {
    cmd->json = v == "true";
  } else if (name == "payload_file") {
    cmd->payload_file = v;
  } else if (name == "chunksize") {
    ASSIGN_OR_RETURN(int32_t n, ParseInt32(name, v, 1));
    cmd->chunksize = n;
  } else if (name == "priority") {
    ASSIGN_OR_RETURN(cmd->priority,
                     ParseInt32(name, v, std::numeric_limits<int32_t>::min()));
  } else if (name == "timeout") {
    ASSIGN_OR_RETURN(cmd->timeout, ParsePositiveDuration(name, v));
  } else if (name == "retries") {
    ASSIGN_OR_RETURN(int32_t retries, ParseInt32(name, v, 0));
    if (retries == std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid --retries '", v, "': too large"));
    }
    cmd->max_attempts = retries + 1;
  } else if (name == "key") {
    cmd->idempotency_key = v;
  } else if (name == "wait") {
    cmd->wait = v == "true";
  } else if (name == "reconnect_timeout") {
    ASSIGN_OR_RETURN(cmd->reconnect_timeout, ParsePositiveDuration(name, v));
  } else if (name == "stdin") {
    cmd->forward_stdin = v == "true";
  } else if (name == "state") {
    ASSIGN_OR_RETURN(cmd->state_filter, ParseState(v));
  } else if (name == "limit") {
    ASSIGN_OR_RETURN(cmd->limit, ParseInt32(name, v, 1));
  }
  return absl::OkStatus();
}

absl::Status NoArguments(Verb verb, const std::vector<std::string>& args) {
  if (args.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("'", VerbName(verb), "' takes no arguments, got '",
                   absl::StrJoin(args, " "), "'"));
}

absl::Status ParseJobIds(Verb verb, const std::vector<std::string>& args,
                         ParsedCommand* cmd) {
  if (args.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", VerbName(verb), "' needs a job id, e.g. dexec ",
                     VerbName(verb), " 42"));
  }
  if (verb == Verb::kResult && args.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("'result' takes one job id, got ", args.size(),
                     "; run it once per job"));
  }
  for (const std::string& a : args) {
    ASSIGN_OR_RETURN(uint64_t id, ParseJobId(a));
    cmd->job_ids.push_back(id);
  }
  return absl::OkStatus();
}

// token / worker-key: ACTION [NAME].
absl::Status ApplyCredentialArguments(const std::vector<std::string>& args,
                                      ParsedCommand* cmd) {
  const std::string verb(VerbName(cmd->verb));
  const std::string example =
      cmd->verb == Verb::kToken
          ? "dexec token create --role=submit alice"
          : "dexec worker-key create host2 --out=host2.key";
  if (args.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", verb, "' needs create, list or revoke, e.g. ", example));
  }
  cmd->action = args[0];
  if (cmd->action == "list") {
    if (args.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", verb, " list' takes no name"));
    }
  } else if (cmd->action == "create" || cmd->action == "revoke") {
    if (args.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", verb, " ", cmd->action, "' takes one NAME, e.g. ", example));
    }
    cmd->name = args[1];
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", verb, "' does create, list or revoke, not '", cmd->action, "'"));
  }
  if (cmd->verb == Verb::kToken && cmd->action == "create") {
    if (cmd->role.empty()) {
      return absl::InvalidArgumentError(
          "'token create' needs --role=admin, --role=submit or --role=read");
    }
  } else if (!cmd->role.empty()) {
    return absl::InvalidArgumentError("--role applies to 'token create' only");
  }
  if (!cmd->out_file.empty() &&
      !(cmd->verb == Verb::kWorkerKey && cmd->action == "create")) {
    return absl::InvalidArgumentError(
        "--out applies to 'worker-key create' only");
  }
  return absl::OkStatus();
}

// Takes the verb's arguments (the words after the verb).
absl::Status ApplyArguments(const std::vector<std::string>& args,
                            ParsedCommand* cmd) {
  switch (cmd->verb) {
    case Verb::kHelp:
      return absl::OkStatus();
    case Verb::kSubmit:
      if (args.empty()) {
        return absl::InvalidArgumentError(
            "'submit' needs a TASK, e.g. dexec submit sys.echo hello");
      }
      if (args.size() > 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("'submit' takes TASK [PAYLOAD], got ", args.size(),
                         " arguments; quote a payload that has spaces"));
      }
      cmd->task = args[0];
      if (args.size() == 2) cmd->payload = args[1];
      if (cmd->payload.has_value() && cmd->payload_file.has_value()) {
        return absl::InvalidArgumentError(
            "give the payload as an argument or with --payload_file, not "
            "both");
      }
      return absl::OkStatus();
    case Verb::kExec:
      if (args.empty()) {
        return absl::InvalidArgumentError(
            "'exec' needs a command, e.g. dexec exec --wait -- ls -l");
      }
      cmd->argv = args;
      return absl::OkStatus();
    case Verb::kMap:
      if (args.size() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("'map' takes one TASK, got ", args.size(),
                         " arguments; payloads come one per line on stdin"));
      }
      cmd->task = args[0];
      return absl::OkStatus();
    case Verb::kStatus:
    case Verb::kWait:
    case Verb::kResult:
    case Verb::kCancel:
      return ParseJobIds(cmd->verb, args, cmd);
    case Verb::kList:
    case Verb::kWorkers:
    case Verb::kStats:
      return NoArguments(cmd->verb, args);
    case Verb::kToken:
    case Verb::kWorkerKey:
      return ApplyCredentialArguments(args, cmd);
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view VerbName(Verb verb) {
  for (const VerbSpec& v : kVerbs) {
    if (v.verb == verb) return v.name;
  }
  return "?";
}

absl::StatusOr<ParsedCommand> ParseCommandLine(
    const std::vector<std::string>& args,
    std::optional<std::string> env_broker) {
  ParsedCommand cmd;
  if (AsksForHelp(args)) return cmd;  // Verb::kHelp.
  ASSIGN_OR_RETURN(Scanned scanned, Scan(args));
  if (scanned.positional.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no command given", kSeeHelp));
  }
  ASSIGN_OR_RETURN(cmd.verb, ParseVerb(scanned.positional.front()));
  if (cmd.verb == Verb::kHelp) return ParsedCommand{};
  if (env_broker.has_value() && !env_broker->empty()) {
    cmd.broker = *std::move(env_broker);
  }
  for (const FlagUse& use : scanned.flags) {
    RETURN_IF_ERROR(ApplyFlag(use, &cmd));
  }
  scanned.positional.erase(scanned.positional.begin());
  RETURN_IF_ERROR(ApplyArguments(scanned.positional, &cmd));
  return cmd;
}

std::string UsageText() {
  return R"(dexec: run jobs on a dexec cluster.

Usage: dexec COMMAND [ARGS...] [FLAGS...]
Flags may come before or after the command; '--' ends flag parsing.
Values are given as --flag=value or --flag value.

Commands:
  submit TASK [PAYLOAD]   Submit one job; print its id.
      --payload_file=F      read the payload from file F ('-': stdin)
      --priority=N          higher runs first (default 0)
      --timeout=DUR         limit of one attempt, e.g. 500ms, 10s, 1h
      --retries=N           retry up to N times (N+1 attempts)
      --key=K               idempotency key: resubmitting K returns the same job
      --wait                wait and print the result bytes; exit 1 if it failed
      --reconnect_timeout=DUR
                            while waiting, keep reconnecting to a broker that
                            went away (e.g. restarted) this long (default 60s)
  exec [FLAGS] -- CMD ARGS...
                          Run a command on a worker (task sys.exec); print the id.
      --wait                print the command's stdout/stderr, exit with its code
      --stdin               send dexec's stdin to the command
      --timeout, --priority, --retries, --key, --reconnect_timeout as for
                            submit
  map TASK                Run TASK once per stdin line; print one result per
                          line, in input order. Exit 1 naming the failed line.
                          Waits while the broker is full (--max_queued).
      --chunksize=N         N lines per job (one dispatch, results split
                            back in order); default 1
      --timeout, --priority, --retries, --reconnect_timeout as for submit
  status ID...            Show jobs (and their attempts when retried).
  wait ID... [--timeout=DUR] [--reconnect_timeout=DUR]
                          Wait until the jobs finish; print 'ID STATE' each.
                          Exit 0 only if all succeeded. Rides over a broker
                          restart (jobs it lost show NOT_FOUND).
  result ID               Print a finished job's result bytes.
  cancel ID...            Cancel jobs that have not finished (running ones are
                          stopped). Exit 0 only if all were cancelled.
  list [--state=S] [--limit=N]
                          List jobs, newest first. S: queued, running,
                          succeeded, failed or cancelled. N defaults to 100.
  workers                 Show the live workers.
  stats                   Show job counts, throughput and cluster size.
  token create --role=R NAME
                          (admin) Make a client token; print its secret once.
                          R: admin (everything), submit (its own jobs only)
                          or read (status, lists, workers, stats; no results).
  token list              (admin) Show the tokens' names and roles.
  token revoke NAME       (admin) Revoke a token now (open streams end too).
  worker-key create NAME [--out=FILE]
                          (admin) Admit a new worker key; write its
                          credentials (a worker.key) to FILE (mode 0600) or
                          stdout. Copy it to the worker's host.
  worker-key list         (admin) Show the admitted worker keys.
  worker-key revoke NAME  (admin) Refuse that key now; its workers are
                          dropped and their jobs run elsewhere.
  help                    Show this text.

Global flags:
  --broker=HOST:PORT      the broker (default: $DEXEC_BROKER, else 127.0.0.1:50051)
  --token=T               the bearer token; else --token_file=F, else
                          $DEXEC_TOKEN, else the file $DEXEC_TOKEN_FILE, else
                          ./dexec-data/client.token (the broker's admin token
                          when run where the broker runs)
  --tls_ca=F              connect over TLS, trusting the CA in PEM file F (the
                          broker's generated one: <auth_dir>/tls/ca.pem);
                          default $DEXEC_TLS_CA, else plaintext
  --tls_cert=F --tls_key=F  this client's certificate, for mutual TLS
  --tls_server_name=N     the name in the broker's certificate, if not the host
  --json                  print JSON lines (one Job, WorkerInfo or Stats per line)
                          instead of tables
  --help, -h              show this text

Exit codes: 0 success; 1 a job failed, was not found or did not finish in
time; 2 usage error, broker unreachable, or a missing, wrong or revoked
token (or one whose role may not do this). 'exec --wait' exits with the
command's own code.
)";
}

}  // namespace dexec::cli
