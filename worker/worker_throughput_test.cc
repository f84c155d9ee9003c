// Manual benchmark (tags = ["manual"]): how many sys.echo tasks per second a
// Worker turns around for a broker that, like the real one, keeps exactly
// threads + prefetch tasks in flight and refills on every Results frame.
//
//   bazel test -c opt //worker:worker_throughput_test --test_output=all
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "protos/wire.h"
#include "protos/wire.pb.h"
#include "worker/builtin_tasks.h"
#include "worker/task_registry.h"
#include "worker/worker.h"
#include "zmq.hpp"

namespace dexec::worker {
namespace {

void RunBenchmark(int threads, int prefetch, int tasks) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  TaskRegistry registry;
  ASSERT_TRUE(RegisterBuiltinTasks(&registry).ok());
  WorkerOptions options;
  options.broker = router.get(zmq::sockopt::last_endpoint);
  options.threads = threads;
  options.prefetch = prefetch;
  Worker worker(options, &registry);
  ASSERT_TRUE(worker.Start().ok());

  auto receive = [&](zmq::message_t* id) -> wire::Frame {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(10000));
    EXPECT_TRUE(item.revents & ZMQ_POLLIN) << "worker went quiet";
    zmq::message_t body;
    (void)router.recv(*id);
    (void)router.recv(body);
    return *wire::DecodeFrame(
        absl::string_view(static_cast<const char*>(body.data()), body.size()));
  };
  zmq::message_t id;
  wire::Frame reg = receive(&id);
  ASSERT_TRUE(reg.has_register_());
  const std::string identity = id.to_string();
  auto send = [&](wire::Frame f) {
    std::string bytes = wire::EncodeFrame(std::move(f));
    router.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    router.send(zmq::buffer(bytes), zmq::send_flags::none);
  };
  wire::Frame welcome;
  welcome.mutable_welcome()->set_heartbeat_interval_ms(1000);
  welcome.mutable_welcome()->set_liveness(3);
  send(welcome);

  const int credit = reg.register_().threads() + reg.register_().prefetch();
  uint64_t next_job = 1;
  int in_flight = 0, done = 0;
  auto dispatch = [&](int n) {
    wire::Frame f;
    for (int i = 0; i < n && next_job <= static_cast<uint64_t>(tasks); ++i) {
      wire::Task* t = f.mutable_dispatch()->add_tasks();
      t->set_job_id(next_job++);
      t->set_attempt(1);
      t->set_name("sys.echo");
      t->set_payload("x");
      ++in_flight;
    }
    if (f.dispatch().tasks_size() > 0) send(std::move(f));
  };
  const absl::Time start = absl::Now();
  dispatch(credit);
  int frames = 0;
  while (done < tasks) {
    wire::Frame f = receive(&id);
    if (!f.has_results()) continue;
    ++frames;
    const int n = f.results().results_size();
    done += n;
    in_flight -= n;
    dispatch(n);
  }
  const absl::Duration took = absl::Now() - start;
  std::printf(
      "threads=%d prefetch=%d credit=%d tasks=%d: %.0f tasks/s, "
      "%.1f results per frame\n",
      threads, prefetch, credit, tasks, tasks / absl::ToDoubleSeconds(took),
      static_cast<double>(tasks) / frames);
  worker.Stop();
  worker.Wait();
}

TEST(WorkerThroughput, EchoRoundTrips) {
  RunBenchmark(1, 1, 100000);
  RunBenchmark(2, 1, 100000);
  RunBenchmark(2, 16, 200000);
  RunBenchmark(2, 64, 200000);
}

}  // namespace
}  // namespace dexec::worker
