// A small streaming JSON writer for the broker's HTTP API
// (docs/HTTP_API.md): objects, arrays, strings, numbers, booleans, null.
//
//   JsonWriter w;
//   w.BeginObject();
//   w.Key("id"); w.Uint(42);
//   w.Key("task"); w.String("echo");
//   w.EndObject();
//   std::string body = std::move(w).Take();   // {"id":42,"task":"echo"}
//
// Strings are escaped per RFC 8259: the quote, the backslash and every
// control character; bytes that are not valid UTF-8 (job payloads and
// results are arbitrary bytes) become U+FFFD, so the output is always
// valid UTF-8 and valid JSON whatever the input. Commas are placed by the
// writer; the caller only nests Begin/End correctly (a mismatch is our bug
// and trips an assert in debug builds). Non-finite doubles are written as
// null (JSON has no NaN or infinity).
//
// Not thread-safe; one writer per response.
#ifndef DEXEC_COMMON_JSON_WRITER_H_
#define DEXEC_COMMON_JSON_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace dexec {

class JsonWriter {
 public:
  JsonWriter() = default;

  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  // Inside an object: the next value's name.
  void Key(absl::string_view key);

  void String(absl::string_view s);
  void Int(int64_t v);
  void Uint(uint64_t v);
  void Double(double v);
  void Bool(bool v);
  void Null();

  // The text written so far (complete once every Begin has its End).
  const std::string& str() const { return out_; }
  std::string Take() && { return std::move(out_); }

  // `s` as a JSON string literal, quotes included (see the overview for
  // escaping and invalid UTF-8).
  static std::string Quote(absl::string_view s);

 private:
  // Before a value or a key: the comma if one is due.
  void BeforeValue();

  std::string out_;
  // One entry per open object or array: whether it has a member yet.
  std::vector<bool> has_member_;
  // A key was just written: its value follows with no comma.
  bool after_key_ = false;
};

}  // namespace dexec

#endif  // DEXEC_COMMON_JSON_WRITER_H_
