#include "auth/tls_certs.h"

#include <arpa/inet.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/secret_file.h"
#include "common/status_macros.h"

namespace dexec::auth {
namespace {

constexpr long kCaDays = 3650;     // 10 years
constexpr long kServerDays = 825;  // the CA/Browser Forum's old maximum
constexpr size_t kMaxPemBytes = 1 << 20;

struct OpensslFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(GENERAL_NAME* p) const { GENERAL_NAME_free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, OpensslFree>;
using CertPtr = std::unique_ptr<X509, OpensslFree>;
using BioPtr = std::unique_ptr<BIO, OpensslFree>;

// INTERNAL with `what` and OpenSSL's queued errors (which hold no key
// material: they are library, function and reason codes).
absl::Status OpensslError(absl::string_view what) {
  std::string detail;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&detail, detail.empty() ? "" : "; ", buf);
  }
  return absl::InternalError(
      absl::StrCat("OpenSSL: ", what, detail.empty() ? "" : ": ", detail));
}

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// An RFC 1123 host name, optionally with a leading "*." wildcard label.
bool IsDnsName(absl::string_view s) {
  if (absl::StartsWith(s, "*.")) s.remove_prefix(2);
  if (s.empty() || s.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(s, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' ||
        label.back() == '-') {
      return false;
    }
    for (const char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return false;
      }
    }
  }
  return true;
}

struct SubjectAltNames {
  std::vector<std::string> dns;
  std::vector<std::string> ip;
};

absl::StatusOr<SubjectAltNames> ServerNames(
    const std::vector<std::string>& extra_names, std::string* hostname) {
  SubjectAltNames names;
  auto add = [&names](const std::string& name) {
    std::vector<std::string>& list = IsIpAddress(name) ? names.ip : names.dns;
    for (const std::string& n : list) {
      if (absl::EqualsIgnoreCase(n, name)) return;
    }
    list.push_back(name);
  };
  add("localhost");
  add("127.0.0.1");
  add("::1");
  char host[HOST_NAME_MAX + 1] = {};
  // A hostname that is no DNS name (rare) is left out rather than refused:
  // the broker must still start.
  if (gethostname(host, sizeof(host) - 1) == 0 && IsDnsName(host)) {
    *hostname = host;
    add(host);
  }
  for (const std::string& name : extra_names) {
    if (!IsIpAddress(name) && !IsDnsName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS name \"", absl::CHexEscape(name),
                       "\" is neither an IP address nor a DNS name"));
    }
    add(name);
  }
  return names;
}

absl::StatusOr<KeyPtr> NewP256Key() {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) return OpensslError("generating an EC P-256 key");
  return key;
}

absl::Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return OpensslError("random serial number");
  }
  bytes[0] &= 0x7f;  // positive (DER INTEGER)
  bytes[0] |= 0x40;  // and exactly 16 bytes long, never zero
  std::unique_ptr<BIGNUM, OpensslFree> bn(
      BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (bn == nullptr ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpensslError("setting the serial number");
  }
  return absl::OkStatus();
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid,
                          const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, OpensslFree> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpensslError(absl::StrCat("adding extension ", value));
  }
  return absl::OkStatus();
}

absl::Status AddSubjectAltNames(X509* cert, const SubjectAltNames& names) {
  std::unique_ptr<GENERAL_NAMES, OpensslFree> gens(sk_GENERAL_NAME_new_null());
  if (gens == nullptr) return OpensslError("subjectAltName");
  auto push = [&gens](int type, ASN1_STRING* value) -> absl::Status {
    std::unique_ptr<GENERAL_NAME, OpensslFree> gn(GENERAL_NAME_new());
    if (gn == nullptr || value == nullptr) {
      ASN1_STRING_free(value);
      return OpensslError("subjectAltName entry");
    }
    GENERAL_NAME_set0_value(gn.get(), type, value);
    if (sk_GENERAL_NAME_push(gens.get(), gn.get()) == 0) {
      return OpensslError("subjectAltName entry");
    }
    gn.release();  // owned by gens
    return absl::OkStatus();
  };
  for (const std::string& dns : names.dns) {
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    if (s != nullptr &&
        ASN1_STRING_set(s, dns.data(), static_cast<int>(dns.size())) != 1) {
      ASN1_STRING_free(s);
      s = nullptr;
    }
    RETURN_IF_ERROR(push(GEN_DNS, s));
  }
  for (const std::string& ip : names.ip) {
    RETURN_IF_ERROR(push(GEN_IPADD, a2i_IPADDRESS(ip.c_str())));
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, gens.get(), 0,
                        X509V3_ADD_DEFAULT) != 1) {
    return OpensslError("adding subjectAltName");
  }
  return absl::OkStatus();
}

// A certificate for `key` named `common_name`, valid from an hour ago (for
// clocks slightly behind) for `days`, issued by `issuer` (nullptr:
// self-signed) and signed by `issuer_key`, with `extensions` (nid, value).
absl::StatusOr<CertPtr> NewCertificate(
    EVP_PKEY* key, const std::string& common_name, long days, X509* issuer,
    EVP_PKEY* issuer_key,
    const std::vector<std::pair<int, const char*>>& extensions,
    const SubjectAltNames* names) {
  CertPtr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), 2) != 1) {
    return OpensslError("creating a certificate");
  }
  RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(
          subject, "O", MBSTRING_ASC,
          reinterpret_cast<const unsigned char*>("dexec"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(
          subject, "CN", MBSTRING_ASC,
          reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
          0) != 1) {
    return OpensslError("setting the subject");
  }
  X509* signer = issuer != nullptr ? issuer : cert.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) ==
          nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpensslError("setting issuer, validity and key");
  }
  for (const auto& [nid, value] : extensions) {
    RETURN_IF_ERROR(AddExtension(cert.get(), signer, nid, value));
  }
  if (names != nullptr) RETURN_IF_ERROR(AddSubjectAltNames(cert.get(), *names));
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) {
    return OpensslError("signing the certificate");
  }
  return cert;
}

absl::StatusOr<std::string> BioContents(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  if (n <= 0) return OpensslError("writing PEM");
  return std::string(data, static_cast<size_t>(n));
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpensslError("writing a certificate");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr,
                               nullptr) != 1) {
    return OpensslError("writing a private key");
  }
  return BioContents(bio.get());
}

absl::StatusOr<CertPtr> ParseCert(const std::string& pem,
                                  const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CertPtr cert(bio == nullptr
                   ? nullptr
                   : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds no PEM certificate"));
  }
  return cert;
}

absl::StatusOr<KeyPtr> ParseKey(const std::string& pem,
                                const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr key(bio == nullptr ? nullptr
                            : PEM_read_bio_PrivateKey(bio.get(), nullptr,
                                                      nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    // Not OpenSSL's reason: it could quote part of the file.
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds no unencrypted PEM private key"));
  }
  return key;
}

struct Ca {
  CertPtr cert;
  KeyPtr key;
};

absl::StatusOr<Ca> LoadCa(const std::string& cert_path,
                          const std::string& key_path) {
  Ca ca;
  ASSIGN_OR_RETURN(const std::string cert_pem, ReadPem(cert_path));
  ASSIGN_OR_RETURN(ca.cert, ParseCert(cert_pem, cert_path));
  ASSIGN_OR_RETURN(std::string key_pem, ReadSecretFile(key_path, kMaxPemBytes));
  ASSIGN_OR_RETURN(ca.key, ParseKey(key_pem, key_path));
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(
        key_path, " is not the key of ", cert_path,
        "; restore the pair, or delete the tls directory for a new CA "
        "(clients must then trust the new ca.pem)"));
  }
  return ca;
}

absl::StatusOr<Ca> CreateCa(const std::string& cert_path,
                            const std::string& key_path,
                            const std::string& hostname) {
  Ca ca;
  ASSIGN_OR_RETURN(ca.key, NewP256Key());
  ASSIGN_OR_RETURN(
      ca.cert,
      NewCertificate(
          ca.key.get(),
          hostname.empty() ? "dexec CA" : absl::StrCat("dexec CA ", hostname),
          kCaDays, nullptr, ca.key.get(),
          {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"}},
          nullptr));
  ASSIGN_OR_RETURN(std::string key_pem, KeyPem(ca.key.get()));
  ASSIGN_OR_RETURN(const std::string cert_pem, CertPem(ca.cert.get()));
  // The key first: a ca.pem without its key could never sign.
  const absl::Status wrote = CreateFileExclusive(key_path, key_pem, 0600);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  RETURN_IF_ERROR(wrote);
  RETURN_IF_ERROR(CreateFileExclusive(cert_path, cert_pem, 0644));
  return ca;
}

}  // namespace

absl::StatusOr<std::string> ReadPem(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadSmallFile(path, kMaxPemBytes));
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a PEM file (no -----BEGIN line)"));
  }
  return pem;
}

absl::StatusOr<TlsServerFiles> LoadOrCreateServerTls(
    const std::string& auth_dir, const std::vector<std::string>& extra_names) {
  const std::string dir = auth_dir + "/tls";
  TlsServerFiles files{dir + "/server.pem", dir + "/server.key",
                       dir + "/ca.pem"};
  const std::string ca_key_path = dir + "/ca.key";
  // Names are checked first, so a bad one changes nothing on disk.
  std::string hostname;
  ASSIGN_OR_RETURN(const SubjectAltNames names,
                   ServerNames(extra_names, &hostname));

  const bool have_cert = PathExists(files.cert_path);
  const bool have_key = PathExists(files.key_path);
  const bool have_ca = PathExists(files.ca_path);
  if (have_cert && have_key && have_ca) {
    RETURN_IF_ERROR(CheckNotWorldReadable(files.key_path));
    return files;
  }
  if (have_cert || have_key) {
    return absl::FailedPreconditionError(absl::StrCat(
        have_cert ? files.key_path : files.cert_path, " is missing but ",
        have_cert ? files.cert_path : files.key_path,
        have_ca ? "" : absl::StrCat(" (without ", files.ca_path, ")"),
        " is there; restore it, or delete server.pem and server.key to "
        "issue a new server certificate"));
  }

  RETURN_IF_ERROR(EnsureDirectory(dir, 0700));
  Ca ca;
  const bool have_ca_key = PathExists(ca_key_path);
  if (have_ca && have_ca_key) {
    ASSIGN_OR_RETURN(ca, LoadCa(files.ca_path, ca_key_path));
  } else if (!have_ca && !have_ca_key) {
    ASSIGN_OR_RETURN(ca, CreateCa(files.ca_path, ca_key_path, hostname));
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        have_ca ? ca_key_path : files.ca_path,
        " is missing, so no server "
        "certificate can be issued; restore it, or delete ",
        dir, " for a new CA (clients must then trust the new ca.pem)"));
  }

  ASSIGN_OR_RETURN(KeyPtr key, NewP256Key());
  ASSIGN_OR_RETURN(
      CertPtr cert,
      NewCertificate(key.get(), hostname.empty() ? "localhost" : hostname,
                     kServerDays, ca.cert.get(), ca.key.get(),
                     {{NID_basic_constraints, "critical,CA:FALSE"},
                      {NID_key_usage, "critical,digitalSignature"},
                      {NID_ext_key_usage, "serverAuth"},
                      {NID_subject_key_identifier, "hash"},
                      {NID_authority_key_identifier, "keyid:always"}},
                     &names));
  ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  ASSIGN_OR_RETURN(const std::string cert_pem, CertPem(cert.get()));
  const absl::Status wrote = CreateFileExclusive(files.key_path, key_pem, 0600);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  RETURN_IF_ERROR(wrote);
  RETURN_IF_ERROR(CreateFileExclusive(files.cert_path, cert_pem, 0644));
  return files;
}

}  // namespace dexec::auth
