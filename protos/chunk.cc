#include "protos/chunk.h"

#include <cstdint>

#include "absl/status/status.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace dexec::chunk {

namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// Field tags of tasks.proto's Chunk and ItemResult (field number << 3 |
// wire type): length-delimited 2, varint 0.
constexpr uint32_t kItemsTag = 1 << 3 | 2;         // Chunk.items
constexpr uint32_t kResultsTag = 1 << 3 | 2;       // ChunkResult.results
constexpr uint32_t kOkTag = 1 << 3 | 0;            // ItemResult.ok
constexpr uint32_t kOutputTag = 2 << 3 | 2;        // ItemResult.output
constexpr uint32_t kErrorKindTag = 3 << 3 | 2;     // ItemResult.error_kind
constexpr uint32_t kErrorMessageTag = 4 << 3 | 2;  // ItemResult.error_message

void AppendVarint(std::string* out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// A length-delimited field, as protobuf writes it.
void AppendBytes(std::string* out, uint32_t tag, absl::string_view bytes) {
  AppendVarint(out, tag);
  AppendVarint(out, bytes.size());
  out->append(bytes.data(), bytes.size());
}

size_t BytesFieldSize(absl::string_view bytes) {
  return 1 + VarintSize(bytes.size()) + bytes.size();
}

// Reads a length-delimited field's bytes (after its tag) as a view into
// `data`, the buffer `in` reads.
bool ReadBytes(CodedInputStream& in, const char* data, absl::string_view* out) {
  uint32_t size = 0;
  if (!in.ReadVarint32(&size)) return false;
  const int at = in.CurrentPosition();
  if (!in.Skip(static_cast<int>(size))) return false;
  *out = absl::string_view(data + at, size);
  return true;
}

bool ReadItemResult(absl::string_view bytes, ItemResultView* r) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  while (const uint32_t tag = in.ReadTag()) {
    bool ok = true;
    switch (tag) {
      case kOkTag: {
        uint64_t v = 0;
        ok = in.ReadVarint64(&v);
        r->ok = v != 0;
        break;
      }
      case kOutputTag:
        ok = ReadBytes(in, bytes.data(), &r->output);
        break;
      case kErrorKindTag:
        ok = ReadBytes(in, bytes.data(), &r->error_kind);
        break;
      case kErrorMessageTag:
        ok = ReadBytes(in, bytes.data(), &r->error_message);
        break;
      default:
        ok = WireFormatLite::SkipField(&in, tag);
    }
    if (!ok) return false;
  }
  return in.ConsumedEntireMessage();
}

}  // namespace

std::string Encode(const std::vector<std::string>& items) {
  ItemWriter w;
  for (const std::string& item : items) w.Add(item);
  return std::move(w).Finish();
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

void ItemWriter::Add(absl::string_view item) {
  AppendBytes(&payload_, kItemsTag, item);
  ++items_;
}

absl::StatusOr<std::vector<absl::string_view>> DecodeItems(
    absl::string_view payload) {
  if (!IsChunk(payload)) {
    return absl::InvalidArgumentError("not a chunked map payload");
  }
  payload.remove_prefix(kMarker.size());
  std::vector<absl::string_view> items;
  CodedInputStream in(reinterpret_cast<const uint8_t*>(payload.data()),
                      static_cast<int>(payload.size()));
  while (const uint32_t tag = in.ReadTag()) {
    bool ok;
    if (tag == kItemsTag) {
      absl::string_view item;
      ok = ReadBytes(in, payload.data(), &item);
      if (ok) items.push_back(item);
    } else {
      ok = WireFormatLite::SkipField(&in, tag);
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          "a chunked map payload whose items do not parse");
    }
  }
  if (!in.ConsumedEntireMessage()) {
    return absl::InvalidArgumentError(
        "a chunked map payload whose items do not parse");
  }
  return items;
}

void ResultWriter::AddOk(absl::string_view output) {
  Add(true, output, {}, {});
}

void ResultWriter::AddError(absl::string_view output,
                            absl::string_view error_kind,
                            absl::string_view error_message) {
  Add(false, output, error_kind, error_message);
}

void ResultWriter::Add(bool ok, absl::string_view output,
                       absl::string_view error_kind,
                       absl::string_view error_message) {
  // Proto3 leaves out fields at their default (false, empty), in field
  // order: what SerializeAsString() writes.
  size_t size = ok ? 2 : 0;
  if (!output.empty()) size += BytesFieldSize(output);
  if (!error_kind.empty()) size += BytesFieldSize(error_kind);
  if (!error_message.empty()) size += BytesFieldSize(error_message);
  AppendVarint(&result_, kResultsTag);
  AppendVarint(&result_, size);
  if (ok) {
    AppendVarint(&result_, kOkTag);
    AppendVarint(&result_, 1);
  }
  if (!output.empty()) AppendBytes(&result_, kOutputTag, output);
  if (!error_kind.empty()) AppendBytes(&result_, kErrorKindTag, error_kind);
  if (!error_message.empty()) {
    AppendBytes(&result_, kErrorMessageTag, error_message);
  }
  ++items_;
}

absl::StatusOr<std::vector<ItemResultView>> DecodeResults(
    absl::string_view result) {
  std::vector<ItemResultView> views;
  CodedInputStream in(reinterpret_cast<const uint8_t*>(result.data()),
                      static_cast<int>(result.size()));
  while (const uint32_t tag = in.ReadTag()) {
    bool ok;
    if (tag == kResultsTag) {
      absl::string_view bytes;
      ok = ReadBytes(in, result.data(), &bytes) &&
           ReadItemResult(bytes, &views.emplace_back());
    } else {
      ok = WireFormatLite::SkipField(&in, tag);
    }
    if (!ok) return absl::DataLossError("a ChunkResult that does not parse");
  }
  if (!in.ConsumedEntireMessage()) {
    return absl::DataLossError("a ChunkResult that does not parse");
  }
  return views;
}

}  // namespace dexec::chunk
