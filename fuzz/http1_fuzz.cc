// libFuzzer target: http.get's plain path on untrusted bytes (worker/http1.h).
//
// A server's answer: ResponseParser never crashes, in one piece or in two
// (split where the first byte says), keeps bodies within its limit, and
// a response it calls whole has a final status. A URL: a target it takes
// has a path with no byte that could split the request line.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "protos/tasks.pb.h"
#include "worker/http1.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http1_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dexec::worker::http1::ResponseParser;
  if (size == 0) return 0;
  const size_t split = data[0] % (size + 1);
  const char* bytes = reinterpret_cast<const char*>(data);
  constexpr size_t kMaxBody = 1024;
  for (bool head : {false, true}) {
    ResponseParser p(head, kMaxBody);
    ResponseParser::State s = p.Feed(bytes, split);
    if (s == ResponseParser::State::kMore)
      s = p.Feed(bytes + split, size - split);
    if (s == ResponseParser::State::kMore) s = p.FeedEof();
    Check(s != ResponseParser::State::kMore, "still wants bytes after EOF");
    Check(p.response().body().size() <= kMaxBody, "body over the limit");
    if (s == ResponseParser::State::kDone) {
      Check(p.response().status() >= 200 && p.response().status() <= 999,
            "a whole response without a final status");
      Check(!head || p.response().body().empty(), "a HEAD's body");
    } else {
      Check(!p.error().empty(), "an error without a reason");
      Check(!p.reusable(), "a failed connection kept");
    }
  }

  absl::string_view url(bytes, size);
  std::optional<dexec::worker::http1::Target> t =
      dexec::worker::http1::ParseTarget(url);
  if (t.has_value()) {
    for (char c : t->path + t->authority) {
      Check(static_cast<unsigned char>(c) > 0x20, "a control byte or space");
    }
    dexec::tasks::HttpRequest req;
    req.set_url(std::string(url));
    std::optional<std::string> wire =
        dexec::worker::http1::BuildRequest(req, *t);
    Check(wire.has_value(), "a plain GET it would not build");
    Check(wire->find("\r\n\r\n") == wire->size() - 4, "a head that ends early");
  }
  return 0;
}
