// Issue 10, item 5: the journal's disk fills up. On a 20 MiB tmpfs (root
// only; skipped otherwise) a broker filling it refuses new submits with
// RESOURCE_EXHAUSTED while it keeps answering and running what it holds,
// takes submits again when space returns, and a restart on the full disk
// starts and serves every acknowledged job. It used to abort on a RocksDB
// assertion, mid-run and at the restart.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "protos/dexec.grpc.pb.h"
#include "tests/broker_queries.h"
#include "tests/cluster.h"

namespace dexec::testing {
namespace {

// Writes `path` until `bytes` are written or the disk is full.
void Fill(const std::string& path, size_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  const std::string chunk(64 << 10, 'f');
  size_t written = 0;
  while (written < bytes) {
    const ssize_t n =
        ::write(fd, chunk.data(), std::min(chunk.size(), bytes - written));
    if (n <= 0) break;  // ENOSPC: full
    written += static_cast<size_t>(n);
  }
  ::close(fd);
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root to mount a small tmpfs (mount -t tmpfs -o "
                      "size=20m); run as root to test a full journal disk";
    }
    const char* tmp = std::getenv("TEST_TMPDIR");
    mount_ =
        absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/small-disk-", ::getpid());
    ASSERT_EQ(::mkdir(mount_.c_str(), 0755), 0) << std::strerror(errno);
    ASSERT_EQ(::mount("tmpfs", mount_.c_str(), "tmpfs", 0, "size=20m"), 0)
        << "mount -t tmpfs -o size=20m: " << std::strerror(errno);
    mounted_ = true;
    filler_ = mount_ + "/filler";
    cluster_ = std::make_unique<TestCluster>();
    channel_ = nullptr;
  }

  void TearDown() override {
    cluster_.reset();  // every process stopped before the disk goes
    if (mounted_) ::umount2(mount_.c_str(), MNT_DETACH);
    if (!mount_.empty()) ::rmdir(mount_.c_str());
  }

  // One job whose payload is `bytes` long: sys.sleep rejects it at once as
  // a bad payload, so it finishes with a small record.
  grpc::Status SubmitOne(size_t bytes, uint64_t* id) {
    v1::SubmitRequest req;
    v1::JobSpec* job = req.add_jobs();
    job->set_task("sys.sleep");
    job->set_payload(std::string(bytes, 'x'));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::SubmitResponse resp;
    grpc::Status s = cluster_->stub().Submit(&ctx, req, &resp);
    if (s.ok()) *id = resp.job_ids(0);
    return s;
  }

  // Submits until the broker refuses (bounded); returns the refusal.
  grpc::Status SubmitUntilRefused(std::vector<uint64_t>* acked,
                                  size_t bytes = 400 << 10) {
    for (int i = 0; i < 200; ++i) {
      uint64_t id = 0;
      grpc::Status s = SubmitOne(bytes, &id);
      if (!s.ok()) return s;
      acked->push_back(id);
    }
    return grpc::Status(grpc::StatusCode::INTERNAL, "never refused");
  }

  // Waits (bounded) until a submit is accepted again.
  absl::Status WaitUntilSubmitsAreTaken(std::vector<uint64_t>* acked) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    grpc::Status last;
    while (absl::Now() < deadline) {
      uint64_t id = 0;
      last = SubmitOne(1000, &id);
      if (last.ok()) {
        acked->push_back(id);
        return absl::OkStatus();
      }
      absl::SleepFor(absl::Milliseconds(100));  // polling the broker's answer
    }
    return absl::DeadlineExceededError(
        absl::StrCat("submits still refused 30 s after space returned: ",
                     last.error_message()));
  }

  // Every acknowledged job is held, in a final state (it ran).
  void ExpectAllFinished(const std::vector<uint64_t>& acked) {
    std::vector<v1::Job> jobs = GetJobs(cluster_->stub(), acked);
    ASSERT_EQ(jobs.size(), acked.size());
    for (const v1::Job& j : jobs) {
      EXPECT_TRUE(j.state() == v1::Job::FAILED ||
                  j.state() == v1::Job::SUCCEEDED)
          << "job " << j.id() << " is " << v1::Job::State_Name(j.state());
    }
  }

  std::string mount_;
  std::string filler_;
  bool mounted_ = false;
  std::unique_ptr<TestCluster> cluster_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(DiskFullTest,
       AFullJournalDiskRefusesSubmitsServesTheRestAndLosesNothing) {
  // 4 MiB of someone else's, so that space can come back later.
  Fill(filler_, 4 << 20);
  ASSERT_TRUE(cluster_->StartBroker({"--data_dir=" + mount_ + "/data"}).ok());
  std::vector<uint64_t> acked;
  grpc::Status refused = SubmitUntilRefused(&acked);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "disk is full"))
      << refused.error_message();
  ASSERT_FALSE(acked.empty()) << refused.error_message();
  // Still answering: every acknowledged job is there.
  EXPECT_EQ(GetJobs(cluster_->stub(), acked).size(), acked.size());

  // Space comes back: submits are taken again.
  ASSERT_EQ(::unlink(filler_.c_str()), 0);
  absl::Status taken = WaitUntilSubmitsAreTaken(&acked);
  ASSERT_TRUE(taken.ok()) << taken;

  // A worker runs everything held.
  ASSERT_TRUE(cluster_->StartWorker(2).ok());
  ASSERT_TRUE(cluster_->WaitForWorkers(1).ok());
  std::vector<std::string> args = {"wait", "--timeout=60s"};
  for (uint64_t id : acked) args.push_back(absl::StrCat(id));
  absl::StatusOr<CommandResult> wait = cluster_->Cli(args);
  ASSERT_TRUE(wait.ok()) << wait.status();
  EXPECT_FALSE(absl::StrContains(wait->out, "queued")) << wait->out;
  ExpectAllFinished(acked);

  // The disk fills up for good, the broker is killed, and starts again on
  // the full disk: it serves what it has and refuses new work.
  Fill(filler_, 64 << 20);
  ASSERT_TRUE(cluster_->KillBroker().ok());
  ASSERT_TRUE(cluster_->RestartBroker().ok())
      << "a restart on a full disk did not start";
  ExpectAllFinished(acked);
  // (Starting, RocksDB deleted its obsolete files: fill what they freed.)
  Fill(filler_ + "2", 64 << 20);
  uint64_t id = 0;
  grpc::Status s = SubmitOne(1000, &id);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "disk is full"))
      << s.error_message();
  // And once space is back, it takes new jobs and still has the old ones.
  ASSERT_EQ(::unlink(filler_.c_str()), 0);
  ASSERT_EQ(::unlink((filler_ + "2").c_str()), 0);
  taken = WaitUntilSubmitsAreTaken(&acked);
  ASSERT_TRUE(taken.ok()) << taken;
  ASSERT_TRUE(cluster_->KillBroker().ok());
  ASSERT_TRUE(cluster_->RestartBroker().ok());
  EXPECT_EQ(GetJobs(cluster_->stub(), acked).size(), acked.size());
  EXPECT_NE(GetJob(cluster_->stub(), acked.back()).state(),
            v1::Job::STATE_UNSPECIFIED);
}

}  // namespace
}  // namespace dexec::testing
