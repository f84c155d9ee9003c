// What a dexec.v1.Job.State means, in one place for the broker, the client
// library and the CLI (docs/DESIGN.md, "Job states").
#ifndef DEXEC_PROTOS_JOB_STATE_H_
#define DEXEC_PROTOS_JOB_STATE_H_

#include "protos/dexec.pb.h"

namespace dexec {

// SUCCEEDED, FAILED or CANCELLED: the job is over and never changes again.
// QUEUED and RUNNING are not, nor is STATE_UNSPECIFIED, which a job never
// has (an event for an id the broker does not know carries it, with error
// kind not_found: see error_kind.h).
inline bool IsTerminal(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED ||
         state == v1::Job::CANCELLED;
}

}  // namespace dexec

#endif  // DEXEC_PROTOS_JOB_STATE_H_
