#include "worker/http_task.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "protos/tasks.pb.h"
#include "worker/task.h"
#include "worker/task_context.h"
#include "worker/task_error.h"

namespace dexec::worker {
namespace {

// What curl tells us through its callbacks, for one request.
struct Transfer {
  tasks::HttpResponse response;
  bool too_large = false;
  // The socket curl waits on and for what (CURL_POLL_*); -1 = none.
  curl_socket_t fd = CURL_SOCKET_BAD;
  int what = 0;
  // curl's next timeout; -1 = none.
  long timeout_ms = -1;
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
  std::unique_ptr<CURLM, MultiDeleter> multi(curl_multi_init());
  std::unique_ptr<curl_slist, ListDeleter> headers;
  if (easy == nullptr || multi == nullptr) {
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
  CURLM* m = multi.get();
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, OnSocket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, &t);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, OnTimer);
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, &t);
  curl_multi_add_handle(m, e);

  int running = 1;
  CURLcode result = CURLE_OK;
  bool finished = false;
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
