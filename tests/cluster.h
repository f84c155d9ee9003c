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
// Every process is stopped by PID when the cluster is destroyed.
#ifndef DEXEC_TESTS_CLUSTER_H_
#define DEXEC_TESTS_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "protos/dexec.grpc.pb.h"
#include "tests/process.h"

namespace dexec::testing {

class TestCluster {
 public:
  TestCluster() = default;
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  absl::Status StartBroker(std::vector<std::string> extra_flags = {});
  // Returns the index of the worker in workers().
  absl::StatusOr<size_t> StartWorker(int threads,
                                     std::vector<std::string> extra_flags = {});
  // Waits until the broker lists `n` workers.
  absl::Status WaitForWorkers(int n, absl::Duration timeout = absl::Seconds(20));

  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& worker_endpoint() const { return worker_endpoint_; }
  Process& broker() { return *broker_; }
  std::vector<std::unique_ptr<Process>>& workers() { return workers_; }
  v1::Broker::Stub& stub() { return *stub_; }

  // The dexec CLI against this broker.
  absl::StatusOr<CommandResult> Cli(std::vector<std::string> args,
                                    const std::string& stdin_data = "",
                                    absl::Duration timeout = absl::Seconds(60));

 private:
  std::unique_ptr<Process> broker_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::string grpc_address_;
  std::string worker_endpoint_;
  std::unique_ptr<v1::Broker::Stub> stub_;
};

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_CLUSTER_H_
