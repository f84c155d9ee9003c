// The broker's ZeroMQ authentication handler (ZAP, RFC 27): on its own
// thread, "broker-zap", it answers every CURVE handshake on the worker
// socket, admitting only public keys the WorkerKeyStore holds.
//
// A CURVE server socket with no ZAP handler bound admits any key, so the
// handler binds in Start(), before the worker socket is bound; Start()
// failing is fatal to the broker. The admitted key's Z85 form becomes the
// connection's ZAP user id ("User-Id" on every message), which the loop
// uses to bind attempts to the worker that holds them.
//
// Thread-safe (Start and Stop from one thread; the rest from any).
#ifndef DEXEC_BROKER_ZAP_HANDLER_H_
#define DEXEC_BROKER_ZAP_HANDLER_H_

#include <atomic>
#include <cstdint>
#include <thread>

#include "absl/status/status.h"
#include "auth/worker_key_store.h"
#include "zmq.hpp"

namespace dexec::broker {

class ZapHandler {
 public:
  // `context` is the worker socket's context and `keys` the admitted keys;
  // both borrowed, and must outlive Stop().
  ZapHandler(zmq::context_t* context, const auth::WorkerKeyStore* keys);
  ~ZapHandler();  // Stop()s
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Binds inproc://zeromq.zap.01 and starts the thread. FAILED_PRECONDITION
  // if the endpoint cannot be bound (then nothing would check keys).
  absl::Status Start();
  void Stop();

  // Handshakes refused because the key is not admitted.
  uint64_t refused() const { return refused_.load(); }

 private:
  void Run();

  zmq::context_t* const context_;
  const auth::WorkerKeyStore* const keys_;
  zmq::socket_t socket_;  // owned by the thread once started
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_ZAP_HANDLER_H_
