// A multi-producer, single-consumer queue whose consumer sleeps in poll(2):
// other threads Post() items; the owner thread polls fd() (readable when the
// mailbox has items) beside its sockets and takes everything at once with
// Drain(). Posting to a non-empty mailbox costs no system call, so a burst
// of posts costs one wake-up.
//
//   Mailbox<Command> mailbox;
//   mailbox.Post(cmd);                      // any thread
//   zmq::pollitem_t item{nullptr, mailbox.fd(), ZMQ_POLLIN, 0};
//   for (Command& c : mailbox.Drain()) ...  // owner thread
//
// Thread-safe.
#ifndef DEXEC_COMMON_MAILBOX_H_
#define DEXEC_COMMON_MAILBOX_H_

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace dexec {

template <typename T>
class Mailbox {
 public:
  Mailbox() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Mailbox() { ::close(fd_); }
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  void Post(T item) {
    bool was_empty;
    {
      MutexLock lock(&mu_);
      was_empty = items_.empty();
      items_.push_back(std::move(item));
    }
    if (was_empty) {
      uint64_t one = 1;
      ssize_t ignored = ::write(fd_, &one, sizeof(one));
      (void)ignored;
    }
  }

  // Readable while items are waiting.
  int fd() const { return fd_; }

  // Takes every waiting item, oldest first.
  std::vector<T> Drain() {
    uint64_t count;
    ssize_t ignored = ::read(fd_, &count, sizeof(count));
    (void)ignored;
    std::vector<T> out;
    MutexLock lock(&mu_);
    out.swap(items_);
    return out;
  }

 private:
  const int fd_;
  // Guards items_: the only state shared between posters and the owner.
  Mutex mu_;
  std::vector<T> items_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dexec

#endif  // DEXEC_COMMON_MAILBOX_H_
