#include "common/loopback.h"

#include "gtest/gtest.h"

namespace dexec {
namespace {

TEST(Loopback, KnowsLoopbackHosts) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("*"));
  EXPECT_FALSE(IsLoopbackHost("[::]"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("broker.internal"));
  EXPECT_FALSE(IsLoopbackHost("[::1"));
}

TEST(Loopback, ReadsGrpcAndZmqAddresses) {
  EXPECT_TRUE(IsLoopbackHostPort("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackHostPort("[::1]:0"));
  EXPECT_FALSE(IsLoopbackHostPort("0.0.0.0:50051"));
  EXPECT_FALSE(IsLoopbackHostPort("127.0.0.1"));
  EXPECT_TRUE(IsLocalZmqEndpoint("tcp://127.0.0.1:*"));
  EXPECT_TRUE(IsLocalZmqEndpoint("ipc:///tmp/dexec.sock"));
  EXPECT_FALSE(IsLocalZmqEndpoint("tcp://*:50052"));
  EXPECT_FALSE(IsLocalZmqEndpoint("tcp://0.0.0.0:50052"));
  EXPECT_FALSE(IsLocalZmqEndpoint("tcp://eth0:50052"));
}

}  // namespace
}  // namespace dexec
