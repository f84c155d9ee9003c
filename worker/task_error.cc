#include "worker/task_error.h"

#include "absl/strings/cord.h"
#include "absl/types/optional.h"

namespace dexec::worker {

absl::Status TaskError(absl::string_view kind, absl::string_view message) {
  absl::Status status(absl::StatusCode::kUnknown, message);
  status.SetPayload(kErrorKindUrl,
                    absl::Cord(kind.empty() ? kTaskErrorKind : kind));
  return status;
}

std::string ErrorKindOf(const absl::Status& status) {
  if (status.ok()) return "";
  absl::optional<absl::Cord> kind = status.GetPayload(kErrorKindUrl);
  if (!kind.has_value() || kind->empty()) return std::string(kTaskErrorKind);
  return std::string(*kind);
}

namespace {
constexpr absl::string_view kOutputUrl = "type.dexec/output";
}  // namespace

absl::Status WithOutput(absl::Status status, absl::string_view output) {
  if (!status.ok()) status.SetPayload(kOutputUrl, absl::Cord(output));
  return status;
}

std::string TakeOutput(absl::Status& status) {
  absl::optional<absl::Cord> output = status.GetPayload(kOutputUrl);
  if (!output.has_value()) return "";
  status.ErasePayload(kOutputUrl);
  return std::string(*output);
}

}  // namespace dexec::worker
