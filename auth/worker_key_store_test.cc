// WorkerKeyStore against a real auth directory, and against a real ZeroMQ
// CURVE handshake: a ROUTER whose ZAP handler asks NameOfKey admits the
// first start's worker.key and a created key, and refuses an unknown key
// and a revoked one.
#include "auth/worker_key_store.h"

#include <sys/stat.h>
#include <zmq.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/curve_keys.h"
#include "auth/secret_file.h"
#include "auth/testing.h"
#include "gtest/gtest.h"

namespace dexec::auth {
namespace {

using ::dexec::auth::testing::FreshPath;
using ::dexec::auth::testing::ModeOf;
using ::dexec::auth::testing::WriteTestFile;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> s = ReadSmallFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

struct Fixture {
  std::string dir = FreshPath("auth");
  CurveKeypair broker = *LoadOrCreateBrokerKey(dir);

  std::unique_ptr<WorkerKeyStore> Open(absl::Time now = kT0) {
    absl::StatusOr<std::unique_ptr<WorkerKeyStore>> store =
        WorkerKeyStore::Open(dir, broker, now);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
};

std::string Binary(const std::string& z85) { return *Z85ToBinary(z85); }

TEST(WorkerKeyStore, FirstOpenAdmitsLocalAndWritesWorkerKey) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->created_local_key());
  EXPECT_EQ(store->worker_key_path(), f.dir + "/worker.key");
  EXPECT_EQ(ModeOf(f.dir + "/worker.key"), 0600);
  EXPECT_EQ(ModeOf(f.dir + "/worker_keys"), 0600);

  const absl::StatusOr<WorkerCredentials> creds =
      ReadWorkerCredentials(f.dir + "/worker.key");
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_EQ(creds->name, "local");
  EXPECT_EQ(creds->broker_public_z85, f.broker.public_z85);
  EXPECT_EQ(store->NameOfKey(Binary(creds->key.public_z85)), "local");

  const std::string keys = Read(f.dir + "/worker_keys");
  EXPECT_EQ(keys,
            absl::StrCat("# dexec worker keys: public keys only\n", "local ",
                         creds->key.public_z85, " 1700000000\n"));
  EXPECT_FALSE(absl::StrContains(keys, creds->key.secret_z85));
}

TEST(WorkerKeyStore, RestartKeepsKeysAndNeverOverwritesWorkerKey) {
  Fixture f;
  ASSERT_NE(f.Open(), nullptr);
  const std::string worker_key = Read(f.dir + "/worker.key");
  ASSERT_EQ(unlink((f.dir + "/worker.key").c_str()), 0);  // copied away

  std::unique_ptr<WorkerKeyStore> again = f.Open();
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->created_local_key());
  EXPECT_FALSE(PathExists(f.dir + "/worker.key"));
  const WorkerCredentials creds = *ParseWorkerCredentials(worker_key);
  EXPECT_EQ(again->NameOfKey(Binary(creds.key.public_z85)), "local");
}

TEST(WorkerKeyStore, FirstStartInterruptedAfterWorkerKeyAdmitsIt) {
  Fixture f;
  ASSERT_NE(f.Open(), nullptr);
  const std::string worker_key = Read(f.dir + "/worker.key");
  ASSERT_EQ(unlink((f.dir + "/worker_keys").c_str()), 0);

  std::unique_ptr<WorkerKeyStore> again = f.Open();
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->created_local_key());
  EXPECT_EQ(Read(f.dir + "/worker.key"), worker_key);
  const WorkerCredentials creds = *ParseWorkerCredentials(worker_key);
  EXPECT_EQ(again->NameOfKey(Binary(creds.key.public_z85)), "local");
}

TEST(WorkerKeyStore, WorkerKeyOfAnotherBrokerIsRefused) {
  Fixture f;
  ASSERT_NE(f.Open(), nullptr);
  ASSERT_EQ(unlink((f.dir + "/worker_keys").c_str()), 0);
  const CurveKeypair other = *NewCurveKeypair();
  const absl::StatusOr<std::unique_ptr<WorkerKeyStore>> store =
      WorkerKeyStore::Open(f.dir, other, kT0);
  ASSERT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "another broker"));
}

TEST(WorkerKeyStore, CreatedKeyIsAdmittedAtOnceAndAfterRestart) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  const absl::StatusOr<WorkerCredentials> gpu =
      store->Create("gpu-1", kT0 + absl::Seconds(5));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->name, "gpu-1");
  EXPECT_EQ(gpu->broker_public_z85, f.broker.public_z85);
  EXPECT_EQ(*PublicFromSecret(gpu->key.secret_z85), gpu->key.public_z85);
  EXPECT_EQ(store->NameOfKey(Binary(gpu->key.public_z85)), "gpu-1");
  EXPECT_FALSE(
      absl::StrContains(Read(f.dir + "/worker_keys"), gpu->key.secret_z85));

  store.reset();
  std::unique_ptr<WorkerKeyStore> again = f.Open();
  EXPECT_EQ(again->NameOfKey(Binary(gpu->key.public_z85)), "gpu-1");
  const std::vector<WorkerKeyInfo> list = again->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "gpu-1");
  EXPECT_EQ(list[0].public_z85, gpu->key.public_z85);
  EXPECT_EQ(list[0].created_at, kT0 + absl::Seconds(5));
  EXPECT_EQ(list[1].name, "local");
}

TEST(WorkerKeyStore, CreateRefusesALiveNameAndABadName) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  EXPECT_TRUE(absl::IsAlreadyExists(store->Create("local", kT0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store->Create("a b", kT0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store->Create("", kT0).status()));
  EXPECT_EQ(store->List().size(), 1u);
}

TEST(WorkerKeyStore, RevokeTakesEffectAtOnceAndSurvivesRestart) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  const WorkerCredentials gpu = *store->Create("gpu-1", kT0);
  ASSERT_TRUE(store->Revoke("gpu-1").ok());
  EXPECT_EQ(store->NameOfKey(Binary(gpu.key.public_z85)), std::nullopt);
  EXPECT_TRUE(absl::IsNotFound(store->Revoke("gpu-1")));
  store.reset();
  EXPECT_EQ(f.Open()->NameOfKey(Binary(gpu.key.public_z85)), std::nullopt);
}

TEST(WorkerKeyStore, NameOfKeyRefusesUnknownAndWrongSizedKeys) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  EXPECT_EQ(store->NameOfKey(Binary(NewCurveKeypair()->public_z85)),
            std::nullopt);
  EXPECT_EQ(store->NameOfKey(""), std::nullopt);
  EXPECT_EQ(store->NameOfKey(std::string(31, '\0')), std::nullopt);
  // The broker's own key is not a worker's.
  EXPECT_EQ(store->NameOfKey(Binary(f.broker.public_z85)), std::nullopt);
}

TEST(WorkerKeyStore, RefusesAWorkerKeysFileOthersCanWrite) {
  Fixture f;
  ASSERT_NE(f.Open(), nullptr);
  ASSERT_EQ(chmod((f.dir + "/worker_keys").c_str(), 0664), 0);
  const absl::StatusOr<std::unique_ptr<WorkerKeyStore>> store =
      WorkerKeyStore::Open(f.dir, f.broker, kT0);
  ASSERT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "chmod 600"));
}

TEST(WorkerKeyStore, RefusesAMalformedFileNamingTheLine) {
  Fixture f;
  ASSERT_TRUE(EnsureDirectory(f.dir, 0700).ok());
  const std::string key = NewCurveKeypair()->public_z85;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a " + key, "2 fields, not 3"},
      {"a " + key.substr(1) + " 1", "not a 40-character Z85 key"},
      {"a/b " + key + " 1", "invalid name"},
      {"a " + key + " x", "not an integer"},
      {"b " + key + " 1", "the same key as line 2"},
      {"a " + NewCurveKeypair()->public_z85 + " 1", "the name appears twice"},
  };
  for (const auto& [line, why] : cases) {
    WriteTestFile(f.dir + "/worker_keys",
                  "# dexec worker keys: public keys only\na " + key + " 1\n" +
                      line + "\n",
                  0600);
    const absl::StatusOr<std::unique_ptr<WorkerKeyStore>> store =
        WorkerKeyStore::Open(f.dir, f.broker, kT0);
    ASSERT_TRUE(absl::IsFailedPrecondition(store.status())) << line;
    EXPECT_TRUE(
        absl::StrContains(store.status().message(), "worker_keys line 3: "))
        << store.status();
    EXPECT_TRUE(absl::StrContains(store.status().message(), why))
        << store.status();
  }
}

TEST(WorkerKeyStore, ConcurrentLookupsSeeCreatesAndRevokes) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  const std::string local =
      Binary(ReadWorkerCredentials(f.dir + "/worker.key")->key.public_z85);
  std::atomic<bool> stop{false};
  std::atomic<int> misses{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (store->NameOfKey(local) != "local") misses.fetch_add(1);
        store->List();
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    const std::string name = absl::StrCat("w", i);
    const WorkerCredentials c = *store->Create(name, kT0);
    EXPECT_EQ(store->NameOfKey(Binary(c.key.public_z85)), name);
    ASSERT_TRUE(store->Revoke(name).ok());
  }
  stop.store(true);
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(misses.load(), 0);
}

// ---- A real CURVE handshake, judged by a ZAP handler asking NameOfKey ----

// Answers ZAP requests (RFC 27) on its own thread until destroyed: 200 with
// the key's name as User-Id if NameOfKey knows the key, 400 otherwise.
class ZapHandler {
 public:
  ZapHandler(void* ctx, const WorkerKeyStore* store) : store_(store) {
    socket_ = zmq_socket(ctx, ZMQ_REP);
    EXPECT_EQ(zmq_bind(socket_, "inproc://zeromq.zap.01"), 0);
    thread_ = std::thread([this] { Run(); });
  }
  ~ZapHandler() {
    stop_.store(true);
    thread_.join();
    zmq_close(socket_);
  }

 private:
  void Run() {
    while (!stop_.load()) {
      zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 20) <= 0) continue;
      std::vector<std::string> frames;
      int more = 1;
      while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket_, 0) < 0) return;
        frames.emplace_back(static_cast<char*>(zmq_msg_data(&msg)),
                            zmq_msg_size(&msg));
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
      }
      // version, request id, domain, address, routing id, mechanism, key
      std::optional<std::string> name;
      if (frames.size() == 7 && frames[5] == "CURVE") {
        name = store_->NameOfKey(frames[6]);
      }
      const std::vector<std::string> reply = {
          "1.0",
          frames.size() > 1 ? frames[1] : "",
          name ? "200" : "400",
          name ? "OK" : "unknown worker key",
          name.value_or(""),
          ""};
      for (size_t i = 0; i < reply.size(); ++i) {
        zmq_send(socket_, reply[i].data(), reply[i].size(),
                 i + 1 < reply.size() ? ZMQ_SNDMORE : 0);
      }
    }
  }

  const WorkerKeyStore* const store_;
  void* socket_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

enum class Handshake { kSucceeded, kRefused, kTimedOut };

// Connects a DEALER with `creds` to `endpoint` and waits (5 s at most) for
// the handshake to succeed or be refused by the ZAP handler.
Handshake Connect(void* ctx, const std::string& endpoint,
                  const WorkerCredentials& creds) {
  static std::atomic<int> n{0};
  void* dealer = zmq_socket(ctx, ZMQ_DEALER);
  zmq_setsockopt(dealer, ZMQ_CURVE_SERVERKEY, creds.broker_public_z85.c_str(),
                 41);
  zmq_setsockopt(dealer, ZMQ_CURVE_PUBLICKEY, creds.key.public_z85.c_str(), 41);
  zmq_setsockopt(dealer, ZMQ_CURVE_SECRETKEY, creds.key.secret_z85.c_str(), 41);
  const std::string monitor = absl::StrCat("inproc://monitor-", n.fetch_add(1));
  zmq_socket_monitor(
      dealer, monitor.c_str(),
      ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  void* events = zmq_socket(ctx, ZMQ_PAIR);
  zmq_connect(events, monitor.c_str());
  int timeout_ms = 5000;
  zmq_setsockopt(events, ZMQ_RCVTIMEO, &timeout_ms, sizeof(timeout_ms));
  zmq_connect(dealer, endpoint.c_str());

  Handshake result = Handshake::kTimedOut;
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, events, 0) >= 6) {
    uint16_t event;
    std::memcpy(&event, zmq_msg_data(&msg), sizeof(event));
    result = event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED ? Handshake::kSucceeded
                                                    : Handshake::kRefused;
  }
  zmq_msg_close(&msg);
  zmq_socket_monitor(dealer, nullptr, 0);
  int linger = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_setsockopt(events, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(events);
  zmq_close(dealer);
  return result;
}

TEST(WorkerKeyStore, CurveHandshakeAdmitsKnownKeysAndRefusesOthers) {
  Fixture f;
  std::unique_ptr<WorkerKeyStore> store = f.Open();
  const WorkerCredentials local = *ReadWorkerCredentials(f.dir + "/worker.key");
  const WorkerCredentials gpu = *store->Create("gpu-1", kT0);
  WorkerCredentials stranger = gpu;
  stranger.name = "stranger";
  stranger.key = *NewCurveKeypair();

  void* ctx = zmq_ctx_new();
  {
    ZapHandler zap(ctx, store.get());
    void* router = zmq_socket(ctx, ZMQ_ROUTER);
    const int one = 1;
    zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof(one));
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, f.broker.secret_z85.c_str(),
                   41);
    ASSERT_EQ(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    char endpoint[256];
    size_t size = sizeof(endpoint);
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &size);

    EXPECT_EQ(Connect(ctx, endpoint, local), Handshake::kSucceeded);
    EXPECT_EQ(Connect(ctx, endpoint, gpu), Handshake::kSucceeded);
    EXPECT_EQ(Connect(ctx, endpoint, stranger), Handshake::kRefused);
    ASSERT_TRUE(store->Revoke("gpu-1").ok());
    EXPECT_EQ(Connect(ctx, endpoint, gpu), Handshake::kRefused);
    EXPECT_EQ(Connect(ctx, endpoint, local), Handshake::kSucceeded);

    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(router);
  }
  zmq_ctx_term(ctx);
}

}  // namespace
}  // namespace dexec::auth
