// HTTP/1.1 on the wire for http.get's plain path (plain_http.h): which
// requests it takes, their bytes, and a parser of the response. Pure: no
// sockets, no clock; unit-tested on bytes (http1_test.cc).
//
// The plain path takes an http:// URL whose host is an address literal
// (IPv4, or IPv6 in brackets), with no user info, and a request whose
// method is a token and whose headers leave the framing to it (no
// Content-Length, Transfer-Encoding, Connection, Expect, Upgrade or TE of
// the caller's). Everything else (https, host names, proxies) goes
// through curl, whose request it matches: the same method rules (a body
// without a method is a POST; a body has curl's default Content-Type
// unless the caller sets one), the same
// Host and Accept headers, which a caller's header of the same name
// replaces, or with "Name:" removes; "Name;" sends the header empty.
#ifndef DEXEC_WORKER_HTTP1_H_
#define DEXEC_WORKER_HTTP1_H_

#include <http_parser.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "protos/tasks.pb.h"

namespace dexec::worker::http1 {

// Where a request goes.
struct Target {
  sockaddr_storage addr = {};
  socklen_t addr_len = 0;
  std::string authority;  // host[:port] as the URL has it, for Host
  std::string path;       // origin form: "/path?query", at least "/"
  // The connection pool's key: the address and port.
  std::string key;
};

// The target of `url` if the plain path takes it, else nullopt (curl does).
std::optional<Target> ParseTarget(absl::string_view url);

// Whether a header line could break the request's framing (a CR, LF or
// NUL in it): such a request is refused on either path.
bool HeaderIsUnsafe(absl::string_view line);

// The request's bytes if the plain path takes `req` to `target`, else
// nullopt (its method or headers are curl's to send).
std::optional<std::string> BuildRequest(const tasks::HttpRequest& req,
                                        const Target& target);

// The method `req` is sent with ("GET", "POST" for a body, or its own).
std::string MethodOf(const tasks::HttpRequest& req);

// Parses one response from the bytes read off a connection.
//   Feed(...) as bytes come; then kMore (send more), kDone (response() is
//   the whole response) or kError (error() says why). FeedEof() when the
//   peer closed. 1xx interim responses are skipped. Bodies over
//   `max_body` fail with too_large().
class ResponseParser {
 public:
  enum class State { kMore, kDone, kError };

  ResponseParser(bool head_request, size_t max_body);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  State Feed(const char* data, size_t n);
  State FeedEof();

  tasks::HttpResponse& response() { return response_; }
  const std::string& error() const { return error_; }
  bool too_large() const { return too_large_; }
  // Whether any byte of a response came (a request on a reused connection
  // that got none may be sent again on a new one).
  bool got_bytes() const { return got_bytes_; }
  // After kDone: whether the connection may carry the next request (the
  // server keeps it, and sent nothing past this response).
  bool reusable() const { return reusable_; }

 private:
  static int OnHeaderField(http_parser* p, const char* at, size_t n);
  static int OnHeaderValue(http_parser* p, const char* at, size_t n);
  static int OnHeadersComplete(http_parser* p);
  static int OnBody(http_parser* p, const char* at, size_t n);
  static int OnMessageComplete(http_parser* p);
  void EndHeader();
  State Fail(std::string why);

  http_parser parser_;
  http_parser_settings settings_;
  const bool head_request_;
  const size_t max_body_;
  tasks::HttpResponse response_;
  std::string field_, value_;
  bool in_value_ = false;
  bool done_ = false;
  bool too_large_ = false;
  bool got_bytes_ = false;
  bool reusable_ = false;
  State state_ = State::kMore;
  std::string error_;
};

}  // namespace dexec::worker::http1

#endif  // DEXEC_WORKER_HTTP1_H_
