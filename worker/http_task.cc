#include "worker/http_task.h"

#include <curl/curl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "protos/tasks.pb.h"
#include "worker/task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

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
  // On a loop: the multi handle it was added to.
  CurlShard* shard = nullptr;
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

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
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

  explicit CurlShard(TaskScheduler* scheduler) : scheduler_(scheduler) {}
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

  // Transfers added and not yet done or removed.
  long in_flight() const { return in_flight_; }

  // Starts `easy`'s transfer; `t->ctx` is woken when it is done.
  absl::Status Add(CURL* easy, Transfer* t) {
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    const CURLMcode rc = curl_multi_add_handle(multi_, easy);
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

  TaskScheduler* const scheduler_;
  CURLM* multi_ = nullptr;
  int timerfd_ = -1;
  bool closing_ = false;
  bool armed_at_once_ = false;  // the timerfd fires at once, not read yet
  long in_flight_ = 0;
  std::vector<std::pair<CURL*, CURLcode>> done_;  // reused per wake
};

// The http.get transfers of one coroutine loop thread, over CurlShards
// made as needed: a transfer goes to the first shard with a free
// connection (so connections left idle there are reused), else to a new
// shard, else (at the loop's cap) to the least busy, where curl queues it.
// The cap is this loop's share of the file descriptor limit; transfers
// beyond it wait for a connection, they do not fail. See docs/DESIGN.md,
// "Executors".
//
// Not thread-safe; owned by its loop thread (a thread_local).
class CurlLoop {
 public:
  // This thread's, made on first use; nullptr (with *error set) if curl
  // cannot start.
  static CurlLoop* For(TaskScheduler* scheduler, std::string* error) {
    thread_local std::unique_ptr<CurlLoop> loop;
    if (loop == nullptr || loop->scheduler_ != scheduler) {
      loop.reset();
      loop = std::unique_ptr<CurlLoop>(new CurlLoop(scheduler));
    }
    // A first shard now, so that a loop that cannot run curl says so.
    if (loop->shards_.empty()) {
      *error = loop->AddShard();
      if (!error->empty()) return nullptr;
    }
    return loop.get();
  }

  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Starts `easy`'s transfer on a shard (noted in t->shard).
  absl::Status Add(CURL* easy, Transfer* t) {
    CurlShard* shard = nullptr;
    for (const std::unique_ptr<CurlShard>& s : shards_) {
      if (s->in_flight() < CurlShard::kConnections) {
        shard = s.get();
        break;
      }
    }
    if (shard == nullptr && static_cast<long>(shards_.size()) < max_shards_) {
      const std::string error = AddShard();
      if (!error.empty()) return absl::InternalError(error);
      shard = shards_.back().get();
    }
    if (shard == nullptr) {
      shard = std::min_element(shards_.begin(), shards_.end(),
                               [](const auto& a, const auto& b) {
                                 return a->in_flight() < b->in_flight();
                               })
                  ->get();
    }
    t->shard = shard;
    return shard->Add(easy, t);
  }

 private:
  explicit CurlLoop(TaskScheduler* scheduler) : scheduler_(scheduler) {
    // This loop's share of the fds, less a reserve for the worker's own
    // sockets, files, sys.exec pipes and the shards' timerfds
    // (dexec-worker raises the soft limit to the hard one at start).
    struct rlimit files = {};
    long fds = 1024;
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 &&
        files.rlim_cur != RLIM_INFINITY) {
      fds = static_cast<long>(std::min<rlim_t>(files.rlim_cur, 1 << 24));
    }
    const long reserve = std::min(fds / 2, 1024L);
    cap_ =
        std::max(8L, (fds - reserve) / std::max(1, scheduler_->loop_count()));
    max_shards_ = std::max(1L, cap_ / CurlShard::kConnections);
  }

  std::string AddShard() {
    auto shard = std::make_unique<CurlShard>(scheduler_);
    std::string error =
        shard->Init(std::min(cap_, static_cast<long>(CurlShard::kConnections)));
    if (error.empty()) shards_.push_back(std::move(shard));
    return error;
  }

  TaskScheduler* const scheduler_;
  long cap_ = 8;         // connections of this loop, all shards together
  long max_shards_ = 1;  // cap_ / CurlShard::kConnections
  std::vector<std::unique_ptr<CurlShard>> shards_;
};

Task<absl::StatusOr<std::string>> HttpGet(TaskContext& ctx,
                                          std::string payload) {
  tasks::HttpRequest req;
  if (absl::StartsWith(payload, "http://") ||
      absl::StartsWith(payload, "https://")) {
    req.set_url(std::string(absl::StripAsciiWhitespace(payload)));
  } else if (!req.ParseFromString(payload) || req.url().empty()) {
    co_return TaskError(kBadPayloadKind,
                        "http.get expects a URL (http:// or https://) or a "
                        "dexec.tasks.HttpRequest with a url");
  }
  GlobalInit();
  Transfer t;
  std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
  std::unique_ptr<curl_slist, ListDeleter> headers;
  if (easy == nullptr) {
    co_return TaskError("http_error", "curl could not start a request");
  }
  CURL* e = easy.get();
  curl_easy_setopt(e, CURLOPT_URL, req.url().c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
  if (!req.method().empty() && req.method() != "GET") {
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
  const absl::Time start = absl::Now();
  absl::Time limit = ctx.deadline();
  if (req.timeout_ms() > 0) {
    limit = std::min(limit, start + absl::Milliseconds(req.timeout_ms()));
  }
  bool finished = false;
  CURLcode result = CURLE_OK;
  if (ctx.scheduler() != nullptr) {
    // On a worker's loop: this loop's shared multi handle.
    std::string error;
    CurlLoop* loop = CurlLoop::For(ctx.scheduler(), &error);
    if (loop == nullptr) co_return TaskError("http_error", error);
    t.ctx = &ctx;
    absl::Status added = loop->Add(e, &t);
    if (!added.ok()) co_return TaskError("http_error", added.message());
    // Detaches the transfer if the coroutine ends (or is destroyed, at
    // shutdown) before curl is done with it.
    struct Detach {
      CURL* easy;
      Transfer* t;
      ~Detach() {
        if (!t->done) t->shard->Remove(easy);
        t->done = true;
      }
    } detach{e, &t};
    while (!t.done) {
      const absl::Time now = absl::Now();
      if (ctx.cancelled() || now >= limit) break;
      co_await ctx.Sleep(limit - now);  // CurlLoop wakes us when done
    }
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
  std::string output = t.response.SerializeAsString();
  if (!finished) {
    if (ctx.cancelled()) {
      co_return TaskError(
          kCancelledKind,
          absl::StrCat("http.get of ", req.url(), " was cancelled"));
    }
    co_return TaskError(
        kTimeoutKind,
        absl::StrCat("http.get of ", req.url(), " had no answer after ",
                     absl::FormatDuration(absl::Now() - start)));
  }
  if (t.too_large) {
    co_return TaskError(
        "http_error",
        absl::StrCat("http.get of ", req.url(), ": the body is over ",
                     kHttpMaxBodyBytes, " bytes"));
  }
  if (result != CURLE_OK) {
    co_return TaskError("http_error",
                        absl::StrCat("http.get of ", req.url(), ": ",
                                     curl_easy_strerror(result)));
  }
  if (status < 200 || status > 299) {
    // The response is the job's result even so: the body often says why.
    co_return WithOutput(
        TaskError("http_status", absl::StrCat("http.get of ", req.url(),
                                              " answered ", status)),
        output);
  }
  co_return output;
}

}  // namespace

absl::Status RegisterHttpTask(TaskRegistry* registry) {
  return RegisterAsync(*registry, "http.get", HttpGet);
}

}  // namespace dexec::worker
