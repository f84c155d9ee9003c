// A small HTTP/1.1 server for the broker's and a worker's --http_listen:
// /metrics, the JSON API and the dashboard (docs/DESIGN.md, "HTTP
// listener"). One Handler answers every request; routing is the caller's.
//
//   auto listener = http::HttpListener::Start("127.0.0.1:0", {}, handler);
//   if (!listener.ok()) return listener.status();
//   std::cout << (*listener)->port();
//
// Built on Debian's cpp-httplib (parsing, keep-alive, chunked bodies) with
// its limits set: a request is read within `read_timeout` or dropped, a
// body over `max_body_bytes` gets 413 unread, a connection serves at most
// kKeepAliveRequests requests, and `threads` threads serve connections (a
// connection beyond them waits its turn). A malformed request gets 400;
// nothing a peer sends reaches the handler unparsed.
//
// Thread-safe. The handler runs on the listener's threads (named
// `<name>-http`), so it must be thread-safe too. Stops and joins its
// threads in the destructor.
#ifndef DEXEC_COMMON_HTTP_LISTENER_H_
#define DEXEC_COMMON_HTTP_LISTENER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace dexec::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // "/api/jobs", URL-decoded, no query
  std::string query;   // raw query string, without '?'
  absl::flat_hash_map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string peer;  // "127.0.0.1:5555"
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  // Extra headers, e.g. {"Set-Cookie", "..."}.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

using Handler = std::function<Response(const Request&)>;

class HttpListener {
 public:
  struct Options {
    int threads = 2;
    size_t max_body_bytes = 1 << 20;
    absl::Duration read_timeout = absl::Seconds(10);
    absl::Duration write_timeout = absl::Seconds(10);
    std::string name = "dexec";  // threads are `<name>-http`
  };
  static constexpr int kKeepAliveRequests = 100;

  // Binds `host_port` ("HOST:PORT"; port 0 picks one) and serves on
  // `options.threads` threads. INVALID_ARGUMENT for a malformed address,
  // UNAVAILABLE naming the address when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      const std::string& host_port, Options options, Handler handler);

  ~HttpListener();
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // The bound port.
  int port() const { return port_; }

 private:
  HttpListener() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// The value of cookie `name` in the request's Cookie header; none if absent.
std::optional<std::string> CookieValue(const Request& r,
                                       absl::string_view name);

}  // namespace dexec::http

#endif  // DEXEC_COMMON_HTTP_LISTENER_H_
