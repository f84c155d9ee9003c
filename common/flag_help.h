// `--help` for dexec-broker and dexec-worker: their own flags, one line
// each, in named groups, the way `dexec --help` lays out its verbs.
//
// absl's built-in --help lists only flags from a file named after the
// program (dexec-broker.cc), so for broker/main.cc it prints "No flags
// matched". A main intercepts --help before absl::ParseCommandLine instead:
//
//   if (dexec::PrintHelpIfRequested(argc, argv, {
//           .program = "dexec-broker",
//           .summary = "accepts jobs over gRPC and hands them to workers.",
//           .groups = {{"Listening", {"listen", "worker_listen"}}}})) {
//     return 0;
//   }
//
// Flags registered in the binary but named in no group are listed under
// "Other flags", so a newly added flag is never hidden. absl's own flags
// (--flagfile, --helpfull, ...) are left to `--helpfull`.
#ifndef DEXEC_COMMON_FLAG_HELP_H_
#define DEXEC_COMMON_FLAG_HELP_H_

#include <string>
#include <vector>

namespace dexec {

// A titled list of flag names (without "--"), printed in this order. A name
// no flag has is skipped.
struct FlagGroup {
  std::string title;
  std::vector<std::string> flags;
};

struct FlagHelp {
  std::string program;  // "dexec-broker"
  std::string summary;  // one line, after "<program>: "
  std::vector<FlagGroup> groups;
};

// True if an argument before any "--" is --help, -help, -h, --helpshort or
// -helpshort (absl's --helpfull, --helpon and --helpmatch are not).
bool HelpRequested(int argc, char** argv);

// The whole help text: summary, usage, then each group as
//   "  --name=DEFAULT    help text" (one line per flag; a false bool shows
//   as plain "--name", an empty default as "--name=''").
std::string FlagHelpText(const FlagHelp& help);

// If HelpRequested(argc, argv): writes FlagHelpText(help) to stdout and
// returns true (the caller exits 0). Otherwise returns false.
bool PrintHelpIfRequested(int argc, char** argv, const FlagHelp& help);

}  // namespace dexec

#endif  // DEXEC_COMMON_FLAG_HELP_H_
