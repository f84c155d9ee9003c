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

// The longest frame the broker's worker socket accepts (its ZMQ_MAXMSGSIZE,
// and Welcome.max_frame_bytes), whatever --max_payload_bytes and
// --max_result_bytes say: a peer sending more loses its connection at the
// frame's header, before it is authenticated too (libzmq has one limit per
// socket, and it applies to the CURVE handshake). Every legitimate
// worker -> broker frame fits: a Register at its limits below (about
// 5.7 MiB: 200,000 held attempts, 2 x 4,096 task names of 256 bytes), a
// Results frame (WorkerCore::kResultsFrameBudget), one result of up to
// kMaxResultChunkBytes of output plus its envelope (wire_test checks them).
// Frames the other way are not bounded by it: a worker trusts the broker it
// authenticated, and takes up to kMaxFrameBytes.
inline constexpr size_t kMaxWorkerFrameBytes = 8 << 20;
// An output longer than this goes from worker to broker in pieces of at
// most this many bytes (TaskResult.output_size; Welcome.max_chunk_bytes).
inline constexpr size_t kMaxResultChunkBytes = 1 << 20;
// What a frame carries beyond the one payload or output piece it may hold:
// ids, names, an error message.
inline constexpr size_t kFrameEnvelopeBytes = 1 << 20;
static_assert(kMaxResultChunkBytes + kFrameEnvelopeBytes <=
              kMaxWorkerFrameBytes);
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
