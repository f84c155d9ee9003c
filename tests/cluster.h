// A real dexec deployment on loopback for process-level tests: one
// dexec-broker on free ports and any number of dexec-worker processes.
// Readiness comes from signals, never sleeps: the broker's "listening"
// line, and the broker's own ListWorkers answer for workers.
//
//   TestCluster cluster;
//   ASSERT_OK(cluster.StartBroker());
//   ASSERT_OK(cluster.StartWorker(/*threads=*/4));
//   ASSERT_OK(cluster.WaitForWorkers(1));
//   ... cluster.grpc_address() ...
//
// Each broker gets a fresh --data_dir of its own under $TEST_TMPDIR unless
// the caller passes --data_dir or --in_memory. A broker restart, as an
// operator does it:
//
//   ASSERT_OK(cluster.KillBroker());     // kill -9, wait for the exit
//   ASSERT_OK(cluster.RestartBroker());  // same ports, data dir and flags
//
// Security is on, as in production: each broker gets a fresh --auth_dir
// of its own (unless the caller passes --auth_dir or --insecure); stub()
// and Cli() carry its admin token, and workers join with its worker.key
// (and --allow_exec, as the README's commands pass it). A worker flag
// --insecure, --auth_dir or --worker_key replaces those defaults.
//
// Every process is stopped by PID when the cluster is destroyed.
#ifndef DEXEC_TESTS_CLUSTER_H_
#define DEXEC_TESTS_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/options.h"
#include "protos/dexec.grpc.pb.h"
#include "tests/process.h"

namespace dexec::testing {

class TestCluster {
 public:
  TestCluster() = default;
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  // Starts dexec-broker on free ports (gRPC port 0, ZeroMQ port *) with
  // `extra_flags`, and waits for its "listening" line.
  absl::Status StartBroker(std::vector<std::string> extra_flags = {});
  // SIGKILLs the broker by PID and waits until it has exited.
  absl::Status KillBroker(absl::Duration timeout = absl::Seconds(10));
  // Starts the broker again after it exited (KillBroker, or a signal the
  // test sent), on the exact gRPC port and worker endpoint of the first
  // start, the same data dir and the same extra flags. Workers and clients
  // reconnect by themselves.
  absl::Status RestartBroker();
  // Returns the index of the worker in workers().
  absl::StatusOr<size_t> StartWorker(int threads,
                                     std::vector<std::string> extra_flags = {});
  // Waits until the broker lists `n` workers.
  absl::Status WaitForWorkers(int n,
                              absl::Duration timeout = absl::Seconds(20));

  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& worker_endpoint() const { return worker_endpoint_; }
  // The broker's --http_listen address (HOST:PORT), or "off".
  const std::string& http_address() const { return http_address_; }
  // The broker's --data_dir; empty for an --in_memory broker.
  const std::string& data_dir() const { return data_dir_; }
  // The broker's --auth_dir and its admin token; empty with --insecure.
  const std::string& auth_dir() const { return auth_dir_; }
  const std::string& admin_token() const { return admin_token_; }
  // Options for an Executor on this broker, with its admin token (and its
  // TLS CA when the broker serves TLS).
  ExecutorOptions executor_options() const {
    ExecutorOptions options;
    options.broker = grpc_address_;
    options.token = admin_token_;
    options.tls_ca = tls_ca_;
    return options;
  }
  // With --tls, the generated CA (<auth_dir>/tls/ca.pem) that stub(), Cli()
  // and executor_options() trust; empty for a plaintext broker.
  const std::string& tls_ca() const { return tls_ca_; }
  // A new stub on the broker carrying `token` (empty: none).
  std::unique_ptr<v1::Broker::Stub> StubWithToken(const std::string& token);
  Process& broker() { return *broker_; }
  std::vector<std::unique_ptr<Process>>& workers() { return workers_; }
  v1::Broker::Stub& stub() { return *stub_; }

  // The dexec CLI against this broker.
  absl::StatusOr<CommandResult> Cli(std::vector<std::string> args,
                                    const std::string& stdin_data = "",
                                    absl::Duration timeout = absl::Seconds(60));

 private:
  // Runs the broker with `argv` and reads back where it listens.
  absl::Status LaunchBroker(const std::vector<std::string>& argv);

  std::unique_ptr<Process> broker_;
  // The flags of the first start (ports, data dir, extra flags), for
  // RestartBroker.
  std::vector<std::string> broker_flags_;
  std::string data_dir_;
  std::string auth_dir_;
  std::string admin_token_;
  std::string tls_ca_;
  bool insecure_ = false;
  std::vector<std::unique_ptr<Process>> workers_;
  std::string grpc_address_;
  std::string worker_endpoint_;
  std::string http_address_;
  std::unique_ptr<v1::Broker::Stub> stub_;
};

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_CLUSTER_H_
