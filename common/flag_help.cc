#include "common/flag_help.h"

#include <algorithm>
#include <iostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace dexec {
namespace {

// Past this width the help text still follows on the same line, two spaces
// after the flag, rather than pushing every other line to the right.
constexpr size_t kMaxFlagColumn = 34;

// absl's own flags (usage, flag files) come from absl's sources; every flag
// of ours comes from somewhere else.
bool IsAbslFlag(const absl::CommandLineFlag& flag) {
  return absl::StrContains(flag.Filename(), "absl/");
}

std::string FlagColumn(const absl::CommandLineFlag& flag) {
  const std::string value = flag.DefaultValue();
  if (flag.IsOfType<bool>() && value == "false") {
    return absl::StrCat("  --", flag.Name());
  }
  return absl::StrCat("  --", flag.Name(), "=", value.empty() ? "''" : value);
}

// Help strings are written for one line; fold any line breaks into spaces.
std::string OneLine(absl::string_view text) {
  return absl::StrJoin(
      absl::StrSplit(text, absl::ByAnyChar("\n\t "), absl::SkipEmpty()), " ");
}

}  // namespace

bool HelpRequested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "--help" || arg == "-help" || arg == "-h" ||
        arg == "--helpshort" || arg == "-helpshort") {
      return true;
    }
  }
  return false;
}

std::string FlagHelpText(const FlagHelp& help) {
  absl::flat_hash_map<absl::string_view, absl::CommandLineFlag*> all =
      absl::GetAllFlags();

  // (title, flags) in print order; ungrouped flags of ours go last.
  std::vector<std::pair<std::string, std::vector<absl::CommandLineFlag*>>>
      sections;
  std::set<absl::string_view> grouped;
  for (const FlagGroup& group : help.groups) {
    std::vector<absl::CommandLineFlag*> flags;
    for (const std::string& name : group.flags) {
      auto it = all.find(name);
      if (it == all.end() || IsAbslFlag(*it->second)) continue;
      flags.push_back(it->second);
      grouped.insert(it->first);
    }
    if (!flags.empty()) sections.emplace_back(group.title, std::move(flags));
  }
  std::vector<absl::CommandLineFlag*> other;
  for (const auto& [name, flag] : all) {
    if (!IsAbslFlag(*flag) && grouped.count(name) == 0) other.push_back(flag);
  }
  std::sort(other.begin(), other.end(),
            [](absl::CommandLineFlag* a, absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  if (!other.empty()) sections.emplace_back("Other flags", std::move(other));

  size_t column = 0;
  for (const auto& section : sections) {
    for (const absl::CommandLineFlag* flag : section.second) {
      const size_t width = FlagColumn(*flag).size();
      if (width <= kMaxFlagColumn) column = std::max(column, width);
    }
  }

  std::string out = absl::StrCat(help.program, ": ", help.summary, "\n\n",
                                 "Usage: ", help.program, " [FLAGS...]\n",
                                 "Values are given as --flag=value or --flag "
                                 "value; shown with their defaults.\n");
  for (const auto& [title, flags] : sections) {
    absl::StrAppend(&out, "\n", title, ":\n");
    for (const absl::CommandLineFlag* flag : flags) {
      std::string line = FlagColumn(*flag);
      line.append(line.size() < column ? column - line.size() : 0, ' ');
      absl::StrAppend(&out, line, "  ", OneLine(flag->Help()), "\n");
    }
  }
  absl::StrAppend(&out, "\n  --help, -h",
                  std::string(column > 12 ? column - 12 : 0, ' '),
                  "  show this text; --helpfull adds absl's own flags\n");
  return out;
}

bool PrintHelpIfRequested(int argc, char** argv, const FlagHelp& help) {
  if (!HelpRequested(argc, argv)) return false;
  std::cout << FlagHelpText(help) << std::flush;
  return true;
}

}  // namespace dexec
