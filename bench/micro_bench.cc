// micro_bench: Google Benchmark micro-suite for the pieces every job passes
// through, to profile against (perf record, callgrind) without sockets,
// threads or a second process in the picture:
//
//   * the wire codec: EncodeFrame / DecodeFrame of a Dispatch and of a
//     Results frame (1 and 1024 tasks);
//   * ReadyQueue: Push then Pop of 1024 ids (the scheduler's pick), with the
//     worker offering 1 or 4 task names;
//   * JobTable: Insert of 1024 jobs, then SetState to RUNNING and SUCCEEDED;
//   * BrokerCore: a whole job life on the pure core with a manual clock —
//     Submit of a 1000-job batch from a session, then Schedule and one
//     Results frame per Dispatch from two 2-thread workers until all 1000
//     are done, then Tick (retention 0, so the finished jobs are forgotten
//     and the table stays small) — with and without journal change tracking;
//   * the broker's token check: TokenStore::AuthenticateHeader of a valid
//     and of an unknown bearer token, with 101 live tokens (what every RPC
//     and Session stream open pays on a secure broker);
//   * the dashboard's jobs page: HandleApi of GET /api/jobs (50 jobs, JSON)
//     over a BrokerCore holding 1,000,000 jobs — the newest page, a page
//     deep in the table, a task filter matching 1 job in 1000, and one
//     matching only the 50 oldest (the worst case: the page walks the whole
//     table). Issue 13's bound is 200 ms a page.
//   * a /metrics scrape (issue 13): what LoopApiBackend::GetMetrics runs on
//     the broker loop (GetStats, ListWorkers, BrokerCore::Metrics) over a
//     core holding 100,000 jobs, 4096 dispatched (a full ring of waits) by
//     two workers, and 1,000 task names; and that plus RenderMetrics (the
//     HTTP thread's part). A scrape every 100 ms costs 10 x the first.
//
// items_per_second is jobs (or tasks, or token checks) per second of one
// core. Run:
//
//   bazel build -c opt --check_visibility=false //bench:micro_bench
//   bazel-bin/bench/micro_bench --benchmark_filter=BrokerCore
//
// bench/run.sh runs it with repetitions and puts the medians in the report.
// Uses only the public headers of protos/wire.h, broker/*.h and
// auth/token_store.h; it does not reach into the broker's internals, so the
// broker can change under it.
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "auth/token_store.h"
#include "benchmark/benchmark.h"
#include "broker/broker_core.h"
#include "broker/http_api.h"
#include "broker/http_routes.h"
#include "broker/job.h"
#include "broker/job_table.h"
#include "broker/ready_queue.h"
#include "protos/dexec.pb.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"

namespace dexec::bench {
namespace {

constexpr char kTask[] = "sys.echo";
// Jobs per batch in the table, queue and core benchmarks: what one Submit
// message of the client carries (ExecutorOptions::max_batch is 1000).
constexpr int kBatch = 1024;
constexpr int kCoreBatch = 1000;
// Run time a no-op reports in the core benchmark's results.
constexpr int64_t kTaskUs = 5;

// An arbitrary fixed instant: the benchmarks never read the real clock.
absl::Time Epoch() { return absl::FromUnixSeconds(1'800'000'000); }

// Payloads like dexec_bench's no-ops: the decimal index.
wire::Frame DispatchFrame(int n) {
  wire::Frame f;
  wire::Dispatch* d = f.mutable_dispatch();
  for (int i = 0; i < n; ++i) {
    wire::Task* t = d->add_tasks();
    t->set_job_id(1'000'000 + i);
    t->set_attempt(1);
    t->set_name(kTask);
    t->set_payload(absl::StrCat(i));
  }
  return f;
}

wire::Frame ResultsFrame(int n) {
  wire::Frame f;
  wire::Results* r = f.mutable_results();
  const int64_t t0 = absl::ToUnixMicros(Epoch());
  for (int i = 0; i < n; ++i) {
    wire::TaskResult* t = r->add_results();
    t->set_job_id(1'000'000 + i);
    t->set_attempt(1);
    t->set_ok(true);
    t->set_output(absl::StrCat(i));
    t->set_started_at_us(t0 + i);
    t->set_finished_at_us(t0 + i + 3);
  }
  return f;
}

// EncodeFrame takes its frame by value (the broker moves a frame it built);
// the copy that feeds it is made with the clock stopped.
void BM_EncodeFrame(benchmark::State& state, wire::Frame (*make)(int)) {
  const int n = static_cast<int>(state.range(0));
  const wire::Frame frame = make(n);
  int64_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    wire::Frame copy = frame;
    state.ResumeTiming();
    std::string out = wire::EncodeFrame(std::move(copy));
    bytes += static_cast<int64_t>(out.size());
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(bytes);
}

void BM_DecodeFrame(benchmark::State& state, wire::Frame (*make)(int)) {
  const int n = static_cast<int>(state.range(0));
  const std::string bytes = wire::EncodeFrame(make(n));
  for (auto _ : state) {
    absl::StatusOr<wire::Frame> f = wire::DecodeFrame(bytes);
    if (!f.ok()) {
      state.SkipWithError("DecodeFrame rejected the benchmark's own frame");
      break;
    }
    benchmark::DoNotOptimize(*f);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(bytes.size()));
}

BENCHMARK_CAPTURE(BM_EncodeFrame, Dispatch, &DispatchFrame)->Arg(1)->Arg(1024);
BENCHMARK_CAPTURE(BM_DecodeFrame, Dispatch, &DispatchFrame)->Arg(1)->Arg(1024);
BENCHMARK_CAPTURE(BM_EncodeFrame, Results, &ResultsFrame)->Arg(1)->Arg(1024);
BENCHMARK_CAPTURE(BM_DecodeFrame, Results, &ResultsFrame)->Arg(1)->Arg(1024);

// kBatch pushes, then kBatch pops, all live; range(0) task names offered by
// the popping worker, the jobs spread over them.
void BM_ReadyQueuePushPop(benchmark::State& state) {
  const int tasks = static_cast<int>(state.range(0));
  std::vector<std::string> names;
  for (int i = 0; i < tasks; ++i) names.push_back(absl::StrCat("task.", i));
  const broker::ReadyQueue::IsLive live = [](uint64_t) { return true; };
  broker::ReadyQueue queue;
  uint64_t next_id = 1;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      queue.Push(names[i % tasks], 0, next_id++);
    }
    for (int i = 0; i < kBatch; ++i) {
      benchmark::DoNotOptimize(queue.Pop(names, live));
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_ReadyQueuePushPop)->ArgName("tasks")->Arg(1)->Arg(4);

// kBatch Inserts, then each job found by id (as a result finds it) and moved
// to RUNNING and SUCCEEDED. Expiring them is not timed.
void BM_JobTableInsertFinish(benchmark::State& state) {
  broker::JobTable table;
  absl::Time now = Epoch();
  std::vector<uint64_t> ids(kBatch);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      // Only the payload is set: the table does not look at the other
      // fields, and Job's layout is still changing (issue #4).
      broker::Job job;
      job.payload = absl::StrCat(i);
      ids[i] = table.Insert(std::move(job)).id;
    }
    for (uint64_t id : ids) {
      broker::Job* job = table.Find(id);
      table.SetState(*job, v1::Job::RUNNING, now);
      table.SetState(*job, v1::Job::SUCCEEDED, now);
    }
    state.PauseTiming();
    now += absl::Seconds(1);
    table.Expire(now, absl::ZeroDuration(), [](uint64_t) {});
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_JobTableInsertFinish);

// A whole job life through BrokerCore, as the broker loop drives it: one
// Submit of kCoreBatch jobs watched by a session, then rounds of Schedule ->
// each worker answers its whole Dispatch in one Results frame, until every
// job finished; then one Tick. range(0) = 1 tracks changes for the journal
// and takes them once per round (what the loop does per iteration).
// Two workers x 2 threads registering the worker's default prefetch
// (max(256, 4 x threads)); each result says its task ran 5 us, so the
// broker's adaptive credit (about 2 ms of work per worker) opens up after
// the first round, as it does for the end-to-end no-op benchmark.
void BM_BrokerCoreRoundTrip(benchmark::State& state) {
  const bool journal = state.range(0) != 0;
  broker::BrokerOptions options;
  options.journal = journal;
  options.retention = absl::ZeroDuration();  // Tick forgets finished jobs
  absl::Time now = Epoch();
  broker::BrokerCore core(options, now);
  broker::Outbox out;

  const std::vector<std::string> workers = {"worker-a", "worker-b"};
  for (const std::string& identity : workers) {
    wire::Frame reg;
    wire::Register* r = reg.mutable_register_();
    r->set_name(identity);
    r->set_host("localhost");
    r->set_pid(1);
    r->set_threads(2);
    r->set_prefetch(256);
    r->add_tasks(kTask);
    core.OnWorkerFrame(identity, "", reg, now, &out);
  }
  out.Clear();
  if (journal) core.TakeChanges();

  google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
  for (int i = 0; i < kCoreBatch; ++i) {
    v1::JobSpec* spec = specs.Add();
    spec->set_task(kTask);
    spec->set_payload(absl::StrCat(i));
  }
  const broker::SessionId session = 1;
  int64_t rounds = 0;

  for (auto _ : state) {
    absl::StatusOr<std::vector<uint64_t>> ids =
        core.Submit(specs, broker::Caller{}, session, now, &out);
    if (!ids.ok() || ids->size() != kCoreBatch) {
      state.SkipWithError("BrokerCore::Submit rejected the batch");
      break;
    }
    int64_t finished = 0;
    while (finished < kCoreBatch) {
      core.Schedule(now, &out);
      std::vector<std::pair<std::string, wire::Frame>> sent =
          std::move(out.to_workers);
      // Events the session would receive: count the terminal ones.
      for (auto& [sid, responses] : out.to_sessions) {
        for (const v1::SessionResponse& resp : responses) {
          for (const v1::JobEvent& e : resp.events().events()) {
            if (broker::IsTerminal(e.state())) ++finished;
          }
        }
      }
      out.Clear();
      if (journal) benchmark::DoNotOptimize(core.TakeChanges());
      bool dispatched = false;
      for (auto& [identity, frame] : sent) {
        if (!frame.has_dispatch()) continue;
        dispatched = true;
        core.NoteSent(identity, now);
        wire::Frame results;
        wire::Results* r = results.mutable_results();
        const int64_t now_us = absl::ToUnixMicros(now);
        for (const wire::Task& t : frame.dispatch().tasks()) {
          wire::TaskResult* tr = r->add_results();
          tr->set_job_id(t.job_id());
          tr->set_attempt(t.attempt());
          tr->set_ok(true);
          tr->set_output(t.payload());
          tr->set_started_at_us(now_us);
          tr->set_finished_at_us(now_us + kTaskUs);
        }
        core.OnWorkerFrame(identity, "", results, now, &out);
      }
      ++rounds;
      now += absl::Microseconds(kTaskUs);
      if (!dispatched && out.to_sessions.empty() && finished < kCoreBatch) {
        state.SkipWithError(
            "BrokerCore stopped dispatching before the batch "
            "finished");
        break;
      }
    }
    core.Tick(now, &out);
    out.Clear();
    if (journal) benchmark::DoNotOptimize(core.TakeChanges());
  }
  state.SetItemsProcessed(state.iterations() * kCoreBatch);
  state.counters["rounds_per_batch"] = benchmark::Counter(
      static_cast<double>(rounds) / std::max<int64_t>(1, state.iterations()));
}
BENCHMARK(BM_BrokerCoreRoundTrip)->ArgName("journal")->Arg(0)->Arg(1);

// A TokenStore with the admin token and 100 more, in a directory of its own
// under /tmp (TokenStore only opens a directory), removed at exit; made once
// for every run of the token benchmarks, since each Create writes and
// fsyncs the tokens file.
struct TokenFixture {
  std::string dir;
  std::unique_ptr<auth::TokenStore> store;
  std::string admin_secret;
  std::string error;  // why the fixture could not be made; empty if it was

  TokenFixture() {
    std::string tmpl = "/tmp/dexec-micro-tokens.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      error = "mkdtemp failed";
      return;
    }
    dir = tmpl;
    absl::StatusOr<std::unique_ptr<auth::TokenStore>> opened =
        auth::TokenStore::Open(dir + "/auth", Epoch());
    if (!opened.ok()) {
      error = std::string(opened.status().message());
      return;
    }
    store = std::move(*opened);
    for (int i = 0; i < 100; ++i) {
      absl::StatusOr<std::string> s = store->Create(
          absl::StrCat("client-", i), auth::Role::kSubmit, Epoch());
      if (!s.ok()) {
        error = std::string(s.status().message());
        return;
      }
    }
    std::ifstream in(store->client_token_path());
    std::getline(in, admin_secret);
    if (admin_secret.empty()) error = "no admin secret in client.token";
  }
  ~TokenFixture() {
    store.reset();
    std::error_code ignored;
    if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
  }
};

TokenFixture& Tokens() {
  static TokenFixture fixture;  // destroyed at exit: removes its directory
  return fixture;
}

// AuthenticateHeader of the `authorization` value a client sends: the
// admin's (valid:1), or a well-formed secret no token has (valid:0, the
// refusal path an unauthenticated client drives).
void BM_TokenAuthenticateHeader(benchmark::State& state) {
  TokenFixture& t = Tokens();
  if (!t.error.empty()) {
    state.SkipWithError(t.error.c_str());
    return;
  }
  const bool valid = state.range(0) == 1;
  std::string secret = t.admin_secret;
  if (!valid) secret.back() = secret.back() == '0' ? '1' : '0';
  const std::string header = "Bearer " + secret;
  for (auto _ : state) {
    absl::StatusOr<auth::Principal> who = t.store->AuthenticateHeader(header);
    if (who.ok() != valid) {
      state.SkipWithError("AuthenticateHeader gave the wrong answer");
      break;
    }
    benchmark::DoNotOptimize(who);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TokenAuthenticateHeader)->ArgName("valid")->Arg(1)->Arg(0);

// The API's questions answered straight from a BrokerCore (the broker's
// loop query adds one mailbox round trip on top).
class CoreApiBackend : public broker::ApiBackend {
 public:
  CoreApiBackend(broker::BrokerCore& core, absl::Time now)
      : core_(core), now_(now) {}
  absl::StatusOr<v1::Stats> GetStats() override { return core_.GetStats(now_); }
  absl::StatusOr<v1::ListJobsResponse> ListJobs(
      const broker::Caller& caller, const v1::ListJobsRequest& req) override {
    return core_.ListJobs(caller, req);
  }
  absl::StatusOr<v1::GetJobsResponse> GetJobs(
      const broker::Caller& caller, const v1::GetJobsRequest& req) override {
    return core_.GetJobs(caller, req);
  }
  absl::StatusOr<v1::CancelResponse> Cancel(const broker::Caller&,
                                            uint64_t) override {
    return absl::UnimplementedError("not in this benchmark");
  }
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers() override {
    return core_.ListWorkers();
  }

 private:
  broker::BrokerCore& core_;
  absl::Time now_;
};

constexpr int kRetainedJobs = 1'000'000;

// One core with kRetainedJobs queued jobs, built once for every case: the
// 50 oldest have task "oldest", every 1000th "rare", the rest "t".
broker::BrokerCore& MillionJobCore() {
  static broker::BrokerCore* core = [] {
    broker::BrokerOptions options;
    options.max_queued = kRetainedJobs + 1;
    auto* c = new broker::BrokerCore(options, Epoch());
    broker::Outbox out;
    constexpr int kBatch = 10'000;
    for (int done = 0; done < kRetainedJobs; done += kBatch) {
      google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
      for (int i = done; i < done + kBatch; ++i) {
        v1::JobSpec* spec = specs.Add();
        spec->set_task(i < 50 ? "oldest" : i % 1000 == 0 ? "rare" : "t");
        spec->set_payload("p");
      }
      if (!c->Submit(specs, broker::Caller{}, 0, Epoch(), &out).ok()) abort();
      out.Clear();
    }
    return c;
  }();
  return *core;
}

void BM_ApiJobsPage(benchmark::State& state) {
  broker::BrokerCore& core = MillionJobCore();
  CoreApiBackend backend(core, Epoch());
  broker::ApiRequest req{"GET", "/api/jobs", "limit=50", ""};
  switch (state.range(0)) {
    case 1:
      req.query = "limit=50&before_id=500000";
      break;
    case 2:
      req.query = "limit=50&task=rare";
      break;
    case 3:
      req.query = "limit=50&task=oldest";
      break;
    default:
      break;
  }
  for (auto _ : state) {
    broker::ApiReply reply =
        broker::HandleApi(req, broker::Caller{}, backend, Epoch());
    if (reply.status != 200) {
      state.SkipWithError(reply.body.c_str());
      break;
    }
    benchmark::DoNotOptimize(reply);
  }
  state.SetItemsProcessed(state.iterations());
}
// case: 0 newest page, 1 page at id 500,000, 2 task 1-in-1000, 3 task of
// the 50 oldest only (walks all 1,000,000).
BENCHMARK(BM_ApiJobsPage)
    ->ArgName("case")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Arg(3)
    ->Unit(benchmark::kMillisecond);

// 100,000 queued jobs of 1,000 tasks ("t0".."t999"), two workers holding
// 2,048 each.
broker::BrokerCore& ScrapedCore() {
  static broker::BrokerCore* core = [] {
    broker::BrokerOptions options;
    options.max_queued = 200'000;
    auto* c = new broker::BrokerCore(options, Epoch());
    broker::Outbox out;
    for (int done = 0; done < 100'000; done += 1000) {
      google::protobuf::RepeatedPtrField<v1::JobSpec> specs;
      for (int i = done; i < done + 1000; ++i) {
        v1::JobSpec* spec = specs.Add();
        spec->set_task(absl::StrCat("t", i % 1000));
        spec->set_payload("p");
      }
      if (!c->Submit(specs, broker::Caller{}, 0, Epoch(), &out).ok()) abort();
      out.Clear();
    }
    for (const char* name : {"w1", "w2"}) {
      wire::Frame f;
      wire::Register* r = f.mutable_register_();
      r->set_name(name);
      r->set_threads(2048);
      r->set_prefetch(0);
      for (int t = 0; t < 1000; ++t) r->add_tasks(absl::StrCat("t", t));
      c->OnWorkerFrame(name, "", f, Epoch(), &out);
    }
    c->Schedule(Epoch() + absl::Milliseconds(5), &out);
    out.Clear();
    return c;
  }();
  return *core;
}

void BM_MetricsScrape(benchmark::State& state) {
  broker::BrokerCore& core = ScrapedCore();
  const absl::Time now = Epoch() + absl::Seconds(1);
  size_t bytes = 0;
  for (auto _ : state) {
    broker::MetricsSnapshot m;
    m.stats = core.GetStats(now);
    m.workers = core.ListWorkers();
    m.core = core.Metrics(now);
    if (state.range(0) == 1) {
      std::string text = broker::RenderMetrics(m, nullptr, now);
      bytes = text.size();
      benchmark::DoNotOptimize(text);
    }
    benchmark::DoNotOptimize(m);
  }
  state.counters["exposition_bytes"] = static_cast<double>(bytes);
  state.SetItemsProcessed(state.iterations());
}
// part: 0 the loop's (snapshot), 1 snapshot + RenderMetrics.
BENCHMARK(BM_MetricsScrape)
    ->ArgName("render")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace dexec::bench
