// The /api/ handlers over a real BrokerCore (driven with a manual clock and
// real worker frames, as broker_core_test does), each answer parsed back as
// JSON with protobuf's parser.
#include "broker/http_api.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"
#include "protos/wire.h"

namespace dexec::broker {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Answers from a BrokerCore the test thread owns: the same calls the
// broker loop makes for the HTTP threads.
class CoreBackend : public ApiBackend {
 public:
  CoreBackend(BrokerCore& core, absl::Time& now) : core_(core), now_(now) {}
  absl::StatusOr<v1::Stats> GetStats() override { return core_.GetStats(now_); }
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const Caller& caller, const v1::ListJobsRequest& req) override {
    ++list_calls;
    last_list = req;
    return core_.ListJobs(caller, req);
  }
  absl::StatusOr<v1::GetJobsResponse> GetJobs(
      const Caller& caller, const v1::GetJobsRequest& req) override {
    return core_.GetJobs(caller, req);
  }
  absl::StatusOr<v1::CancelResponse> Cancel(const Caller& caller,
                                            uint64_t id) override {
    google::protobuf::RepeatedField<uint64_t> ids;
    ids.Add(id);
    Outbox out;
    return core_.Cancel(caller, ids, now_, &out);
  }
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers() override {
    return core_.ListWorkers();
  }

  int list_calls = 0;
  v1::ListJobsRequest last_list;

 private:
  BrokerCore& core_;
  absl::Time& now_;
};

class HttpApiTest : public ::testing::Test {
 protected:
  HttpApiTest() : core_(Options(), kT0), backend_(core_, now_) {}

  static BrokerOptions Options() {
    BrokerOptions o;
    o.heartbeat_interval = absl::Seconds(1);
    o.liveness = 3;
    o.requeue_backoff = absl::ZeroDuration();
    return o;
  }

  void Register(const std::string& id, int threads,
                std::vector<std::string> tasks) {
    wire::Frame f;
    wire::Register* r = f.mutable_register_();
    r->set_name(id);
    r->set_threads(threads);
    for (const auto& t : tasks) r->add_tasks(t);
    core_.OnWorkerFrame(id, "key-" + id, f, now_, &out_);
  }

  uint64_t Submit(const std::string& task, const Caller& caller = Caller{},
                  const std::string& payload = "p") {
    google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
    specs.Add()->set_task(task);
    specs.Mutable(0)->set_payload(payload);
    absl::StatusOr<std::vector<uint64_t>> ids =
        core_.Submit(specs, caller, 0, now_, &out_);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? (*ids)[0] : 0;
  }

  void Schedule() {
    core_.Schedule(now_, &out_);
    out_.Clear();
  }

  void Result(const std::string& worker, uint64_t job, bool ok,
              const std::string& output, const std::string& kind = "") {
    wire::Frame f;
    wire::TaskResult* r = f.mutable_results()->add_results();
    r->set_job_id(job);
    r->set_attempt(1);
    r->set_ok(ok);
    r->set_output(output);
    r->set_error_kind(kind);
    r->set_error_message(ok ? "" : "boom");
    core_.OnWorkerFrame(worker, "key-" + worker, f, now_, &out_);
    out_.Clear();
  }

  // Calls the API and parses the JSON answer (failing on invalid JSON).
  Struct Call(const std::string& method, const std::string& path,
              const std::string& query = "", int want_status = 200,
              const Caller& caller = Caller{}, const std::string& body = "") {
    ApiReply reply = HandleApi(ApiRequest{method, path, query, body}, caller,
                               backend_, now_);
    EXPECT_EQ(reply.status, want_status)
        << method << " " << path << "?" << query << ": " << reply.body;
    Struct s;
    EXPECT_TRUE(
        google::protobuf::util::JsonStringToMessage(reply.body, &s).ok())
        << "not JSON: " << reply.body;
    return s;
  }

  static const Value& F(const Struct& s, const std::string& key) {
    static const Value kNull;
    auto it = s.fields().find(key);
    return it == s.fields().end() ? kNull : it->second;
  }
  static std::string Str(const Struct& s, const std::string& key) {
    return F(s, key).string_value();
  }
  static double Num(const Struct& s, const std::string& key) {
    return F(s, key).number_value();
  }
  static std::string ErrorMessage(const Struct& s) {
    return Str(F(s, "error").struct_value(), "message");
  }

  absl::Time now_ = kT0;
  BrokerCore core_;
  CoreBackend backend_;
  Outbox out_;
};

TEST_F(HttpApiTest, StatsCountJobsAndWorkers) {
  Register("w1", 4, {"t"});
  Submit("t");
  Submit("t");
  Submit("other");
  Schedule();
  Struct s = Call("GET", "/api/stats");
  EXPECT_EQ(Num(s, "running"), 2);
  EXPECT_EQ(Num(s, "wait_samples"), 2);
  EXPECT_EQ(Num(s, "wait_p50_ms"), 0);  // dispatched at once
  EXPECT_EQ(F(Call("GET", "/api/stats"), "wait_p99_ms").kind_case(),
            Value::kNumberValue);
  EXPECT_EQ(Num(s, "queued"), 1);
  EXPECT_EQ(Num(s, "submitted_total"), 3);
  EXPECT_EQ(Num(s, "workers"), 1);
  EXPECT_EQ(Num(s, "threads"), 4);
  EXPECT_EQ(Num(s, "succeeded_total"), 0);
}

TEST_F(HttpApiTest, StatsCountFinishedJobsByOutcome) {
  Register("w1", 4, {"t"});
  const uint64_t a = Submit("t"), b = Submit("t");
  Submit("t");
  Schedule();
  Result("w1", a, true, "ok");
  Result("w1", b, false, "");
  Call("POST", "/api/jobs/3/cancel");
  Struct s = Call("GET", "/api/stats");
  EXPECT_EQ(Num(s, "finished_total"), 3);
  EXPECT_EQ(Num(s, "succeeded_total"), 1);
  EXPECT_EQ(Num(s, "failed_total"), 1);
  EXPECT_EQ(Num(s, "cancelled_total"), 1);
}

TEST_F(HttpApiTest, JobsFilterByStateAndTaskAndPageOnTheBroker) {
  Register("w1", 1, {"a"});
  std::vector<uint64_t> a, b;
  for (int i = 0; i < 5; ++i) a.push_back(Submit("a"));
  for (int i = 0; i < 3; ++i) b.push_back(Submit("b"));
  Schedule();  // a[0] runs

  Struct page = Call("GET", "/api/jobs", "task=a&limit=2");
  const auto& jobs = F(page, "jobs").list_value().values();
  ASSERT_EQ(jobs.size(), 2);
  EXPECT_EQ(Num(jobs[0].struct_value(), "id"), a[4]);  // newest first
  EXPECT_EQ(Num(jobs[1].struct_value(), "id"), a[3]);
  EXPECT_EQ(Str(jobs[0].struct_value(), "state"), "queued");
  EXPECT_EQ(Num(page, "next_before_id"), a[3]);
  // The broker was asked for one page (plus one to know there is more),
  // not for every job.
  EXPECT_EQ(backend_.last_list.limit(), 3);
  EXPECT_EQ(backend_.last_list.task(), "a");

  page =
      Call("GET", "/api/jobs", absl::StrCat("task=a&limit=2&before_id=", a[1]));
  ASSERT_EQ(F(page, "jobs").list_value().values_size(), 1);
  EXPECT_EQ(Num(F(page, "jobs").list_value().values(0).struct_value(), "id"),
            a[0]);
  EXPECT_EQ(F(page, "next_before_id").kind_case(), Value::kNullValue);

  page = Call("GET", "/api/jobs", "state=RUNNING");
  ASSERT_EQ(F(page, "jobs").list_value().values_size(), 1);
  const Struct& running = F(page, "jobs").list_value().values(0).struct_value();
  EXPECT_EQ(Num(running, "id"), a[0]);
  EXPECT_EQ(Str(running, "worker"), "w1");
  page = Call("GET", "/api/jobs", "state=queued&task=b");
  EXPECT_EQ(F(page, "jobs").list_value().values_size(), 3);
  EXPECT_FALSE(F(page, "scan_stopped").bool_value());
  // Percent-escapes and '+' decode.
  Submit("my task");
  page = Call("GET", "/api/jobs", "task=my%20task");
  EXPECT_EQ(F(page, "jobs").list_value().values_size(), 1);
  page = Call("GET", "/api/jobs", "task=my+task");
  EXPECT_EQ(F(page, "jobs").list_value().values_size(), 1);
}

TEST_F(HttpApiTest, OneJobShowsSpecAttemptsErrorAndResultPreview) {
  Register("w1", 2, {"t", "sys.exec"});
  const uint64_t ok = Submit("t");
  const uint64_t bad = Submit("t");
  Schedule();
  Result("w1", ok, true, std::string(10000, 'x') + "\xFF");
  Result("w1", bad, false, "", "exception");

  Struct j = Call("GET", absl::StrCat("/api/jobs/", ok));
  EXPECT_EQ(Str(j, "state"), "succeeded");
  EXPECT_EQ(Str(F(j, "spec").struct_value(), "task"), "t");
  EXPECT_EQ(Num(F(j, "spec").struct_value(), "payload_size"), 1);
  const Struct& preview = F(j, "result").struct_value();
  EXPECT_EQ(Num(preview, "bytes"), 10001);
  EXPECT_TRUE(F(preview, "truncated").bool_value());
  EXPECT_EQ(Str(preview, "text").size(), kPreviewBytes);
  ASSERT_EQ(F(j, "attempt_log").list_value().values_size(), 1);
  const Struct& attempt =
      F(j, "attempt_log").list_value().values(0).struct_value();
  EXPECT_EQ(Str(attempt, "worker"), "w1");

  j = Call("GET", absl::StrCat("/api/jobs/", bad));
  EXPECT_EQ(Str(j, "state"), "failed");
  EXPECT_EQ(Str(F(j, "error").struct_value(), "kind"), "exception");
  EXPECT_EQ(Str(F(j, "error").struct_value(), "message"), "boom");

  // sys.exec: exit code and the streams, previewed.
  const uint64_t exec = Submit("sys.exec");
  Schedule();
  tasks::ExecResult er;
  er.set_exit_code(3);
  er.set_stdout("hello\n");
  er.set_stderr("oops\n");
  Result("w1", exec, false, er.SerializeAsString(), "exit_code");
  j = Call("GET", absl::StrCat("/api/jobs/", exec));
  const Struct& e = F(j, "exec").struct_value();
  EXPECT_EQ(Num(e, "exit_code"), 3);
  EXPECT_EQ(Str(F(e, "stdout").struct_value(), "text"), "hello\n");
  EXPECT_EQ(Str(F(e, "stderr").struct_value(), "text"), "oops\n");
}

TEST_F(HttpApiTest, CancelIsForAdminAndTheOwnerOnly) {
  const Caller alice{"alice", Caller::kSubmit};
  const Caller bob{"bob", Caller::kSubmit};
  const Caller reader{"carol", Caller::kRead};
  Register("w1", 1, {"t"});
  const uint64_t hers = Submit("t", alice);
  Schedule();  // running
  const std::string path = absl::StrCat("/api/jobs/", hers, "/cancel");

  Struct r = Call("POST", path, "", 403, reader);
  EXPECT_NE(ErrorMessage(r).find("role read"), std::string::npos);
  // Another submit token does not see the job at all.
  r = Call("POST", path, "", 404, bob);
  Call("GET", absl::StrCat("/api/jobs/", hers), "", 404, bob);
  EXPECT_EQ(F(Call("GET", "/api/jobs", "", 200, bob), "jobs")
                .list_value()
                .values_size(),
            0);
  // A read token sees the job, not its result.
  Struct seen = Call("GET", absl::StrCat("/api/jobs/", hers), "", 200, reader);
  EXPECT_FALSE(F(seen, "result_visible").bool_value());
  EXPECT_EQ(core_.jobs().Find(hers)->state, v1::Job::RUNNING);

  EXPECT_FALSE(F(seen, "can_cancel").bool_value());
  EXPECT_TRUE(F(Call("GET", absl::StrCat("/api/jobs/", hers), "", 200, alice),
                "can_cancel")
                  .bool_value());
  EXPECT_EQ(Str(Call("GET", "/api/whoami", "", 200, reader), "role"), "read");
  EXPECT_EQ(Str(Call("GET", "/api/whoami", "", 200, alice), "name"), "alice");

  r = Call("POST", path, "", 200, alice);
  EXPECT_TRUE(F(r, "cancelled").bool_value());
  EXPECT_EQ(Str(r, "state"), "cancelled");
  EXPECT_EQ(core_.jobs().Find(hers)->state, v1::Job::CANCELLED);

  // Admin cancels anyone's; a finished job is not cancelled.
  const uint64_t other = Submit("t", bob);
  r = Call("POST", absl::StrCat("/api/jobs/", other, "/cancel"));
  EXPECT_TRUE(F(r, "cancelled").bool_value());
  Call("GET", absl::StrCat("/api/jobs/", other, "/cancel"), "", 405);
}

TEST_F(HttpApiTest, WorkersShowThreadsBusyHeartbeatAgeAndState) {
  Register("w1", 2, {"t"});
  Register("w2", 1, {"u"});
  Submit("t");
  Schedule();
  now_ += absl::Milliseconds(1500);
  Struct s = Call("GET", "/api/workers");
  const auto& ws = F(s, "workers").list_value().values();
  ASSERT_EQ(ws.size(), 2);
  for (const Value& v : ws) {
    const Struct& w = v.struct_value();
    EXPECT_EQ(Num(w, "heartbeat_age_ms"), 1500);
    if (Str(w, "name") == "w1") {
      EXPECT_EQ(Num(w, "threads"), 2);
      EXPECT_EQ(Num(w, "busy"), 1);
      EXPECT_EQ(Str(w, "state"), "busy");
    } else {
      EXPECT_EQ(Str(w, "state"), "idle");
    }
  }
}

TEST_F(HttpApiTest, BadInputGets4xxWithAMessage) {
  EXPECT_NE(ErrorMessage(Call("GET", "/api/jobs", "state=done", 400))
                .find("queued, running"),
            std::string::npos);
  EXPECT_NE(ErrorMessage(Call("GET", "/api/jobs", "limit=0", 400))
                .find("must be 1 to 500"),
            std::string::npos);
  Call("GET", "/api/jobs", "limit=100000", 400);
  Call("GET", "/api/jobs", "limit=abc", 400);
  Call("GET", "/api/jobs", "before_id=-1", 400);
  Call("GET", "/api/jobs", "task=%G1", 400);
  Call("GET", "/api/jobs", "task=%4", 400);
  Call("GET", "/api/jobs/abc", "", 400);
  Call("GET", "/api/jobs/0", "", 400);
  Call("GET", "/api/jobs/99999999999999999999999", "", 400);
  EXPECT_NE(ErrorMessage(Call("GET", "/api/jobs/12345", "", 404))
                .find("job 12345 is unknown"),
            std::string::npos);
  Call("POST", "/api/jobs/12345/cancel", "", 404);
  Call("GET", "/api/nothing", "", 404);
  Call("DELETE", "/api/stats", "", 405);
  Call("POST", "/api/jobs", "", 405);
  EXPECT_NE(ErrorMessage(Call("POST", "/api/jobs/1/cancel", "", 413, Caller{},
                              std::string(kMaxApiBodyBytes + 1, 'x')))
                .find("at most"),
            std::string::npos);
  // Nothing reached the broker for a request refused before it.
  EXPECT_EQ(backend_.list_calls, 0);
}

// A job whose task name and error hold bytes that are not UTF-8 still
// gives valid JSON.
TEST_F(HttpApiTest, ArbitraryBytesInJobsGiveValidJson) {
  Register("w1", 1, {"t\x01\"<"});
  const uint64_t id = Submit("t\x01\"<");
  Schedule();
  Result("w1", id, true, std::string("\0\xC3\x28\xE2\x82", 5));
  Struct j = Call("GET", absl::StrCat("/api/jobs/", id));
  EXPECT_EQ(Str(j, "task"), "t\x01\"<");
  Call("GET", "/api/jobs");
}

// A filter matching few of many jobs stops after kMaxJobsScan examined and
// says where to go on; following next_before_id finds the rest.
TEST_F(HttpApiTest, AFilteredPageStopsAtTheScanBoundAndResumes) {
  const uint64_t old = Submit("rare");
  for (uint32_t i = 0; i < kMaxJobsScan + 10; ++i) Submit("common");
  Struct page = Call("GET", "/api/jobs", "task=rare");
  EXPECT_EQ(F(page, "jobs").list_value().values_size(), 0);
  EXPECT_TRUE(F(page, "scan_stopped").bool_value());
  const double next = Num(page, "next_before_id");
  EXPECT_GT(next, old);
  page =
      Call("GET", "/api/jobs",
           absl::StrCat("task=rare&before_id=", static_cast<uint64_t>(next)));
  ASSERT_EQ(F(page, "jobs").list_value().values_size(), 1);
  EXPECT_EQ(Num(F(page, "jobs").list_value().values(0).struct_value(), "id"),
            old);
  EXPECT_EQ(F(page, "next_before_id").kind_case(), Value::kNullValue);
  EXPECT_FALSE(F(page, "scan_stopped").bool_value());
}

// Hostile input never crashes the API and always gets a JSON answer: a
// fixed-seed stream of paths and queries built from the real routes with
// random bytes, escapes and numbers spliced in.
TEST_F(HttpApiTest, RandomRequestsGetJsonAndNeverCrash) {
  Register("w1", 1, {"t"});
  const uint64_t id = Submit("t");
  Schedule();
  std::mt19937 rng(13);
  const std::vector<std::string> paths = {
      "/api/stats",
      "/api/jobs",
      "/api/jobs/",
      absl::StrCat("/api/jobs/", id),
      absl::StrCat("/api/jobs/", id, "/cancel"),
      "/api/workers",
      "/api/whoami",
      "/api/",
      "/api/jobs//cancel",
      "/api/jobs/1/2/cancel"};
  const std::vector<std::string> bits = {"state=",  "task=",
                                         "limit=",  "before_id=",
                                         "&",       "=",
                                         "%",       "%2",
                                         "%zz",     "%00",
                                         "+",       "-1",
                                         "0",       "18446744073709551616",
                                         "\xff",    "\xc3(",
                                         "running", "ALL",
                                         "\"",      "<script>",
                                         "\n"};
  const std::vector<std::string> methods = {"GET", "POST", "HEAD", "PUT", ""};
  const Caller callers[] = {Caller{}, Caller{"a", Caller::kSubmit},
                            Caller{"r", Caller::kRead}};
  for (int n = 0; n < 3000; ++n) {
    ApiRequest req;
    req.method = methods[rng() % methods.size()];
    req.path = paths[rng() % paths.size()];
    if (rng() % 4 == 0) req.path += static_cast<char>(rng() % 256);
    for (int k = rng() % 6; k > 0; --k) req.query += bits[rng() % bits.size()];
    for (int k = rng() % 3; k > 0; --k)
      req.query += static_cast<char>(rng() % 256);
    const ApiReply reply = HandleApi(req, callers[rng() % 3], backend_, now_);
    ASSERT_GE(reply.status, 200);
    ASSERT_LT(reply.status, 600);
    Struct parsed;
    ASSERT_TRUE(
        google::protobuf::util::JsonStringToMessage(reply.body, &parsed).ok())
        << req.method << " " << req.path << "?" << req.query << " -> "
        << reply.body;
  }
}

}  // namespace
}  // namespace dexec::broker
