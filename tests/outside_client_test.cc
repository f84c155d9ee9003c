// Issue 10, item 6: what a client written from protos/ alone meets (a
// Python grpcio client found these), driven with raw gRPC bytes against a
// real broker and worker.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "protos/dexec.pb.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"
#include "tests/raw_grpc.h"

namespace dexec::testing {
namespace {

class OutsideClientTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::vector<std::string> flags;
    if (!GetParam()) flags.push_back("--in_memory");
    ASSERT_TRUE(cluster_.StartBroker(flags).ok());
    ASSERT_TRUE(cluster_.StartWorker(2).ok());
    ASSERT_TRUE(cluster_.WaitForWorkers(1).ok());
    channel_ =
        UnlimitedChannel(cluster_.grpc_address(), cluster_.admin_token());
  }

  static std::string SubmitRequest(uint64_t seq, const std::string& task,
                                   const std::string& payload) {
    v1::SessionRequest req;
    req.mutable_submit()->set_seq(seq);
    v1::JobSpec* job = req.mutable_submit()->add_jobs();
    job->set_task(task);
    job->set_payload(payload);
    return req.SerializeAsString();
  }

  // Every response until the broker ends the stream, and its status.
  static void ReadToEnd(RawStream& stream,
                        std::vector<v1::SessionResponse>* responses,
                        grpc::Status* status) {
    for (;;) {
      absl::StatusOr<std::optional<std::string>> m = stream.Read();
      ASSERT_TRUE(m.ok()) << m.status();
      if (!m->has_value()) break;
      v1::SessionResponse r;
      ASSERT_TRUE(r.ParseFromString(**m));
      responses->push_back(std::move(r));
    }
    absl::StatusOr<grpc::Status> end = stream.Finish();
    ASSERT_TRUE(end.ok()) << end.status();
    *status = *end;
  }

  TestCluster cluster_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Python's natural stub.Session(iter([request])): one submit, then the
// client half-closes. The acknowledgement must come before the stream ends
// (it often did not: the stream finished OK with nothing in it).
TEST_P(OutsideClientTest, AHalfCloseAfterASubmitStillGetsItsAcknowledgement) {
  for (int round = 0; round < 20; ++round) {
    RawStream stream(channel_, "/dexec.v1.Broker/Session");
    ASSERT_TRUE(stream.Write(SubmitRequest(round + 1, "sys.echo", "x")).ok());
    ASSERT_TRUE(stream.WritesDone().ok());
    std::vector<v1::SessionResponse> responses;
    grpc::Status status;
    ReadToEnd(stream, &responses, &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    ASSERT_FALSE(responses.empty()) << "round " << round << ": no Submitted";
    ASSERT_TRUE(responses[0].has_submitted()) << responses[0].DebugString();
    EXPECT_EQ(responses[0].submitted().seq(), static_cast<uint64_t>(round + 1));
    EXPECT_EQ(responses[0].submitted().job_ids_size(), 1);
  }
}

TEST_P(OutsideClientTest,
       ASessionMessageThatIsNotProtobufEndsTheStreamInvalid) {
  RawStream stream(channel_, "/dexec.v1.Broker/Session");
  // A submit first: it is still acknowledged before the stream ends.
  ASSERT_TRUE(stream.Write(SubmitRequest(1, "sys.echo", "x")).ok());
  // Field 1, length-delimited, claiming 127 bytes that are not there.
  ASSERT_TRUE(stream.Write(std::string("\x0a\x7f\x01\x02", 4)).ok());
  std::vector<v1::SessionResponse> responses;
  grpc::Status status;
  ReadToEnd(stream, &responses, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "Session message 2"))
      << status.error_message();
  EXPECT_TRUE(
      absl::StrContains(status.error_message(), "dexec.v1.SessionRequest"))
      << status.error_message();
  ASSERT_FALSE(responses.empty());
  EXPECT_TRUE(responses[0].has_submitted());
  // The broker goes on serving.
  absl::StatusOr<RawAnswer> stats =
      RawUnaryCall(channel_, "/dexec.v1.Broker/GetStats", "");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_TRUE(stats->status.ok()) << stats->status.error_message();
}

TEST_P(OutsideClientTest,
       AUnaryRequestThatIsNotProtobufIsInvalidAndNamesTheMethod) {
  for (const char* method :
       {"Submit", "GetJobs", "Cancel", "ListJobs", "ListWorkers", "GetStats"}) {
    absl::StatusOr<RawAnswer> answer =
        RawUnaryCall(channel_, std::string("/dexec.v1.Broker/") + method,
                     std::string("\xff\xff\xff", 3));
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << answer->status.error_message();
    EXPECT_TRUE(absl::StrContains(answer->status.error_message(),
                                  std::string("the ") + method + " request"))
        << answer->status.error_message();
  }
  // A valid one still works.
  v1::GetJobsRequest req;
  req.add_job_ids(12345);
  absl::StatusOr<RawAnswer> answer = RawUnaryCall(
      channel_, "/dexec.v1.Broker/GetJobs", req.SerializeAsString());
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->status.ok()) << answer->status.error_message();
  v1::GetJobsResponse resp;
  ASSERT_TRUE(resp.ParseFromString(answer->response));
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).error().kind(), "not_found");
}

TEST_P(OutsideClientTest, AFinishedJobStillReportsItsPayloadSize) {
  RawStream stream(channel_, "/dexec.v1.Broker/Session");
  ASSERT_TRUE(stream.Write(SubmitRequest(1, "sys.echo", "12345")).ok());
  uint64_t id = 0;
  bool finished = false;
  while (!finished) {
    absl::StatusOr<std::optional<std::string>> m = stream.Read();
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE(m->has_value()) << "the stream ended before the job did";
    v1::SessionResponse r;
    ASSERT_TRUE(r.ParseFromString(**m));
    if (r.has_submitted()) id = r.submitted().job_ids(0);
    for (const v1::JobEvent& e : r.events().events()) {
      if (e.job_id() == id && e.state() == v1::Job::SUCCEEDED) finished = true;
    }
  }
  EXPECT_EQ(GetJob(cluster_.stub(), id).payload_size(), 5u);
  if (GetParam()) {
    // And from the journal, after a restart.
    ASSERT_TRUE(cluster_.KillBroker().ok());
    ASSERT_TRUE(cluster_.RestartBroker().ok());
    EXPECT_EQ(GetJob(cluster_.stub(), id).payload_size(), 5u);
  }
}

INSTANTIATE_TEST_SUITE_P(DurableAndInMemory, OutsideClientTest,
                         ::testing::Bool(), [](const auto& info) {
                           return info.param ? "Durable" : "InMemory";
                         });

}  // namespace
}  // namespace dexec::testing
