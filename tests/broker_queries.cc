#include "tests/broker_queries.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace dexec::testing {
namespace {

constexpr size_t kChunk = 200;

std::unique_ptr<grpc::ClientContext> CallContext() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  return ctx;
}

}  // namespace

std::vector<v1::Job> GetJobs(v1::Broker::Stub& stub,
                             const std::vector<uint64_t>& ids,
                             bool include_result) {
  std::vector<v1::Job> jobs;
  for (size_t i = 0; i < ids.size(); i += kChunk) {
    v1::GetJobsRequest req;
    req.set_include_result(include_result);
    for (size_t j = i; j < ids.size() && j < i + kChunk; ++j) {
      req.add_job_ids(ids[j]);
    }
    // The broker may answer a prefix (its response budget): ask again.
    while (req.job_ids_size() > 0) {
      v1::GetJobsResponse resp;
      grpc::Status s = stub.GetJobs(CallContext().get(), req, &resp);
      EXPECT_TRUE(s.ok()) << "GetJobs: " << s.error_message();
      if (!s.ok() || resp.jobs_size() == 0) return jobs;
      req.mutable_job_ids()->erase(
          req.mutable_job_ids()->begin(),
          req.mutable_job_ids()->begin() + resp.jobs_size());
      for (v1::Job& j : *resp.mutable_jobs()) jobs.push_back(std::move(j));
    }
  }
  return jobs;
}

v1::Job GetJob(v1::Broker::Stub& stub, uint64_t id) {
  std::vector<v1::Job> jobs = GetJobs(stub, {id});
  return jobs.size() == 1 ? jobs[0] : v1::Job();
}

std::vector<uint64_t> AllJobIds(v1::Broker::Stub& stub) {
  std::vector<uint64_t> ids;
  v1::ListJobsRequest req;
  req.set_limit(1 << 30);
  for (;;) {
    v1::ListJobsResponse resp;
    grpc::Status s = stub.ListJobs(CallContext().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << "ListJobs: " << s.error_message();
    for (const v1::Job& j : resp.jobs()) ids.push_back(j.id());
    // Truncated at the broker's response budget: the next page.
    if (!s.ok() || !resp.truncated() || resp.jobs_size() == 0) break;
    req.set_before_id(ids.back());
  }
  std::reverse(ids.begin(), ids.end());  // ListJobs answers newest first
  return ids;
}

}  // namespace dexec::testing
