#include "tests/zmtp_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace dexec::testing {

PreHandshakePeer::PreHandshakePeer(const std::string& endpoint) {
  int port = 0;
  if (!absl::SimpleAtoi(endpoint.substr(endpoint.rfind(':') + 1), &port)) {
    return;
  }
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) return;
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connected_ =
      connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  sockaddr_in local = {};
  socklen_t len = sizeof(local);
  if (connected_ &&
      getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    local_port_ = ntohs(local.sin_port);
  }
}

PreHandshakePeer::~PreHandshakePeer() {
  if (fd_ >= 0) close(fd_);
}

bool PreHandshakePeer::SendFrameHeader(uint64_t size) {
  // ZMTP 3.0 greeting: signature, version 3.0, mechanism, as-server 0.
  std::string bytes(64, '\0');
  bytes[0] = '\xff';
  bytes[9] = '\x7f';
  bytes[10] = 3;
  bytes.replace(12, 5, "CURVE");
  bytes += '\x06';  // a long command frame
  for (int i = 7; i >= 0; --i) bytes += static_cast<char>(size >> (8 * i));
  return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(bytes.size());
}

bool PreHandshakePeer::SendBytes(size_t n) {
  const std::string block(64 << 10, 'x');
  while (n > 0) {
    const ssize_t sent =
        send(fd_, block.data(), std::min(n, block.size()), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    n -= static_cast<size_t>(sent);
  }
  return true;
}

bool PreHandshakePeer::ClosedByBroker(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (absl::Now() < deadline) {
    pollfd p = {fd_, POLLIN, 0};
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
    if (poll(&p, 1, left) <= 0) continue;
    if (recv(fd_, buf, sizeof(buf), 0) <= 0) return true;  // EOF or reset
  }
  return false;
}

uint64_t UnreadBytesAtPort(int port) {
  // "sl local_address rem_address st tx_queue:rx_queue ...", hex.
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // the header
  uint64_t unread = 0;
  while (std::getline(tcp, line)) {
    std::vector<std::string> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() < 5) continue;
    const size_t colon = f[1].rfind(':');
    int local = 0;
    if (colon == std::string::npos ||
        !absl::SimpleHexAtoi(f[1].substr(colon + 1), &local) || local != port) {
      continue;
    }
    const size_t q = f[4].find(':');
    uint64_t rx = 0;
    if (q != std::string::npos &&
        absl::SimpleHexAtoi(f[4].substr(q + 1), &rx)) {
      unread += rx;
    }
  }
  return unread;
}

}  // namespace dexec::testing
