// dexec-broker: accepts jobs from clients over gRPC and hands them to
// workers over ZeroMQ. See README.md and docs/DESIGN.md.
//
// Prints one line when ready, then serves until SIGTERM or SIGINT:
//   dexec-broker listening grpc=127.0.0.1:50051 workers=tcp://127.0.0.1:50052
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "auth/secret_file.h"
#include "auth/tls_certs.h"
#include "auth/token_store.h"
#include "auth/worker_key_store.h"
#include "broker/broker_loop.h"
#include "broker/grpc_metrics.h"
#include "broker/grpc_service.h"
#include "broker/http_routes.h"
#include "broker/journal.h"
#include "broker/loop_api_backend.h"
#include "common/flag_check.h"
#include "common/flag_help.h"
#include "common/http_listener.h"
#include "common/log.h"
#include "common/loopback.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "protos/wire.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "HOST:PORT for the client gRPC API; port 0 picks a free port");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:50053",
          "HOST:PORT for /metrics, the JSON API (/api/) and the dashboard "
          "(/); port 0 picks one; empty turns it off");
ABSL_FLAG(std::string, worker_listen, "tcp://127.0.0.1:50052",
          "ZeroMQ endpoint workers connect to; port * or 0 picks a free port");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "heartbeat interval told to workers");
ABSL_FLAG(int32_t, liveness, 3,
          "missed heartbeat intervals before a worker is declared lost");
ABSL_FLAG(absl::Duration, retention, absl::Hours(1),
          "how long finished jobs keep their results");
ABSL_FLAG(int32_t, max_attempts, 3,
          "default attempts per job (a lost worker costs one)");
ABSL_FLAG(uint64_t, max_queued, 10'000'000,
          "queued jobs beyond which submits get RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, max_queued_bytes, 0,
          "payload bytes of unfinished jobs beyond which submits get "
          "RESOURCE_EXHAUSTED; 0: a quarter of physical memory");
ABSL_FLAG(uint64_t, max_payload_bytes, 64 << 20,
          "largest accepted job payload");
ABSL_FLAG(uint64_t, max_result_bytes, 64 << 20,
          "largest result kept: a longer one fails its job with kind "
          "result_too_large");
ABSL_FLAG(uint64_t, max_response_bytes, 16 << 20,
          "bytes of one response at most (a Session message, a GetJobs or "
          "ListJobs answer): more is split, or answered in pages; a single "
          "result larger than this still goes, alone");
ABSL_FLAG(uint64_t, max_watch_ids, 100'000,
          "job ids in one Watch request at most (INVALID_ARGUMENT beyond)");
ABSL_FLAG(uint64_t, max_watched_per_session, 10'000'000,
          "unfinished jobs one Session stream watches at most, its own "
          "submitted ones included (RESOURCE_EXHAUSTED beyond)");
ABSL_FLAG(std::string, data_dir, "./dexec-data",
          "directory of the job journal (RocksDB); created if missing. A "
          "restarted broker recovers every acknowledged job from it");
ABSL_FLAG(uint64_t, journal_min_free_bytes, 0,
          "free bytes on the journal's file system below which submits get "
          "RESOURCE_EXHAUSTED (the disk is full); 0: 64 MiB, or a quarter of "
          "a smaller file system");
ABSL_FLAG(bool, in_memory, false,
          "keep jobs in memory only (no journal): a broker restart loses them");
ABSL_FLAG(std::string, auth_dir, "",
          "directory of the broker's credentials (client.token, tokens, "
          "broker.key, worker.key, worker_keys, tls/), made on first start "
          "and never overwritten; empty = the --data_dir value (also with "
          "--in_memory)");
ABSL_FLAG(bool, insecure, false,
          "no authentication and no encryption on either port (no tokens, "
          "no CURVE), on any address: only for trusted test networks and "
          "benchmarks");
ABSL_FLAG(bool, tls, false,
          "serve gRPC over TLS, with a CA and server certificate made in "
          "--auth_dir/tls on first start unless --tls_cert is given");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM server certificate for gRPC (turns TLS on; with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: clients must present a certificate it signed (mutual "
          "TLS)");
ABSL_FLAG(std::vector<std::string>, tls_san, {},
          "extra host names or IPs for the generated server certificate "
          "(localhost, 127.0.0.1, ::1 and this host's name are always in)");
ABSL_FLAG(int32_t, max_worker_credit, 65536,
          "most tasks (threads + prefetch) one worker may claim; a worker "
          "registering more is cut down to it");
ABSL_FLAG(uint64_t, max_task_series, 1000,
          "task names with /metrics series of their own; the rest are "
          "counted under task=\"(other)\"");

namespace dexec::broker {
namespace {

int Main() {
  SetLogComponent("broker");
  BrokerOptions options;
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.liveness = absl::GetFlag(FLAGS_liveness);
  options.retention = absl::GetFlag(FLAGS_retention);
  options.default_max_attempts = absl::GetFlag(FLAGS_max_attempts);
  options.max_queued = absl::GetFlag(FLAGS_max_queued);
  options.max_payload_bytes = absl::GetFlag(FLAGS_max_payload_bytes);
  options.max_result_bytes = absl::GetFlag(FLAGS_max_result_bytes);
  constexpr uint64_t kMaxOneItem =
      wire::kMaxFrameBytes - wire::kFrameEnvelopeBytes;
  if (options.max_payload_bytes < 1 ||
      options.max_payload_bytes > kMaxOneItem || options.max_result_bytes < 1 ||
      options.max_result_bytes > kMaxOneItem) {
    std::cerr << "dexec-broker: --max_payload_bytes and --max_result_bytes "
                 "must be between 1 and "
              << kMaxOneItem << " (a frame is at most " << wire::kMaxFrameBytes
              << " bytes)\n";
    return 2;
  }
  options.max_worker_credit = absl::GetFlag(FLAGS_max_worker_credit);
  options.max_task_series = absl::GetFlag(FLAGS_max_task_series);
  options.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  if (options.max_queued_bytes == 0) {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGE_SIZE);
    options.max_queued_bytes = pages > 0 && page_size > 0
                                   ? static_cast<uint64_t>(pages) *
                                         static_cast<uint64_t>(page_size) / 4
                                   : uint64_t{4} << 30;
  }
  options.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  options.max_watch_ids = absl::GetFlag(FLAGS_max_watch_ids);
  options.max_watched_per_session =
      absl::GetFlag(FLAGS_max_watched_per_session);
  if (options.max_response_bytes < 1024 ||
      options.max_response_bytes > (1u << 30)) {
    std::cerr << "dexec-broker: --max_response_bytes must be between 1 KiB "
                 "and 1 GiB (protobuf cannot send 2 GB)\n";
    return 2;
  }
  if (options.heartbeat_interval <= absl::ZeroDuration() ||
      options.liveness < 1 || options.default_max_attempts < 1 ||
      options.max_worker_credit < 1) {
    std::cerr << "dexec-broker: --heartbeat_interval, --liveness, "
                 "--max_attempts and --max_worker_credit must be positive\n";
    return 2;
  }
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const std::string worker_listen = absl::GetFlag(FLAGS_worker_listen);
  const bool insecure = absl::GetFlag(FLAGS_insecure);
  const bool tls =
      absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_cert).empty();
  if (absl::GetFlag(FLAGS_tls_cert).empty() !=
      absl::GetFlag(FLAGS_tls_key).empty()) {
    std::cerr << "dexec-broker: --tls_cert and --tls_key go together\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_tls_client_ca).empty() && !tls) {
    std::cerr << "dexec-broker: --tls_client_ca needs TLS: add --tls or "
                 "--tls_cert/--tls_key\n";
    return 2;
  }
  // Plaintext leaves this machine only with --insecure.
  if (!insecure && !tls && !IsLoopbackHostPort(listen)) {
    std::cerr << "dexec-broker: refusing plaintext gRPC on --listen=" << listen
              << ", which is not a loopback address: add --tls (a generated "
                 "certificate) or --tls_cert/--tls_key; --insecure only on a "
                 "trusted network\n";
    return 2;
  }
  std::string auth_dir = absl::GetFlag(FLAGS_auth_dir);
  if (auth_dir.empty()) auth_dir = absl::GetFlag(FLAGS_data_dir);
  if (auth_dir.empty()) {
    std::cerr << "dexec-broker: --auth_dir and --data_dir are empty; name a "
                 "directory for the credentials\n";
    return 2;
  }

  // Signals are taken by sigwait below, never by a handler: block them
  // before any thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<Journal> journal;
  RecoveredState recovered;
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (!absl::GetFlag(FLAGS_in_memory)) {
    if (data_dir.empty()) {
      std::cerr << "dexec-broker: --data_dir is empty; name a directory, or "
                   "pass --in_memory to run without a journal\n";
      return 2;
    }
    const absl::Time open_start = absl::Now();
    absl::StatusOr<std::unique_ptr<Journal>> opened = Journal::Open(
        data_dir, &recovered, absl::GetFlag(FLAGS_journal_min_free_bytes));
    if (!opened.ok()) {
      std::cerr << "dexec-broker: " << opened.status().message() << "\n";
      return 1;
    }
    journal = std::move(*opened);
    options.journal = true;
    DEXEC_LOG(INFO) << "journal opened data_dir=" << data_dir
                    << " jobs=" << recovered.jobs.size() << " took="
                    << absl::FormatDuration(absl::Now() - open_start);
  } else {
    DEXEC_LOG(INFO) << "in memory: jobs are lost if the broker stops";
  }

  // Credentials: made on first start, read on every later one.
  std::unique_ptr<auth::TokenStore> tokens;
  std::unique_ptr<auth::WorkerKeyStore> worker_keys;
  std::optional<WorkerPlaneAuth> worker_auth;
  if (insecure) {
    DEXEC_LOG(WARNING) << "--insecure: no tokens, no CURVE: anyone who "
                          "reaches grpc="
                       << listen << " or workers=" << worker_listen
                       << " can run jobs, read results and join as a worker";
  } else {
    const absl::Time now = absl::Now();
    absl::StatusOr<std::unique_ptr<auth::TokenStore>> opened_tokens =
        auth::TokenStore::Open(auth_dir, now);
    if (!opened_tokens.ok()) {
      std::cerr << "dexec-broker: " << opened_tokens.status().message() << "\n";
      return 1;
    }
    tokens = std::move(*opened_tokens);
    absl::StatusOr<auth::CurveKeypair> broker_key =
        auth::LoadOrCreateBrokerKey(auth_dir);
    if (!broker_key.ok()) {
      std::cerr << "dexec-broker: " << broker_key.status().message() << "\n";
      return 1;
    }
    absl::StatusOr<std::unique_ptr<auth::WorkerKeyStore>> opened_keys =
        auth::WorkerKeyStore::Open(auth_dir, *broker_key, now);
    if (!opened_keys.ok()) {
      std::cerr << "dexec-broker: " << opened_keys.status().message() << "\n";
      return 1;
    }
    worker_keys = std::move(*opened_keys);
    worker_auth = WorkerPlaneAuth{*broker_key, worker_keys.get()};
    DEXEC_LOG(INFO) << "credentials auth_dir=" << auth_dir
                    << " admin_token=" << tokens->client_token_path()
                    << " worker_credentials=" << auth_dir << "/worker.key"
                    << " broker_public_key=" << broker_key->public_z85
                    << (tokens->created_admin() ? " created=true" : "");
  }

  std::shared_ptr<grpc::ServerCredentials> server_credentials =
      grpc::InsecureServerCredentials();
  if (tls) {
    std::string cert_path = absl::GetFlag(FLAGS_tls_cert);
    std::string key_path = absl::GetFlag(FLAGS_tls_key);
    if (cert_path.empty()) {
      std::vector<std::string> names = absl::GetFlag(FLAGS_tls_san);
      const std::string host = listen.substr(0, listen.rfind(':'));
      if (!host.empty() && host != "0.0.0.0" && host != "[::]") {
        names.push_back(host);
      }
      absl::StatusOr<auth::TlsServerFiles> files =
          auth::LoadOrCreateServerTls(auth_dir, names);
      if (!files.ok()) {
        std::cerr << "dexec-broker: " << files.status().message() << "\n";
        return 1;
      }
      cert_path = files->cert_path;
      key_path = files->key_path;
      DEXEC_LOG(INFO) << "tls certificate=" << files->cert_path
                      << " ca=" << files->ca_path
                      << " (clients: --tls_ca=" << files->ca_path << ")";
    }
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    absl::StatusOr<std::string> cert = auth::ReadSmallFile(cert_path);
    absl::StatusOr<std::string> key = auth::ReadSmallFile(key_path);
    if (!cert.ok() || !key.ok()) {
      std::cerr << "dexec-broker: "
                << (!cert.ok() ? cert.status() : key.status()).message()
                << " (--tls_cert/--tls_key)\n";
      return 1;
    }
    pair.cert_chain = *cert;
    pair.private_key = *key;
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
    if (!client_ca.empty()) {
      absl::StatusOr<std::string> ca = auth::ReadSmallFile(client_ca);
      if (!ca.ok()) {
        std::cerr << "dexec-broker: " << ca.status().message()
                  << " (--tls_client_ca)\n";
        return 1;
      }
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    server_credentials = grpc::SslServerCredentials(ssl);
  }

  BrokerLoop loop(options, std::move(journal), std::move(recovered));
  absl::StatusOr<std::string> workers =
      loop.BindWorkers(worker_listen, worker_auth);
  if (!workers.ok()) {
    std::cerr << "dexec-broker: " << workers.status().message() << "\n";
    return 1;
  }

  const size_t colon = listen.rfind(':');
  int port_asked = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port_asked)) {
    std::cerr << "dexec-broker: --listen=" << listen
              << " is not HOST:PORT (e.g. 127.0.0.1:50051)\n";
    return 2;
  }
  BrokerService service(&loop, BrokerAuth{tokens.get(), worker_keys.get()});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, server_credentials, &port);
  builder.RegisterService(&service);
  // Counts every call's status by method for /metrics (grpc_metrics.h).
  builder.experimental().SetInterceptorCreators(
      MakeInterceptorCreators(&service.grpc_metrics()));
  // A batch of jobs can be larger than one payload; leave room for it.
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(
      options.max_payload_bytes * 2 + (16 << 20), INT32_MAX)));
  loop.Start();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "dexec-broker: cannot listen on " << listen
              << " (--listen): is the port in use?\n";
    loop.Stop();
    return 1;
  }
  // The HTTP side: same tokens and roles as gRPC, state read through the
  // loop (loop_api_backend.h). Plaintext, so loopback only unless
  // --insecure, as gRPC without TLS.
  const std::string http_listen = absl::GetFlag(FLAGS_http_listen);
  LoopApiBackend api_backend(&loop, absl::Seconds(5),
                             service.client_auth_failures_counter());
  HttpRoutes routes{tokens.get(), &api_backend,
                    service.client_auth_failures_counter(),
                    &service.grpc_metrics()};
  std::unique_ptr<http::HttpListener> http_listener;
  std::string http_shown = "off";
  if (!http_listen.empty()) {
    if (!insecure && !IsLoopbackHostPort(http_listen)) {
      std::cerr << "dexec-broker: refusing plaintext HTTP on --http_listen="
                << http_listen
                << ", which is not a loopback address (tokens would cross "
                   "the network in the clear): put a TLS proxy in front and "
                   "keep it on loopback, or --insecure on a trusted network\n";
      server->Shutdown();
      loop.Stop();
      return 2;
    }
    http::HttpListener::Options http_options;
    http_options.name = "broker";
    absl::StatusOr<std::unique_ptr<http::HttpListener>> started =
        http::HttpListener::Start(
            http_listen, http_options, [&routes](const http::Request& r) {
              return ServeBrokerHttp(r, routes, absl::Now());
            });
    if (!started.ok()) {
      std::cerr << "dexec-broker: " << started.status().message() << "\n";
      server->Shutdown();
      loop.Stop();
      return 1;
    }
    http_listener = std::move(*started);
    http_shown = absl::StrCat(http_listen.substr(0, http_listen.rfind(':')),
                              ":", http_listener->port());
  }
  std::cout << "dexec-broker listening grpc=" << listen.substr(0, colon) << ":"
            << port << " workers=" << *workers << " http=" << http_shown
            << " tls=" << (tls ? "on" : "off")
            << " auth=" << (insecure ? std::string("off") : auth_dir)
            << std::endl;
  DEXEC_LOG(INFO) << "started grpc=" << listen.substr(0, colon) << ":" << port
                  << " workers=" << *workers;

  int sig = 0;
  sigwait(&signals, &sig);
  DEXEC_LOG(INFO) << "stopping signal=" << sig;
  // End the clients' streams once what is queued for them is written (they
  // reconnect to the next broker); stop accepting calls; give running ones a
  // moment, then cancel them. The loop and the journal still run meanwhile,
  // so posted commands answer their calls. Then the loop stops and the
  // journal writes what is left.
  http_listener.reset();  // no HTTP thread asks the loop from here on
  loop.CloseSessions();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  loop.Stop();
  DEXEC_LOG(INFO) << "stopped";
  return 0;
}

}  // namespace
}  // namespace dexec::broker

int main(int argc, char** argv) {
  // Payloads and results of 256 KiB or more get pages of their own, given
  // back when freed. glibc's default threshold grows with what was freed
  // (up to 32 MiB), after which 1 MiB payloads stay in the heap: see
  // BrokerLoop::ReturnFreedMemory and docs/DESIGN.md, "Memory".
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  dexec::SetMutexDeadlockDetectionForProcess();
  absl::SetProgramUsageMessage(
      "dexec-broker [--listen=HOST:PORT] [--worker_listen=ENDPOINT]");
  if (dexec::PrintHelpIfRequested(
          argc, argv,
          {.program = "dexec-broker",
           .summary = "accepts jobs from clients over gRPC and hands them to "
                      "workers over ZeroMQ.",
           .groups = {
               {"Listening", {"listen", "worker_listen", "http_listen"}},
               {"Jobs and workers",
                {"heartbeat_interval", "liveness", "retention",
                 "max_attempts"}},
               {"Limits",
                {"max_queued", "max_queued_bytes", "max_payload_bytes",
                 "max_result_bytes", "max_response_bytes", "max_watch_ids",
                 "max_watched_per_session", "max_worker_credit",
                 "max_task_series"}},
               {"Storage", {"data_dir", "in_memory", "journal_min_free_bytes"}},
               {"Security",
                {"auth_dir", "tls", "tls_cert", "tls_key", "tls_client_ca",
                 "tls_san", "insecure"}}}})) {
    return 0;
  }
  // A bad flag exits 2 (a usage error), not absl's 1.
  if (!dexec::CheckFlagArguments(argc, argv, "dexec-broker", std::cerr)) {
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  return dexec::broker::Main();
}
