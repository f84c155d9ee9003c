#include "cli/table.h"

#include <sstream>

#include "gtest/gtest.h"

namespace dexec::cli {
namespace {

TEST(Table, PadsEachColumnToItsWidestCellTwoSpacesApart) {
  Table t({"ID", "STATE", "TASK"});
  t.AddRow({"1", "QUEUED", "sys.echo"});
  t.AddRow({"12345", "SUCCEEDED", "x"});
  EXPECT_EQ(t.ToString(),
            "ID     STATE      TASK\n"
            "1      QUEUED     sys.echo\n"
            "12345  SUCCEEDED  x\n");
}

TEST(Table, HeaderMayBeTheWidest) {
  Table t({"ATTEMPTS", "W"});
  t.AddRow({"1", "w"});
  EXPECT_EQ(t.ToString(),
            "ATTEMPTS  W\n"
            "1         w\n");
}

TEST(Table, HeaderOnlyWhenNoRows) {
  Table t({"NAME", "HOST"});
  EXPECT_EQ(t.rows(), 0u);
  EXPECT_EQ(t.ToString(), "NAME  HOST\n");
}

TEST(Table, NoTrailingSpacesAfterEmptyLastCells) {
  Table t({"A", "B", "C"});
  t.AddRow({"x", "", ""});
  t.AddRow({"y", "long", ""});
  EXPECT_EQ(t.ToString(),
            "A  B     C\n"
            "x\n"
            "y  long\n");
}

TEST(Table, ShortRowsArePaddedWithEmptyCells) {
  Table t({"A", "B"});
  t.AddRow({"1"});
  t.AddRow({"22", "b", "extra"});
  EXPECT_EQ(t.ToString(),
            "A   B\n"
            "1\n"
            "22  b  extra\n");
}

TEST(Table, WithoutAHeaderPrintsOnlyRows) {
  Table t({});
  t.AddRow({"queued", "3"});
  t.AddRow({"succeeded", "10"});
  EXPECT_EQ(t.ToString(),
            "queued     3\n"
            "succeeded  10\n");
}

TEST(Table, CountsUtf8CodePointsNotBytes) {
  Table t({"NAME", "X"});
  t.AddRow({"\xC3\xA9t\xC3\xA9", "1"});  // "été": 3 code points, 5 bytes.
  t.AddRow({"abcd", "2"});
  EXPECT_EQ(t.ToString(),
            "NAME  X\n"
            "\xC3\xA9t\xC3\xA9   1\n"
            "abcd  2\n");
}

TEST(Table, ControlWhitespaceInACellKeepsTheRowOnOneLine) {
  Table t({"ERROR", "N"});
  t.AddRow({"line one\nline\ttwo\r", "1"});
  EXPECT_EQ(t.ToString(),
            "ERROR               N\n"
            "line one line two   1\n");
}

TEST(Table, PrintWritesToTheStream) {
  Table t({"A"});
  t.AddRow({"b"});
  std::ostringstream out;
  t.Print(out);
  EXPECT_EQ(out.str(), "A\nb\n");
}

}  // namespace
}  // namespace dexec::cli
