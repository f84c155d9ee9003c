// Small files that hold credentials: written so that a crash never leaves a
// half-written file, created so that an existing one is never overwritten,
// and read with a size bound and a permission check.
//
//   RETURN_IF_ERROR(EnsureDirectory(auth_dir, 0700));
//   absl::Status s = CreateFileExclusive(auth_dir + "/client.token",
//                                        secret + "\n", 0600);
//   if (absl::IsAlreadyExists(s)) { /* a previous start made it: keep it */ }
//   ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path));
//
// Error messages name the path and the system error, never the content: the
// content is a secret. Every function is a few syscalls on the calling
// thread; none logs.
//
// Thread-safe (no shared state; concurrent writers of one path are the
// caller's to order).
#ifndef DEXEC_AUTH_SECRET_FILE_H_
#define DEXEC_AUTH_SECRET_FILE_H_

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dexec::auth {

inline constexpr size_t kMaxSmallFileBytes = 64 * 1024;

// Replaces `path` with `content`, all or nothing: writes a temporary file in
// the same directory with `mode` (exactly, whatever the umask), fsyncs it,
// renames it over `path` and fsyncs the directory. After an OK return the
// new content survives a crash; after an error or a crash `path` holds the
// old content or the new, never a mixture, and no temporary is left behind
// (except after a crash, as `<path>.tmp*`).
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view content, mode_t mode);

// Creates `path` holding `content` with `mode` (exactly), durably (file and
// directory fsynced), and only if nothing is at `path`: ALREADY_EXISTS
// otherwise, leaving what is there untouched. The file appears complete or
// not at all (written to a temporary, then hard-linked into place; where
// the filesystem has no hard links, written in place with O_EXCL).
absl::Status CreateFileExclusive(const std::string& path,
                                 absl::string_view content, mode_t mode);

// The content of `path`. NOT_FOUND ("<path> not found") if it does not
// exist, PERMISSION_DENIED naming the path if it cannot be read,
// FAILED_PRECONDITION if it is larger than `max_bytes` or not a regular
// file.
absl::StatusOr<std::string> ReadSmallFile(
    const std::string& path, size_t max_bytes = kMaxSmallFileBytes);

// ReadSmallFile, refusing (FAILED_PRECONDITION, "... chmod 600 <path>") a
// file that its group or others may access. The check and the read use one
// open file, so a file swapped in between is not read unchecked.
absl::StatusOr<std::string> ReadSecretFile(
    const std::string& path, size_t max_bytes = kMaxSmallFileBytes);

// OK if neither the group nor others have any permission on `path` (mode
// 0600, 0400 or 0700). FAILED_PRECONDITION saying "chmod 600 <path>"
// otherwise; NOT_FOUND / PERMISSION_DENIED as ReadSmallFile.
absl::Status CheckNotWorldReadable(const std::string& path);

// Makes sure `path` is a directory, creating it (and missing parents, with
// the default mode) if needed; a directory this call creates gets `mode`
// exactly. An existing directory keeps its mode. FAILED_PRECONDITION if
// `path` exists and is not a directory.
absl::Status EnsureDirectory(const std::string& path, mode_t mode);

// True if something (a file, a directory, a dangling link) is at `path`.
bool PathExists(const std::string& path);

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_SECRET_FILE_H_
