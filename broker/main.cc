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
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "broker/broker_loop.h"
#include "broker/grpc_service.h"
#include "broker/journal.h"
#include "common/log.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "HOST:PORT for the client gRPC API; port 0 picks a free port");
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
  options.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  if (options.max_queued_bytes == 0) {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGE_SIZE);
    options.max_queued_bytes =
        pages > 0 && page_size > 0
            ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) / 4
            : uint64_t{4} << 30;
  }
  options.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  options.max_watch_ids = absl::GetFlag(FLAGS_max_watch_ids);
  options.max_watched_per_session =
      absl::GetFlag(FLAGS_max_watched_per_session);
  if (options.max_response_bytes < 1024 || options.max_response_bytes > (1u << 30)) {
    std::cerr << "dexec-broker: --max_response_bytes must be between 1 KiB "
                 "and 1 GiB (protobuf cannot send 2 GB)\n";
    return 2;
  }
  if (options.heartbeat_interval <= absl::ZeroDuration() ||
      options.liveness < 1 || options.default_max_attempts < 1) {
    std::cerr << "dexec-broker: --heartbeat_interval, --liveness and "
                 "--max_attempts must be positive\n";
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
    absl::StatusOr<std::unique_ptr<Journal>> opened =
        Journal::Open(data_dir, &recovered,
                      absl::GetFlag(FLAGS_journal_min_free_bytes));
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

  BrokerLoop loop(options, std::move(journal), std::move(recovered));
  absl::StatusOr<std::string> workers =
      loop.BindWorkers(absl::GetFlag(FLAGS_worker_listen));
  if (!workers.ok()) {
    std::cerr << "dexec-broker: " << workers.status().message() << "\n";
    return 1;
  }

  const std::string listen = absl::GetFlag(FLAGS_listen);
  const size_t colon = listen.rfind(':');
  int port_asked = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port_asked)) {
    std::cerr << "dexec-broker: --listen=" << listen
              << " is not HOST:PORT (e.g. 127.0.0.1:50051)\n";
    return 2;
  }
  BrokerService service(&loop);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  // A batch of jobs can be larger than one payload; leave room for it.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(options.max_payload_bytes * 2 + (16 << 20),
                                          INT32_MAX)));
  loop.Start();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "dexec-broker: cannot listen on " << listen
              << " (--listen): is the port in use?\n";
    loop.Stop();
    return 1;
  }
  std::cout << "dexec-broker listening grpc=" << listen.substr(0, colon) << ":"
            << port << " workers=" << *workers << std::endl;
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
  absl::ParseCommandLine(argc, argv);
  return dexec::broker::Main();
}
