#include "auth/secret_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dexec::auth {
namespace {

// The canonical code for a failed syscall on `path`, with a message naming
// the path and what failed.
absl::Status ErrnoError(int err, absl::string_view what,
                        const std::string& path) {
  const std::string detail = absl::StrCat(what, " ", path, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      if (what == "read" || what == "stat") {
        return absl::NotFoundError(absl::StrCat(path, " not found"));
      }
      return absl::NotFoundError(detail);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot ", what, " ", path, ": ", strerror(err),
          " (run as the user that owns it, or fix its permissions)"));
    case EEXIST:
      return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(detail);
    default:
      return absl::InternalError(detail);
  }
}

// Closes its descriptor on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error close(2) reports (it can carry a
  // deferred write error on some filesystems).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status WriteAll(int fd, absl::string_view content,
                      const std::string& path) {
  while (!content.empty()) {
    const ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write", path);
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status FsyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "open directory", dir);
  if (::fsync(fd.get()) != 0) return ErrnoError(errno, "fsync directory", dir);
  return absl::OkStatus();
}

// Writes `content` to a new temporary file beside `path` with `mode`,
// fsynced and closed; returns its name. The caller renames or links it
// into place and unlinks it on failure.
absl::StatusOr<std::string> WriteTemporary(const std::string& path,
                                           absl::string_view content,
                                           mode_t mode) {
  std::string tmp = path + ".tmpXXXXXX";
  // mkstemp creates the file 0600 and exclusively, so the secret is never
  // readable by others, even before the fchmod below.
  Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "create a file beside", path);
  absl::Status s = absl::OkStatus();
  if (::fchmod(fd.get(), mode) != 0) s = ErrnoError(errno, "chmod", tmp);
  if (s.ok()) s = WriteAll(fd.get(), content, tmp);
  if (s.ok() && ::fsync(fd.get()) != 0) s = ErrnoError(errno, "fsync", tmp);
  if (fd.Close() != 0 && s.ok()) s = ErrnoError(errno, "close", tmp);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return tmp;
}

// O_EXCL creation in place, for filesystems without hard links. A crash
// mid-write can leave a short file here; the readers of every file we
// create validate its content.
absl::Status CreateInPlace(const std::string& path, absl::string_view content,
                           mode_t mode) {
  Fd fd(::open(path.c_str(),
               O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
               mode & 0600));
  if (fd.get() < 0) return ErrnoError(errno, "create", path);
  absl::Status s = absl::OkStatus();
  if (::fchmod(fd.get(), mode) != 0) s = ErrnoError(errno, "chmod", path);
  if (s.ok()) s = WriteAll(fd.get(), content, path);
  if (s.ok() && ::fsync(fd.get()) != 0) s = ErrnoError(errno, "fsync", path);
  if (fd.Close() != 0 && s.ok()) s = ErrnoError(errno, "close", path);
  if (!s.ok()) {
    ::unlink(path.c_str());
    return s;
  }
  return FsyncDir(DirOf(path));
}

std::string ModeString(mode_t mode) {
  return absl::StrFormat("%04o", mode & 07777);
}

absl::Status CheckModeOf(const struct stat& st, const std::string& path) {
  if ((st.st_mode & 0077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has mode ", ModeString(st.st_mode),
        ": it holds secrets and must be accessible to its owner only; run "
        "chmod 600 ",
        path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadOpenFile(int fd, const std::string& path,
                                         size_t max_bytes) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read", path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " is larger than ", max_bytes,
          " bytes: it is not a dexec credentials file; check the path"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<std::string> Read(const std::string& path, size_t max_bytes,
                                 bool check_mode) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "read", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a regular file"));
  }
  if (check_mode) RETURN_IF_ERROR(CheckModeOf(st, path));
  return ReadOpenFile(fd.get(), path, max_bytes);
}

absl::Status EnsureDirectoryImpl(const std::string& path, mode_t mode,
                                 bool exact_mode) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " exists and is not a directory; choose another --auth_dir"));
    }
    return absl::OkStatus();
  }
  if (errno != ENOENT) return ErrnoError(errno, "stat", path);
  const std::string parent = DirOf(path);
  if (parent != path) {
    RETURN_IF_ERROR(EnsureDirectoryImpl(parent, 0777, /*exact_mode=*/false));
  }
  if (::mkdir(path.c_str(), mode) != 0) {
    if (errno == EEXIST) {  // lost a race with another creator
      return EnsureDirectoryImpl(path, mode, exact_mode);
    }
    return ErrnoError(errno, "create directory", path);
  }
  // mkdir applies the umask; the directory asked for gets `mode` exactly,
  // missing parents keep the umask's (like mkdir -p).
  if (exact_mode && ::chmod(path.c_str(), mode) != 0) {
    return ErrnoError(errno, "chmod", path);
  }
  return FsyncDir(parent);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view content, mode_t mode) {
  ASSIGN_OR_RETURN(const std::string tmp, WriteTemporary(path, content, mode));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "replace", path);
  }
  return FsyncDir(DirOf(path));
}

absl::Status CreateFileExclusive(const std::string& path,
                                 absl::string_view content, mode_t mode) {
  if (PathExists(path)) {
    return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
  }
  ASSIGN_OR_RETURN(const std::string tmp, WriteTemporary(path, content, mode));
  // link(2) fails with EEXIST instead of replacing: the never-overwrite
  // guarantee holds even against a concurrent creator.
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (rc != 0) {
    if (err == EPERM || err == EOPNOTSUPP || err == ENOSYS) {
      return CreateInPlace(path, content, mode);
    }
    return ErrnoError(err, "create", path);
  }
  return FsyncDir(DirOf(path));
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          size_t max_bytes) {
  return Read(path, max_bytes, /*check_mode=*/false);
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path,
                                           size_t max_bytes) {
  return Read(path, max_bytes, /*check_mode=*/true);
}

absl::Status CheckNotWorldReadable(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat", path);
  return CheckModeOf(st, path);
}

absl::Status EnsureDirectory(const std::string& path, mode_t mode) {
  if (path.empty()) {
    return absl::InvalidArgumentError("empty directory path (--auth_dir)");
  }
  std::string dir = path;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return EnsureDirectoryImpl(dir, mode, /*exact_mode=*/true);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace dexec::auth
