#include "protos/chunk.h"

namespace dexec::chunk {

std::string Encode(const std::vector<std::string>& items) {
  tasks::Chunk chunk;
  chunk.mutable_items()->Reserve(static_cast<int>(items.size()));
  for (const std::string& item : items) chunk.add_items(item);
  std::string payload(kMarker);
  chunk.AppendToString(&payload);
  return payload;
}

absl::StatusOr<tasks::Chunk> Decode(absl::string_view payload) {
  tasks::Chunk chunk;
  if (!IsChunk(payload)) {
    return absl::InvalidArgumentError("not a chunked map payload");
  }
  payload.remove_prefix(kMarker.size());
  if (!chunk.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::InvalidArgumentError(
        "a chunked map payload whose items do not parse");
  }
  return chunk;
}

}  // namespace dexec::chunk
