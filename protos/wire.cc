#include "protos/wire.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dexec::wire {

std::string ValidUtf8(absl::string_view s);

namespace {

absl::Status ValidateRegister(const Register& r) {
  if (r.name().empty()) {
    return absl::InvalidArgumentError("Register has an empty worker name");
  }
  if (r.name().size() > kMaxRegisterNameBytes ||
      r.host().size() > kMaxRegisterNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Register has a name or host over ", kMaxRegisterNameBytes, " bytes"));
  }
  if (r.tasks_size() > kMaxRegisterTasks) {
    return absl::InvalidArgumentError(
        absl::StrCat("Register offers ", r.tasks_size(),
                     " tasks; the limit is ", kMaxRegisterTasks));
  }
  if (r.held_size() > kMaxRegisterHeld) {
    return absl::InvalidArgumentError(
        absl::StrCat("Register holds ", r.held_size(),
                     " attempts; the limit is ", kMaxRegisterHeld));
  }
  if (r.threads() <= 0 || r.threads() > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("Register has threads=", r.threads(),
                     "; it must be between 1 and 100000"));
  }
  if (r.prefetch() < 0 || r.prefetch() > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Register has prefetch=", r.prefetch(), "; it must be 0 to 100000"));
  }
  for (const std::string& t : r.tasks()) {
    if (t.empty() || t.size() > kMaxRegisterNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("Register offers a task name of ", t.size(),
                       " bytes; it must be 1 to ", kMaxRegisterNameBytes));
    }
  }
  if (r.concurrency() < 0 || r.concurrency() > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("Register has concurrency=", r.concurrency(),
                     "; it must be 0 to 1000000"));
  }
  if (r.async_tasks_size() > r.tasks_size()) {
    return absl::InvalidArgumentError(
        "Register lists more async_tasks than tasks");
  }
  if (r.async_tasks_size() > 0 && r.concurrency() == 0) {
    return absl::InvalidArgumentError(
        "Register lists async_tasks with concurrency=0");
  }
  absl::flat_hash_set<absl::string_view> offered;
  if (r.async_tasks_size() > 0) {
    offered.insert(r.tasks().begin(), r.tasks().end());
  }
  for (const std::string& a : r.async_tasks()) {
    if (!offered.contains(a)) {
      return absl::InvalidArgumentError(
          "Register lists an async task it does not offer");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDispatch(const Dispatch& d) {
  for (const Task& t : d.tasks()) {
    if (t.job_id() == 0 || t.name().empty()) {
      return absl::InvalidArgumentError(
          "Dispatch has a task without a job id or a task name");
    }
    if (t.timeout_ms() < 0) {
      return absl::InvalidArgumentError("Dispatch has a negative timeout");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateResults(const Results& r) {
  for (const TaskResult& t : r.results()) {
    if (t.job_id() == 0) {
      return absl::InvalidArgumentError("Results has a result without job id");
    }
    if (t.output_size() == 0) {
      if (t.output_offset() != 0) {
        return absl::InvalidArgumentError(
            "Results has an output offset without an output size");
      }
      continue;
    }
    // A piece: non-empty (each one makes progress) and inside the output.
    if (t.output().empty() || t.output_offset() >= t.output_size() ||
        t.output().size() > t.output_size() - t.output_offset()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Results has a piece of ", t.output().size(), " bytes at offset ",
          t.output_offset(), " of an output of ", t.output_size(), " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateWelcome(const Welcome& w) {
  if (w.heartbeat_interval_ms() <= 0 || w.liveness() <= 0) {
    return absl::InvalidArgumentError(
        "Welcome needs a positive heartbeat interval and liveness");
  }
  if (w.max_result_bytes() < 0 || w.max_frame_bytes() < 0 ||
      w.max_chunk_bytes() < 0) {
    return absl::InvalidArgumentError("Welcome limits must not be negative");
  }
  return absl::OkStatus();
}

bool IsValidUtf8(absl::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return ValidUtf8(s) == s;
  }
  return true;
}

}  // namespace

std::string ValidUtf8(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80           ? 1
            : (c >> 5) == 0x6  ? 2
            : (c >> 4) == 0xE  ? 3
            : (c >> 3) == 0x1E ? 4
                               : 0;
    bool ok = n > 0 && i + n <= s.size();
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; ok && k < n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are invalid.
    if (ok && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
               (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
               (cp >= 0xD800 && cp <= 0xDFFF))) {
      ok = false;
    }
    if (ok) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      ++i;
    }
  }
  return out;
}

std::string ResultTooLargeMessage(uint64_t size, uint64_t max_result_bytes) {
  return absl::StrCat("the result is ", size,
                      " bytes; the broker keeps at most ", max_result_bytes,
                      " (--max_result_bytes)");
}

std::string TruncateUtf8(absl::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  size_t end = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to a sequence's start.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) {
    --end;
  }
  return std::string(s.substr(0, end));
}

std::string EncodeFrame(Frame frame) {
  frame.set_version(kProtocolVersion);
  if (frame.has_results()) {
    // A task's error text is whatever it wrote; a proto3 string must be
    // UTF-8, or the whole frame — every result in it — fails to parse at
    // the broker.
    for (TaskResult& r : *frame.mutable_results()->mutable_results()) {
      if (!IsValidUtf8(r.error_message())) {
        r.set_error_message(ValidUtf8(r.error_message()));
      }
      if (r.error_message().size() > kMaxErrorMessageBytes) {
        r.set_error_message(
            TruncateUtf8(r.error_message(), kMaxErrorMessageBytes));
      }
      if (!IsValidUtf8(r.error_kind())) {
        r.set_error_kind(ValidUtf8(r.error_kind()));
      }
      if (r.error_kind().size() > kMaxErrorKindBytes) {
        r.set_error_kind(TruncateUtf8(r.error_kind(), kMaxErrorKindBytes));
      }
    }
  }
  return frame.SerializeAsString();
}

absl::StatusOr<Frame> DecodeFrame(absl::string_view bytes) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError("empty frame");
  }
  if (bytes.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame is ", bytes.size(), " bytes; the limit is ", kMaxFrameBytes));
  }
  Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", bytes.size(),
                     " bytes is not a dexec.wire.Frame protobuf"));
  }
  if (frame.version() != kProtocolVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame has protocol version ", frame.version(),
                     "; this build speaks version ", kProtocolVersion,
                     " (upgrade the broker and workers together)"));
  }
  absl::Status valid;
  switch (frame.body_case()) {
    case Frame::BODY_NOT_SET:
      return absl::InvalidArgumentError("frame has no body");
    case Frame::kRegister:
      valid = ValidateRegister(frame.register_());
      break;
    case Frame::kWelcome:
      valid = ValidateWelcome(frame.welcome());
      break;
    case Frame::kDispatch:
      valid = ValidateDispatch(frame.dispatch());
      break;
    case Frame::kResults:
      valid = ValidateResults(frame.results());
      break;
    case Frame::kHeartbeat:
    case Frame::kAbandon:
    case Frame::kReconnect:
    case Frame::kWorkerState:
      break;
  }
  if (!valid.ok()) return valid;
  return frame;
}

}  // namespace dexec::wire
