#include "common/prometheus_text.h"

#include "common/histogram.h"
#include "gtest/gtest.h"

namespace dexec {
namespace {

TEST(Histogram, CountsEachValueInTheFirstBucketAtOrAboveIt) {
  static constexpr double kBounds[] = {1, 10, 100};
  Histogram h(kBounds);
  for (double v : {0.5, 1.0, 1.5, 10.0, 99.0, 1000.0}) h.Observe(v);
  EXPECT_EQ(h.counts(), (std::vector<uint64_t>{2, 2, 1, 1}));
  EXPECT_EQ(h.count(), 6u);
  EXPECT_DOUBLE_EQ(h.sum(), 1112.0);
}

TEST(PrometheusText, WritesCumulativeBucketsSumAndCount) {
  static constexpr double kBounds[] = {0.001, 1};
  Histogram h(kBounds);
  h.Observe(0.0005);
  h.Observe(0.5);
  h.Observe(2);
  PrometheusText t;
  t.AddHistogram("x_seconds", "Help.", h);
  EXPECT_EQ(t.Take(),
            "# HELP x_seconds Help.\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{le=\"0.001\"} 1\n"
            "x_seconds_bucket{le=\"1\"} 2\n"
            "x_seconds_bucket{le=\"+Inf\"} 3\n"
            "x_seconds_sum 2.5005\nx_seconds_count 3\n");
}

TEST(PrometheusText, EscapesLabelValuesFromClients) {
  PrometheusText t;
  t.Sample("m", {{"task", "a\"b\\c\nd} 9"}}, uint64_t{1});
  EXPECT_EQ(t.Take(), "m{task=\"a\\\"b\\\\c\\nd} 9\"} 1\n");
}

}  // namespace
}  // namespace dexec
