// libFuzzer target: the broker <-> worker frame codec (protos/wire.h).
//
// Any bytes: DecodeFrame never crashes. Bytes it accepts re-encode to a
// frame that decodes again, to the same frame.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "protos/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dexec::wire::Frame> frame = dexec::wire::DecodeFrame(bytes);
  if (!frame.ok()) return 0;

  std::string encoded = dexec::wire::EncodeFrame(*frame);
  absl::StatusOr<dexec::wire::Frame> again = dexec::wire::DecodeFrame(encoded);
  if (!again.ok()) {
    std::fprintf(stderr, "re-encoded frame no longer decodes: %s\n",
                 again.status().ToString().c_str());
    std::abort();
  }
  // Encoding is a function of the frame: the second round gives the same
  // bytes (EncodeFrame's UTF-8 repair is idempotent).
  if (dexec::wire::EncodeFrame(*again) != encoded) {
    std::fprintf(stderr, "round trip changed the frame\n");
    std::abort();
  }
  return 0;
}
