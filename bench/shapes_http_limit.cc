// The HTTP server's own limit for bench/shapes_bench.sh: the least time in
// which anything on this machine gets the same N URLs from the same server,
// all N in flight at once, with no dexec in the way.
//
// As cheaply as we know how: --procs processes (a process holds at most
// RLIMIT_NOFILE sockets, whose hard limit may be below N: 20,000 on the
// bench machine), each with one curl multi handle, curl's sockets in an
// epoll set and its timeouts on a timerfd (as http.get drives curl on a
// worker's loop, worker/http_task.cc), its easy handles made before the
// clock starts. The clock runs from releasing every process at once to the
// last response of the last one; exits are not timed.
//
//   shapes_http_limit --n=20000 --urls=http://127.0.0.1:8080/,... --procs=4
//
// Request i gets URL i % count and goes to process i % procs. Prints a
// RESULT line (system=curl_multi); exits 1 if a request fails. The
// processes die with this one (PR_SET_PDEATHSIG) and are reaped by PID.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

ABSL_FLAG(int64_t, n, 20000, "requests, all in flight at once");
ABSL_FLAG(std::string, urls, "",
          "comma-separated URLs, request i gets URL i % count");
ABSL_FLAG(int, procs, 4,
          "client processes, each with its own fd limit and curl multi");
ABSL_FLAG(bool, fresh_connect, false,
          "CURLOPT_FRESH_CONNECT: no search of the connection cache");
ABSL_FLAG(std::string, client, "raw",
          "raw: plain nonblocking sockets on epoll, one GET with "
          "'Connection: close' each, read to EOF (the least CPU per "
          "request); curl: a curl multi handle per process, as http.get");
ABSL_FLAG(bool, spread, false,
          "print, per process, when its requests finished (s after the "
          "start: 10th, 50th, 90th percentile, last) to stderr");
ABSL_FLAG(bool, forbid_reuse, false,
          "CURLOPT_FORBID_REUSE: close each connection after its request");
ABSL_FLAG(bool, keep_open, false,
          "--client=raw: keep-alive requests, each connection left open once "
          "its (chunked) response is whole, as a keep-alive client leaves "
          "it, rather than Connection: close and a close");
ABSL_FLAG(std::string, label, "",
          "system= of the RESULT line (default raw_epoll or curl_multi)");

namespace {

struct State {
  CURLM* multi = nullptr;
  int epoll = -1;
  int timerfd = -1;
  bool armed_at_once = false;  // the timerfd fires at once, not read yet
};

// What a process reports when its last request is done: one write, shorter
// than PIPE_BUF, so reports of several processes never interleave.
struct Report {
  int64_t done = 0;
  int64_t failed = 0;
  char first_error[240] = {};
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
  // curl asks for "at once" on every curl_multi_add_handle: one syscall
  // for the first of a burst is enough.
  if (ms == 0 && s->armed_at_once) return 0;
  s->armed_at_once = ms == 0;
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

// Every fd allowed, as dexec-worker takes (as root up to 1M).
void RaiseFdLimit() {
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  const struct rlimit more = {1 << 20, 1 << 20};
  if (files.rlim_max >= more.rlim_max || setrlimit(RLIMIT_NOFILE, &more) != 0) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
}

// One client process: requests k, k + procs, ... of n. Says it is ready on
// `ready`, waits for a byte on `start`, runs them all at once, writes a
// Report to `done`.
// A client process's end: its report to the parent through `done`, the
// spread of its finish times with --spread, then _exit.
[[noreturn]] void EndChild(int k, int done, const Report& report,
                           const std::vector<double>& finished_at) {
  (void)!write(done, &report, sizeof(report));
  if (absl::GetFlag(FLAGS_spread) && !finished_at.empty()) {
    const size_t m = finished_at.size();
    std::fprintf(stderr,
                 "shapes_http_limit: process %d: %zu done at p10 %.2f p50 %.2f "
                 "p90 %.2f last %.2f s\n",
                 k, m, finished_at[m / 10], finished_at[m / 2],
                 finished_at[m * 9 / 10], finished_at[m - 1]);
  }
  _exit(0);  // the kernel closes the sockets; no cleanup to time or wait for
}

void RunClient(int k, int procs, int64_t n,
               const std::vector<std::string>& urls, int ready, int start,
               int done) {
  RaiseFdLimit();
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
  // queues the rest): a process given more requests than it may hold
  // sockets runs them in waves, as one dexec-worker does.
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  const long cap = static_cast<long>(
      files.rlim_cur > 2048 ? files.rlim_cur - 1024 : files.rlim_cur / 2);
  curl_multi_setopt(s.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, cap);
  curl_multi_setopt(s.multi, CURLMOPT_MAXCONNECTS, cap);

  std::vector<CURL*> easies;
  for (int64_t i = k; i < n; i += procs) {
    CURL* e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, urls[i % urls.size()].c_str());
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, Discard);
    if (absl::GetFlag(FLAGS_fresh_connect)) {
      curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    }
    if (absl::GetFlag(FLAGS_forbid_reuse)) {
      curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    easies.push_back(e);
  }
  char c = 1;
  (void)!write(ready, &c, 1);
  if (read(start, &c, 1) != 1) _exit(1);  // the parent went away

  const absl::Time t0 = absl::Now();
  for (CURL* e : easies) curl_multi_add_handle(s.multi, e);
  std::vector<double> finished_at;
  finished_at.reserve(easies.size());
  Report report;
  std::vector<std::pair<CURL*, CURLcode>> finished;
  std::vector<epoll_event> events(1024);
  int running = 0;
  while (report.done < static_cast<int64_t>(easies.size())) {
    const int got = epoll_wait(s.epoll, events.data(), events.size(), 1000);
    for (int i = 0; i < got; ++i) {
      const int fd = events[i].data.fd;
      if (fd == s.timerfd) {
        uint64_t x;
        (void)!read(s.timerfd, &x, sizeof(x));
        s.armed_at_once = false;
        curl_multi_socket_action(s.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        continue;
      }
      const int mask = ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                            ? CURL_CSELECT_IN
                            : 0) |
                       ((events[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0);
      curl_multi_socket_action(s.multi, fd, mask, &running);
    }
    // Every finished transfer first, then their removal: curl 7.88's
    // curl_multi_remove_handle walks the message queue, so removing each
    // while the rest still queue costs O(k^2) for k transfers done at
    // once (all of them, a second after the start).
    finished.clear();
    int queued = 0;
    while (CURLMsg* m = curl_multi_info_read(s.multi, &queued)) {
      if (m->msg == CURLMSG_DONE)
        finished.push_back({m->easy_handle, m->data.result});
    }
    for (const auto& [e, result] : finished) {
      long status = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      if (result != CURLE_OK || status != 200) {
        if (report.failed++ == 0) {
          const std::string why = result != CURLE_OK
                                      ? curl_easy_strerror(result)
                                      : "HTTP " + std::to_string(status);
          std::snprintf(report.first_error, sizeof(report.first_error), "%s",
                        why.c_str());
        }
      }
      curl_multi_remove_handle(s.multi, e);
      ++report.done;
      finished_at.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    }
  }
  EndChild(k, done, report, finished_at);
}

// host:port and path of an http:// URL; false if it is not one.
bool SplitUrl(const std::string& url, sockaddr_in* addr, std::string* host,
              std::string* path) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  *host = rest.substr(0, slash);
  *path = slash == std::string::npos ? "/" : rest.substr(slash);
  const size_t colon = host->rfind(':');
  const std::string ip = host->substr(0, colon);
  const int port =
      colon == std::string::npos ? 80 : std::atoi(host->c_str() + colon + 1);
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(port));
  return inet_pton(AF_INET, ip.c_str(), &addr->sin_addr) == 1;
}

// The raw client's process: requests k, k + procs, ... of n, each its own
// connection, all connected at once after the start.
void RunRawClient(int k, int procs, int64_t n,
                  const std::vector<std::string>& urls, int ready, int start,
                  int done) {
  RaiseFdLimit();
  const bool keep_open = absl::GetFlag(FLAGS_keep_open);
  struct Target {
    sockaddr_in addr;
    std::string request;
  };
  std::vector<Target> targets;
  for (const std::string& url : urls) {
    Target t;
    std::string host, path;
    if (!SplitUrl(url, &t.addr, &host, &path)) {
      std::fprintf(stderr,
                   "shapes_http_limit: --client=raw takes "
                   "http://IP:PORT/PATH URLs, not %s\n",
                   url.c_str());
      _exit(2);
    }
    t.request = "GET " + path + " HTTP/1.1\r\nHost: " + host +
                (keep_open ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
    targets.push_back(std::move(t));
  }
  struct Conn {
    const Target* target = nullptr;
    bool sent = false;
    bool status_seen = false;
    std::string tail;  // --keep_open: the response's last bytes
  };
  std::vector<int64_t> mine;
  for (int64_t i = k; i < n; i += procs) mine.push_back(i);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns;  // by fd
  char c = 1;
  (void)!write(ready, &c, 1);
  if (read(start, &c, 1) != 1) _exit(1);

  const absl::Time t0 = absl::Now();
  std::vector<double> finished_at;
  finished_at.reserve(mine.size());
  Report report;
  auto fail = [&report](const std::string& why) {
    if (report.failed++ == 0) {
      std::snprintf(report.first_error, sizeof(report.first_error), "%s",
                    why.c_str());
    }
  };
  for (int64_t i : mine) {
    const Target& t = targets[i % targets.size()];
    const int fd =
        socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fail(std::string("socket: ") + std::strerror(errno));
      ++report.done;
      continue;
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&t.addr),
                sizeof(t.addr)) != 0 &&
        errno != EINPROGRESS) {
      fail(std::string("connect: ") + std::strerror(errno));
      close(fd);
      ++report.done;
      continue;
    }
    if (static_cast<size_t>(fd) >= conns.size()) conns.resize(fd + 1024);
    conns[fd] = Conn{&t};
    epoll_event ev = {};
    ev.events = EPOLLOUT;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::vector<epoll_event> events(1024);
  char buf[4096];
  while (report.done < static_cast<int64_t>(mine.size())) {
    const int got = epoll_wait(ep, events.data(), events.size(), 1000);
    for (int e = 0; e < got; ++e) {
      const int fd = events[e].data.fd;
      Conn& conn = conns[fd];
      bool finished = false;
      if (!conn.sent) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        const std::string& req = conn.target->request;
        if (err != 0 || send(fd, req.data(), req.size(), MSG_NOSIGNAL) !=
                            static_cast<ssize_t>(req.size())) {
          fail(std::string("connect: ") + std::strerror(err ? err : errno));
          finished = true;
        } else {
          conn.sent = true;
          epoll_event ev = {};
          ev.events = EPOLLIN;
          ev.data.fd = fd;
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
      } else {
        for (;;) {
          const ssize_t r = recv(fd, buf, sizeof(buf), 0);
          if (r > 0) {
            if (!conn.status_seen) {
              conn.status_seen = true;
              if (r < 12 || std::memcmp(buf + 8, " 200", 4) != 0) {
                fail("HTTP " + std::string(buf, std::min<ssize_t>(r, 12)));
              }
            }
            if (keep_open) {
              conn.tail.append(buf, r);
              if (conn.tail.size() > 16)
                conn.tail.erase(0, conn.tail.size() - 16);
              if (absl::EndsWith(conn.tail, "\r\n0\r\n\r\n")) {
                finished = true;
                break;
              }
            }
            continue;
          }
          if (r == 0) {
            if (!conn.status_seen) fail("closed before a response");
            finished = true;
          } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            fail(std::string("recv: ") + std::strerror(errno));
            finished = true;
          }
          break;
        }
      }
      if (finished && keep_open && conn.sent) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);  // left open, as kept
        ++report.done;
        finished_at.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
      } else if (finished) {
        close(fd);  // also leaves the epoll set
        ++report.done;
        finished_at.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
      }
    }
  }
  EndChild(k, done, report, finished_at);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t n = absl::GetFlag(FLAGS_n);
  const int procs = std::max(1, absl::GetFlag(FLAGS_procs));
  const std::vector<std::string> urls =
      absl::StrSplit(absl::GetFlag(FLAGS_urls), ',', absl::SkipEmpty());
  if (urls.empty()) {
    std::fprintf(stderr, "shapes_http_limit: --urls is empty\n");
    return 2;
  }
  const bool raw = absl::GetFlag(FLAGS_client) == "raw";
  if (!raw && absl::GetFlag(FLAGS_client) != "curl") {
    std::fprintf(stderr, "shapes_http_limit: --client is raw or curl\n");
    return 2;
  }
  int ready[2], start[2], done[2];
  if (pipe(ready) != 0 || pipe(start) != 0 || pipe(done) != 0) {
    std::perror("shapes_http_limit: pipe");
    return 1;
  }
  const pid_t parent = getpid();
  std::vector<pid_t> children;
  for (int k = 0; k < procs; ++k) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("shapes_http_limit: fork");
      for (pid_t c : children) kill(c, SIGKILL);
      return 1;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      close(ready[0]);
      close(start[1]);
      close(done[0]);
      if (raw) {
        RunRawClient(k, procs, n, urls, ready[1], start[0], done[1]);
      }
      RunClient(k, procs, n, urls, ready[1], start[0], done[1]);
    }
    children.push_back(pid);
  }
  close(ready[1]);
  close(start[0]);
  close(done[1]);
  bool ok = true;
  for (int k = 0; k < procs && ok; ++k) {
    char c;
    ok = read(ready[0], &c, 1) == 1;
  }
  const absl::Time t0 = absl::Now();
  const std::string go(procs, 'g');
  ok = ok &&
       write(start[1], go.data(), go.size()) == static_cast<ssize_t>(go.size());
  Report total;
  for (int k = 0; k < procs && ok; ++k) {
    Report r;
    ok = read(done[0], &r, sizeof(r)) == sizeof(r);
    if (!ok) break;
    total.done += r.done;
    if (r.failed > 0 && total.failed == 0) {
      std::memcpy(total.first_error, r.first_error, sizeof(r.first_error));
    }
    total.failed += r.failed;
  }
  const absl::Duration took = absl::Now() - t0;
  for (pid_t c : children) {
    if (!ok) kill(c, SIGKILL);
    waitpid(c, nullptr, 0);
  }
  if (!ok) {
    std::fprintf(stderr, "shapes_http_limit: a client process died\n");
    return 1;
  }
  if (total.failed > 0) {
    std::fprintf(stderr, "shapes_http_limit: %lld of %lld failed, first: %s\n",
                 static_cast<long long>(total.failed),
                 static_cast<long long>(n), total.first_error);
    return 1;
  }
  std::string label = absl::GetFlag(FLAGS_label);
  if (label.empty()) label = raw ? "raw_epoll" : "curl_multi";
  std::printf("RESULT system=%s measure=http_%lld unit=s value=%.3f procs=%d\n",
              label.c_str(), static_cast<long long>(n),
              absl::ToDoubleSeconds(took), procs);
  return 0;
}
