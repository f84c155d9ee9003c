#include "common/prometheus_text.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace dexec {
namespace {

// Shortest text that reads back as `v`; integers without a fraction.
std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return absl::StrCat(v);
}

}  // namespace

std::string EscapeLabelValue(absl::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void PrometheusText::Family(absl::string_view name, absl::string_view type,
                            absl::string_view help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                  type, "\n");
}

void PrometheusText::Name(absl::string_view name, Labels labels,
                          absl::string_view extra_label,
                          absl::string_view extra_value) {
  out_.append(name.data(), name.size());
  if (labels.size() == 0 && extra_label.empty()) return;
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out_ += ',';
    first = false;
    absl::StrAppend(&out_, k, "=\"", EscapeLabelValue(v), "\"");
  }
  if (!extra_label.empty()) {
    if (!first) out_ += ',';
    absl::StrAppend(&out_, extra_label, "=\"", extra_value, "\"");
  }
  out_ += '}';
}

void PrometheusText::Sample(absl::string_view name, Labels labels,
                            double value) {
  Name(name, labels);
  absl::StrAppend(&out_, " ", Number(value), "\n");
}

void PrometheusText::Sample(absl::string_view name, Labels labels,
                            uint64_t value) {
  Name(name, labels);
  absl::StrAppend(&out_, " ", value, "\n");
}

void PrometheusText::AddHistogram(absl::string_view name,
                                  absl::string_view help, const Histogram& h) {
  Family(name, "histogram", help);
  const std::string bucket = absl::StrCat(name, "_bucket");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.counts().size(); ++i) {
    cumulative += h.counts()[i];
    const std::string le =
        i < h.bounds().size() ? Number(h.bounds()[i]) : "+Inf";
    Name(bucket, {}, "le", le);
    absl::StrAppend(&out_, " ", cumulative, "\n");
  }
  absl::StrAppend(&out_, name, "_sum ", Number(h.sum()), "\n", name, "_count ",
                  h.count(), "\n");
}

}  // namespace dexec
