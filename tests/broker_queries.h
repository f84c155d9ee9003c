// Read-only questions a process-level test asks a real broker over its gRPC
// API. A failed call fails the test (EXPECT) and yields what was read.
#ifndef DEXEC_TESTS_BROKER_QUERIES_H_
#define DEXEC_TESTS_BROKER_QUERIES_H_

#include <cstdint>
#include <vector>

#include "protos/dexec.grpc.pb.h"

namespace dexec::testing {

// Jobs by id, in order, with their attempt logs (and results if asked).
// Asked in chunks of 200 so no answer grows large: a broker under
// ThreadSanitizer spends superlinear time freeing big responses.
std::vector<v1::Job> GetJobs(v1::Broker::Stub& stub,
                             const std::vector<uint64_t>& ids,
                             bool include_result = false);

// One job; an empty Job if the call failed.
v1::Job GetJob(v1::Broker::Stub& stub, uint64_t id);

// Ids of every job the broker holds, oldest first.
std::vector<uint64_t> AllJobIds(v1::Broker::Stub& stub);

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_BROKER_QUERIES_H_
