#include "common/loopback.h"

#include <arpa/inet.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace dexec {

bool IsLoopbackHost(absl::string_view host) {
  if (absl::ConsumePrefix(&host, "[")) {
    if (!absl::ConsumeSuffix(&host, "]")) return false;
  }
  if (host == "localhost" || host == "::1") return true;
  in_addr v4;
  const std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return false;
}

bool IsLoopbackHostPort(absl::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == absl::string_view::npos) return false;
  return IsLoopbackHost(host_port.substr(0, colon));
}

bool IsLocalZmqEndpoint(absl::string_view endpoint) {
  if (absl::StartsWith(endpoint, "ipc://") ||
      absl::StartsWith(endpoint, "inproc://")) {
    return true;
  }
  if (!absl::ConsumePrefix(&endpoint, "tcp://")) return false;
  return IsLoopbackHostPort(endpoint);
}

}  // namespace dexec
