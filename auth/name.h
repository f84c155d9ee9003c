// The one rule for names of credentials, client tokens and worker keys
// alike: 1 to 64 of [A-Za-z0-9._-]. Names appear in files with
// space-separated fields, in logs (`token=`, `worker_key=`) and in CLI
// output, so they hold no spaces, quotes or control characters.
//
// Thread-safe (a pure function).
#ifndef DEXEC_AUTH_NAME_H_
#define DEXEC_AUTH_NAME_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dexec::auth {

inline constexpr size_t kMaxNameLength = 64;

// OK if `name` matches [A-Za-z0-9._-]{1,64}; INVALID_ARGUMENT saying what is
// allowed otherwise.
absl::Status ValidateName(absl::string_view name);

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_NAME_H_
