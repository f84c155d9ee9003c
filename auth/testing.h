// Test helpers for auth/: fresh directories under $TEST_TMPDIR and running a
// check without root's power to read anything.
//
// Not thread-safe: call from the test's main thread.
#ifndef DEXEC_AUTH_TESTING_H_
#define DEXEC_AUTH_TESTING_H_

#include <sys/stat.h>

#include <functional>
#include <string>

#include "absl/status/status.h"

namespace dexec::auth::testing {

// A path under $TEST_TMPDIR (or /tmp) that does not exist yet: each call
// returns a new one, so tests never see each other's files.
std::string FreshPath(const std::string& name);

// Writes `content` to `path` with `mode` (exactly); aborts the test binary
// on failure, for setting up fixtures only.
void WriteTestFile(const std::string& path, const std::string& content,
                   mode_t mode);

// The permission bits of `path` (e.g. 0600), or -1 if it cannot be stat'ed.
int ModeOf(const std::string& path);

// Runs `check` as an unprivileged user and returns the code of the status
// it returned. When the test runs as root (which reads any file), `check`
// runs in a forked child that has switched to uid/gid 65534 ("nobody"), so
// permission checks are real; otherwise it runs in this process. Call it
// before the test starts threads (gRPC), since the child only forks this
// one.
absl::StatusCode RunUnprivileged(const std::function<absl::Status()>& check);

}  // namespace dexec::auth::testing

#endif  // DEXEC_AUTH_TESTING_H_
