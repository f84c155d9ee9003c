#include "broker/zap_handler.h"

#include <pthread.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "auth/curve_keys.h"
#include "common/log.h"

namespace dexec::broker {
namespace {

constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr absl::Duration kRefusalLogInterval = absl::Seconds(10);
// A request has 6 frames plus one per credential (CURVE: one). More is a
// peer we do not understand: refuse.
constexpr size_t kMaxZapFrames = 16;

}  // namespace

ZapHandler::ZapHandler(zmq::context_t* context,
                       const auth::WorkerKeyStore* keys)
    : context_(context), keys_(keys) {}

ZapHandler::~ZapHandler() { Stop(); }

absl::Status ZapHandler::Start() {
  try {
    socket_ = zmq::socket_t(*context_, zmq::socket_type::rep);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot bind the worker authentication handler (",
                     kZapEndpoint, "): ", e.what(),
                     "; refusing to start, since without it any CURVE "
                     "key would be admitted"));
  }
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "broker-zap");
    Run();
  });
  return absl::OkStatus();
}

void ZapHandler::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  thread_.join();
}

void ZapHandler::Run() {
  absl::Time last_logged = absl::InfinitePast();
  while (!stop_.load()) {
    zmq::pollitem_t item = {socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      // Wakes to notice Stop(); handshakes are answered at once.
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      if ((item.revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> frames;
      do {
        zmq::message_t m;
        (void)socket_.recv(m, zmq::recv_flags::none);
        const bool more = m.more();
        if (frames.size() < kMaxZapFrames) frames.push_back(std::move(m));
        if (!more) break;
      } while (true);
      // version, request id, domain, address, identity, mechanism, creds...
      std::string status = "400", text = "key not admitted", user;
      std::string request_id, address, mechanism;
      if (frames.size() >= 6) {
        request_id = frames[1].to_string();
        address = frames[3].to_string();
        mechanism = frames[5].to_string();
      }
      if (frames.size() == 7 && frames[0].to_string() == "1.0" &&
          mechanism == "CURVE" && frames[6].size() == 32) {
        const std::string key = frames[6].to_string();
        if (keys_->NameOfKey(key).has_value()) {
          status = "200";
          text = "OK";
          user = auth::BinaryToZ85(key);
        }
      } else {
        text = "CURVE required";
      }
      if (status != "200") {
        const uint64_t n = refused_.fetch_add(1) + 1;
        const absl::Time now = absl::Now();
        if (now - last_logged >= kRefusalLogInterval) {
          last_logged = now;
          DEXEC_LOG(WARNING) << "worker handshake refused peer=" << address
                             << " mechanism=" << mechanism << " reason=\""
                             << text << "\" refused_total=" << n;
        }
      }
      socket_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(user), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(std::string()), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      DEXEC_LOG(ERROR) << "worker authentication handler: " << e.what();
    }
  }
  socket_.close();
}

}  // namespace dexec::broker
