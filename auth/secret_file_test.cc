// secret_file against real files in $TEST_TMPDIR: modes are exact whatever
// the umask, nothing is overwritten that must not be, and reads are bounded.
#include "auth/secret_file.h"

#include <dirent.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "auth/testing.h"
#include "gtest/gtest.h"

namespace dexec::auth {
namespace {

using ::dexec::auth::testing::FreshPath;
using ::dexec::auth::testing::ModeOf;
using ::dexec::auth::testing::RunUnprivileged;
using ::dexec::auth::testing::WriteTestFile;

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  return names;
}

// Sets the umask for one scope.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(umask(mask)) {}
  ~ScopedUmask() { umask(old_); }

 private:
  mode_t old_;
};

TEST(SecretFile, WriteFileAtomicallyGivesExactModeWhateverTheUmask) {
  const std::string dir = FreshPath("atomic");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  {
    ScopedUmask mask(0077);
    ASSERT_TRUE(WriteFileAtomically(dir + "/pub", "public\n", 0644).ok());
  }
  {
    ScopedUmask mask(0);
    ASSERT_TRUE(WriteFileAtomically(dir + "/sec", "secret\n", 0600).ok());
  }
  EXPECT_EQ(ModeOf(dir + "/pub"), 0644);
  EXPECT_EQ(ModeOf(dir + "/sec"), 0600);
}

TEST(SecretFile, WriteFileAtomicallyReplacesAndLeavesNoTemporary) {
  const std::string dir = FreshPath("replace");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  const std::string path = dir + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "one", 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(path, "two", 0600).ok());
  absl::StatusOr<std::string> read = ReadSmallFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "two");
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"f"});
}

TEST(SecretFile, WriteFileAtomicallyIntoMissingDirectoryNamesThePath) {
  const std::string path = FreshPath("nodir") + "/f";
  const absl::Status s = WriteFileAtomically(path, "secret-content", 0600);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), path)) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "secret-content")) << s;
}

TEST(SecretFile, CreateFileExclusiveNeverOverwrites) {
  const std::string dir = FreshPath("excl");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  const std::string path = dir + "/client.token";
  ASSERT_TRUE(CreateFileExclusive(path, "first\n", 0600).ok());
  EXPECT_EQ(ModeOf(path), 0600);
  const absl::Status again = CreateFileExclusive(path, "second\n", 0600);
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
  EXPECT_TRUE(absl::StrContains(again.message(), path)) << again;
  EXPECT_EQ(*ReadSmallFile(path), "first\n");
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"client.token"});
}

TEST(SecretFile, CreateFileExclusiveDoesNotFollowADanglingLink) {
  const std::string dir = FreshPath("link");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  ASSERT_EQ(symlink((dir + "/elsewhere").c_str(), (dir + "/key").c_str()), 0);
  EXPECT_TRUE(
      absl::IsAlreadyExists(CreateFileExclusive(dir + "/key", "k", 0600)));
  EXPECT_FALSE(PathExists(dir + "/elsewhere"));
}

TEST(SecretFile, ReadSmallFileMissingIsNotFoundNamingThePath) {
  const std::string path = FreshPath("missing");
  const absl::StatusOr<std::string> read = ReadSmallFile(path);
  EXPECT_TRUE(absl::IsNotFound(read.status())) << read.status();
  EXPECT_EQ(read.status().message(), path + " not found");
}

TEST(SecretFile, ReadSmallFileUnreadableIsPermissionDenied) {
  const std::string dir = FreshPath("unreadable");
  ASSERT_TRUE(EnsureDirectory(dir, 0755).ok());
  const std::string path = dir + "/f";
  WriteTestFile(path, "x", 0600);
  EXPECT_EQ(RunUnprivileged([&] { return ReadSmallFile(path).status(); }),
            absl::StatusCode::kPermissionDenied);
}

TEST(SecretFile, ReadSmallFileRefusesLargeFilesAndDirectories) {
  const std::string path = FreshPath("large");
  WriteTestFile(path, std::string(100, 'x'), 0600);
  EXPECT_TRUE(ReadSmallFile(path, 100).ok());
  const absl::StatusOr<std::string> read = ReadSmallFile(path, 99);
  EXPECT_TRUE(absl::IsFailedPrecondition(read.status())) << read.status();
  const std::string dir = FreshPath("dir");
  ASSERT_TRUE(EnsureDirectory(dir, 0700).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(ReadSmallFile(dir).status()));
}

TEST(SecretFile, ReadSecretFileRefusesGroupOrOtherAccess) {
  const std::string path = FreshPath("secret");
  WriteTestFile(path, "s3cr3t", 0640);
  const absl::StatusOr<std::string> read = ReadSecretFile(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(read.status())) << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), "chmod 600 " + path))
      << read.status();
  EXPECT_TRUE(absl::StrContains(read.status().message(), "0640"));
  EXPECT_FALSE(absl::StrContains(read.status().message(), "s3cr3t"));
  EXPECT_TRUE(absl::IsFailedPrecondition(CheckNotWorldReadable(path)));

  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(*ReadSecretFile(path), "s3cr3t");
  EXPECT_TRUE(CheckNotWorldReadable(path).ok());
  ASSERT_EQ(chmod(path.c_str(), 0604), 0);
  EXPECT_TRUE(absl::IsFailedPrecondition(CheckNotWorldReadable(path)));
  EXPECT_TRUE(absl::IsNotFound(CheckNotWorldReadable(path + ".nope")));
}

TEST(SecretFile, EnsureDirectoryCreatesParentsAndGivesTheLeafItsMode) {
  const std::string base = FreshPath("dirs");
  const std::string leaf = base + "/a/b/auth/";
  ScopedUmask mask(0);
  ASSERT_TRUE(EnsureDirectory(leaf, 0700).ok());
  EXPECT_EQ(ModeOf(base + "/a/b/auth"), 0700);
  EXPECT_EQ(ModeOf(base + "/a"), 0777);  // parents: default mode, umask 0
  // An existing directory keeps its mode.
  ASSERT_TRUE(EnsureDirectory(base + "/a", 0700).ok());
  EXPECT_EQ(ModeOf(base + "/a"), 0777);
}

TEST(SecretFile, EnsureDirectoryRefusesAFile) {
  const std::string path = FreshPath("file");
  WriteTestFile(path, "", 0600);
  const absl::Status s = EnsureDirectory(path, 0700);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), path));
}

}  // namespace
}  // namespace dexec::auth
