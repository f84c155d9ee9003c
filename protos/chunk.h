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
//
// Two ways to the same bytes: Encode/Decode build and parse the protobuf
// messages (for callers that own their items as strings), and the writers
// and readers below write and read the same wire format item by item, in
// place, with no message object and no allocation per item: a chunk is a
// thousand items that each cost a few hundred nanoseconds end to end, and
// one message object per item was most of that (bench/shapes_bench.sh).
// Their output is byte for byte what SerializeAsString() writes, and they
// read anything ParseFromString() reads (unknown fields skipped).
//
//   chunk::ItemWriter w;                  // the client
//   for (const std::string& item : items) w.Add(item);
//   std::string payload = std::move(w).Finish();
//
//   ASSIGN_OR_RETURN(std::vector<absl::string_view> items,
//                    chunk::DecodeItems(payload));  // the worker
//   chunk::ResultWriter results;
//   for (absl::string_view item : items) results.AddOk(Run(item));
//   std::string result = std::move(results).Finish();
//
//   ASSIGN_OR_RETURN(std::vector<chunk::ItemResultView> views,
//                    chunk::DecodeResults(result));  // the client again
#ifndef DEXEC_PROTOS_CHUNK_H_
#define DEXEC_PROTOS_CHUNK_H_

#include <cstddef>
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

// Builds a chunk payload one item at a time (the bytes Encode writes).
// Not thread-safe.
class ItemWriter {
 public:
  ItemWriter() : payload_(kMarker) {}

  void Add(absl::string_view item);
  size_t size() const { return items_; }
  // The payload; the writer is spent.
  std::string Finish() && { return std::move(payload_); }

 private:
  std::string payload_;
  size_t items_ = 0;
};

// The items of a chunk payload, as views into `payload` (which must outlive
// them), all checked before any is returned; INVALID_ARGUMENT if it is not
// a chunk or does not parse.
absl::StatusOr<std::vector<absl::string_view>> DecodeItems(
    absl::string_view payload);

// Builds a serialized tasks.ChunkResult one ItemResult at a time (the bytes
// of the message with those results, serialized). Not thread-safe.
class ResultWriter {
 public:
  void AddOk(absl::string_view output);
  void AddError(absl::string_view output, absl::string_view error_kind,
                absl::string_view error_message);
  size_t size() const { return items_; }
  std::string Finish() && { return std::move(result_); }

 private:
  void Add(bool ok, absl::string_view output, absl::string_view error_kind,
           absl::string_view error_message);

  std::string result_;
  size_t items_ = 0;
};

// One tasks.ItemResult, its bytes fields as views into the result read.
struct ItemResultView {
  bool ok = false;
  absl::string_view output;
  absl::string_view error_kind;
  absl::string_view error_message;
};

// The results of a serialized tasks.ChunkResult, as views into `result`
// (which must outlive them); DATA_LOSS if it does not parse.
absl::StatusOr<std::vector<ItemResultView>> DecodeResults(
    absl::string_view result);

}  // namespace dexec::chunk

#endif  // DEXEC_PROTOS_CHUNK_H_
