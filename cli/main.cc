// dexec: the command-line client of a dexec broker. `dexec --help` lists
// the verbs; cli/flags.h has the parsing rules and
// cli/commands.h the exit codes.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "common/mutex.h"
#include "grpc/support/log.h"

namespace {

// gRPC's own log lines would break the promise of one clear error line.
void DropGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  using namespace dexec::cli;  // NOLINT: the file's only subject.
  dexec::SetMutexDeadlockDetectionForProcess();
  gpr_set_log_function(DropGrpcLog);
  // A closed stdout shows up as a failed write, so `map` can stop and cancel
  // its remaining jobs instead of dying with them still queued.
  signal(SIGPIPE, SIG_IGN);

  const char* env_broker = std::getenv("DEXEC_BROKER");
  absl::StatusOr<ParsedCommand> cmd = ParseCommandLine(
      std::vector<std::string>(argv + 1, argv + argc),
      env_broker != nullptr ? std::optional<std::string>(env_broker)
                            : std::nullopt);
  if (!cmd.ok()) {
    std::cerr << "dexec: " << cmd.status().message() << "\n";
    return kExitUsage;
  }
  if (cmd->verb == Verb::kHelp) {
    std::cout << UsageText();
    return kExitOk;
  }
  // Before the first gRPC thread starts, so every thread inherits the mask.
  if (cmd->verb == Verb::kMap) BlockInterruptSignals();
  absl::StatusOr<std::unique_ptr<dexec::v1::Broker::Stub>> broker =
      ConnectToBroker(cmd->broker, cmd->auth);
  if (!broker.ok()) {
    std::cerr << "dexec: " << broker.status().message() << "\n";
    return kExitUsage;
  }
  Terminal term{std::cin, std::cout, std::cerr, isatty(STDERR_FILENO) == 1};
  const int code = RunCommand(*cmd, **broker, term);
  std::cout.flush();
  return code;
}
