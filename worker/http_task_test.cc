// http.get on the real coroutine loop against a real HTTP server on
// loopback (a small one in this test, so the test needs nothing
// installed): status codes, a body kept on failure, a server that never
// answers, a refused connection, a bad URL, a large body; requests past
// --http_max_connections waiting for a connection; reused curl handles.
#include "worker/http_task.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "protos/chunk.h"
#include "protos/tasks.pb.h"
#include "worker/coroutine_executor.h"
#include "worker/task_error.h"
#include "worker/task_registry.h"
#include "worker/task_run.h"

namespace dexec::worker {
namespace {

constexpr absl::Duration kWait = absl::Seconds(30);
constexpr size_t kLargeBody = 8 << 20;
// More than one CurlShard holds (256 connections): all open at once.
constexpr size_t kGate = 400;

// A listening socket on 127.0.0.1 and a port the OS picked (in *port).
int ListenOnLoopback(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(fd, 64);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

// An HTTP/1.0 server on 127.0.0.1, one connection at a time:
//   /ok -> 200 "hello"; /missing -> 404 "not here"; /large -> 8 MiB;
//   /hang -> reads the request and never answers;
//   /gate -> held until kGate requests of /gate are open at once, then
//            all answered 200 "gate";
//   /hold -> held until ReleaseOne() or ReleaseAll(), then 200 "held";
//   /echo -> 200 with the request's head as the body.
class TestServer {
 public:
  TestServer() {
    listen_ = ListenOnLoopback(&port_);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TestServer() {
    stop_.store(true);
    ::shutdown(listen_, SHUT_RDWR);
    thread_.join();
    ::close(listen_);
    for (int fd : hanging_) ::close(fd);
    for (int fd : held_) ::close(fd);
  }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  // Connections accepted so far.
  int accepted() const { return accepted_.load(); }
  // /hold requests held now.
  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  // Answers the oldest held /hold request; false if none is held.
  bool ReleaseOne() {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_.empty()) return false;
    Answer(held_.front(), "200 OK", "held");
    held_.erase(held_.begin());
    return true;
  }
  void ReleaseAll() {
    while (ReleaseOne()) {
    }
  }

 private:
  void Serve() {
    while (!stop_.load()) {
      const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      accepted_.fetch_add(1);
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        request.append(buf, n);
      }
      std::string status = "200 OK", body = "hello";
      if (absl::StartsWith(request, "GET /hang")) {
        hanging_.push_back(fd);
        continue;
      } else if (absl::StartsWith(request, "GET /gate")) {
        gated_.push_back(fd);
        if (gated_.size() < kGate) continue;
        for (int held : gated_) Answer(held, "200 OK", "gate");
        gated_.clear();
        continue;
      } else if (absl::StartsWith(request, "GET /hold")) {
        std::lock_guard<std::mutex> lock(mu_);
        held_.push_back(fd);
        continue;
      } else if (absl::StrContains(request, " /echo ")) {
        body = request.substr(0, request.find("\r\n\r\n"));
      } else if (absl::StartsWith(request, "GET /missing")) {
        status = "404 Not Found";
        body = "not here";
      } else if (absl::StartsWith(request, "GET /large")) {
        body.assign(kLargeBody, 'x');
      }
      Answer(fd, status, body);
    }
  }

  static void Answer(int fd, const std::string& status,
                     const std::string& body) {
    const std::string response =
        absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Length: ", body.size(),
                     "\r\nX-Test: yes\r\n\r\n", body);
    size_t sent = 0;
    while (sent < response.size()) {
      const ssize_t n = ::send(fd, response.data() + sent,
                               response.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += n;
    }
    ::close(fd);
  }

  int listen_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::vector<int> held_;     // guarded by mu_: the server thread adds
  std::vector<int> hanging_;  // the server thread's
  std::vector<int> gated_;    // the server thread's
  std::thread thread_;
};

// An HTTP/1.1 server on 127.0.0.1 that keeps connections open, for the
// plain path's pool, served by one thread over poll:
//   /ok -> 200 "hello" (Content-Length); /chunked -> 200 "abcde" chunked;
//   /garbage -> bytes that are no HTTP response, and the connection closed.
// CloseIdle() closes every connection between requests; DropNext() makes
// it close the next request's connection without an answer, if that
// request is not the connection's first (a kept connection going stale).
class KeepAliveServer {
 public:
  KeepAliveServer() {
    listen_ = ListenOnLoopback(&port_);
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    thread_ = std::thread([this] { Serve(); });
  }
  ~KeepAliveServer() {
    stop_.store(true);
    Poke();
    thread_.join();
    for (const Conn& c : conns_) ::close(c.fd);
    ::close(listen_);
    ::close(wake_);
  }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  int requests() const { return requests_.load(); }
  // Closes every open connection (none is mid-request in these tests);
  // returns once they are closed.
  void CloseIdle() {
    close_idle_.store(true);
    Poke();
    while (close_idle_.load()) {
      absl::SleepFor(absl::Milliseconds(1));  // a flag, not a signal
    }
  }
  void DropNext() { drop_next_.store(true); }

 private:
  struct Conn {
    int fd;
    std::string in;
    int served = 0;
  };
  void Poke() {
    const uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof(one));
  }
  void Serve() {
    while (!stop_.load()) {
      std::vector<pollfd> fds = {{listen_, POLLIN, 0}, {wake_, POLLIN, 0}};
      for (const Conn& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[1].revents) {
        uint64_t n;
        (void)!::read(wake_, &n, sizeof(n));
        if (close_idle_.load()) {
          for (const Conn& c : conns_) ::close(c.fd);
          conns_.clear();
          close_idle_.store(false);
          continue;
        }
      }
      if (fds[0].revents) {
        const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          accepted_.fetch_add(1);
          conns_.push_back({fd});
        }
      }
      std::vector<int> gone;
      for (size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        Conn& c = conns_[i - 2];
        char buf[4096];
        const ssize_t n = ::read(c.fd, buf, sizeof(buf));
        if (n <= 0) {
          gone.push_back(c.fd);
          continue;
        }
        c.in.append(buf, n);
        const size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        const std::string head = c.in.substr(0, end);
        c.in.erase(0, end + 4);
        requests_.fetch_add(1);
        if (c.served++ > 0 && drop_next_.exchange(false)) {
          gone.push_back(c.fd);
          continue;
        }
        std::string response;
        if (absl::StartsWith(head, "GET /chunked")) {
          response =
              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        } else if (absl::StartsWith(head, "GET /garbage")) {
          response = "SSH-2.0-NotHttp\r\n";
          gone.push_back(c.fd);
        } else {
          response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        }
        (void)!::send(c.fd, response.data(), response.size(), MSG_NOSIGNAL);
      }
      for (int fd : gone) {
        ::close(fd);
        conns_.erase(std::find_if(conns_.begin(), conns_.end(),
                                  [fd](const Conn& c) { return c.fd == fd; }));
      }
    }
  }

  int listen_ = -1;
  int wake_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> close_idle_{false};
  std::atomic<bool> drop_next_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::vector<Conn> conns_;  // the server thread's
  std::thread thread_;
};

// A URL of a loopback port that was free a moment ago and has no listener
// now: connecting to it is refused.
std::string RefusedUrl() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/");
}

// Every test runs twice: with the plain path (http:// to 127.0.0.1 skips
// curl) and without it (all through curl).
class HttpTaskTest : public ::testing::TestWithParam<bool> {
 protected:
  // What http.get is registered with.
  virtual HttpTaskOptions Options() const { return {.plain = GetParam()}; }

  void SetUp() override {
    ASSERT_TRUE(RegisterHttpTask(&registry_, Options()).ok());
    executor_ = std::make_unique<CoroutineExecutor>(
        &registry_, 1, [this](std::shared_ptr<TaskRun> run) {
          std::lock_guard<std::mutex> lock(mu_);
          done_.push_back(std::move(run));
          cv_.notify_all();
        });
    ASSERT_TRUE(executor_->Start().ok());
  }
  void TearDown() override { executor_->Shutdown(); }

  // An http.get run of `payload`, not started.
  std::shared_ptr<TaskRun> NewRun(const std::string& payload,
                                  absl::Duration timeout = kWait) {
    wire::Task t;
    t.set_job_id(++next_id_);
    t.set_attempt(1);
    t.set_name("http.get");
    t.set_payload(payload);
    return std::make_shared<TaskRun>(next_id_, std::move(t),
                                     absl::Now() + timeout);
  }

  // Until `runs` have all ended (false if they do not within kWait).
  bool WaitEnded(const std::vector<std::shared_ptr<TaskRun>>& runs) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(kWait), [&] {
      for (const auto& r : runs) {
        if (std::find(done_.begin(), done_.end(), r) == done_.end()) {
          return false;
        }
      }
      return true;
    });
  }

  // Runs http.get with `payload` and returns its finished run.
  std::shared_ptr<TaskRun> Get(const std::string& payload,
                               absl::Duration timeout = kWait) {
    std::shared_ptr<TaskRun> run = NewRun(payload, timeout);
    executor_->Run({run});
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(kWait + timeout),
                 [&] { return !done_.empty() && done_.back() == run; });
    EXPECT_FALSE(done_.empty()) << "http.get " << payload << " never ended";
    return run;
  }

  static tasks::HttpResponse Response(const TaskRun& run) {
    tasks::HttpResponse r;
    EXPECT_TRUE(r.ParseFromString(run.result.output()));
    return r;
  }

  TestServer server_;
  TaskRegistry registry_;
  std::unique_ptr<CoroutineExecutor> executor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<TaskRun>> done_;
  uint64_t next_id_ = 0;
};

TEST_P(HttpTaskTest, A200GivesStatusHeadersAndBody) {
  std::shared_ptr<TaskRun> run = Get(server_.Url("/ok"));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  tasks::HttpResponse r = Response(*run);
  EXPECT_EQ(r.status(), 200);
  EXPECT_EQ(r.body(), "hello");
  bool header = false;
  for (const std::string& h : r.headers()) header |= h == "X-Test: yes";
  EXPECT_TRUE(header);
}

TEST_P(HttpTaskTest, A404FailsWithHttpStatusAndKeepsTheBody) {
  tasks::HttpRequest req;
  req.set_url(server_.Url("/missing"));
  std::shared_ptr<TaskRun> run = Get(req.SerializeAsString());
  EXPECT_FALSE(run->result.ok());
  EXPECT_EQ(run->result.error_kind(), "http_status");
  tasks::HttpResponse r = Response(*run);
  EXPECT_EQ(r.status(), 404);
  EXPECT_EQ(r.body(), "not here");
}

TEST_P(HttpTaskTest, AServerThatNeverAnswersTimesOut) {
  tasks::HttpRequest req;
  req.set_url(server_.Url("/hang"));
  req.set_timeout_ms(200);
  const absl::Time start = absl::Now();
  std::shared_ptr<TaskRun> run = Get(req.SerializeAsString());
  EXPECT_EQ(run->result.error_kind(), kTimeoutKind)
      << run->result.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_P(HttpTaskTest, ARefusedConnectionIsAnHttpError) {
  std::shared_ptr<TaskRun> run = Get(RefusedUrl());
  EXPECT_EQ(run->result.error_kind(), "http_error");
}

TEST_P(HttpTaskTest, ABadUrlIsABadPayloadOrAnHttpError) {
  EXPECT_EQ(Get("ftp://example.com/")->result.error_kind(), kBadPayloadKind);
  EXPECT_EQ(Get("http://[::1")->result.error_kind(), "http_error");
}

TEST_P(HttpTaskTest, AHeaderThatWouldSplitTheRequestIsRefused) {
  tasks::HttpRequest req;
  req.set_url(server_.Url("/echo"));
  req.add_headers("X-A: 1\r\nX-Injected: 2");
  std::shared_ptr<TaskRun> run = Get(req.SerializeAsString());
  EXPECT_EQ(run->result.error_kind(), kBadPayloadKind);
  EXPECT_EQ(server_.accepted(), 0);
}

TEST_P(HttpTaskTest, AHeadHasNoBody) {
  tasks::HttpRequest req;
  req.set_url(server_.Url("/ok"));
  req.set_method("HEAD");
  req.set_timeout_ms(10'000);
  std::shared_ptr<TaskRun> run = Get(req.SerializeAsString());
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  EXPECT_EQ(Response(*run).status(), 200);
  EXPECT_EQ(Response(*run).body(), "");
}

TEST_P(HttpTaskTest, ALargeBodyArrivesWhole) {
  std::shared_ptr<TaskRun> run = Get(server_.Url("/large"));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  EXPECT_EQ(Response(*run).body().size(), kLargeBody);
}

TEST_P(HttpTaskTest, RequestsBeyondOneMultiHandleAreAllInFlightAtOnce) {
  // The server answers none until kGate are open: if the loop's multi
  // handles (CurlShard, 256 connections each) did not add up past one,
  // curl would queue the rest and every request would time out.
  std::vector<std::shared_ptr<TaskRun>> runs;
  for (size_t i = 0; i < kGate; ++i) {
    wire::Task t;
    t.set_job_id(++next_id_);
    t.set_attempt(1);
    t.set_name("http.get");
    t.set_payload(server_.Url("/gate"));
    runs.push_back(
        std::make_shared<TaskRun>(next_id_, std::move(t), absl::Now() + kWait));
  }
  executor_->Run(runs);
  std::unique_lock<std::mutex> lock(mu_);
  ASSERT_TRUE(cv_.wait_for(lock, absl::ToChronoSeconds(2 * kWait),
                           [&] { return done_.size() == kGate; }))
      << done_.size() << " of " << kGate << " ended";
  for (const std::shared_ptr<TaskRun>& run : done_) {
    ASSERT_TRUE(run->result.ok()) << run->result.error_message();
    EXPECT_EQ(Response(*run).body(), "gate");
  }
}

TEST_P(HttpTaskTest, AChunksRequestsAreAllInFlightAtOnceAndInOrder) {
  // One chunked job of kGate /gate requests: the server answers none
  // until all kGate are open, so its items must run at once, not one
  // after another. Then a chunk whose third item is refused: the two
  // before it come back, then its error, and the one after it is dropped.
  std::vector<std::string> gate(kGate, server_.Url("/gate"));
  std::shared_ptr<TaskRun> run = Get(chunk::Encode(gate));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  absl::StatusOr<std::vector<chunk::ItemResultView>> items =
      chunk::DecodeResults(run->result.output());
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), kGate);
  for (const chunk::ItemResultView& item : *items) {
    ASSERT_TRUE(item.ok) << item.error_message;
    tasks::HttpResponse r;
    ASSERT_TRUE(r.ParseFromArray(item.output.data(),
                                 static_cast<int>(item.output.size())));
    EXPECT_EQ(r.body(), "gate");
  }
  const std::string refused = RefusedUrl();
  run = Get(chunk::Encode({server_.Url("/ok"), server_.Url("/large"), refused,
                           server_.Url("/ok")}));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  items = chunk::DecodeResults(run->result.output());
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 3u);
  EXPECT_TRUE((*items)[0].ok);
  EXPECT_TRUE((*items)[1].ok);
  EXPECT_FALSE((*items)[2].ok);
  EXPECT_EQ((*items)[2].error_kind, "http_error");
}

TEST_P(HttpTaskTest, CancelEndsARequestAtOnce) {
  wire::Task t;
  t.set_job_id(99);
  t.set_attempt(1);
  t.set_name("http.get");
  t.set_payload(server_.Url("/hang"));
  auto run =
      std::make_shared<TaskRun>(99, std::move(t), absl::InfiniteFuture());
  executor_->Run({run});
  const absl::Time deadline = absl::Now() + kWait;
  while (executor_->running() == 0) {
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(1));  // a counter, not a signal
  }
  executor_->Cancel(run);
  std::unique_lock<std::mutex> lock(mu_);
  ASSERT_TRUE(cv_.wait_for(lock, absl::ToChronoSeconds(kWait),
                           [&] { return !done_.empty(); }));
  EXPECT_EQ(done_.back()->result.error_kind(), kCancelledKind);
}

std::string PathName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "plain" : "curl";
}
INSTANTIATE_TEST_SUITE_P(Paths, HttpTaskTest, ::testing::Bool(), PathName);

}  // namespace
}  // namespace dexec::worker

namespace dexec::worker {
namespace {

// Polls `done` (a counter the test cannot wait on otherwise) until true.
template <typename Fn>
bool Eventually(Fn done) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!done()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));  // a counter, not a signal
  }
  return true;
}

// http.get with --http_max_connections=8 on one loop thread.
class HttpTaskCapTest : public HttpTaskTest {
 protected:
  static constexpr int kCap = 8;
  HttpTaskOptions Options() const override {
    return {.max_connections = kCap, .plain = GetParam()};
  }

  // Starts kCap /hold requests and waits until the server holds them all.
  std::vector<std::shared_ptr<TaskRun>> FillConnections() {
    std::vector<std::shared_ptr<TaskRun>> held;
    for (int i = 0; i < kCap; ++i) held.push_back(NewRun(server_.Url("/hold")));
    executor_->Run(held);
    EXPECT_TRUE(Eventually([&] { return server_.held() == kCap; }))
        << server_.held() << " of " << kCap << " held";
    return held;
  }
};

TEST_P(HttpTaskCapTest, ARequestPastTheCapWaitsAndNeverConnects) {
  std::vector<std::shared_ptr<TaskRun>> held = FillConnections();
  // A ninth request waits for one of the 8 connections: with none freed it
  // times out by its own timeout_ms, and never reached the server.
  tasks::HttpRequest req;
  req.set_url(server_.Url("/ok"));
  req.set_timeout_ms(300);
  std::shared_ptr<TaskRun> waited = Get(req.SerializeAsString());
  EXPECT_EQ(waited->result.error_kind(), kTimeoutKind)
      << waited->result.error_message();
  EXPECT_EQ(server_.accepted(), kCap);

  // A queued request that is cancelled ends at once.
  std::shared_ptr<TaskRun> cancelled = NewRun(server_.Url("/hold"));
  executor_->Run({cancelled});
  ASSERT_TRUE(Eventually([&] { return executor_->running() == kCap + 1; }));
  executor_->Cancel(cancelled);
  ASSERT_TRUE(WaitEnded({cancelled}));
  EXPECT_EQ(cancelled->result.error_kind(), kCancelledKind);
  EXPECT_EQ(server_.accepted(), kCap);

  // The held ones are answered; the loop serves new requests after.
  server_.ReleaseAll();
  ASSERT_TRUE(WaitEnded(held));
  for (const auto& run : held) {
    ASSERT_TRUE(run->result.ok()) << run->result.error_message();
    EXPECT_EQ(Response(*run).body(), "held");
  }
  std::shared_ptr<TaskRun> after = Get(server_.Url("/ok"));
  ASSERT_TRUE(after->result.ok()) << after->result.error_message();
}

TEST_P(HttpTaskCapTest, QueuedRequestsStartOnTheFirstConnectionFreed) {
  std::vector<std::shared_ptr<TaskRun>> held = FillConnections();
  std::vector<std::shared_ptr<TaskRun>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(NewRun(server_.Url("/ok")));
  executor_->Run(queued);
  ASSERT_TRUE(Eventually([&] {
    return static_cast<size_t>(executor_->running()) == kCap + queued.size();
  }));
  // One connection freed: the five run on it one after another, first
  // come first served, while the other seven stay held.
  ASSERT_TRUE(server_.ReleaseOne());
  ASSERT_TRUE(WaitEnded(queued));
  for (const auto& run : queued) {
    ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  }
  std::vector<std::shared_ptr<TaskRun>> order;  // the queued, as they ended
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& run : done_) {
      if (std::find(queued.begin(), queued.end(), run) != queued.end()) {
        order.push_back(run);
      }
    }
  }
  EXPECT_EQ(order, queued);
  EXPECT_EQ(server_.held(), kCap - 1u);
  server_.ReleaseAll();
  ASSERT_TRUE(WaitEnded(held));
}

TEST_P(HttpTaskTest, AReusedHandleForgetsTheLastRequestsOptions) {
  tasks::HttpRequest req;
  req.set_url(server_.Url("/echo"));
  req.set_method("PUT");
  req.add_headers("X-Custom: one");
  req.set_body("abc");
  std::shared_ptr<TaskRun> custom = Get(req.SerializeAsString());
  ASSERT_TRUE(custom->result.ok()) << custom->result.error_message();
  EXPECT_TRUE(absl::StartsWith(Response(*custom).body(), "PUT /echo "));
  EXPECT_TRUE(absl::StrContains(Response(*custom).body(), "X-Custom: one"));
  // Both paths send what curl does with a body: its form Content-Type.
  EXPECT_TRUE(
      absl::StrContains(Response(*custom).body(),
                        "Content-Type: application/x-www-form-urlencoded"))
      << Response(*custom).body();
  // The next request on this loop gets the handle back: a plain GET.
  std::shared_ptr<TaskRun> plain = Get(server_.Url("/echo"));
  ASSERT_TRUE(plain->result.ok()) << plain->result.error_message();
  EXPECT_TRUE(absl::StartsWith(Response(*plain).body(), "GET /echo "))
      << Response(*plain).body();
  EXPECT_FALSE(absl::StrContains(Response(*plain).body(), "X-Custom"));
  // Byte for byte the request curl sends, on either path.
  const std::string url = server_.Url("/echo");
  EXPECT_EQ(Response(*plain).body(),
            absl::StrCat(
                "GET /echo HTTP/1.1\r\nHost: ",
                url.substr(std::string("http://").size(), url.size() - 7 - 5),
                "\r\nAccept: */*"));
  EXPECT_FALSE(absl::StrContains(Response(*plain).body(), "Content-Length"));
}

INSTANTIATE_TEST_SUITE_P(Paths, HttpTaskCapTest, ::testing::Bool(), PathName);

// Kept connections, against a keep-alive server.
class KeepAliveTest : public HttpTaskTest {
 protected:
  KeepAliveServer keep_;
};

TEST_P(KeepAliveTest, SequentialRequestsShareOneConnection) {
  const HttpCounts before = HttpTaskCounts();
  for (int i = 0; i < 20; ++i) {
    std::shared_ptr<TaskRun> run = Get(keep_.Url(i % 2 ? "/ok" : "/chunked"));
    ASSERT_TRUE(run->result.ok()) << run->result.error_message();
    EXPECT_EQ(Response(*run).body(), i % 2 ? "hello" : "abcde");
  }
  // curl keeps connections too: one, whichever path.
  EXPECT_EQ(keep_.accepted(), 1);
  // And the path is the one asked for.
  const HttpCounts after = HttpTaskCounts();
  const bool plain = GetParam();
  EXPECT_EQ(after.plain_requests - before.plain_requests, plain ? 20u : 0u);
  EXPECT_EQ(after.curl_requests - before.curl_requests, plain ? 0u : 20u);
  EXPECT_EQ(after.plain_connections - before.plain_connections,
            plain ? 1u : 0u);
}

TEST_P(KeepAliveTest, HostNamesGoThroughCurl) {
  const HttpCounts before = HttpTaskCounts();
  std::shared_ptr<TaskRun> run =
      Get(absl::StrCat("http://localhost:", keep_.port(), "/ok"));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  EXPECT_EQ(HttpTaskCounts().curl_requests - before.curl_requests, 1u);
}

TEST_P(KeepAliveTest, AKeptConnectionTheServerClosedIsReplaced) {
  ASSERT_TRUE(Get(keep_.Url("/ok"))->result.ok());
  keep_.CloseIdle();  // the server closed it while it was kept
  std::shared_ptr<TaskRun> run = Get(keep_.Url("/ok"));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  EXPECT_EQ(keep_.accepted(), 2);
  EXPECT_EQ(keep_.requests(), 2);
}

TEST_P(KeepAliveTest, ARequestTheKeptConnectionDroppedIsSentAgain) {
  ASSERT_TRUE(Get(keep_.Url("/ok"))->result.ok());
  // The server reads the next request on that connection and closes it
  // without a byte of answer: a race no check before sending can see.
  keep_.DropNext();
  std::shared_ptr<TaskRun> run = Get(keep_.Url("/ok"));
  ASSERT_TRUE(run->result.ok()) << run->result.error_message();
  EXPECT_EQ(Response(*run).body(), "hello");
  EXPECT_EQ(keep_.accepted(), 2);
  EXPECT_EQ(keep_.requests(), 3);
}

TEST_P(KeepAliveTest, AnAnswerThatIsNotHttpIsAnHttpError) {
  std::shared_ptr<TaskRun> run = Get(keep_.Url("/garbage"));
  EXPECT_EQ(run->result.error_kind(), "http_error");
  EXPECT_FALSE(run->result.error_message().empty());
  // The loop goes on: the next request gets a new connection.
  std::shared_ptr<TaskRun> next = Get(keep_.Url("/ok"));
  ASSERT_TRUE(next->result.ok()) << next->result.error_message();
}

INSTANTIATE_TEST_SUITE_P(Paths, KeepAliveTest, ::testing::Bool(), PathName);

}  // namespace
}  // namespace dexec::worker
