// An input iterator over anything with `std::optional<Value> Next()`, so such
// a source (MapResults, AsCompletedIterator) works in range-for:
//
//   for (absl::StatusOr<T>& r : results) ...
//
// begin() is NextIterator(source); end() is NextIterator(nullptr). Iterators
// of one source compare equal once both are exhausted. Not thread-safe.
#ifndef DEXEC_CLIENT_NEXT_ITERATOR_H_
#define DEXEC_CLIENT_NEXT_ITERATOR_H_

#include <cstddef>
#include <iterator>
#include <optional>

namespace dexec::internal {

template <typename Source, typename Value>
class NextIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = Value;
  using difference_type = std::ptrdiff_t;
  using pointer = value_type*;
  using reference = value_type&;

  // `source` is borrowed; nullptr makes the end iterator.
  explicit NextIterator(Source* source) : source_(source) {
    if (source_) current_ = source_->Next();
  }

  reference operator*() { return *current_; }
  pointer operator->() { return &*current_; }
  NextIterator& operator++() {
    current_ = source_->Next();
    return *this;
  }
  friend bool operator==(const NextIterator& a, const NextIterator& b) {
    return !a.current_.has_value() && !b.current_.has_value();
  }
  friend bool operator!=(const NextIterator& a, const NextIterator& b) {
    return !(a == b);
  }

 private:
  Source* source_;
  std::optional<value_type> current_;
};

}  // namespace dexec::internal

#endif  // DEXEC_CLIENT_NEXT_ITERATOR_H_
