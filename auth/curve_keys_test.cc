// CURVE keys with the real libzmq, and the broker key and worker credentials
// files in $TEST_TMPDIR.
#include "auth/curve_keys.h"

#include <sys/stat.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "auth/secret_file.h"
#include "auth/testing.h"
#include "gtest/gtest.h"

namespace dexec::auth {
namespace {

using ::dexec::auth::testing::FreshPath;
using ::dexec::auth::testing::ModeOf;
using ::dexec::auth::testing::WriteTestFile;

// The client keypair of libzmq's own CURVE tests (tests/testutil_security).
constexpr char kKnownPublic[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
constexpr char kKnownSecret[] = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> s = ReadSmallFile(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

WorkerCredentials SomeCredentials() {
  WorkerCredentials creds;
  creds.name = "gpu-1";
  creds.key = *NewCurveKeypair();
  creds.broker_public_z85 = NewCurveKeypair()->public_z85;
  return creds;
}

TEST(CurveKeys, NewKeypairIsTwoZ85KeysThatBelongTogether) {
  const absl::StatusOr<CurveKeypair> a = NewCurveKeypair();
  const absl::StatusOr<CurveKeypair> b = NewCurveKeypair();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(IsZ85Key(a->public_z85));
  EXPECT_TRUE(IsZ85Key(a->secret_z85));
  EXPECT_EQ(*PublicFromSecret(a->secret_z85), a->public_z85);
  EXPECT_NE(a->secret_z85, b->secret_z85);
  EXPECT_NE(a->public_z85, b->public_z85);
}

TEST(CurveKeys, PublicFromSecretMatchesLibzmqTestVector) {
  const absl::StatusOr<std::string> pub = PublicFromSecret(kKnownSecret);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(*pub, kKnownPublic);
  EXPECT_TRUE(absl::IsInvalidArgument(PublicFromSecret("short").status()));
}

TEST(CurveKeys, Z85AndBinaryRoundTrip) {
  const absl::StatusOr<std::string> bin = Z85ToBinary(kKnownPublic);
  ASSERT_TRUE(bin.ok()) << bin.status();
  EXPECT_EQ(bin->size(), 32u);
  EXPECT_EQ(BinaryToZ85(*bin), kKnownPublic);
  const std::string zeros(32, '\0');
  EXPECT_EQ(*Z85ToBinary(BinaryToZ85(zeros)), zeros);
  EXPECT_EQ(BinaryToZ85(std::string(31, 'x')), "");
  EXPECT_EQ(BinaryToZ85(std::string(33, 'x')), "");
}

TEST(CurveKeys, IsZ85KeyRefusesWrongLengthCharactersAndOverflow) {
  EXPECT_TRUE(IsZ85Key(kKnownPublic));
  EXPECT_FALSE(IsZ85Key(""));
  EXPECT_FALSE(IsZ85Key(std::string(kKnownPublic).substr(0, 39)));
  EXPECT_FALSE(IsZ85Key(std::string(kKnownPublic) + "0"));
  for (const char bad : {' ', '"', ',', '\'', ';', '\\', '_', '`', '|', '~'}) {
    std::string key = kKnownPublic;
    key[7] = bad;
    EXPECT_FALSE(IsZ85Key(key)) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(Z85ToBinary(key).status()));
  }
  // "#####" is 85^5 - 1 > 2^32 - 1: not 4 bytes.
  EXPECT_FALSE(IsZ85Key(std::string(40, '#')));
  EXPECT_TRUE(IsZ85Key(std::string(40, '0')));
}

TEST(CurveKeys, BrokerKeyIsCreatedOnceThenOnlyRead) {
  const std::string dir = FreshPath("auth");
  const absl::StatusOr<CurveKeypair> first = LoadOrCreateBrokerKey(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(ModeOf(dir), 0700);
  EXPECT_EQ(ModeOf(dir + "/broker.key"), 0600);
  EXPECT_EQ(ModeOf(dir + "/broker.pub"), 0644);
  EXPECT_EQ(
      Read(dir + "/broker.key"),
      absl::StrCat("# dexec broker CURVE key: keep secret (mode 0600)\n"
                   "public=",
                   first->public_z85, "\nsecret=", first->secret_z85, "\n"));
  EXPECT_EQ(Read(dir + "/broker.pub"), "public=" + first->public_z85 + "\n");

  const absl::StatusOr<CurveKeypair> again = LoadOrCreateBrokerKey(dir);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->public_z85, first->public_z85);
  EXPECT_EQ(again->secret_z85, first->secret_z85);

  // broker.pub is derived: recreated if deleted.
  ASSERT_EQ(unlink((dir + "/broker.pub").c_str()), 0);
  ASSERT_TRUE(LoadOrCreateBrokerKey(dir).ok());
  EXPECT_EQ(Read(dir + "/broker.pub"), "public=" + first->public_z85 + "\n");
}

TEST(CurveKeys, BrokerKeyOthersCanReadIsRefused) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateBrokerKey(dir).ok());
  ASSERT_EQ(chmod((dir + "/broker.key").c_str(), 0640), 0);
  const absl::StatusOr<CurveKeypair> key = LoadOrCreateBrokerKey(dir);
  ASSERT_TRUE(absl::IsFailedPrecondition(key.status())) << key.status();
  EXPECT_TRUE(absl::StrContains(key.status().message(),
                                "chmod 600 " + dir + "/broker.key"));
}

TEST(CurveKeys, BrokerKeyWhosePublicIsNotItsSecretsIsRefused) {
  const std::string dir = FreshPath("auth");
  const CurveKeypair key = *LoadOrCreateBrokerKey(dir);
  const std::string other = NewCurveKeypair()->public_z85;
  WriteTestFile(
      dir + "/broker.key",
      absl::StrCat("public=", other, "\nsecret=", key.secret_z85, "\n"), 0600);
  const absl::StatusOr<CurveKeypair> loaded = LoadOrCreateBrokerKey(dir);
  ASSERT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  EXPECT_TRUE(absl::StrContains(loaded.status().message(),
                                "public= is not the public key of secret="));
  EXPECT_FALSE(absl::StrContains(loaded.status().message(), key.secret_z85));
}

TEST(CurveKeys, StaleBrokerPubIsRefusedNotOverwritten) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(LoadOrCreateBrokerKey(dir).ok());
  const std::string stale = "public=" + NewCurveKeypair()->public_z85 + "\n";
  WriteTestFile(dir + "/broker.pub", stale, 0644);
  const absl::StatusOr<CurveKeypair> loaded = LoadOrCreateBrokerKey(dir);
  ASSERT_TRUE(absl::IsFailedPrecondition(loaded.status())) << loaded.status();
  EXPECT_TRUE(absl::StrContains(loaded.status().message(), "broker.pub"));
  EXPECT_EQ(Read(dir + "/broker.pub"), stale);
}

TEST(WorkerCredentials, FormatIsTheDocumentedFile) {
  const WorkerCredentials creds = SomeCredentials();
  EXPECT_EQ(FormatWorkerCredentials(creds),
            absl::StrCat("# dexec worker credentials: keep secret (mode 0600)\n"
                         "name=gpu-1\n"
                         "public=",
                         creds.key.public_z85,
                         "\n"
                         "secret=",
                         creds.key.secret_z85,
                         "\n"
                         "broker_public=",
                         creds.broker_public_z85, "\n"));
}

TEST(WorkerCredentials, ParseReadsWhatFormatWrites) {
  const WorkerCredentials creds = SomeCredentials();
  const absl::StatusOr<WorkerCredentials> parsed =
      ParseWorkerCredentials(FormatWorkerCredentials(creds));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->name, "gpu-1");
  EXPECT_EQ(parsed->key.public_z85, creds.key.public_z85);
  EXPECT_EQ(parsed->key.secret_z85, creds.key.secret_z85);
  EXPECT_EQ(parsed->broker_public_z85, creds.broker_public_z85);
}

TEST(WorkerCredentials, ParseToleratesCrlfSpacesCommentsAndUnknownKeys) {
  const WorkerCredentials creds = SomeCredentials();
  const std::string text = absl::StrCat(
      "# written by hand\r\n\r\nbroker_public = ", creds.broker_public_z85,
      "\r\n  name=gpu-1\r\nfuture_field=whatever\r\npublic=",
      creds.key.public_z85, "\r\nsecret=", creds.key.secret_z85, "\r\n");
  const absl::StatusOr<WorkerCredentials> parsed = ParseWorkerCredentials(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->key.secret_z85, creds.key.secret_z85);
}

TEST(WorkerCredentials, ParseRefusesBadFilesWithoutEchoingSecrets) {
  const WorkerCredentials creds = SomeCredentials();
  const std::string good = FormatWorkerCredentials(creds);
  const std::string other_public = NewCurveKeypair()->public_z85;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {absl::StrReplaceAll(good, {{"name=gpu-1\n", ""}}), "no name= line"},
      {absl::StrReplaceAll(good, {{"broker_public=", "broker="}}),
       "no broker_public= line"},
      {good + "secret=" + creds.key.secret_z85 + "\n",
       "line 6: secret= appears twice"},
      {good + "just words\n", "line 6: expected key=value"},
      {absl::StrReplaceAll(good, {{creds.key.public_z85, other_public}}),
       "public= is not the public key of secret="},
      {absl::StrReplaceAll(good, {{"name=gpu-1", "name=gpu 1"}}), "name=: "},
      {absl::StrReplaceAll(good, {{creds.broker_public_z85, "x"}}),
       "broker_public= is not a 40-character Z85 key"},
  };
  for (const auto& [text, why] : cases) {
    const absl::StatusOr<WorkerCredentials> parsed =
        ParseWorkerCredentials(text);
    ASSERT_TRUE(absl::IsInvalidArgument(parsed.status())) << why;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), why))
        << parsed.status();
    EXPECT_FALSE(
        absl::StrContains(parsed.status().message(), creds.key.secret_z85));
  }
}

TEST(WorkerCredentials, ReadMissingFileSaysWhereToGetOne) {
  const std::string path = FreshPath("auth") + "/worker.key";
  const absl::StatusOr<WorkerCredentials> creds = ReadWorkerCredentials(path);
  ASSERT_TRUE(absl::IsNotFound(creds.status())) << creds.status();
  EXPECT_EQ(creds.status().message(),
            path +
                " not found: start the broker with this --auth_dir first, or "
                "copy the broker's worker.key here (README, 'Running across "
                "machines')");
}

TEST(WorkerCredentials, ReadRefusesAFileOthersCanReadSayingChmod600) {
  const std::string path = FreshPath("worker.key");
  WriteTestFile(path, FormatWorkerCredentials(SomeCredentials()), 0644);
  const absl::StatusOr<WorkerCredentials> creds = ReadWorkerCredentials(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(creds.status())) << creds.status();
  EXPECT_TRUE(absl::StrContains(creds.status().message(), "chmod 600 " + path));
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(ReadWorkerCredentials(path).ok());
}

TEST(WorkerCredentials, ReadMalformedFileNamesThePath) {
  const std::string path = FreshPath("worker.key");
  WriteTestFile(path, "name=x\n", 0600);
  const absl::StatusOr<WorkerCredentials> creds = ReadWorkerCredentials(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(creds.status())) << creds.status();
  EXPECT_TRUE(absl::StartsWith(creds.status().message(), path + ": no public="))
      << creds.status();
}

}  // namespace
}  // namespace dexec::auth
