#include "common/flag_check.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace dexec {
namespace {

// Flags absl handles itself inside ParseCommandLine (usage and flag files);
// FindCommandLineFlag does not know them.
constexpr absl::string_view kAbslBuiltinFlags[] = {
    "help",     "helpfull",  "helpshort",  "helppackage",
    "helpon",   "helpmatch", "version",    "only_check_args",
    "flagfile", "fromenv",   "tryfromenv", "undefok"};

// Of those, the ones that take a value.
bool AbslFlagTakesValue(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" ||
         name == "undefok" || name == "helpon" || name == "helpmatch";
}

}  // namespace

bool CheckFlagArguments(int argc, char** argv, absl::string_view program,
                        std::ostream& err) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::StartsWith(arg, "-") || arg == "-") {
      err << program << ": unexpected argument '" << arg << "'; " << program
          << " takes only flags (see --help)\n";
      return false;
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    const size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    if (std::find(std::begin(kAbslBuiltinFlags), std::end(kAbslBuiltinFlags),
                  name) != std::end(kAbslBuiltinFlags)) {
      if (eq == absl::string_view::npos && AbslFlagTakesValue(name)) ++i;
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") &&
        eq == absl::string_view::npos) {
      // --noflag sets a boolean flag to false.
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) {
      err << program << ": unknown flag --" << name << " (see --help)\n";
      return false;
    }
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < argc) {
      value = argv[++i];  // "--threads 8"
    } else {
      err << program << ": flag --" << name << " needs a value\n";
      return false;
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      err << program << ": bad value '" << value << "' for --" << name << ": "
          << error << "\n";
      return false;
    }
  }
  return true;
}

}  // namespace dexec
