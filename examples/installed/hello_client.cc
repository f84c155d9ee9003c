// A client program of your own, built against an installed dexec (see
// CMakeLists.txt): one Submit, then a Map, against the tasks of
// shout_worker.cc.
//
//   hello_client BROKER_HOST:PORT TOKEN_FILE
//
// Prints "HELLO" and then "3 6 9"; exits 1 with the error otherwise.
#include <cstdint>
#include <iostream>
#include <memory>
#include <vector>

#include "client/executor.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: hello_client BROKER_HOST:PORT TOKEN_FILE\n";
    return 2;
  }
  dexec::ExecutorOptions options;
  options.broker = argv[1];
  options.token_file = argv[2];
  absl::StatusOr<std::unique_ptr<dexec::Executor>> ex =
      dexec::Executor::Connect(options);
  if (!ex.ok()) {
    std::cerr << "hello_client: " << ex.status() << "\n";
    return 1;
  }

  dexec::Future<std::string> shouted =
      (*ex)->Submit("shout", std::string("hello"));
  absl::StatusOr<std::string> result = shouted.Result(absl::Seconds(60));
  if (!result.ok()) {
    std::cerr << "hello_client: shout: " << result.status() << "\n";
    return 1;
  }
  std::cout << *result << "\n";

  const std::vector<int64_t> inputs = {1, 2, 3};
  const char* separator = "";
  for (absl::StatusOr<int64_t> y : (*ex)->Map<int64_t>("triple", inputs)) {
    if (!y.ok()) {
      std::cerr << "\nhello_client: triple: " << y.status() << "\n";
      return 1;
    }
    std::cout << separator << *y;
    separator = " ";
  }
  std::cout << "\n";
  return 0;
}
