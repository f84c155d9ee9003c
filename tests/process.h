// Real processes for process-level tests: start a binary, read its stdout
// line by line with a deadline, stop it by PID.
//
//   Process broker = Process::Start({BinaryPath("broker/dexec-broker"), ...});
//   absl::StatusOr<std::string> line = broker.ReadLine(absl::Seconds(10));
//   broker.Signal(SIGKILL);
//
// The destructor kills (SIGKILL) and reaps the process if it still runs, so
// no test leaves a process behind. Not thread-safe.
#ifndef DEXEC_TESTS_PROCESS_H_
#define DEXEC_TESTS_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dexec::testing {

// Path of a binary built by Bazel and listed in the test's `data`, e.g.
// "broker/dexec-broker".
std::string BinaryPath(const std::string& workspace_relative);

class Process {
 public:
  // Starts argv[0] with argv; stdout is a pipe readable through ReadLine,
  // stderr goes to the test's stderr (so logs show in test.log).
  static absl::StatusOr<Process> Start(const std::vector<std::string>& argv);

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // The next stdout line (without '\n'); DEADLINE_EXCEEDED if none within
  // `timeout`, OUT_OF_RANGE at end of output.
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout);

  void Signal(int sig);
  // Waits for exit; returns the exit code (128+N if killed by signal N), or
  // DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  pid_t pid() const { return pid_; }

 private:
  Process(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  void Reset();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;
  std::optional<int> exit_code_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// True once `pid` no longer runs: no such process, or a zombie (dead, only
// waiting for a parent — maybe not us — to reap it).
bool ProcessGone(pid_t pid);

// Polls until ProcessGone(pid) or `deadline`; /proc offers nothing to wait
// on for a process that is not our child. False on timeout.
bool WaitProcessGone(pid_t pid, absl::Time deadline);

// Runs a command to completion with `stdin_data` as its stdin, capturing
// stdout and stderr; kills it and fails if it runs longer than `timeout`.
absl::StatusOr<CommandResult> RunCommand(
    const std::vector<std::string>& argv, const std::string& stdin_data = "",
    absl::Duration timeout = absl::Seconds(60),
    const std::vector<std::string>& env = {});

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_PROCESS_H_
