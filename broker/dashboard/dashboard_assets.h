// The dashboard's static files (broker/dashboard/), embedded into the broker
// binary at build time: a genrule runs bazel/embed_assets.py over them and
// compiles the bytes in (docs/DESIGN.md, "HTTP API and dashboard"), so a
// broker serves its own dashboard with no files installed beside it.
//
//   if (const DashboardAsset* a = FindDashboardAsset(request.path)) {
//     response.content_type = std::string(a->content_type);
//     response.body = std::string(a->body);
//   }
//
// Thread-safe: the table is constant.
#ifndef DEXEC_BROKER_DASHBOARD_DASHBOARD_ASSETS_H_
#define DEXEC_BROKER_DASHBOARD_DASHBOARD_ASSETS_H_

#include "absl/strings/string_view.h"

namespace dexec::broker {

struct DashboardAsset {
  absl::string_view content_type;  // e.g. "text/html; charset=utf-8"
  absl::string_view body;          // the file's bytes, static storage
};

// The file served at URL `path` (no query): "/" is the page itself
// (index.html), "/static/app.js" and "/static/app.css" its script and
// style. Null for any other path.
const DashboardAsset* FindDashboardAsset(absl::string_view path);

}  // namespace dexec::broker

#endif  // DEXEC_BROKER_DASHBOARD_DASHBOARD_ASSETS_H_
