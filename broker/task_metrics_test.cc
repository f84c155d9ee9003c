#include "broker/task_metrics.h"

#include <string>

#include "broker/job.h"
#include "gtest/gtest.h"

namespace dexec::broker {
namespace {

const TaskSeries& Of(const std::vector<TaskSeries>& all,
                     absl::string_view task) {
  for (const TaskSeries& s : all) {
    if (s.task == task) return s;
  }
  static const TaskSeries* none = new TaskSeries{"(absent)"};
  return *none;
}

TEST(TaskMetrics, KeepsADrainedTasksSeriesAtZero) {
  TaskMetrics m;
  const TaskName a = TaskName::Intern("a");
  m.Submitted(a);
  m.Moved(a, v1::Job::QUEUED, v1::Job::RUNNING);
  EXPECT_EQ(Of(m.Snapshot(), "a").running, 1u);
  m.Moved(a, v1::Job::RUNNING, v1::Job::SUCCEEDED);
  const TaskSeries s = Of(m.Snapshot(), "a");
  EXPECT_EQ(s.task, "a");
  EXPECT_EQ(s.submitted, 1u);
  EXPECT_EQ(s.succeeded, 1u);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.running, 0u);
}

TEST(TaskMetrics, FoldsAnEvictedIdleNameIntoOtherWithoutLosingCounts) {
  TaskMetrics m(/*cap=*/2);
  const TaskName a = TaskName::Intern("a"), b = TaskName::Intern("b"),
                 c = TaskName::Intern("c");
  m.Submitted(a);
  m.Moved(a, v1::Job::QUEUED, v1::Job::FAILED);  // a is idle
  m.Submitted(b);                                // b stays queued
  m.Submitted(c);  // takes a's place; a's counts go to (other)
  std::vector<TaskSeries> all = m.Snapshot();
  EXPECT_EQ(Of(all, "a").task, "(absent)");
  EXPECT_EQ(Of(all, "c").queued, 1u);
  EXPECT_EQ(Of(all, "(other)").submitted, 1u);
  EXPECT_EQ(Of(all, "(other)").failed, 1u);
  EXPECT_EQ(m.kept(), 2u);
}

TEST(TaskMetrics, CountsANewNameUnderOtherWhileEveryKeptNameIsBusy) {
  TaskMetrics m(/*cap=*/1);
  const TaskName a = TaskName::Intern("a"), b = TaskName::Intern("b");
  m.Submitted(a);
  m.Submitted(b);
  m.Submitted(b);
  EXPECT_EQ(Of(m.Snapshot(), "(other)").queued, 2u);
  m.Moved(b, v1::Job::QUEUED, v1::Job::RUNNING);
  m.Moved(b, v1::Job::RUNNING, v1::Job::SUCCEEDED);
  m.Moved(b, v1::Job::QUEUED, v1::Job::CANCELLED);
  m.Moved(a, v1::Job::QUEUED, v1::Job::SUCCEEDED);
  // b is forgotten once it has nothing live; a stays, idle.
  m.Submitted(b);  // now a is idle: b takes its place
  std::vector<TaskSeries> all = m.Snapshot();
  EXPECT_EQ(Of(all, "b").queued, 1u);
  EXPECT_EQ(Of(all, "(other)").submitted, 3u);  // b's two and a's one
  EXPECT_EQ(Of(all, "(other)").succeeded, 2u);
  EXPECT_EQ(Of(all, "(other)").cancelled, 1u);
  EXPECT_EQ(Of(all, "(other)").queued, 0u);
}

}  // namespace
}  // namespace dexec::broker
