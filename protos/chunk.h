// The payload of a chunked map's job (tasks.proto, Chunk): a 16-byte
// marker, then a serialized dexec.tasks.Chunk. The client packs N map items
// into one job with it; the worker recognises the marker, runs the job's
// task per item, and answers a dexec.tasks.ChunkResult. docs/DESIGN.md,
// "Chunked maps".
//
// A payload of an ordinary job that happens to start with the marker is
// read as a chunk: the marker contains NUL bytes and a version, which no
// text payload and no protobuf message starts with; a submitter crafting
// one only changes how its own job's payload is read.
#ifndef DEXEC_PROTOS_CHUNK_H_
#define DEXEC_PROTOS_CHUNK_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "protos/tasks.pb.h"

namespace dexec::chunk {

inline constexpr absl::string_view kMarker("\0dexec.chunk/v1\0", 16);

inline bool IsChunk(absl::string_view payload) {
  return payload.size() >= kMarker.size() &&
         payload.substr(0, kMarker.size()) == kMarker;
}

// The payload of a job carrying `items`.
std::string Encode(const std::vector<std::string>& items);

// The items of a chunk payload; INVALID_ARGUMENT if it is not one.
absl::StatusOr<tasks::Chunk> Decode(absl::string_view payload);

}  // namespace dexec::chunk

#endif  // DEXEC_PROTOS_CHUNK_H_
