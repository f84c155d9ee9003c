#include "worker/plain_http.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dexec::worker {
namespace {

// Requests longer than this are sent without Nagle's delay: a body may
// end in a short segment behind unacknowledged ones.
constexpr size_t kNoDelayAbove = 1400;

// Whether a kept connection still looks usable: nothing to read (a closed
// or reset one reads 0 or an error; stray bytes would corrupt the next
// response).
bool LooksAlive(int fd) {
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

std::atomic<uint64_t> connections_opened{0};

}  // namespace

uint64_t PlainConnectionsOpened() {
  return connections_opened.load(std::memory_order_relaxed);
}

PlainPool::~PlainPool() {
  for (auto& [key, conns] : idle_) {
    for (const Idle& c : conns) ::close(c.fd);
  }
}

bool PlainPool::CloseOneIdle() {
  for (auto it = idle_.begin(); it != idle_.end(); ++it) {
    if (it->second.empty()) continue;
    // The oldest of this address's: the likeliest to be closed anyway.
    ::close(it->second.front().fd);
    it->second.erase(it->second.begin());
    if (it->second.empty()) idle_.erase(it);
    --idle_count_;
    budget_->Give();
    return true;
  }
  return false;
}

void PlainPool::Sweep(absl::Time now) {
  last_sweep_ = now;
  for (auto it = idle_.begin(); it != idle_.end();) {
    std::vector<Idle>& conns = it->second;
    // Oldest first: kept in the order they came back.
    size_t old = 0;
    while (old < conns.size() && now - conns[old].since >= kMaxIdle) {
      ::close(conns[old].fd);
      budget_->Give();
      ++old;
    }
    conns.erase(conns.begin(), conns.begin() + old);
    idle_count_ -= old;
    if (conns.empty()) {
      idle_.erase(it++);
    } else {
      ++it;
    }
  }
}

void PlainPool::Enqueue(Waiter& w) {
  w.queued = true;
  w.pos = waiting_.insert(waiting_.end(), &w);
}

void PlainPool::GrantNext() {
  if (waiting_.empty()) return;
  Waiter* w = waiting_.front();
  waiting_.pop_front();
  w->queued = false;
  w->granted = true;
  ++grants_;
  scheduler_->Wake(*w->ctx);
}

void PlainPool::Forget(Waiter& w) {
  if (w.queued) {
    waiting_.erase(w.pos);
    w.queued = false;
  } else if (w.granted) {
    w.granted = false;
    --grants_;
    GrantNext();  // its slot passes to the next one
  }
}

PlainPool::Lease PlainPool::Acquire(const http1::Target& target, absl::Time now,
                                    Waiter& w, bool reuse) {
  Lease lease;
  if (w.granted) {
    w.granted = false;
    --grants_;
  } else if (w.queued || !waiting_.empty() || grants_ > 0) {
    // Behind the tasks already waiting.
    if (!w.queued) Enqueue(w);
    lease.wait = true;
    return lease;
  }
  auto found = reuse ? idle_.find(target.key) : idle_.end();
  if (found != idle_.end()) {
    std::vector<Idle>& conns = found->second;
    while (!conns.empty()) {
      const Idle c = conns.back();  // the newest: the likeliest alive
      conns.pop_back();
      --idle_count_;
      if (now - c.since < kMaxIdle && LooksAlive(c.fd)) {
        if (conns.empty()) idle_.erase(found);
        ++in_use_;
        lease.fd = c.fd;
        lease.reused = true;
        return lease;
      }
      ::close(c.fd);
      budget_->Give();
    }
    idle_.erase(found);
  }
  if (!budget_->Take() && !(CloseOneIdle() && budget_->Take())) {
    // Every slot in use: ours come back as requests end; curl's do not.
    if (in_use_ > 0) {
      Enqueue(w);
      lease.wait = true;
    } else {
      while (!waiting_.empty()) GrantNext();  // all of them to curl too
    }
    return lease;
  }
  const int fd = ::socket(target.addr.ss_family,
                          SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    budget_->Give();
    lease.fd = -2;
    lease.error = absl::StrCat("socket: ", std::strerror(errno));
    return lease;
  }
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&target.addr),
                target.addr_len) != 0 &&
      errno != EINPROGRESS) {
    lease.fd = -2;
    lease.error = absl::StrCat("connect: ", std::strerror(errno));
    ::close(fd);
    budget_->Give();
    return lease;
  }
  connections_opened.fetch_add(1, std::memory_order_relaxed);
  ++in_use_;
  most_in_use_ = std::max(most_in_use_, in_use_);
  lease.fd = fd;
  return lease;
}

void PlainPool::Release(const std::string& key, int fd, bool keep,
                        absl::Time now) {
  --in_use_;
  if (now - last_sweep_ >= absl::Seconds(1)) Sweep(now);
  if (keep && idle_count_ >= std::max(kMinIdleCap, most_in_use_)) {
    keep = CloseOneIdle();  // an older one goes; else this one does
  }
  if (keep) {
    idle_[key].push_back({fd, now});
    ++idle_count_;
  } else {
    ::close(fd);
    budget_->Give();
  }
  GrantNext();  // this slot, or the one its idle connection gives up
}

Task<PlainOutcome> PlainFetch(TaskContext& ctx, PlainPool& pool,
                              const http1::Target& target,
                              const std::string& request, bool head,
                              size_t max_body, absl::Time limit) {
  PlainOutcome out;
  // Why a wait ended without what it waited for.
  auto stopped = [&ctx, &out, limit]() {
    if (ctx.cancelled()) {
      out.kind = PlainOutcome::Kind::kCancelled;
      return true;
    }
    if (absl::Now() >= limit) {
      out.kind = PlainOutcome::Kind::kTimeout;
      return true;
    }
    return false;
  };
  // Read into one buffer per loop thread: nothing else runs on it between
  // a recv and the parser's copy of what it read.
  static thread_local char buf[64 << 10];

  for (int attempt = 0; attempt < 2; ++attempt) {
    PlainPool::Lease lease;
    {
      // Out of the queue however the wait ends (also when the frame is
      // destroyed at shutdown).
      struct Queued {
        PlainPool& pool;
        PlainPool::Waiter w;
        ~Queued() { pool.Forget(w); }
      } queued{pool, PlainPool::Waiter(&ctx)};
      for (;;) {
        lease = pool.Acquire(target, absl::Now(), queued.w,
                             /*reuse=*/attempt == 0);
        if (!lease.wait) break;
        co_await ctx.Sleep(limit - absl::Now());  // Release wakes us
        if (stopped()) co_return out;
      }
    }
    if (lease.fd == -1) {
      out.kind = PlainOutcome::Kind::kUseCurl;
      co_return out;
    }
    if (lease.fd == -2) {
      out.kind = PlainOutcome::Kind::kError;
      out.error = std::move(lease.error);
      co_return out;
    }
    // Gives the connection back however this attempt ends: kept only
    // after a whole response that leaves it reusable.
    struct Held {
      PlainPool& pool;
      const std::string& key;
      int fd;
      bool keep = false;
      ~Held() { pool.Release(key, fd, keep, absl::Now()); }
    } held{pool, target.key, lease.fd};
    const int fd = lease.fd;
    if (request.size() > kNoDelayAbove) {  // also on a kept connection
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }

    bool retry = false;
    size_t sent = 0;
    while (sent < request.size()) {
      const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Connecting, or the socket's buffer is full.
        if (!co_await ctx.WaitWritable(fd, limit - absl::Now()) && stopped()) {
          co_return out;
        }
        continue;
      }
      if (lease.reused && sent == 0 && attempt == 0) {
        retry = true;  // the server closed the kept connection
        break;
      }
      out.kind = PlainOutcome::Kind::kError;
      out.error = std::strerror(n < 0 ? errno : EPIPE);
      co_return out;
    }
    if (retry) continue;

    http1::ResponseParser parser(head, max_body);
    http1::ResponseParser::State state = http1::ResponseParser::State::kMore;
    while (state == http1::ResponseParser::State::kMore) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        state = parser.Feed(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!co_await ctx.WaitReadable(fd, limit - absl::Now()) && stopped()) {
          co_return out;
        }
        continue;
      }
      if (lease.reused && !parser.got_bytes() && attempt == 0) {
        retry = true;  // closed or reset before answering: a stale one
        break;
      }
      if (n == 0) {
        state = parser.FeedEof();
      } else {
        out.kind = PlainOutcome::Kind::kError;
        out.error = std::strerror(errno);
        co_return out;
      }
    }
    if (retry) continue;
    if (state == http1::ResponseParser::State::kError) {
      out.kind = parser.too_large() ? PlainOutcome::Kind::kTooLarge
                                    : PlainOutcome::Kind::kError;
      out.error = parser.error();
      co_return out;
    }
    held.keep = parser.reusable();
    out.kind = PlainOutcome::Kind::kDone;
    out.response = std::move(parser.response());
    co_return out;
  }
  out.kind = PlainOutcome::Kind::kError;
  out.error = "the server closed the connection without a response";
  co_return out;
}

}  // namespace dexec::worker
