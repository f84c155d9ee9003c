// The Caller (broker_core.h) a token's Principal (auth/token_store.h) makes:
// the one mapping from token roles to what the core enforces, shared by the
// gRPC front end and the HTTP listener.
#ifndef DEXEC_BROKER_CALLER_OF_H_
#define DEXEC_BROKER_CALLER_OF_H_

#include "auth/token_store.h"
#include "broker/broker_core.h"

namespace dexec::broker {

inline Caller CallerOf(const auth::Principal& p) {
  Caller caller;
  caller.name = p.name;
  caller.role = Caller::kRead;  // the least, should a role ever be unknown
  switch (p.role) {
    case auth::Role::kAdmin:
      caller.role = Caller::kAdmin;
      break;
    case auth::Role::kSubmit:
      caller.role = Caller::kSubmit;
      break;
    case auth::Role::kRead:
      caller.role = Caller::kRead;
      break;
  }
  return caller;
}

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_CALLER_OF_H_
