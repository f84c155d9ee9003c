// The verbs of the dexec CLI, one function each. main() parses the command
// line (flags.h), connects, and calls RunCommand; every function returns
// the process's exit code and writes only to the streams it is given.
//
// Exit codes (a contract with scripts):
//   0  success
//   1  a job failed, was cancelled, is unknown or did not finish in time
//   2  usage error (bad flag value, unreadable --payload_file), the broker
//      could not be reached, or it refused the token (missing, wrong,
//      revoked, or a role that may not do this)
//   `exec --wait` exits with the remote command's own exit code.
//
// Errors are one line on `err`, "dexec: ..." for the CLI's own trouble and
// "error: <kind>: <message>" for a job's failure.
#ifndef DEXEC_CLI_COMMANDS_H_
#define DEXEC_CLI_COMMANDS_H_

#include <istream>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/client_credentials.h"
#include "cli/flags.h"
#include "protos/dexec.grpc.pb.h"

namespace dexec::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

// How long to wait for the broker to accept a connection before giving up.
inline constexpr absl::Duration kConnectTimeout = absl::Seconds(5);

// A stub on a channel that is connected to `broker` (HOST:PORT). UNAVAILABLE
// with a one-line message naming the address if it cannot connect within
// `timeout`; a refused connection fails at once.
// Calls carry the token `auth` leads to (auth/client_credentials.h); a
// missing, unknown or revoked one is UNAUTHENTICATED here, with one line
// saying where the token is expected.
absl::StatusOr<std::unique_ptr<v1::Broker::Stub>> ConnectToBroker(
    const std::string& broker, const auth::ClientAuthOptions& auth = {},
    absl::Duration timeout = kConnectTimeout);

// Blocks SIGINT, SIGTERM (and SIGUSR2, used internally) in the calling
// thread and every thread it starts later, so that Map can take them on its
// own thread and cancel its queued jobs before exiting. Call it in main
// before anything starts a thread, and only for Verb::kMap: for other verbs
// the default (die at once) is right.
void BlockInterruptSignals();

// Streams a verb may use besides the broker.
struct Terminal {
  std::istream& in;         // map's payloads; exec --stdin; --payload_file=-
  std::ostream& out;        // results and tables
  std::ostream& err;        // errors, progress
  bool err_is_tty = false;  // draw map's progress bar on `err`
};

// Runs `cmd` (any verb but kHelp). `broker` is connected to cmd.broker.
int RunCommand(const ParsedCommand& cmd, v1::Broker::Stub& broker,
               Terminal& term);

// One function per verb; RunCommand dispatches to these.
int Submit(const ParsedCommand& cmd, v1::Broker::Stub& broker, Terminal& term);
int Exec(const ParsedCommand& cmd, v1::Broker::Stub& broker, Terminal& term);
// Uses the client library's Executor::Map on its own connection to
// cmd.broker.
int Map(const ParsedCommand& cmd, Terminal& term);
int Status(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err);
int Wait(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
         std::ostream& err);
int Result(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err);
int Cancel(const ParsedCommand& cmd, v1::Broker::Stub& broker,
           std::ostream& out, std::ostream& err);
int List(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
         std::ostream& err);
int Workers(const ParsedCommand& cmd, v1::Broker::Stub& broker,
            std::ostream& out, std::ostream& err);
int Stats(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
          std::ostream& err);
int Token(const ParsedCommand& cmd, v1::Broker::Stub& broker, std::ostream& out,
          std::ostream& err);
int WorkerKey(const ParsedCommand& cmd, v1::Broker::Stub& broker,
              std::ostream& out, std::ostream& err);

}  // namespace dexec::cli

#endif  // DEXEC_CLI_COMMANDS_H_
