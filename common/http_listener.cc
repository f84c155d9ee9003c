#include "common/http_listener.h"

#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace dexec::http {
namespace {

// httplib's TaskQueue with named threads (`<name>-http`), so `top -H` and
// TSan reports say whose they are. Connections beyond the threads wait in
// the queue; each holds a thread at most read_timeout per request and
// kKeepAliveRequests requests.
class NamedPool final : public httplib::TaskQueue {
 public:
  NamedPool(int threads, const std::string& name) {
    const std::string thread_name = (name + "-http").substr(0, 15);
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this, thread_name] {
        pthread_setname_np(pthread_self(), thread_name.c_str());
        Run();
      });
    }
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;  // guards jobs_ and stopping_
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    const std::string& host_port, Options options, Handler handler) {
  absl::string_view hp = host_port;
  const size_t colon = hp.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(hp.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad HTTP listen address '", host_port,
                     "': expected HOST:PORT, e.g. 127.0.0.1:50053"));
  }
  std::string host(hp.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  auto listener = std::unique_ptr<HttpListener>(new HttpListener());
  listener->server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *listener->server_;
  const int threads = std::max(1, options.threads);
  const std::string name = options.name;
  s.new_task_queue = [threads, name] { return new NamedPool(threads, name); };
  s.set_payload_max_length(options.max_body_bytes);
  s.set_keep_alive_max_count(kKeepAliveRequests);
  s.set_read_timeout(std::chrono::microseconds(
      absl::ToInt64Microseconds(options.read_timeout)));
  s.set_write_timeout(std::chrono::microseconds(
      absl::ToInt64Microseconds(options.write_timeout)));
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a
  // second broker could bind the same port and take half the requests.
  s.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Every method and path goes to `handler` once its body is read (and
  // bounded); routing is the handler's.
  auto serve = [handler = std::move(handler)](const httplib::Request& in,
                                              httplib::Response& out) {
    Request r;
    r.method = in.method;
    r.path = in.path;
    const size_t q = in.target.find('?');
    if (q != std::string::npos) r.query = in.target.substr(q + 1);
    for (const auto& [k, v] : in.headers) {
      r.headers.emplace(absl::AsciiStrToLower(k), v);
    }
    r.body = in.body;
    r.peer = absl::StrCat(in.remote_addr, ":", in.remote_port);
    Response w = handler(r);
    out.status = w.status;
    for (auto& [k, v] : w.headers) out.set_header(k, v);
    out.set_header("X-Content-Type-Options", "nosniff");
    out.set_content(std::move(w.body), w.content_type.c_str());
  };
  s.Get(".*", serve);
  s.Post(".*", serve);
  s.Put(".*", serve);
  s.Delete(".*", serve);
  s.Patch(".*", serve);
  s.Options(".*", serve);
  if (port == 0) {
    port = s.bind_to_any_port(host);
    if (port < 0) port = -1;
  } else if (!s.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for HTTP on ", host_port,
        " (address in use, or not an address of this machine); pick "
        "another with --http_listen, or --http_listen= to turn it off"));
  }
  listener->port_ = port;
  listener->thread_ = std::thread([server = listener->server_.get(), name] {
    pthread_setname_np(pthread_self(),
                       (name + "-accept").substr(0, 15).c_str());
    server->listen_after_bind();
  });
  // httplib's stop() does nothing until its accept loop runs, so a
  // listener destroyed at once would never stop: wait for it (bounded).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!s.is_running() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));  // the accept thread starting
  }
  return listener;
}

HttpListener::~HttpListener() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::optional<std::string> CookieValue(const Request& r,
                                       absl::string_view name) {
  auto it = r.headers.find("cookie");
  if (it == r.headers.end()) return std::nullopt;
  for (absl::string_view part : absl::StrSplit(it->second, ';')) {
    part = absl::StripAsciiWhitespace(part);
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) continue;
    if (part.substr(0, eq) == name) return std::string(part.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace dexec::http
