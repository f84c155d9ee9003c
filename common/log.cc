#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dexec {
namespace {

LogSeverity InitialSeverity() {
  const char* env = std::getenv("DEXEC_LOG_LEVEL");
  if (env == nullptr) return LogSeverity::kInfo;
  if (std::strcmp(env, "debug") == 0) return LogSeverity::kDebug;
  if (std::strcmp(env, "warning") == 0) return LogSeverity::kWarning;
  if (std::strcmp(env, "error") == 0) return LogSeverity::kError;
  return LogSeverity::kInfo;
}

std::atomic<int>& MinSeverity() {
  static std::atomic<int> min{static_cast<int>(InitialSeverity())};
  return min;
}

// Written once at start-up, before threads exist.
std::string& Component() {
  static std::string* component = new std::string("dexec");
  return *component;
}

char SeverityLetter(LogSeverity s) {
  switch (s) {
    case LogSeverity::kDebug:
      return 'D';
    case LogSeverity::kInfo:
      return 'I';
    case LogSeverity::kWarning:
      return 'W';
    case LogSeverity::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

void SetMinLogSeverity(LogSeverity severity) {
  MinSeverity().store(static_cast<int>(severity));
}

bool LogEnabled(LogSeverity severity) {
  return static_cast<int>(severity) >= MinSeverity().load();
}

void SetLogComponent(const std::string& component) { Component() = component; }

namespace log_internal {

LogLine::~LogLine() {
  std::string line;
  line += SeverityLetter(severity_);
  line += ' ';
  line += absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(),
                           absl::UTCTimeZone());
  line += ' ';
  line += Component();
  line += ": ";
  line += stream_.str();
  line += '\n';
  // One write so concurrent lines never interleave.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace log_internal
}  // namespace dexec
