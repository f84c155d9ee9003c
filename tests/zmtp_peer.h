// A TCP peer on the broker's worker port that speaks ZMTP 3.0 by hand as
// far as its greeting (mechanism CURVE, as a client) and then sends one
// frame header and raw bytes: what any program on the network can do
// before it has offered a key (docs/DESIGN.md, "Frame sizes").
//
//   PreHandshakePeer peer(cluster.worker_endpoint());
//   peer.SendFrameHeader(size);       // then peer.SendBytes(n)
//   EXPECT_TRUE(peer.ClosedByBroker(absl::Seconds(30)));
//
// Not thread-safe; owns its socket.
#ifndef DEXEC_TESTS_ZMTP_PEER_H_
#define DEXEC_TESTS_ZMTP_PEER_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace dexec::testing {

class PreHandshakePeer {
 public:
  // `endpoint` is "tcp://127.0.0.1:PORT"; connects at once.
  explicit PreHandshakePeer(const std::string& endpoint);
  ~PreHandshakePeer();
  PreHandshakePeer(const PreHandshakePeer&) = delete;
  PreHandshakePeer& operator=(const PreHandshakePeer&) = delete;

  bool connected() const { return connected_; }
  // The local port of the connection (0 if none).
  int local_port() const { return local_port_; }

  // The greeting and a long command frame's header announcing `size`
  // bytes; false if the connection would not take them.
  bool SendFrameHeader(uint64_t size);
  // `n` bytes of the frame's body, blocking until the kernel took them;
  // false if the connection broke first.
  bool SendBytes(size_t n);

  // Whether the broker closed the connection within `timeout` (what it
  // sends, its own greeting, is read and skipped).
  bool ClosedByBroker(absl::Duration timeout);

 private:
  int fd_ = -1;
  bool connected_ = false;
  int local_port_ = 0;
};

// Bytes sent to local TCP port `port` on loopback that its owner has not
// read yet (the receive queues in /proc/net/tcp): 0 once the broker has
// read everything its peers sent it.
uint64_t UnreadBytesAtPort(int port);

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_ZMTP_PEER_H_
