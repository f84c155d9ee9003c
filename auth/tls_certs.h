// TLS for the broker's gRPC port when the operator gives no certificate: a
// private CA and a server certificate signed by it, made once in
// `<auth_dir>/tls/` (mode 0700) and reused on every restart.
//
//   tls/ca.pem      (0644)  the CA certificate: what clients trust
//                           (--tls_ca / DEXEC_TLS_CA, client_credentials.h)
//   tls/ca.key      (0600)  the CA's private key; only needed to sign a new
//                           server certificate, so it may be moved offline
//   tls/server.pem  (0644)  the server certificate
//   tls/server.key  (0600)  its private key
//
// Keys are EC P-256. The CA is valid for 10 years (basicConstraints
// CA:TRUE critical, keyUsage keyCertSign); the server certificate for 825
// days (extendedKeyUsage serverAuth), naming localhost, 127.0.0.1, ::1, the
// machine's hostname and the caller's extra names as subjectAltNames.
// Serials are 128 random bits.
//
// Nothing here is ever overwritten. To issue a server certificate for new
// names, delete server.pem and server.key: the next start signs a new one
// with the same CA (if ca.key is there), so clients keep trusting it.
//
//   ASSIGN_OR_RETURN(TlsServerFiles tls,
//                    LoadOrCreateServerTls(auth_dir, {"broker.example.com"}));
//   // tls.cert_path / tls.key_path into grpc::SslServerCredentials;
//   // hand tls.ca_path to clients.
//
// Thread-safe (no shared state); two processes creating the same directory
// at once may fail with ALREADY_EXISTS, never overwrite.
#ifndef DEXEC_AUTH_TLS_CERTS_H_
#define DEXEC_AUTH_TLS_CERTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dexec::auth {

struct TlsServerFiles {
  std::string cert_path;  // <auth_dir>/tls/server.pem
  std::string key_path;   // <auth_dir>/tls/server.key
  std::string ca_path;    // <auth_dir>/tls/ca.pem
};

// The broker's TLS files, creating what is missing (above). `extra_names`
// become subjectAltNames of a new server certificate: an IP address if one
// parses as one, else a DNS name (INVALID_ARGUMENT if neither). They are
// not compared with an existing certificate. FAILED_PRECONDITION with what
// to do if only part of a pair (server.pem/server.key, ca.pem/ca.key) is
// there, or a file is not what it should be.
absl::StatusOr<TlsServerFiles> LoadOrCreateServerTls(
    const std::string& auth_dir, const std::vector<std::string>& extra_names);

// The content of the PEM file at `path` (at most 1 MiB); FAILED_PRECONDITION
// if it holds no PEM block, NOT_FOUND / PERMISSION_DENIED naming the path.
absl::StatusOr<std::string> ReadPem(const std::string& path);

}  // namespace dexec::auth

#endif  // DEXEC_AUTH_TLS_CERTS_H_
