// One line per event on stderr: "I 2026-11-21T10:00:00.123456Z broker: worker
// joined worker=host:42 threads=8". Severity first, then key=value fields.
//
//   DEXEC_LOG(INFO) << "worker joined worker=" << name;
//
// Thread-safe: each line is written with one write(2).
#ifndef DEXEC_COMMON_LOG_H_
#define DEXEC_COMMON_LOG_H_

#include <sstream>
#include <string>

namespace dexec {

enum class LogSeverity { kDebug, kInfo, kWarning, kError };

// Lines below this severity are dropped. Default kInfo; DEXEC_LOG_LEVEL
// (debug|info|warning|error) in the environment overrides it at start-up.
void SetMinLogSeverity(LogSeverity severity);
bool LogEnabled(LogSeverity severity);

// Sets the component name printed on each line ("broker", "worker", ...).
void SetLogComponent(const std::string& component);

namespace log_internal {

class LogLine {
 public:
  explicit LogLine(LogSeverity severity) : severity_(severity) {}
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  ~LogLine();
  std::ostringstream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

}  // namespace log_internal
}  // namespace dexec

#define DEXEC_LOG_SEVERITY_DEBUG ::dexec::LogSeverity::kDebug
#define DEXEC_LOG_SEVERITY_INFO ::dexec::LogSeverity::kInfo
#define DEXEC_LOG_SEVERITY_WARNING ::dexec::LogSeverity::kWarning
#define DEXEC_LOG_SEVERITY_ERROR ::dexec::LogSeverity::kError

#define DEXEC_LOG(severity)                                  \
  if (!::dexec::LogEnabled(DEXEC_LOG_SEVERITY_##severity)) { \
  } else                                                     \
    ::dexec::log_internal::LogLine(DEXEC_LOG_SEVERITY_##severity).stream()

#endif  // DEXEC_COMMON_LOG_H_
