// Whether a listen address stays on this machine: the broker refuses to
// serve plaintext (gRPC without TLS, ZeroMQ without CURVE) anywhere else
// unless --insecure (docs/DESIGN.md, "Security").
#ifndef DEXEC_COMMON_LOOPBACK_H_
#define DEXEC_COMMON_LOOPBACK_H_

#include "absl/strings/string_view.h"

namespace dexec {

// "127.0.0.1", "127.x.y.z", "localhost", "::1", "[::1]": true. Anything
// else, including "0.0.0.0", "*", "[::]" and names, false.
bool IsLoopbackHost(absl::string_view host);

// A gRPC listen address "HOST:PORT" (IPv6 in brackets).
bool IsLoopbackHostPort(absl::string_view host_port);

// A ZeroMQ endpoint: ipc:// and inproc:// are local; tcp://HOST:PORT is
// local when HOST is loopback.
bool IsLocalZmqEndpoint(absl::string_view endpoint);

}  // namespace dexec

#endif  // DEXEC_COMMON_LOOPBACK_H_
