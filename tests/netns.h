// Test hosts on one machine: two network namespaces joined by veth pairs
// (as root; NetnsPair::Probe tells a test to skip otherwise), for what
// crosses a network: a worker on "another host", a link cut and healed.
#ifndef DEXEC_TESTS_NETNS_H_
#define DEXEC_TESTS_NETNS_H_

#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/process.h"

namespace dexec::testing {

// The `ip` binary, or "" if there is none.
inline std::string IpBinary() {
  for (const char* path :
       {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "";
}

// Two network namespaces, "b" for the broker and "w" for a worker, joined
// by a veth pair, and a second veth from the test's own namespace into "b"
// so the test reaches the broker's gRPC port. Names and addresses carry
// the test's PID, so concurrent runs do not collide. The destructor deletes
// both namespaces (which destroys the veths); declare it before the
// processes it hosts, so they are stopped first.
class NetnsPair {
 public:
  explicit NetnsPair(std::string ip) : ip_(std::move(ip)) {
    const int pid = static_cast<int>(::getpid());
    broker_ns_ = absl::StrCat("dexec-b-", pid);
    worker_ns_ = absl::StrCat("dexec-w-", pid);
    broker_dev_ = absl::StrCat("dxb", pid);
    worker_dev_ = absl::StrCat("dxw", pid);
    control_dev_ = absl::StrCat("dxc", pid);
    control_peer_dev_ = absl::StrCat("dxcb", pid);
    const std::string net =
        absl::StrCat("10.", 100 + pid % 100, ".", (pid / 100) % 256, ".");
    broker_ip_ = net + "1";
    worker_ip_ = net + "2";
    control_ip_ = net + "5";
    broker_control_ip_ = net + "6";
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  ~NetnsPair() {
    for (const std::string& ns : created_) (void)Ip({"netns", "del", ns});
    // Gone with its peer already, unless something kept namespace "b".
    if (control_created_) (void)Ip({"link", "del", control_dev_});
  }

  // Creates the first namespace only: UNAVAILABLE if this machine cannot
  // (not root, no netns support), so the caller can skip. First deletes
  // namespaces left by runs that were killed before their destructor ran.
  absl::Status Probe() {
    RemoveStale();
    absl::Status s = Ip({"netns", "add", broker_ns_});
    if (!s.ok()) return absl::UnavailableError(s.message());
    created_.push_back(broker_ns_);
    return absl::OkStatus();
  }

  // Everything else; call after Probe().
  absl::Status Build() {
    absl::Status s = Ip({"netns", "add", worker_ns_});
    if (!s.ok()) return s;
    created_.push_back(worker_ns_);
    const std::vector<std::vector<std::string>> steps = {
        {"link", "add", broker_dev_, "type", "veth", "peer", "name",
         worker_dev_},
        {"link", "set", broker_dev_, "netns", broker_ns_},
        {"link", "set", worker_dev_, "netns", worker_ns_},
        {"link", "add", control_dev_, "type", "veth", "peer", "name",
         control_peer_dev_},
        {"link", "set", control_peer_dev_, "netns", broker_ns_},
        {"addr", "add", control_ip_ + "/30", "dev", control_dev_},
        {"link", "set", control_dev_, "up"},
        {"-n", broker_ns_, "link", "set", "lo", "up"},
        {"-n", broker_ns_, "addr", "add", broker_ip_ + "/30", "dev",
         broker_dev_},
        {"-n", broker_ns_, "link", "set", broker_dev_, "up"},
        {"-n", broker_ns_, "addr", "add", broker_control_ip_ + "/30", "dev",
         control_peer_dev_},
        {"-n", broker_ns_, "link", "set", control_peer_dev_, "up"},
        {"-n", worker_ns_, "link", "set", "lo", "up"},
        {"-n", worker_ns_, "addr", "add", worker_ip_ + "/30", "dev",
         worker_dev_},
        {"-n", worker_ns_, "link", "set", worker_dev_, "up"},
    };
    for (const std::vector<std::string>& step : steps) {
      s = Ip(step);
      if (!s.ok()) return s;
      if (step[1] == "add" && step[2] == control_dev_) control_created_ = true;
    }
    return absl::OkStatus();
  }

  // The worker namespace's end of the link, down (cut) or up (healed).
  absl::Status SetWorkerLink(bool up) {
    return Ip(
        {"-n", worker_ns_, "link", "set", worker_dev_, up ? "up" : "down"});
  }

  // Starts argv inside `ns`. `ip netns exec` execs the program, so the
  // process (and its PID) is the program itself.
  absl::StatusOr<Process> StartIn(const std::string& ns,
                                  std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {ip_, "netns", "exec", ns});
    return Process::Start(argv);
  }

  const std::string& broker_ns() const { return broker_ns_; }
  const std::string& worker_ns() const { return worker_ns_; }
  const std::string& broker_ip() const { return broker_ip_; }
  const std::string& broker_control_ip() const { return broker_control_ip_; }

 private:
  absl::Status Ip(std::vector<std::string> args) const {
    args.insert(args.begin(), ip_);
    absl::StatusOr<CommandResult> r = RunCommand(args, "", absl::Seconds(20));
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) {
      return absl::InternalError(absl::StrCat("'", absl::StrJoin(args, " "),
                                              "' exited with ", r->exit_code,
                                              ": ", r->err));
    }
    return absl::OkStatus();
  }

  // "dexec-b-PID" and "dexec-w-PID" of a PID that no longer runs.
  void RemoveStale() const {
    absl::StatusOr<CommandResult> r =
        RunCommand({ip_, "netns", "list"}, "", absl::Seconds(20));
    if (!r.ok() || r->exit_code != 0) return;
    for (absl::string_view line : absl::StrSplit(r->out, '\n')) {
      const std::string name(line.substr(0, line.find(' ')));
      absl::string_view rest = name;
      if (!absl::ConsumePrefix(&rest, "dexec-b-") &&
          !absl::ConsumePrefix(&rest, "dexec-w-")) {
        continue;
      }
      int pid = 0;
      if (absl::SimpleAtoi(rest, &pid) && pid > 0 && ::kill(pid, 0) != 0 &&
          errno == ESRCH) {
        (void)Ip({"netns", "del", name});
      }
    }
  }

  const std::string ip_;
  std::string broker_ns_, worker_ns_;
  std::string broker_dev_, worker_dev_, control_dev_, control_peer_dev_;
  std::string broker_ip_, worker_ip_, control_ip_, broker_control_ip_;
  std::vector<std::string> created_;
  bool control_created_ = false;
};

}  // namespace dexec::testing

#endif  // DEXEC_TESTS_NETNS_H_
