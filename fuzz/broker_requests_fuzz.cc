// libFuzzer target: the broker's client front end in-process. One
// BrokerLoop and BrokerService (insecure: every call is admin) serve on
// 127.0.0.1 for the whole run; each input is sent as raw bytes:
//
//   byte 0 % 8 in 0..5: the rest is one unary request to Submit, GetJobs,
//     Cancel, ListJobs, ListWorkers or GetStats;
//   6, 7: the rest is Session stream messages, each prefixed by a length
//     byte; the client half-closes and reads to the end (7: then a GetStats
//     call, to see the broker still answers).
//
// Any bytes get an answer (some status, never a dead or hung server): a
// call that is not answered within its deadline, or finds the server
// unavailable, aborts.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "broker/broker_loop.h"
#include "broker/grpc_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_callback.h"
#include "grpcpp/impl/codegen/sync_stream.h"

namespace dexec::broker {
namespace {

const char* const kUnary[] = {
    "/dexec.v1.Broker/Submit",      "/dexec.v1.Broker/GetJobs",
    "/dexec.v1.Broker/Cancel",      "/dexec.v1.Broker/ListJobs",
    "/dexec.v1.Broker/ListWorkers", "/dexec.v1.Broker/GetStats",
};
const char kSession[] = "/dexec.v1.Broker/Session";
constexpr auto kDeadline = std::chrono::seconds(10);

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "broker_requests_fuzz: %s\n", why.c_str());
  std::abort();
}

// Not answered at all, or the server is gone.
bool Dead(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

class Server {
 public:
  Server() {
    BrokerOptions o;
    // Jobs pile up over a run (no worker takes them): keep them bounded.
    o.max_queued = 2000;
    o.max_queued_bytes = 32 << 20;
    o.max_payload_bytes = 1 << 20;
    o.max_watch_ids = 1000;
    o.max_watched_per_session = 5000;
    o.retention = absl::Seconds(30);
    loop_ = std::make_unique<BrokerLoop>(o);
    if (!loop_->BindWorkers("tcp://127.0.0.1:*").ok()) Fail("bind workers");
    loop_->Start();
    service_ = std::make_unique<BrokerService>(loop_.get(), BrokerAuth{});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port == 0) Fail("gRPC server did not start");
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }

  grpc::Status Unary(const char* method, const std::string& body) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    grpc::Slice slice(body);
    grpc::ByteBuffer req(&slice, 1), resp;
    grpc::Status status;
    absl::Notification done;
    stub_->UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp,
                     [&](grpc::Status s) {
                       status = std::move(s);
                       done.Notify();
                     });
    done.WaitForNotification();
    return status;
  }

  grpc::Status Session(const uint8_t* data, size_t size) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    std::unique_ptr<
        grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
        stream(
            grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                      grpc::ByteBuffer>::
                Create(channel_.get(),
                       grpc::internal::RpcMethod(
                           kSession, grpc::internal::RpcMethod::BIDI_STREAMING),
                       &ctx));
    size_t i = 0;
    while (i < size) {
      const size_t len = data[i++];
      size_t n = std::min<size_t>(len, size - i);
      grpc::Slice slice(data + i, n);
      grpc::ByteBuffer msg(&slice, 1);
      i += n;
      if (!stream->Write(msg)) break;  // the server ended the stream
    }
    stream->WritesDone();
    grpc::ByteBuffer resp;
    while (stream->Read(&resp)) {
    }
    return stream->Finish();
  }

 private:
  std::unique_ptr<BrokerLoop> loop_;
  std::unique_ptr<BrokerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
};

}  // namespace
}  // namespace dexec::broker

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dexec::broker::Dead;
  using dexec::broker::Fail;
  // One server for the run; never destroyed (libFuzzer exits the process).
  static dexec::broker::Server* server = new dexec::broker::Server();
  if (size == 0) return 0;
  const int selector = data[0] % 8;
  if (selector < 6) {
    std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
    grpc::Status s = server->Unary(dexec::broker::kUnary[selector], body);
    if (Dead(s)) {
      Fail(absl::StrCat(dexec::broker::kUnary[selector], " got no answer: ",
                        s.error_code(), " ", s.error_message()));
    }
    return 0;
  }
  grpc::Status s = server->Session(data + 1, size - 1);
  if (Dead(s)) {
    Fail(absl::StrCat("Session got no answer: ", s.error_code(), " ",
                      s.error_message()));
  }
  if (selector == 7) {
    grpc::Status stats = server->Unary(dexec::broker::kUnary[5], "");
    if (!stats.ok()) {
      Fail(absl::StrCat("GetStats after a Session: ", stats.error_code(), " ",
                        stats.error_message()));
    }
  }
  return 0;
}
