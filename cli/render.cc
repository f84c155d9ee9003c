#include "cli/render.h"

#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "protos/tasks.pb.h"

namespace dexec::cli {

bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte first, C0/C1, or past U+10FFFF
    }
    if (i + n >= s.size()) return false;  // cut short
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;  // overlong, past Unicode, or a surrogate
    }
    i += n + 1;
  }
  return true;
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

namespace {

bool IsHttpGet(absl::string_view task) { return task == "http.get"; }

}  // namespace

std::string ResultText(absl::string_view task, std::string result) {
  tasks::HttpResponse response;
  if (IsHttpGet(task) && response.ParseFromString(result)) {
    return std::move(*response.mutable_body());
  }
  return result;
}

std::string ResultLine(absl::string_view task, std::string result) {
  tasks::HttpResponse r;
  if (!IsHttpGet(task) || !r.ParseFromString(result)) return result;
  std::string line = absl::StrCat("{\"status\":", r.status(), ",\"headers\":[");
  for (int i = 0; i < r.headers_size(); ++i) {
    // Header bytes are the server's: quoted as text only if they are.
    const std::string& h = r.headers(i);
    absl::StrAppend(&line, i > 0 ? "," : "",
                    JsonQuote(IsUtf8(h) ? h : absl::CHexEscape(h)));
  }
  line += "],";
  if (IsUtf8(r.body())) {
    absl::StrAppend(&line, "\"body\":", JsonQuote(r.body()));
  } else {
    absl::StrAppend(&line, "\"body_base64\":\"", absl::Base64Escape(r.body()),
                    "\"");
  }
  line += "}";
  return line;
}

}  // namespace dexec::cli
