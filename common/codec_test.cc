#include "common/codec.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "protos/tasks.pb.h"

namespace dexec {
namespace {

template <typename T>
T RoundTrip(const T& v) {
  absl::StatusOr<T> out = Codec<T>::Decode(Codec<T>::Encode(v));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.value_or(T{});
}

TEST(Codec, RoundTripsScalars) {
  EXPECT_EQ(RoundTrip<std::string>(std::string("a\0b", 3)),
            std::string("a\0b", 3));
  EXPECT_EQ(RoundTrip<int64_t>(-1234567890123), -1234567890123);
  EXPECT_EQ(RoundTrip<uint32_t>(4000000000u), 4000000000u);
  EXPECT_EQ(RoundTrip<double>(0.1), 0.1);
  EXPECT_EQ(RoundTrip<bool>(true), true);
}

TEST(Codec, EncodesNumbersAsDecimalText) {
  EXPECT_EQ(Codec<int>::Encode(42), "42");
  EXPECT_EQ(Codec<int>::Decode("7").value(), 7);
}

TEST(Codec, RejectsTextThatIsNotANumber) {
  absl::StatusOr<int> v = Codec<int>::Decode("seven");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Codec<uint8_t>::Decode("300").ok());
  EXPECT_FALSE(Codec<double>::Decode("").ok());
}

TEST(Codec, RoundTripsProtobufMessages) {
  tasks::ExecRequest req;
  req.add_argv("echo");
  req.add_argv("hi");
  (*req.mutable_env())["A"] = "1";
  tasks::ExecRequest out = RoundTrip(req);
  EXPECT_EQ(out.argv_size(), 2);
  EXPECT_EQ(out.env().at("A"), "1");
}

TEST(Codec, RejectsGarbageAsAMessage) {
  EXPECT_FALSE(Codec<tasks::ExecRequest>::Decode("\xff\xff\xff").ok());
}

}  // namespace
}  // namespace dexec
