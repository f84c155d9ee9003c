// How typed values travel as job payloads and results (bytes on the wire).
// The client (Future<T>, Executor::Submit) and the worker (typed tasks) use
// the same Codec<T>, so a value encoded on one side decodes on the other.
//
//   std::string bytes = Codec<int64_t>::Encode(42);        // "42"
//   absl::StatusOr<int64_t> v = Codec<int64_t>::Decode(bytes);
//
// Supported: std::string (raw bytes), integers and floating point (decimal
// text, so `dexec submit square 7` works from a shell), bool ("true"/
// "false"), and protobuf messages (binary wire format).
#ifndef DEXEC_COMMON_CODEC_H_
#define DEXEC_COMMON_CODEC_H_

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"

namespace dexec {

template <typename T, typename Enable = void>
struct Codec;

template <>
struct Codec<std::string> {
  static std::string Encode(const std::string& v) { return v; }
  static absl::StatusOr<std::string> Decode(absl::string_view bytes) {
    return std::string(bytes);
  }
};

template <>
struct Codec<bool> {
  static std::string Encode(bool v) { return v ? "true" : "false"; }
  static absl::StatusOr<bool> Decode(absl::string_view bytes) {
    bool v;
    if (!absl::SimpleAtob(bytes, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expected true or false, got '", bytes.substr(0, 64), "'"));
    }
    return v;
  }
};

template <typename T>
struct Codec<
    T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string Encode(T v) { return absl::StrCat(v); }
  static absl::StatusOr<T> Decode(absl::string_view bytes) {
    // SimpleAtoi handles 32- and 64-bit types; narrower ones parse wide and
    // are range-checked.
    using Wide = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;
    Wide v;
    if (!absl::SimpleAtoi(bytes, &v) || v < std::numeric_limits<T>::min() ||
        v > std::numeric_limits<T>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected an integer that fits the type, got '",
                       bytes.substr(0, 64), "'"));
    }
    return static_cast<T>(v);
  }
};

template <typename T>
struct Codec<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static std::string Encode(T v) {
    return absl::StrFormat("%.17g", static_cast<double>(v));
  }
  static absl::StatusOr<T> Decode(absl::string_view bytes) {
    double v;
    if (!absl::SimpleAtod(bytes, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected a number, got '", bytes.substr(0, 64), "'"));
    }
    return static_cast<T>(v);
  }
};

template <typename T>
struct Codec<
    T, std::enable_if_t<std::is_base_of_v<google::protobuf::MessageLite, T>>> {
  static std::string Encode(const T& v) { return v.SerializeAsString(); }
  static absl::StatusOr<T> Decode(absl::string_view bytes) {
    T v;
    if (!v.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("bytes are not a valid ", v.GetTypeName(), " message"));
    }
    return v;
  }
};

}  // namespace dexec

#endif  // DEXEC_COMMON_CODEC_H_
