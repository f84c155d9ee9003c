// Checks a main's command line against the absl flags it defines, before
// absl::ParseCommandLine. ParseCommandLine exits with status 1 on a bad
// flag, but scripts, systemd units (RestartPreventExitStatus=2) and the
// process tests tell usage errors apart by status 2:
//
//   if (!dexec::CheckFlagArguments(argc, argv, "dexec-worker", std::cerr)) {
//     return 2;
//   }
//   absl::ParseCommandLine(argc, argv);
#ifndef DEXEC_COMMON_FLAG_CHECK_H_
#define DEXEC_COMMON_FLAG_CHECK_H_

#include <ostream>

#include "absl/strings/string_view.h"

namespace dexec {

// True if every argument before "--" is a flag the binary defines (or one
// of absl's own: --help, --flagfile, ...) with a value it accepts, as
// --flag=value, --flag value, or --flag / --noflag for booleans. Otherwise
// writes one line, "<program>: unknown flag --x (see --help)" and the like,
// to `err` and returns false; a stray positional argument is an error too.
// Parsing a value also sets the flag; ParseCommandLine sets the same value
// again.
bool CheckFlagArguments(int argc, char** argv, absl::string_view program,
                        std::ostream& err);

}  // namespace dexec

#endif  // DEXEC_COMMON_FLAG_CHECK_H_
