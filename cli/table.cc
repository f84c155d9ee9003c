#include "cli/table.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace dexec::cli {
namespace {

constexpr char kGap[] = "  ";

// Code points, counting every byte that does not continue a UTF-8 sequence.
size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return s;
}

}  // namespace

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {
  for (std::string& cell : header_) cell = OneLine(std::move(cell));
}

void Table::AddRow(std::vector<std::string> cells) {
  for (std::string& cell : cells) cell = OneLine(std::move(cell));
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  size_t columns = header_.size();
  for (const auto& row : rows_) columns = std::max(columns, row.size());
  std::vector<size_t> widths(columns, 0);
  auto measure = [&widths](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);

  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < columns; ++i) {
      const std::string empty;
      const std::string& cell = i < row.size() ? row[i] : empty;
      if (i > 0) line += kGap;
      line += cell;
      if (i + 1 < columns) line.append(widths[i] - DisplayWidth(cell), ' ');
    }
    // Trailing empty cells would otherwise leave trailing spaces.
    line.erase(line.find_last_not_of(' ') + 1);
    out << line << '\n';
  };
  if (!header_.empty()) print_row(header_);
  for (const auto& row : rows_) print_row(row);
}

std::string Table::ToString() const {
  std::ostringstream out;
  Print(out);
  return out.str();
}

}  // namespace dexec::cli
