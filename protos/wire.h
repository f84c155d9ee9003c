// Encoding and decoding of broker <-> worker frames (protos/wire.proto).
//
// Every byte string read from a ZeroMQ socket goes through DecodeFrame before
// anything looks at it; it returns INVALID_ARGUMENT for anything malformed,
// so a garbage or hostile peer can never crash or confuse the broker.
//
//   std::string bytes = dexec::wire::EncodeFrame(frame);   // sets version
//   absl::StatusOr<dexec::wire::Frame> f = dexec::wire::DecodeFrame(bytes);
#ifndef DEXEC_PROTOS_WIRE_H_
#define DEXEC_PROTOS_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "protos/wire.pb.h"

namespace dexec::wire {

// Bump on any change a peer of the previous version would misread.
inline constexpr uint32_t kProtocolVersion = 1;

// Frames larger than this are rejected before parsing. Payloads are limited
// further by the broker's --max_payload_bytes.
inline constexpr size_t kMaxFrameBytes = 256 << 20;

// What a frame carries beyond the one payload or result it may hold: ids,
// names, an error message. The broker's worker socket refuses, at the
// frame's header, anything longer than max(--max_payload_bytes,
// --max_result_bytes) + kFrameEnvelopeBytes (Welcome.max_frame_bytes).
inline constexpr size_t kFrameEnvelopeBytes = 1 << 20;
// A result's error message is cut to this many bytes (EncodeFrame), so it
// fits the envelope.
inline constexpr size_t kMaxErrorMessageBytes = 64 << 10;
// A result's error kind, likewise.
inline constexpr size_t kMaxErrorKindBytes = 256;

// The error message of a result_too_large failure, the same from the
// worker that did not send it and the broker that did not keep it.
std::string ResultTooLargeMessage(uint64_t size, uint64_t max_result_bytes);

// `s` cut to at most `max_bytes` bytes without splitting a UTF-8 sequence.
std::string TruncateUtf8(absl::string_view s, size_t max_bytes);

// What a Register may carry (a peer cannot make the broker hold more for
// it): its name, host and each task name at most this many bytes (the
// broker's own limit on a job's task name), so many tasks, and so many held
// attempts (threads + prefetch, both at most 100,000).
inline constexpr size_t kMaxRegisterNameBytes = 256;
inline constexpr int kMaxRegisterTasks = 4096;
inline constexpr int kMaxRegisterHeld = 200000;

// `s` with every byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string ValidUtf8(absl::string_view s);

// Serializes `frame` with its version set to kProtocolVersion. A result's
// error kind and message are made valid UTF-8 first (proto3 strings must
// be, or the broker cannot parse the frame and loses all its results) and
// cut to kMaxErrorKindBytes and kMaxErrorMessageBytes.
std::string EncodeFrame(Frame frame);

// Parses and validates one frame: size, protobuf syntax, version, a body
// that is set, and the body's own invariants (a Register names itself and
// has at least one thread, a Task names its task, ...).
absl::StatusOr<Frame> DecodeFrame(absl::string_view bytes);

}  // namespace dexec::wire

#endif  // DEXEC_PROTOS_WIRE_H_
