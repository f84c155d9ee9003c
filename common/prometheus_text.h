// Writes the Prometheus text exposition format (0.0.4): HELP and TYPE
// lines, samples with escaped label values, and histograms as cumulative
// _bucket{le=...} series with _sum and _count.
//
//   PrometheusText t;
//   t.Family("dexec_jobs", "gauge", "Jobs the broker holds, by state.");
//   t.Sample("dexec_jobs", {{"state", "queued"}}, 3);
//   std::string body = t.Take();
//
// Label values may come from clients (task names): they are escaped here
// (backslash, double quote, newline), so no value can end its label or its
// line. Not thread-safe.
#ifndef DEXEC_COMMON_PROMETHEUS_TEXT_H_
#define DEXEC_COMMON_PROMETHEUS_TEXT_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "common/histogram.h"

namespace dexec {

class PrometheusText {
 public:
  using Labels =
      std::initializer_list<std::pair<absl::string_view, absl::string_view>>;

  // The HELP and TYPE lines of a family ("counter", "gauge", "histogram").
  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help);
  void Sample(absl::string_view name, Labels labels, double value);
  void Sample(absl::string_view name, Labels labels, uint64_t value);
  void Sample(absl::string_view name, double value) { Sample(name, {}, value); }
  void Sample(absl::string_view name, uint64_t value) {
    Sample(name, {}, value);
  }
  // A whole histogram family: HELP, TYPE, the cumulative buckets, _sum and
  // _count.
  void AddHistogram(absl::string_view name, absl::string_view help,
                    const Histogram& h);

  std::string Take() { return std::move(out_); }

 private:
  void Name(absl::string_view name, Labels labels,
            absl::string_view extra_label = "",
            absl::string_view extra_value = "");
  std::string out_;
};

// `v` as a Prometheus label value, without the quotes.
std::string EscapeLabelValue(absl::string_view v);

}  // namespace dexec

#endif  // DEXEC_COMMON_PROMETHEUS_TEXT_H_
