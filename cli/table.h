// An aligned text table, as `dexec status`, `list` and `workers` print it:
// a header row, then one row per item; each column is padded to its widest
// cell and columns are two spaces apart. The last column is not padded, so
// lines carry no trailing spaces.
//
//   Table t({"ID", "STATE"});
//   t.AddRow({"1", "QUEUED"});
//   t.AddRow({"12", "SUCCEEDED"});
//   t.Print(std::cout);
//   // ID  STATE
//   // 1   QUEUED
//   // 12  SUCCEEDED
//
// Width is counted in UTF-8 code points. Newlines, carriage returns and tabs
// inside a cell print as spaces so one row stays one line.
//
// Not thread-safe.
#ifndef DEXEC_CLI_TABLE_H_
#define DEXEC_CLI_TABLE_H_

#include <ostream>
#include <string>
#include <vector>

namespace dexec::cli {

class Table {
 public:
  // An empty `header` prints no header row (for key/value listings).
  explicit Table(std::vector<std::string> header);

  // A row shorter than the widest row is padded with empty cells.
  void AddRow(std::vector<std::string> cells);

  size_t rows() const { return rows_.size(); }

  void Print(std::ostream& out) const;
  std::string ToString() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace dexec::cli

#endif  // DEXEC_CLI_TABLE_H_
