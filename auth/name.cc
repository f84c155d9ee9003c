#include "auth/name.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dexec::auth {

absl::Status ValidateName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a name has 1 to ", kMaxNameLength,
        " characters from [A-Za-z0-9._-]; this one has ", name.size()));
  }
  for (const char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      // The name is not a secret, but it may be garbage: show it escaped.
      return absl::InvalidArgumentError(absl::StrCat(
          "name \"", absl::CHexEscape(name),
          "\" has a character outside [A-Za-z0-9._-]; use letters, digits, "
          "'.', '_' or '-'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace dexec::auth
