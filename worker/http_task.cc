#include "worker/http_task.h"

#include <curl/curl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "protos/tasks.pb.h"
#include "worker/http1.h"
#include "worker/plain_http.h"
#include "worker/task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

class CurlLoop;
class CurlShard;

// What curl tells us through its callbacks, for one request.
struct Transfer {
  tasks::HttpResponse response;
  bool too_large = false;
  // On a loop's shared multi handle (CurlLoop): the task to wake, and
  // whether and how curl finished the transfer.
  TaskContext* ctx = nullptr;
  bool done = false;
  CURLcode result = CURLE_OK;
  // The socket curl waits on and for what (CURL_POLL_*); -1 = none.
  curl_socket_t fd = CURL_SOCKET_BAD;
  int what = 0;
  // curl's next timeout; -1 = none.
  long timeout_ms = -1;
  // On a loop: the multi handle it was added to, or (queued) its place in
  // the loop's queue of transfers waiting for a connection.
  CurlShard* shard = nullptr;
  CURL* easy = nullptr;  // the request's handle, set before Add
  bool queued = false;
  std::list<Transfer*>::iterator queue_pos;
  // Why a transfer the loop started from its queue could not start.
  std::string start_error;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (t->response.body().size() + bytes > kHttpMaxBodyBytes) {
    t->too_large = true;
    return 0;  // curl fails the transfer with CURLE_WRITE_ERROR
  }
  t->response.mutable_body()->append(data, bytes);
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  absl::string_view line(data, bytes);
  line = absl::StripTrailingAsciiWhitespace(line);
  if (absl::StartsWith(line, "HTTP/")) {
    t->response.clear_headers();  // a new response (after a redirect or 100)
  } else if (!line.empty()) {
    t->response.add_headers(std::string(line));
  }
  return bytes;
}

int OnSocket(CURL*, curl_socket_t fd, int what, void* user, void*) {
  auto* t = static_cast<Transfer*>(user);
  if (what == CURL_POLL_REMOVE) {
    if (t->fd == fd) {
      t->fd = CURL_SOCKET_BAD;
      t->what = 0;
    }
  } else {
    // The latest socket wins: a second one (happy eyeballs) is looked at
    // when curl's timer fires, through curl_multi_perform.
    t->fd = fd;
    t->what = what;
  }
  return 0;
}

int OnTimer(CURLM*, long timeout_ms, void* user) {
  static_cast<Transfer*>(user)->timeout_ms = timeout_ms;
  return 0;
}

struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct ListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// A share of a loop's http.get transfers: one curl multi handle with at
// most kConnections connections, curl's sockets watched by the loop's epoll
// (TaskScheduler::Watch) and its timeouts by a timerfd, so a wake costs
// O(ready sockets), not O(requests), and connections are reused across
// requests.
//
// Why a share and not one multi handle per loop: curl 7.88 (Debian 12)
// walks a multi handle's whole connection cache in every
// curl_multi_remove_handle after a transfer that kept its connection
// (close_connect_only), so one handle holding n connections costs O(n) per
// request: at 10,000 in flight per loop that was most of the worker's CPU.
//
// Not thread-safe; owned by its loop thread, through its CurlLoop.
class CurlShard final : public TaskScheduler::FdWatcher {
 public:
  static constexpr long kConnections = 256;
  // Descriptors a shard holds besides its connections: its timerfd and
  // the socketpair curl's multi handle makes for curl_multi_wakeup.
  static constexpr long kOwnFds = 3;

  CurlShard(TaskScheduler* scheduler, CurlLoop* owner)
      : scheduler_(scheduler), owner_(owner) {}
  ~CurlShard() {
    closing_ = true;  // curl_multi_cleanup's callbacks change nothing now
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    if (timerfd_ >= 0) {
      scheduler_->Unwatch(timerfd_);
      ::close(timerfd_);
    }
  }
  CurlShard(const CurlShard&) = delete;
  CurlShard& operator=(const CurlShard&) = delete;

  // "" once ready, else why not.
  std::string Init(long max_connections) {
    max_connections_ = max_connections;
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return "curl_multi_init failed";
    timerfd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timerfd_ < 0) return absl::StrCat("timerfd_create: ", strerror(errno));
    absl::Status watched =
        scheduler_->Watch(timerfd_, TaskScheduler::kReadable, this);
    if (!watched.ok()) return std::string(watched.message());
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_connections);
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, max_connections);
    return "";
  }

  // Whether a transfer added now gets a connection at once (transfers
  // added and not yet done or removed: below the shard's connections).
  bool has_slot() const { return in_flight_ < max_connections_; }

  // Starts `t->easy`'s transfer; `t->ctx` is woken when it is done.
  absl::Status Add(Transfer* t) {
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    const CURLMcode rc = curl_multi_add_handle(multi_, t->easy);
    if (rc != CURLM_OK) {
      return absl::InternalError(absl::StrCat(
          "curl could not start a request: ", curl_multi_strerror(rc)));
    }
    ++in_flight_;
    return absl::OkStatus();
  }
  // Abandons a transfer that is not done (cancel, timeout).
  void Remove(CURL* easy) {
    curl_multi_remove_handle(multi_, easy);
    --in_flight_;
  }

  void OnFdReady(int fd, uint32_t events) override {
    int running = 0;
    if (fd == timerfd_) {
      uint64_t expirations;
      (void)!::read(timerfd_, &expirations, sizeof(expirations));
      armed_at_once_ = false;
      curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    } else {
      const int mask =
          ((events & TaskScheduler::kReadable) ? CURL_CSELECT_IN : 0) |
          ((events & TaskScheduler::kWritable) ? CURL_CSELECT_OUT : 0);
      curl_multi_socket_action(multi_, fd, mask, &running);
    }
    // Every finished transfer first, then their removal: curl 7.88's
    // curl_multi_remove_handle also walks the message queue, so removing
    // each while the others still queue costs O(k^2) for k done at once.
    done_.clear();
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg == CURLMSG_DONE) {
        done_.push_back({msg->easy_handle, msg->data.result});
      }
    }
    for (const auto& [easy, result] : done_) {
      Transfer* t = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
      curl_multi_remove_handle(multi_, easy);
      --in_flight_;
      if (t == nullptr) continue;
      t->result = result;
      t->done = true;
      scheduler_->Wake(*t->ctx);
    }
    if (!done_.empty()) Refill();
  }

 private:
  static int OnSocket(CURL*, curl_socket_t fd, int what, void* user, void*) {
    auto* self = static_cast<CurlShard*>(user);
    if (self->closing_) return 0;
    if (what == CURL_POLL_REMOVE) {
      self->scheduler_->Unwatch(fd);
      return 0;
    }
    const uint32_t events =
        ((what & CURL_POLL_IN) ? TaskScheduler::kReadable : 0u) |
        ((what & CURL_POLL_OUT) ? TaskScheduler::kWritable : 0u);
    return self->scheduler_->Watch(fd, events, self).ok() ? 0 : -1;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* user) {
    auto* self = static_cast<CurlShard*>(user);
    if (self->closing_) return 0;
    // curl asks for "at once" on every curl_multi_add_handle: the first of
    // a burst arms the timerfd, the rest would be a syscall each.
    if (timeout_ms == 0 && self->armed_at_once_) return 0;
    self->armed_at_once_ = timeout_ms == 0;
    itimerspec when = {};  // all zero: disarmed
    if (timeout_ms == 0) {
      when.it_value.tv_nsec = 1;  // at once, from the loop
    } else if (timeout_ms > 0) {
      when.it_value.tv_sec = timeout_ms / 1000;
      when.it_value.tv_nsec = (timeout_ms % 1000) * 1'000'000;
    }
    return ::timerfd_settime(self->timerfd_, 0, &when, nullptr) == 0 ? 0 : -1;
  }

  // Starts transfers waiting in the owner's queue on the slots now free.
  void Refill();

  TaskScheduler* const scheduler_;
  CurlLoop* const owner_;
  CURLM* multi_ = nullptr;
  int timerfd_ = -1;
  bool closing_ = false;
  bool armed_at_once_ = false;  // the timerfd fires at once, not read yet
  long in_flight_ = 0;
  long max_connections_ = kConnections;
  std::vector<std::pair<CURL*, CURLcode>> done_;  // reused per wake
};

// The http.get transfers of one coroutine loop thread, over CurlShards
// made as needed: a transfer goes to the first shard with a free
// connection (so connections left idle there are reused), else to a new
// shard. At the loop's cap (its share of the file descriptor limit) it
// waits in the loop's queue, first in first out, and starts on the first
// slot any shard frees: so the requests past the cap start as soon as the
// earliest connections are done, not behind one busy shard. Easy handles
// of finished transfers are reset and kept for the next (up to
// kEasyPool), which spares curl's allocations per request. See
// docs/DESIGN.md, "Executors".
//
// The loop's plain path (plain_http.h) takes its connections from the
// same shares, one at a time, and gives them back when it closes them.
//
// Not thread-safe; owned by its loop thread (a thread_local).
class CurlLoop final : public ConnectionBudget {
 public:
  // Easy handles kept for reuse, at most.
  static constexpr size_t kEasyPool = 4096;
  // Descriptors left to the worker itself, at most half of the limit: its
  // own sockets and files (about 40), and per loop thread (one per
  // --threads) room for a sys.exec's pipes or a process-isolated child's
  // socket and pidfd on the thread executor's threads.
  static constexpr long kReserveFds = 128;
  static constexpr long kReserveFdsPerThread = 16;

  // This thread's, made on first use; nullptr (with *error set) if curl
  // cannot start.
  static CurlLoop* For(TaskScheduler* scheduler, const HttpTaskOptions& options,
                       std::string* error) {
    thread_local std::unique_ptr<CurlLoop> loop;
    if (loop == nullptr || loop->scheduler_ != scheduler) {
      loop.reset();
      loop = std::unique_ptr<CurlLoop>(new CurlLoop(scheduler, options));
    }
    // A first shard now, so that a loop that cannot run curl says so.
    if (loop->shards_.empty()) {
      *error = loop->AddShard();
      if (!error->empty()) return nullptr;
    }
    return loop.get();
  }

  ~CurlLoop() {
    shards_.clear();  // before the handles their transfers may still use
    for (CURL* e : easy_pool_) curl_easy_cleanup(e);
  }

  PlainPool& plain() { return plain_; }

  // ConnectionBudget, for plain_: one connection of the shares.
  bool Take() override {
    if (fds_left_ <= CurlShard::kOwnFds || connections_left_ <= 0) return false;
    --fds_left_;
    --connections_left_;
    return true;
  }
  void Give() override {
    ++fds_left_;
    ++connections_left_;
  }
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // An easy handle in its initial state: a kept one, else a new one;
  // nullptr if curl cannot make one.
  CURL* TakeEasy() {
    if (easy_pool_.empty()) return curl_easy_init();
    CURL* e = easy_pool_.back();
    easy_pool_.pop_back();
    return e;
  }
  // Takes back a handle that is in no multi handle.
  void GiveBack(CURL* e) {
    if (easy_pool_.size() >= kEasyPool) {
      curl_easy_cleanup(e);
      return;
    }
    curl_easy_reset(e);
    easy_pool_.push_back(e);
  }

  // Starts `t->easy`'s transfer on a shard (noted in t->shard), or queues
  // it.
  absl::Status Add(Transfer* t) {
    CurlShard* shard = nullptr;
    for (const std::unique_ptr<CurlShard>& s : shards_) {
      if (s->has_slot()) {
        shard = s.get();
        break;
      }
    }
    if (shard == nullptr && CanAddShard()) {
      const std::string error = AddShard();
      if (!error.empty()) return absl::InternalError(error);
      shard = shards_.back().get();
    }
    if (shard == nullptr) {
      t->queued = true;
      t->queue_pos = waiting_.insert(waiting_.end(), t);
      return absl::OkStatus();
    }
    t->shard = shard;
    return shard->Add(t);
  }

  // Abandons a transfer that is not done (cancel, timeout), queued or not.
  void Remove(Transfer* t) {
    if (t->queued) {
      waiting_.erase(t->queue_pos);
      t->queued = false;
      return;
    }
    t->shard->Remove(t->easy);
    Refill(t->shard);
  }

  // Starts queued transfers on `shard`'s free slots.
  void Refill(CurlShard* shard) {
    while (!waiting_.empty() && shard->has_slot()) {
      Transfer* t = waiting_.front();
      waiting_.pop_front();
      t->queued = false;
      t->shard = shard;
      absl::Status added = shard->Add(t);
      if (!added.ok()) {  // ends its wait; HttpGet reports start_error
        t->start_error = std::string(added.message());
        t->done = true;
        scheduler_->Wake(*t->ctx);
      }
    }
  }

 private:
  CurlLoop(TaskScheduler* scheduler, const HttpTaskOptions& options)
      : scheduler_(scheduler), plain_(scheduler, this) {
    // This loop's share of the fds, less a reserve for the worker's own
    // (dexec-worker raises the soft limit to the hard one at start); each
    // shard holds kConnections of it and kOwnFds of its own.
    struct rlimit files = {};
    long fds = 1024;
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 &&
        files.rlim_cur != RLIM_INFINITY) {
      fds = static_cast<long>(std::min<rlim_t>(files.rlim_cur, 1 << 24));
    }
    const int loops = std::max(1, scheduler_->loop_count());
    const long reserve =
        std::min(fds / 2, kReserveFds + kReserveFdsPerThread * loops);
    fds_left_ = std::max(CurlShard::kOwnFds + 8, (fds - reserve) / loops);
    if (options.max_connections > 0) {
      connections_left_ = std::max(1L, options.max_connections / loops);
    }
  }

  // Whether this loop's shares hold one more shard.
  bool CanAddShard() const {
    return fds_left_ > CurlShard::kOwnFds && connections_left_ > 0;
  }

  // A shard of kConnections, or of what is left of the shares (the last).
  std::string AddShard() {
    const long connections = std::max(
        1L, std::min({CurlShard::kConnections, fds_left_ - CurlShard::kOwnFds,
                      connections_left_}));
    auto shard = std::make_unique<CurlShard>(scheduler_, this);
    std::string error = shard->Init(connections);
    if (!error.empty()) return error;
    fds_left_ -= connections + CurlShard::kOwnFds;
    connections_left_ -= connections;
    shards_.push_back(std::move(shard));
    return "";
  }

  TaskScheduler* const scheduler_;
  // What this loop's shares have left for new shards: of the fds, and of
  // HttpTaskOptions::max_connections.
  long fds_left_ = 0;
  long connections_left_ = std::numeric_limits<long>::max();
  std::vector<std::unique_ptr<CurlShard>> shards_;
  std::list<Transfer*> waiting_;  // queued for a slot, oldest first
  std::vector<CURL*> easy_pool_;
  PlainPool plain_;  // last: its idle connections close first
};

void CurlShard::Refill() { owner_->Refill(this); }

std::atomic<uint64_t> plain_requests{0};
std::atomic<uint64_t> curl_requests{0};

// Whether curl would send plain http:// through a proxy (it reads these;
// the plain path does not, so it steps aside).
bool ProxyConfigured() {
  static const bool configured = [] {
    for (const char* name : {"http_proxy", "all_proxy", "ALL_PROXY"}) {
      const char* v = getenv(name);
      if (v != nullptr && *v != '\0') return true;
    }
    return false;
  }();
  return configured;
}

// The task's end for a response: its bytes, failing with kind http_status
// (the response kept as output) unless the status is 2xx.
absl::StatusOr<std::string> Answered(const std::string& url,
                                     const tasks::HttpResponse& response) {
  std::string output = response.SerializeAsString();
  const int status = response.status();
  if (status < 200 || status > 299) {
    // The response is the job's result even so: the body often says why.
    return WithOutput(
        TaskError("http_status",
                  absl::StrCat("http.get of ", url, " answered ", status)),
        output);
  }
  return output;
}

absl::Status TooLarge(const std::string& url) {
  return TaskError("http_error",
                   absl::StrCat("http.get of ", url, ": the body is over ",
                                kHttpMaxBodyBytes, " bytes"));
}

absl::Status NoAnswer(const std::string& url, absl::Time start) {
  return TaskError(kTimeoutKind,
                   absl::StrCat("http.get of ", url, " had no answer after ",
                                absl::FormatDuration(absl::Now() - start)));
}

absl::Status Cancelled(const std::string& url) {
  return TaskError(kCancelledKind,
                   absl::StrCat("http.get of ", url, " was cancelled"));
}

Task<absl::StatusOr<std::string>> HttpGet(TaskContext& ctx, std::string payload,
                                          HttpTaskOptions options) {
  tasks::HttpRequest req;
  if (absl::StartsWith(payload, "http://") ||
      absl::StartsWith(payload, "https://")) {
    req.set_url(std::string(absl::StripAsciiWhitespace(payload)));
  } else if (!req.ParseFromString(payload) || req.url().empty()) {
    co_return TaskError(kBadPayloadKind,
                        "http.get expects a URL (http:// or https://) or a "
                        "dexec.tasks.HttpRequest with a url");
  }
  for (const std::string& h : req.headers()) {
    if (http1::HeaderIsUnsafe(h)) {
      co_return TaskError(kBadPayloadKind,
                          "http.get: a header has a CR, LF or NUL in it");
    }
  }
  GlobalInit();
  const absl::Time start = absl::Now();
  absl::Time limit = ctx.deadline();
  if (req.timeout_ms() > 0) {
    limit = std::min(limit, start + absl::Milliseconds(req.timeout_ms()));
  }
  // On a worker's loop: this loop's shards, its easy handles and its
  // plain path's connections.
  CurlLoop* loop = nullptr;
  if (ctx.scheduler() != nullptr) {
    std::string error;
    loop = CurlLoop::For(ctx.scheduler(), options, &error);
    if (loop == nullptr) co_return TaskError("http_error", error);
  }
  if (loop != nullptr && options.plain && !ProxyConfigured()) {
    std::optional<http1::Target> target = http1::ParseTarget(req.url());
    std::optional<std::string> bytes;
    if (target.has_value()) bytes = http1::BuildRequest(req, *target);
    if (bytes.has_value()) {
      PlainOutcome got = co_await PlainFetch(
          ctx, loop->plain(), *target, *bytes, http1::MethodOf(req) == "HEAD",
          kHttpMaxBodyBytes, limit);
      using Kind = PlainOutcome::Kind;
      if (got.kind != Kind::kUseCurl)
        plain_requests.fetch_add(1, std::memory_order_relaxed);
      switch (got.kind) {
        case Kind::kDone:
          co_return Answered(req.url(), got.response);
        case Kind::kError:
          co_return TaskError(
              "http_error",
              absl::StrCat("http.get of ", req.url(), ": ", got.error));
        case Kind::kTooLarge:
          co_return TooLarge(req.url());
        case Kind::kTimeout:
          co_return NoAnswer(req.url(), start);
        case Kind::kCancelled:
          co_return Cancelled(req.url());
        case Kind::kUseCurl:
          break;  // every slot is curl's: it queues for one of them
      }
    }
  }
  // Declared first, so it is given back last: after Detach below has
  // taken it out of its multi handle.
  struct Easy {
    CURL* handle;
    CurlLoop* loop;
    ~Easy() {
      if (handle == nullptr) return;
      if (loop != nullptr) {
        loop->GiveBack(handle);
      } else {
        curl_easy_cleanup(handle);
      }
    }
  } easy{loop != nullptr ? loop->TakeEasy() : curl_easy_init(), loop};
  Transfer t;
  std::unique_ptr<curl_slist, ListDeleter> headers;
  if (easy.handle == nullptr) {
    co_return TaskError("http_error", "curl could not start a request");
  }
  CURL* e = easy.handle;
  curl_requests.fetch_add(1, std::memory_order_relaxed);
  curl_easy_setopt(e, CURLOPT_URL, req.url().c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
  if (req.method() == "HEAD") {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);  // else curl waits for a body
  } else if (!req.method().empty() && req.method() != "GET") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req.method().c_str());
  }
  if (!req.body().empty()) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(req.body().size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req.body().data());
  }
  for (const std::string& h : req.headers()) {
    headers.reset(curl_slist_append(headers.release(), h.c_str()));
  }
  if (headers != nullptr)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers.get());
  bool finished = false;
  CURLcode result = CURLE_OK;
  if (loop != nullptr) {
    t.ctx = &ctx;
    t.easy = e;
    absl::Status added = loop->Add(&t);
    if (!added.ok()) co_return TaskError("http_error", added.message());
    // Detaches the transfer if the coroutine ends (or is destroyed, at
    // shutdown) before curl is done with it.
    struct Detach {
      CurlLoop* loop;
      Transfer* t;
      ~Detach() {
        if (!t->done) loop->Remove(t);
        t->done = true;
      }
    } detach{loop, &t};
    while (!t.done) {
      const absl::Time now = absl::Now();
      if (ctx.cancelled() || now >= limit) break;
      co_await ctx.Sleep(limit - now);  // CurlLoop wakes us when done
    }
    if (!t.start_error.empty())
      co_return TaskError("http_error", t.start_error);
    finished = t.done;
    result = t.result;
  } else {
    // On a thread (a process-isolated child, TaskRegistry::Run): a multi
    // handle of its own, waited on with poll.
    std::unique_ptr<CURLM, MultiDeleter> multi(curl_multi_init());
    if (multi == nullptr) {
      co_return TaskError("http_error", "curl could not start a request");
    }
    CURLM* m = multi.get();
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, OnSocket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, &t);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, OnTimer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, &t);
    curl_multi_add_handle(m, e);

    int running = 1;
    while (!finished) {
      curl_multi_perform(m, &running);
      int queued = 0;
      while (CURLMsg* msg = curl_multi_info_read(m, &queued)) {
        if (msg->msg == CURLMSG_DONE) {
          result = msg->data.result;
          finished = true;
        }
      }
      if (finished || running == 0) break;
      const absl::Time now = absl::Now();
      if (ctx.cancelled() || now >= limit) break;
      // Wake for curl's socket or its timer (at most 1 s: a second socket
      // of happy eyeballs is looked at then), or the limit.
      absl::Duration wait = limit - now;
      if (t.timeout_ms >= 0)
        wait = std::min(wait, absl::Milliseconds(t.timeout_ms));
      wait = std::min(wait, absl::Seconds(1));
      if (t.fd != CURL_SOCKET_BAD) {
        if (t.what & CURL_POLL_OUT) {
          co_await ctx.WaitWritable(t.fd, wait);
        } else {
          co_await ctx.WaitReadable(t.fd, wait);
        }
      } else {
        co_await ctx.Sleep(wait);
      }
    }
    curl_multi_remove_handle(m, e);
  }

  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  t.response.set_status(static_cast<int32_t>(status));
  if (!finished) {
    if (ctx.cancelled()) co_return Cancelled(req.url());
    co_return NoAnswer(req.url(), start);
  }
  if (t.too_large) co_return TooLarge(req.url());
  if (result != CURLE_OK) {
    co_return TaskError("http_error",
                        absl::StrCat("http.get of ", req.url(), ": ",
                                     curl_easy_strerror(result)));
  }
  co_return Answered(req.url(), t.response);
}

}  // namespace

HttpCounts HttpTaskCounts() {
  return {.plain_requests = plain_requests.load(std::memory_order_relaxed),
          .curl_requests = curl_requests.load(std::memory_order_relaxed),
          .plain_connections = PlainConnectionsOpened()};
}

absl::Status RegisterHttpTask(TaskRegistry* registry, HttpTaskOptions options) {
  return RegisterAsync(*registry, "http.get",
                       [options](TaskContext& ctx, std::string payload) {
                         return HttpGet(ctx, std::move(payload), options);
                       });
}

}  // namespace dexec::worker
