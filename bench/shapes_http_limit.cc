// The HTTP server's own limit for bench/shapes_bench.sh: how long a plain
// libcurl client, no dexec, takes to GET the same N URLs from the same
// server with all of them in flight at once. One thread, one curl multi
// handle, curl's sockets in an epoll set and its timeouts on a timerfd:
// the same way http.get drives curl on a worker's loop
// (worker/http_task.cc), minus the broker, the worker and the Map.
//
//   shapes_http_limit --n=20000 --urls=http://127.0.0.1:8080/,...
//
// Prints a RESULT line (system=curl_multi); exits 1 if a request fails.
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

ABSL_FLAG(int64_t, n, 20000, "requests, all in flight at once");
ABSL_FLAG(std::string, urls, "",
          "comma-separated URLs, request i gets URL i % count");

namespace {

struct State {
  CURLM* multi = nullptr;
  int epoll = -1;
  int timerfd = -1;
};

int OnSocket(CURL*, curl_socket_t fd, int what, void* user, void* known) {
  auto* s = static_cast<State*>(user);
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(s->epoll, EPOLL_CTL_DEL, fd, nullptr);
    curl_multi_assign(s->multi, fd, nullptr);
    return 0;
  }
  epoll_event ev = {};
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
              ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  epoll_ctl(s->epoll, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
  curl_multi_assign(s->multi, fd, s);  // marks it known
  return 0;
}

int OnTimer(CURLM*, long ms, void* user) {
  auto* s = static_cast<State*>(user);
  itimerspec when = {};
  if (ms == 0) {
    when.it_value.tv_nsec = 1;
  } else if (ms > 0) {
    when.it_value.tv_sec = ms / 1000;
    when.it_value.tv_nsec = (ms % 1000) * 1000000;
  }
  timerfd_settime(s->timerfd, 0, &when, nullptr);
  return 0;
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t n = absl::GetFlag(FLAGS_n);
  const std::vector<std::string> urls =
      absl::StrSplit(absl::GetFlag(FLAGS_urls), ',', absl::SkipEmpty());
  if (urls.empty()) {
    std::fprintf(stderr, "shapes_http_limit: --urls is empty\n");
    return 2;
  }
  // Every fd allowed, as dexec-worker takes (as root up to 1M).
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  const struct rlimit more = {1 << 20, 1 << 20};
  if (files.rlim_max >= more.rlim_max || setrlimit(RLIMIT_NOFILE, &more) != 0) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  State s;
  s.multi = curl_multi_init();
  s.epoll = epoll_create1(EPOLL_CLOEXEC);
  s.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  epoll_event tev = {};
  tev.events = EPOLLIN;
  tev.data.fd = s.timerfd;
  epoll_ctl(s.epoll, EPOLL_CTL_ADD, s.timerfd, &tev);
  curl_multi_setopt(s.multi, CURLMOPT_SOCKETFUNCTION, OnSocket);
  curl_multi_setopt(s.multi, CURLMOPT_SOCKETDATA, &s);
  curl_multi_setopt(s.multi, CURLMOPT_TIMERFUNCTION, OnTimer);
  curl_multi_setopt(s.multi, CURLMOPT_TIMERDATA, &s);
  // Connections capped below the fd limit, as http.get caps them (curl
  // queues the rest): where the hard limit is under N, not all can be open.
  getrlimit(RLIMIT_NOFILE, &files);
  const long cap = static_cast<long>(
      files.rlim_cur > 2048 ? files.rlim_cur - 1024 : files.rlim_cur / 2);
  curl_multi_setopt(s.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
  curl_multi_setopt(s.multi, CURLMOPT_MAXCONNECTS, cap);

  const absl::Time start = absl::Now();
  for (int64_t i = 0; i < n; ++i) {
    CURL* e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, urls[i % urls.size()].c_str());
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, Discard);
    curl_multi_add_handle(s.multi, e);
  }
  int64_t done = 0, failed = 0;
  std::string first_error;
  std::vector<epoll_event> events(1024);
  int running = 0;
  while (done < n) {
    const int k = epoll_wait(s.epoll, events.data(), events.size(), 1000);
    for (int i = 0; i < k; ++i) {
      const int fd = events[i].data.fd;
      if (fd == s.timerfd) {
        uint64_t x;
        (void)!read(s.timerfd, &x, sizeof(x));
        curl_multi_socket_action(s.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        continue;
      }
      const int mask = ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                            ? CURL_CSELECT_IN
                            : 0) |
                       ((events[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0);
      curl_multi_socket_action(s.multi, fd, mask, &running);
    }
    int queued = 0;
    while (CURLMsg* m = curl_multi_info_read(s.multi, &queued)) {
      if (m->msg != CURLMSG_DONE) continue;
      long status = 0;
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result != CURLE_OK || status != 200) {
        if (failed++ == 0) {
          first_error = m->data.result != CURLE_OK
                            ? curl_easy_strerror(m->data.result)
                            : "HTTP " + std::to_string(status);
        }
      }
      CURL* e = m->easy_handle;
      curl_multi_remove_handle(s.multi, e);
      curl_easy_cleanup(e);
      ++done;
    }
  }
  const absl::Duration took = absl::Now() - start;
  curl_multi_cleanup(s.multi);
  if (failed > 0) {
    std::fprintf(stderr, "shapes_http_limit: %lld of %lld failed, first: %s\n",
                 static_cast<long long>(failed), static_cast<long long>(n),
                 first_error.c_str());
    return 1;
  }
  std::printf("RESULT system=curl_multi measure=http_%lld unit=s value=%.3f\n",
              static_cast<long long>(n), absl::ToDoubleSeconds(took));
  return 0;
}
