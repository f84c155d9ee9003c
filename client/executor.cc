#include "client/executor.h"

#include <utility>

#include "client/session.h"
#include "common/status_macros.h"

namespace dexec {

absl::StatusOr<std::unique_ptr<Executor>> Executor::Connect(
    ExecutorOptions options) {
  ASSIGN_OR_RETURN(std::shared_ptr<internal::Session> session,
                   internal::Session::Connect(options));
  return std::unique_ptr<Executor>(new Executor(std::move(session)));
}

Executor::Executor(std::shared_ptr<internal::Session> session)
    : session_(std::move(session)) {}

Executor::~Executor() { session_->Close(); }

std::shared_ptr<internal::FutureState> Executor::SubmitBytes(
    absl::string_view task, std::string payload, const SubmitOptions& options) {
  return session_->Submit(task, std::move(payload), options);
}

Future<std::string> Executor::Attach(uint64_t job_id) {
  return internal::MakeFuture<std::string>(session_->Attach(job_id));
}

std::unique_ptr<internal::MapStream> Executor::StartMap(
    absl::string_view task, MapOptions options,
    internal::MapStream::InputSource inputs) {
  return std::make_unique<internal::MapStream>(
      session_, std::string(task), std::move(options), std::move(inputs));
}

void Executor::Shutdown(bool wait, bool cancel_futures) {
  session_->Shutdown(wait, cancel_futures);
}

const std::string& Executor::broker() const { return session_->broker(); }

}  // namespace dexec
