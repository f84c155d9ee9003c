#include "worker/child_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace dexec::worker {
namespace {

// Resolves argv[0] against PATH of the *child's* environment, as a shell
// started with that environment would. Returns "" if nothing matches.
std::string ResolveProgram(const std::string& name,
                           const std::vector<std::string>& env) {
  if (name.find('/') != std::string::npos) return name;
  absl::string_view path = "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& e : env) {
    if (absl::StartsWith(e, "PATH=")) path = absl::string_view(e).substr(5);
  }
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

}  // namespace

absl::Status MakePipe(Fd* read_end, Fd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pipe2 failed: ", strerror(errno)));
  }
  for (int i = 0; i < 2; ++i) {
    if (fds[i] < 3) {
      int moved = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
      ::close(fds[i]);
      fds[i] = moved;
    }
  }
  read_end->reset(fds[0]);
  write_end->reset(fds[1]);
  if (!read_end->valid() || !write_end->valid()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("fcntl failed: ", strerror(errno)));
  }
  return absl::OkStatus();
}

void SetNonBlocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

std::vector<std::string> MergedEnvironment(const tasks::ExecRequest& req) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    absl::string_view key = entry.substr(0, entry.find('='));
    if (req.env().count(std::string(key)) == 0) env.emplace_back(entry);
  }
  for (const auto& [key, value] : req.env()) {
    env.push_back(absl::StrCat(key, "=", value));
  }
  return env;
}

int SpawnCommand(const tasks::ExecRequest& req,
                 const std::vector<std::string>& env, int child_in,
                 int child_out, int child_err, pid_t* pid) {
  const std::string program = ResolveProgram(req.argv(0), env);
  if (program.empty()) return ENOENT;
  if (!req.cwd().empty()) {
    // posix_spawn would report a missing cwd as ENOENT too; check first so
    // the message names the right culprit.
    struct stat st;
    if (::stat(req.cwd().c_str(), &st) != 0) return errno;
    if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  }

  std::vector<char*> argv;
  for (const std::string& a : req.argv())
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_in, 0);
  posix_spawn_file_actions_adddup2(&actions, child_out, 1);
  posix_spawn_file_actions_adddup2(&actions, child_err, 2);
  if (!req.cwd().empty()) {
    posix_spawn_file_actions_addchdir_np(&actions, req.cwd().c_str());
  }

  // The worker blocks SIGTERM/SIGINT for sigwait and may ignore SIGPIPE;
  // both would otherwise be inherited and make the child unkillable by
  // SIGTERM or deaf to a closed pipe.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1,
                  SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // Own process group: a timeout kills the command and everything it
  // started, not just a wrapping shell.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);

  int rc = posix_spawn(pid, program.c_str(), &actions, &attr, argv.data(),
                       envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return rc;
}

}  // namespace dexec::worker
