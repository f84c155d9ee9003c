// gRPC calls with arbitrary bytes, as an outside client (one written from
// protos/ alone, or a hostile one) can make them: grpc::GenericStub, no
// generated stub, so a test can send what is not valid protobuf.
//
//   RawStream s(channel, "/dexec.v1.Broker/Session");
//   ASSERT_OK(s.Write(request.SerializeAsString()));
//   ASSERT_OK(s.WritesDone());
//   while (absl::StatusOr<std::optional<std::string>> m = s.Read(); ...)
//   grpc::Status end = s.Finish().value();
//
// Every operation waits at most its timeout and fails with a message saying
// what did not happen. Not thread-safe.
#ifndef DEXEC_TESTS_RAW_GRPC_H_
#define DEXEC_TESTS_RAW_GRPC_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace dexec::testing {

// A channel that takes messages of any size; with `token`, every call
// carries it (authorization: Bearer), as any client of a broker must.
std::shared_ptr<grpc::Channel> UnlimitedChannel(const std::string& address,
                                                const std::string& token = "");

// One unary call of `method` (e.g. "/dexec.v1.Broker/GetJobs") with
// `request` as the message bytes. Returns the call's status and, if OK,
// the response bytes; fails only if no answer came within `timeout`.
struct RawAnswer {
  grpc::Status status;
  std::string response;
};
absl::StatusOr<RawAnswer> RawUnaryCall(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const std::string& request, absl::Duration timeout = absl::Seconds(30));

// A bidirectional stream of raw messages.
class RawStream {
 public:
  RawStream(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& method,
            absl::Duration timeout = absl::Seconds(60));
  ~RawStream();
  RawStream(const RawStream&) = delete;
  RawStream& operator=(const RawStream&) = delete;

  absl::Status Write(const std::string& bytes);
  // Half-closes: no more messages from this side.
  absl::Status WritesDone();
  // The next message, or nullopt once the server ended its side.
  absl::StatusOr<std::optional<std::string>> Read();
  // The call's status (after Read returned nullopt).
  absl::StatusOr<grpc::Status> Finish();

 private:
  // Waits for the operation tagged `tag`; false if it failed (ok=false).
  absl::StatusOr<bool> Await(void* tag, const char* what);

  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  grpc::GenericStub stub_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::Status abandoned_status_;  // of a stream dropped unfinished
  absl::Time deadline_;
  bool started_ = false;
  bool finished_ = false;
};

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_RAW_GRPC_H_
