#include "auth/testing.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace dexec::auth::testing {

std::string FreshPath(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "-", getpid(),
                      "-", counter.fetch_add(1));
}

void WriteTestFile(const std::string& path, const std::string& content,
                   mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ::write(fd, content.data(), content.size()) !=
                    static_cast<ssize_t>(content.size())) {
    std::perror(path.c_str());
    std::abort();
  }
  ::close(fd);
  if (::chmod(path.c_str(), mode) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

int ModeOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

absl::StatusCode RunUnprivileged(const std::function<absl::Status()>& check) {
  if (::geteuid() != 0) return check().code();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(100);
    _exit(static_cast<int>(check().code()));
  }
  int wstatus = 0;
  if (::waitpid(pid, &wstatus, 0) != pid || !WIFEXITED(wstatus) ||
      WEXITSTATUS(wstatus) == 100) {
    std::fprintf(stderr, "RunUnprivileged: child failed (status %d)\n",
                 wstatus);
    std::abort();
  }
  return static_cast<absl::StatusCode>(WEXITSTATUS(wstatus));
}

}  // namespace dexec::auth::testing
