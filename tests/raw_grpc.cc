#include "tests/raw_grpc.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "auth/client_credentials.h"

namespace dexec::testing {
namespace {

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

}  // namespace

std::shared_ptr<grpc::Channel> UnlimitedChannel(const std::string& address,
                                                const std::string& token) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!token.empty()) {
    interceptors.push_back(auth::MakeTokenInterceptorFactory(token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, grpc::InsecureChannelCredentials(), args,
      std::move(interceptors));
}

absl::StatusOr<RawAnswer> RawUnaryCall(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const std::string& request, absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::ByteBuffer req = ToBuffer(request);
  grpc::ByteBuffer resp;
  absl::Notification done;
  RawAnswer answer;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &req, &resp,
                 [&](grpc::Status s) {
                   answer.status = std::move(s);
                   done.Notify();
                 });
  // The call's own deadline ends it; this bound is a second line.
  if (!done.WaitForNotificationWithTimeout(timeout + absl::Seconds(10))) {
    context.TryCancel();
    done.WaitForNotification();
    return absl::DeadlineExceededError(absl::StrCat(
        method, " did not answer within ", absl::FormatDuration(timeout)));
  }
  if (answer.status.ok()) answer.response = FromBuffer(resp);
  return answer;
}

RawStream::RawStream(const std::shared_ptr<grpc::Channel>& channel,
                     const std::string& method, absl::Duration timeout)
    : stub_(channel), deadline_(absl::Now() + timeout) {
  context_.set_deadline(absl::ToChronoTime(deadline_));
  call_ = stub_.PrepareCall(&context_, method, &cq_);
  call_->StartCall(reinterpret_cast<void*>(1));
}

RawStream::~RawStream() {
  if (!finished_) {
    context_.TryCancel();
    // Written when the drain below takes the tag: a member, not a local.
    call_->Finish(&abandoned_status_, reinterpret_cast<void*>(5));
  }
  cq_.Shutdown();
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
  }
}

absl::StatusOr<bool> RawStream::Await(void* tag, const char* what) {
  for (;;) {
    void* got = nullptr;
    bool ok = false;
    const grpc::CompletionQueue::NextStatus s = cq_.AsyncNext(
        &got, &ok, absl::ToChronoTime(deadline_ + absl::Seconds(5)));
    if (s != grpc::CompletionQueue::GOT_EVENT) {
      return absl::DeadlineExceededError(
          absl::StrCat("the stream's ", what, " did not complete in time"));
    }
    if (got == reinterpret_cast<void*>(1)) {
      started_ = true;
      if (tag == got) return ok;
      continue;
    }
    if (got == tag) return ok;
  }
}

absl::Status RawStream::Write(const std::string& bytes) {
  if (!started_) {
    absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(1), "start");
    if (!ok.ok()) return ok.status();
  }
  grpc::ByteBuffer buffer = ToBuffer(bytes);
  call_->Write(buffer, reinterpret_cast<void*>(2));
  absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(2), "write");
  if (!ok.ok()) return ok.status();
  if (!*ok)
    return absl::UnavailableError("the stream is broken (write failed)");
  return absl::OkStatus();
}

absl::Status RawStream::WritesDone() {
  if (!started_) {
    absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(1), "start");
    if (!ok.ok()) return ok.status();
  }
  call_->WritesDone(reinterpret_cast<void*>(3));
  absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(3), "half-close");
  return ok.ok() ? absl::OkStatus() : ok.status();
}

absl::StatusOr<std::optional<std::string>> RawStream::Read() {
  if (!started_) {
    absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(1), "start");
    if (!ok.ok()) return ok.status();
  }
  grpc::ByteBuffer buffer;
  call_->Read(&buffer, reinterpret_cast<void*>(4));
  absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(4), "read");
  if (!ok.ok()) return ok.status();
  if (!*ok) return std::optional<std::string>();
  return std::optional<std::string>(FromBuffer(buffer));
}

absl::StatusOr<grpc::Status> RawStream::Finish() {
  grpc::Status status;
  call_->Finish(&status, reinterpret_cast<void*>(5));
  absl::StatusOr<bool> ok = Await(reinterpret_cast<void*>(5), "finish");
  if (!ok.ok()) return ok.status();
  finished_ = true;
  return status;
}

}  // namespace dexec::testing
