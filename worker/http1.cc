#include "worker/http1.h"

#include <arpa/inet.h>

#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dexec::worker::http1 {
namespace {

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// A header line's name: up to its ':' (or, for curl's "Name;" form, ';').
absl::string_view HeaderName(absl::string_view line) {
  const size_t end = line.find_first_of(":;");
  return absl::StripAsciiWhitespace(line.substr(0, end));
}

// Headers whose framing only the plain path may set.
bool IsFramingHeader(absl::string_view name) {
  for (absl::string_view h : {"content-length", "transfer-encoding",
                              "connection", "expect", "upgrade", "te"}) {
    if (absl::EqualsIgnoreCase(name, h)) return true;
  }
  return false;
}

}  // namespace

std::optional<Target> ParseTarget(absl::string_view url) {
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return std::nullopt;  // curl decides
  }
  if (url.size() < 7 || !absl::EqualsIgnoreCase(url.substr(0, 7), "http://"))
    return std::nullopt;
  url.remove_prefix(7);
  const size_t fragment = url.find('#');
  if (fragment != absl::string_view::npos) url = url.substr(0, fragment);
  const size_t end = url.find_first_of("/?");
  absl::string_view authority = url.substr(0, end);
  absl::string_view rest =
      end == absl::string_view::npos ? absl::string_view() : url.substr(end);
  if (authority.empty() || absl::StrContains(authority, '@'))
    return std::nullopt;

  absl::string_view host, port_text;
  bool v6 = false;
  if (authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return std::nullopt;
      port_text = after.substr(1);
      if (port_text.empty()) return std::nullopt;
    }
    v6 = true;
  } else {
    const size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != absl::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return std::nullopt;
    }
  }
  int port = 80;
  if (!port_text.empty()) {
    for (char c : port_text) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c)))
        return std::nullopt;
    }
    if (port_text.size() > 5 || !absl::SimpleAtoi(port_text, &port) ||
        port < 1 || port > 65535) {
      return std::nullopt;
    }
  }

  Target t;
  const std::string host_z(host);
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&t.addr);
    if (inet_pton(AF_INET6, host_z.c_str(), &a->sin6_addr) != 1)
      return std::nullopt;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    t.addr_len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&t.addr);
    if (inet_pton(AF_INET, host_z.c_str(), &a->sin_addr) != 1)
      return std::nullopt;  // a name, or a form only curl reads
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    t.addr_len = sizeof(sockaddr_in);
  }
  // As curl: no ":80" in Host for the default port.
  t.authority = port == 80 ? (v6 ? absl::StrCat("[", host, "]") : host_z)
                           : std::string(authority);
  t.path = rest.empty()     ? "/"
           : rest[0] == '?' ? absl::StrCat("/", rest)
                            : std::string(rest);
  t.key = absl::StrCat(v6 ? "6/" : "4/", host, "/", port);
  return t;
}

bool HeaderIsUnsafe(absl::string_view line) {
  return line.find_first_of(absl::string_view("\r\n\0", 3)) !=
         absl::string_view::npos;
}

std::string MethodOf(const tasks::HttpRequest& req) {
  if (!req.method().empty() && req.method() != "GET") return req.method();
  return req.body().empty() ? "GET" : "POST";  // curl's CURLOPT_POSTFIELDS
}

std::optional<std::string> BuildRequest(const tasks::HttpRequest& req,
                                        const Target& target) {
  const std::string method = MethodOf(req);
  if (!IsToken(method)) return std::nullopt;
  bool own_host = false, own_accept = false, own_type = false;
  std::vector<std::string> lines;
  for (const std::string& h : req.headers()) {
    const absl::string_view name = HeaderName(h);
    if (HeaderIsUnsafe(h) || !IsToken(name) || IsFramingHeader(name))
      return std::nullopt;
    own_host |= absl::EqualsIgnoreCase(name, "host");
    own_accept |= absl::EqualsIgnoreCase(name, "accept");
    own_type |= absl::EqualsIgnoreCase(name, "content-type");
    absl::string_view line = h;
    const size_t sep = line.find_first_of(":;");
    if (sep == absl::string_view::npos) return std::nullopt;
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(sep + 1));
    if (line[sep] == ';') {
      if (!value.empty()) return std::nullopt;  // not curl's "Name;" form
      lines.push_back(absl::StrCat(name, ":"));
    } else if (!value.empty()) {
      lines.push_back(absl::StrCat(name, ": ", value));
    }  // "Name:" only removes the header of that name
  }
  std::string out = absl::StrCat(method, " ", target.path, " HTTP/1.1\r\n");
  if (!own_host) absl::StrAppend(&out, "Host: ", target.authority, "\r\n");
  if (!own_accept) out += "Accept: */*\r\n";
  if (!req.body().empty()) {
    absl::StrAppend(&out, "Content-Length: ", req.body().size(), "\r\n");
    // curl sends a body as a POST's, whatever the method's name.
    if (!own_type) {
      out += "Content-Type: application/x-www-form-urlencoded\r\n";
    }
  }
  for (const std::string& l : lines) absl::StrAppend(&out, l, "\r\n");
  out += "\r\n";
  out += req.body();
  return out;
}

ResponseParser::ResponseParser(bool head_request, size_t max_body)
    : head_request_(head_request), max_body_(max_body) {
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  http_parser_settings_init(&settings_);
  settings_.on_header_field = OnHeaderField;
  settings_.on_header_value = OnHeaderValue;
  settings_.on_headers_complete = OnHeadersComplete;
  settings_.on_body = OnBody;
  settings_.on_message_complete = OnMessageComplete;
}

void ResponseParser::EndHeader() {
  if (in_value_ || !field_.empty()) {
    response_.add_headers(
        absl::StrCat(field_, ": ", absl::StripTrailingAsciiWhitespace(value_)));
  }
  field_.clear();
  value_.clear();
  in_value_ = false;
}

int ResponseParser::OnHeaderField(http_parser* p, const char* at, size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (self->in_value_) self->EndHeader();
  if (self->field_.size() + n > HTTP_MAX_HEADER_SIZE) return 1;
  self->field_.append(at, n);
  return 0;
}

int ResponseParser::OnHeaderValue(http_parser* p, const char* at, size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->in_value_ = true;
  if (self->value_.size() + n > HTTP_MAX_HEADER_SIZE) return 1;
  self->value_.append(at, n);
  return 0;
}

int ResponseParser::OnHeadersComplete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->EndHeader();
  // 1 = no body: a HEAD's response (a 1xx, 204 or 304 the parser knows).
  return self->head_request_ && p->status_code >= 200 ? 1 : 0;
}

int ResponseParser::OnBody(http_parser* p, const char* at, size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (self->response_.body().size() + n > self->max_body_) {
    self->too_large_ = true;
    return 1;
  }
  self->response_.mutable_body()->append(at, n);
  return 0;
}

int ResponseParser::OnMessageComplete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (p->status_code < 200) {  // 100 Continue and the like: the next one
    self->response_.Clear();
    return 0;
  }
  self->response_.set_status(static_cast<int32_t>(p->status_code));
  self->done_ = true;
  self->reusable_ = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1);
  return 0;
}

ResponseParser::State ResponseParser::Fail(std::string why) {
  error_ = std::move(why);
  reusable_ = false;
  return state_ = State::kError;
}

ResponseParser::State ResponseParser::Feed(const char* data, size_t n) {
  if (state_ != State::kMore) return state_;
  if (n > 0) got_bytes_ = true;
  const size_t used = http_parser_execute(&parser_, &settings_, data, n);
  if (done_) {
    if (used != n) reusable_ = false;  // bytes past the response
    return state_ = State::kDone;
  }
  const auto err = static_cast<http_errno>(parser_.http_errno);
  if (too_large_) return Fail("the body is too large");
  // 101 Switching Protocols, never asked for: what follows is not HTTP.
  if (parser_.upgrade) return Fail("the server switched protocols");
  if (err != HPE_OK) {
    return Fail(
        absl::StrCat("bad HTTP response: ", http_errno_description(err)));
  }
  return state_;
}

ResponseParser::State ResponseParser::FeedEof() {
  if (state_ != State::kMore) return state_;
  http_parser_execute(&parser_, &settings_, nullptr, 0);
  if (done_) {
    reusable_ = false;
    return state_ = State::kDone;
  }
  return Fail(got_bytes_ ? "the server closed the connection mid-response"
                         : "the server closed the connection without a "
                           "response");
}

}  // namespace dexec::worker::http1
