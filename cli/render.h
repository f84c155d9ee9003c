// How the CLI prints a job's result: as its bytes, except for the
// built-in tasks whose result is a protobuf message (sys.exec's is printed
// by `exec` itself). Pure; unit-tested in render_test.cc.
//
//   http.get, one result (`submit --wait`, `result`): the response's body,
//     as curl prints it.
//   http.get, one line per result (`map`): a JSON object,
//     {"status":200,"headers":["Name: value",...],"body":"..."}, with
//     "body_base64" instead of "body" when the body is not UTF-8 text.
#ifndef DEXEC_CLI_RENDER_H_
#define DEXEC_CLI_RENDER_H_

#include <string>

#include "absl/strings/string_view.h"

namespace dexec::cli {

// The bytes `dexec submit --wait` and `dexec result` print.
std::string ResultText(absl::string_view task, std::string result);

// The line (without '\n') `dexec map` prints for one result.
std::string ResultLine(absl::string_view task, std::string result);

// `s` as a JSON string literal (quotes included); `s` must be UTF-8.
std::string JsonQuote(absl::string_view s);

// Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates).
bool IsUtf8(absl::string_view s);

}  // namespace dexec::cli

#endif  // DEXEC_CLI_RENDER_H_
