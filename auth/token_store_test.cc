// TokenStore against a real auth directory in $TEST_TMPDIR: the first start,
// restarts, create/revoke taking effect at once and surviving a reopen, the
// files' modes and formats, refusals of bad files, and the cost of a check.
#include "auth/token_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

std::unique_ptr<TokenStore> MustOpen(const std::string& dir,
                                     absl::Time now = kT0) {
  absl::StatusOr<std::unique_ptr<TokenStore>> store =
      TokenStore::Open(dir, now);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

// The admin secret a first Open wrote.
std::string AdminSecret(const std::string& dir) {
  std::string text = Read(dir + "/client.token");
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

bool IsSecretFormat(absl::string_view s) {
  if (s.size() != kTokenSecretLength || !absl::StartsWith(s, "dexec_")) {
    return false;
  }
  for (char c : s.substr(6)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

TEST(Role, NamesRoundTripAndUnknownNamesTheThree) {
  for (Role r : {Role::kAdmin, Role::kSubmit, Role::kRead}) {
    absl::StatusOr<Role> parsed = ParseRole(RoleName(r));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_EQ(RoleName(Role::kSubmit), "submit");
  const absl::StatusOr<Role> bad = ParseRole("Admin");
  ASSERT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_TRUE(
      absl::StrContains(bad.status().message(), "admin, submit or read"));
}

TEST(TokenStore, FirstOpenCreatesAnAdminTokenInClientTokenWithMode0600) {
  const std::string dir = FreshPath("auth") + "/nested";
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->created_admin());
  EXPECT_EQ(store->client_token_path(), dir + "/client.token");
  EXPECT_EQ(ModeOf(dir), 0700);
  EXPECT_EQ(ModeOf(dir + "/client.token"), 0600);
  EXPECT_EQ(ModeOf(dir + "/tokens"), 0600);

  const std::string file = Read(dir + "/client.token");
  ASSERT_EQ(file.size(), kTokenSecretLength + 1);
  EXPECT_EQ(file.back(), '\n');
  const std::string secret = AdminSecret(dir);
  EXPECT_TRUE(IsSecretFormat(secret)) << "not dexec_<64 hex>";

  absl::StatusOr<Principal> who = store->Authenticate(secret);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->name, "admin");
  EXPECT_EQ(who->role, Role::kAdmin);
}

TEST(TokenStore, TokensFileHoldsAHeaderAndHashesOnly) {
  const std::string dir = FreshPath("auth");
  ASSERT_NE(MustOpen(dir), nullptr);
  const std::string secret = AdminSecret(dir);
  const std::string tokens = Read(dir + "/tokens");
  EXPECT_FALSE(absl::StrContains(tokens, secret));
  EXPECT_FALSE(absl::StrContains(tokens, secret.substr(6)));
  std::vector<std::string> lines = absl::StrSplit(tokens, '\n');
  ASSERT_EQ(lines.size(), 3u);  // header, admin, "" after the last "\n"
  EXPECT_EQ(lines[0], "# dexec tokens: hashes only");
  std::vector<std::string> f = absl::StrSplit(lines[1], ' ');
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], "admin");
  EXPECT_EQ(f[1], "admin");
  EXPECT_EQ(f[2].size(), 64u);
  EXPECT_EQ(f[3], "1700000000");
  EXPECT_EQ(lines[2], "");
}

TEST(TokenStore, RestartKeepsTokensAndNeverOverwritesFiles) {
  const std::string dir = FreshPath("auth");
  ASSERT_NE(MustOpen(dir), nullptr);
  const std::string client_token = Read(dir + "/client.token");
  const std::string tokens = Read(dir + "/tokens");

  std::unique_ptr<TokenStore> again = MustOpen(dir, kT0 + absl::Hours(1));
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->created_admin());
  EXPECT_EQ(Read(dir + "/client.token"), client_token);
  EXPECT_EQ(Read(dir + "/tokens"), tokens);
  EXPECT_TRUE(again->Authenticate(AdminSecret(dir)).ok());
}

TEST(TokenStore, RemovedClientTokenIsNotRecreated) {
  const std::string dir = FreshPath("auth");
  ASSERT_NE(MustOpen(dir), nullptr);
  const std::string secret = AdminSecret(dir);
  ASSERT_EQ(unlink((dir + "/client.token").c_str()), 0);

  std::unique_ptr<TokenStore> again = MustOpen(dir);
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->created_admin());
  EXPECT_FALSE(PathExists(dir + "/client.token"));
  EXPECT_TRUE(again->Authenticate(secret).ok());  // still a live token
}

TEST(TokenStore, FirstStartInterruptedAfterClientTokenAdoptsIt) {
  const std::string dir = FreshPath("auth");
  ASSERT_NE(MustOpen(dir), nullptr);
  const std::string secret = AdminSecret(dir);
  ASSERT_EQ(unlink((dir + "/tokens").c_str()), 0);  // as if we crashed

  std::unique_ptr<TokenStore> again = MustOpen(dir);
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->created_admin());
  EXPECT_EQ(AdminSecret(dir), secret);
  absl::StatusOr<Principal> who = again->Authenticate(secret);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->role, Role::kAdmin);
}

TEST(TokenStore, RefusesATokensFileOthersCanRead) {
  const std::string dir = FreshPath("auth");
  ASSERT_NE(MustOpen(dir), nullptr);
  ASSERT_EQ(chmod((dir + "/tokens").c_str(), 0644), 0);
  const absl::StatusOr<std::unique_ptr<TokenStore>> store =
      TokenStore::Open(dir, kT0);
  ASSERT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(),
                                "chmod 600 " + dir + "/tokens"))
      << store.status();
}

TEST(TokenStore, RefusesAMalformedTokensFileNamingTheLine) {
  const std::string dir = FreshPath("auth");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  const std::string hash(64, 'a');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"admin admin " + hash, "3 fields, not 4"},
      {"admin root " + hash + " 1", "unknown role"},
      {"bad/name admin " + hash + " 1", "invalid name"},
      {"admin admin " + std::string(63, 'a') + " 1",
       "the hash is not 64 lowercase hex"},
      {"admin admin " + std::string(64, 'A') + " 1",
       "the hash is not 64 lowercase hex"},
      {"admin admin " + hash + " soon",
       "created_unix_seconds is not an integer"},
  };
  for (const auto& [line, why] : cases) {
    WriteTestFile(dir + "/tokens",
                  "# dexec tokens: hashes only\n\nok read " +
                      std::string(64, 'b') + " 5\n" + line + "\n",
                  0600);
    const absl::StatusOr<std::unique_ptr<TokenStore>> store =
        TokenStore::Open(dir, kT0);
    ASSERT_TRUE(absl::IsFailedPrecondition(store.status())) << line;
    EXPECT_TRUE(absl::StrContains(store.status().message(),
                                  dir + "/tokens line 4: " + why))
        << store.status();
  }
  WriteTestFile(dir + "/tokens",
                "a admin " + hash + " 1\nb read " + hash + " 1\n", 0600);
  const absl::StatusOr<std::unique_ptr<TokenStore>> dup =
      TokenStore::Open(dir, kT0);
  ASSERT_TRUE(absl::IsFailedPrecondition(dup.status()));
  EXPECT_TRUE(absl::StrContains(dup.status().message(),
                                "line 2: the same hash as line 1"))
      << dup.status();
}

TEST(TokenStore, CreatedTokenWorksAtOnceAndAfterRestart) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  absl::StatusOr<std::string> ci =
      store->Create("ci", Role::kSubmit, kT0 + absl::Seconds(60));
  ASSERT_TRUE(ci.ok()) << ci.status();
  EXPECT_TRUE(IsSecretFormat(*ci));
  EXPECT_NE(*ci, AdminSecret(dir));
  absl::StatusOr<Principal> who = store->Authenticate(*ci);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->role, Role::kSubmit);
  EXPECT_FALSE(absl::StrContains(Read(dir + "/tokens"), *ci));
  EXPECT_EQ(ModeOf(dir + "/tokens"), 0600);

  store.reset();
  std::unique_ptr<TokenStore> again = MustOpen(dir);
  who = again->Authenticate(*ci);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(again->List()[1].created_at, kT0 + absl::Seconds(60));
}

TEST(TokenStore, CreateRefusesALiveNameAndABadName) {
  std::unique_ptr<TokenStore> store = MustOpen(FreshPath("auth"));
  ASSERT_TRUE(store->Create("ci", Role::kRead, kT0).ok());
  const absl::StatusOr<std::string> dup =
      store->Create("ci", Role::kAdmin, kT0);
  EXPECT_TRUE(absl::IsAlreadyExists(dup.status())) << dup.status();
  EXPECT_TRUE(absl::StrContains(dup.status().message(), "\"ci\""));
  EXPECT_TRUE(absl::IsAlreadyExists(
      store->Create("admin", Role::kAdmin, kT0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      store->Create("two words", Role::kRead, kT0).status()));
  EXPECT_EQ(store->List().size(), 2u);
}

TEST(TokenStore, RevokeTakesEffectAtOnceAndSurvivesRestart) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string ci = *store->Create("ci", Role::kSubmit, kT0);
  ASSERT_TRUE(store->Authenticate(ci).ok());
  ASSERT_TRUE(store->Revoke("ci").ok());
  const absl::StatusOr<Principal> refused = store->Authenticate(ci);
  EXPECT_TRUE(absl::IsUnauthenticated(refused.status()));
  EXPECT_EQ(refused.status().message(), "unknown or revoked token");

  store.reset();
  std::unique_ptr<TokenStore> again = MustOpen(dir);
  EXPECT_TRUE(absl::IsUnauthenticated(again->Authenticate(ci).status()));
  EXPECT_TRUE(again->Authenticate(AdminSecret(dir)).ok());
  // The name is free again, with a new secret.
  const absl::StatusOr<std::string> reissued =
      again->Create("ci", Role::kRead, kT0);
  ASSERT_TRUE(reissued.ok());
  EXPECT_NE(*reissued, ci);
  EXPECT_TRUE(absl::IsUnauthenticated(again->Authenticate(ci).status()));
}

TEST(TokenStore, RevokeUnknownIsNotFound) {
  std::unique_ptr<TokenStore> store = MustOpen(FreshPath("auth"));
  const absl::Status s = store->Revoke("nobody");
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "\"nobody\""));
}

TEST(TokenStore, RevokingTheLastAdminIsRefusedUntilThereIsAnother) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  ASSERT_TRUE(store->Create("reader", Role::kRead, kT0).ok());
  const absl::Status s = store->Revoke("admin");
  ASSERT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "last admin token")) << s;
  EXPECT_TRUE(store->Authenticate(AdminSecret(dir)).ok());

  const std::string ops = *store->Create("ops", Role::kAdmin, kT0);
  ASSERT_TRUE(store->Revoke("admin").ok());
  EXPECT_FALSE(store->Authenticate(AdminSecret(dir)).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store->Revoke("ops")));
  EXPECT_TRUE(store->Authenticate(ops).ok());
}

TEST(TokenStore, ListIsSortedByNameWithRolesAndTimes) {
  std::unique_ptr<TokenStore> store = MustOpen(FreshPath("auth"));
  ASSERT_TRUE(store->Create("zeta", Role::kRead, kT0 + absl::Seconds(2)).ok());
  ASSERT_TRUE(
      store->Create("beta", Role::kSubmit, kT0 + absl::Seconds(1)).ok());
  const std::vector<TokenInfo> list = store->List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "admin");
  EXPECT_EQ(list[0].role, Role::kAdmin);
  EXPECT_EQ(list[0].created_at, kT0);
  EXPECT_EQ(list[1].name, "beta");
  EXPECT_EQ(list[1].role, Role::kSubmit);
  EXPECT_EQ(list[2].name, "zeta");
  EXPECT_EQ(list[2].created_at, kT0 + absl::Seconds(2));
}

TEST(TokenStore, AuthenticateRefusesNearMissesAndGarbage) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string secret = AdminSecret(dir);
  std::string flipped = secret;
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  std::string upper = secret;
  for (char& c : upper) c = static_cast<char>(toupper(c));
  for (const std::string& bad :
       {std::string(), secret.substr(0, secret.size() - 1), secret + "0",
        flipped, upper, " " + secret, secret + "\n", std::string(1 << 20, 'x'),
        std::string("dexec_\0", 7)}) {
    const absl::StatusOr<Principal> who = store->Authenticate(bad);
    EXPECT_TRUE(absl::IsUnauthenticated(who.status())) << bad.size();
    EXPECT_EQ(who.status().message(), "unknown or revoked token");
  }
}

TEST(TokenStore, AuthenticateHeaderTakesBearerInAnyCase) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string secret = AdminSecret(dir);
  for (const char* scheme : {"Bearer ", "bearer ", "BEARER ", "bEaReR "}) {
    EXPECT_TRUE(store->AuthenticateHeader(scheme + secret).ok()) << scheme;
  }
  // Exactly one space.
  EXPECT_TRUE(absl::IsUnauthenticated(
      store->AuthenticateHeader("Bearer  " + secret).status()));
  EXPECT_TRUE(absl::IsUnauthenticated(
      store->AuthenticateHeader("Bearer\t" + secret).status()));
}

TEST(TokenStore, AuthenticateHeaderMissingTokenSaysHowToSendOne) {
  std::unique_ptr<TokenStore> store = MustOpen(FreshPath("auth"));
  for (const char* missing : {"", " ", "Bearer", "Bearer ", "bearer  "}) {
    const absl::StatusOr<Principal> who = store->AuthenticateHeader(missing);
    ASSERT_TRUE(absl::IsUnauthenticated(who.status())) << missing;
    EXPECT_EQ(who.status().message(),
              "missing bearer token (authorization: Bearer <token>)")
        << "\"" << missing << "\"";
  }
}

TEST(TokenStore, AuthenticateHeaderOtherSchemeIsRefusedWithoutEchoingIt) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string secret = AdminSecret(dir);
  for (const std::string& header :
       {"Basic " + secret, "Token " + secret, secret, "Bearer" + secret}) {
    const absl::StatusOr<Principal> who = store->AuthenticateHeader(header);
    ASSERT_TRUE(absl::IsUnauthenticated(who.status())) << header.size();
    EXPECT_FALSE(absl::StrContains(who.status().message(), secret));
  }
}

TEST(TokenStore, NoErrorMessageContainsASecret) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string admin = AdminSecret(dir);
  const std::string ci = *store->Create("ci", Role::kSubmit, kT0);
  std::vector<absl::Status> errors = {
      store->Create("ci", Role::kSubmit, kT0).status(),
      store->Revoke("admin"),
      store->Revoke("nope"),
      store->AuthenticateHeader("Basic " + ci).status(),
      store->AuthenticateHeader("Bearer x" + ci).status(),
      store->Create(ci, Role::kRead, kT0).status(),  // a secret as a name
      store->Revoke(ci),
      store->Revoke(ci.substr(0, 64)),
      ParseRole(ci).status(),
  };
  ASSERT_TRUE(chmod((dir + "/tokens").c_str(), 0640) == 0);
  errors.push_back(TokenStore::Open(dir, kT0).status());
  for (const absl::Status& s : errors) {
    ASSERT_FALSE(s.ok());
    EXPECT_FALSE(absl::StrContains(s.message(), admin.substr(6))) << s;
    EXPECT_FALSE(absl::StrContains(s.message(), ci.substr(6))) << s;
  }
}

TEST(TokenStore, AuthenticateCostsMicroseconds) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  for (int i = 0; i < 100; ++i) {  // a realistic number of live tokens
    ASSERT_TRUE(store->Create(absl::StrCat("t", i), Role::kRead, kT0).ok());
  }
  const std::string header = "Bearer " + AdminSecret(dir);
  const std::string wrong = "Bearer dexec_" + std::string(64, '0');
  // 20 batches of 1,000 calls: the best batch is the cost on an idle core
  // (the 2-core machine is often busy building), the mean what this run saw.
  constexpr int kBatches = 20;
  constexpr int kCallsPerBatch = 1000;
  for (const auto& [what, presented, expect_ok] :
       {std::make_tuple("valid", &header, true),
        std::make_tuple("unknown", &wrong, false)}) {
    double best_us = 1e9;
    double total_us = 0;
    int ok = 0;
    for (int b = 0; b < kBatches; ++b) {
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < kCallsPerBatch; ++i) {
        ok += store->AuthenticateHeader(*presented).ok();
      }
      const double us = std::chrono::duration<double, std::micro>(
                            std::chrono::steady_clock::now() - start)
                            .count() /
                        kCallsPerBatch;
      best_us = std::min(best_us, us);
      total_us += us;
    }
    EXPECT_EQ(ok, expect_ok ? kBatches * kCallsPerBatch : 0);
    std::printf(
        "AuthenticateHeader (%s token, 101 live): best %.3f us, mean %.3f us "
        "per call over %d calls\n",
        what, best_us, total_us / kBatches, kBatches * kCallsPerBatch);
    RecordProperty(absl::StrCat("authenticate_", what, "_best_us"),
                   std::to_string(best_us));
    // The budget is 5 us; 50 keeps sanitizer builds from flaking.
    EXPECT_LT(best_us, 50.0);
  }
}

TEST(TokenStore, ConcurrentChecksSeeCreatesAndRevokes) {
  const std::string dir = FreshPath("auth");
  std::unique_ptr<TokenStore> store = MustOpen(dir);
  const std::string admin = AdminSecret(dir);
  std::atomic<bool> stop{false};
  std::atomic<int> admin_failures{0};
  std::vector<std::thread> checkers;
  for (int t = 0; t < 2; ++t) {
    checkers.emplace_back([&] {
      while (!stop.load()) {
        if (!store->Authenticate(admin).ok()) admin_failures.fetch_add(1);
        store->List();
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    const std::string name = absl::StrCat("w", i);
    const std::string secret = *store->Create(name, Role::kSubmit, kT0);
    EXPECT_TRUE(store->Authenticate(secret).ok());
    ASSERT_TRUE(store->Revoke(name).ok());
    EXPECT_FALSE(store->Authenticate(secret).ok());
  }
  stop.store(true);
  for (std::thread& t : checkers) t.join();
  EXPECT_EQ(admin_failures.load(), 0);
  EXPECT_EQ(store->List().size(), 1u);
}

}  // namespace
}  // namespace dexec::auth
