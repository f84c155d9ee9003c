#include "worker/worker_core.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "protos/error_kind.h"
#include "protos/wire.h"

namespace dexec::worker {
namespace {

TaskKey KeyOf(const wire::TaskResult& r) {
  return TaskKey(r.job_id(), r.attempt());
}

// Memory a kept result costs, roughly.
size_t CostOf(const wire::TaskResult& r) {
  return r.output().size() + r.error_message().size() + 64;
}

}  // namespace

WorkerCore::WorkerCore(WorkerCoreOptions options, absl::Time now)
    : options_(std::move(options)),
      interval_(options_.heartbeat_interval),
      liveness_(options_.liveness),
      last_recv_(now),
      last_send_(now) {}

void WorkerCore::OnConnected(absl::Time now, WorkerOutbox* out) {
  connected_ = true;
  last_recv_ = now;
  SendRegister(now, out);
}

void WorkerCore::OnConnectFailed(absl::Time now) {
  reconnect_at_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

void WorkerCore::OnSocketError(absl::Time now, WorkerOutbox* out) {
  Close(0, out);
  reconnect_at_ = now + backoff_;
}

void WorkerCore::Close(int linger_ms, WorkerOutbox* out) {
  if (!connected_) return;
  out->close_linger_ms = linger_ms;
  connected_ = false;
  welcomed_ = false;
  register_pending_ = false;
}

void WorkerCore::Send(wire::Frame frame, absl::Time now, WorkerOutbox* out) {
  if (!connected_) return;
  out->frames.push_back(std::move(frame));
  last_send_ = now;
}

void WorkerCore::SendRegister(absl::Time now, WorkerOutbox* out) {
  welcomed_ = false;
  register_pending_ = true;
  if (!in_doubt_.empty()) {
    // Offer them again, ahead of the newer unsent ones.
    std::vector<wire::TaskResult> again;
    again.reserve(in_doubt_.size() + unsent_.size());
    for (SentResult& sent : in_doubt_) again.push_back(std::move(sent.result));
    for (wire::TaskResult& r : unsent_) again.push_back(std::move(r));
    unsent_ = std::move(again);
    in_doubt_.clear();
    in_doubt_bytes_ = 0;
  }
  wire::Frame frame;
  wire::Register* reg = frame.mutable_register_();
  reg->set_name(options_.name);
  reg->set_host(options_.host);
  reg->set_pid(options_.pid);
  reg->set_threads(options_.threads);
  reg->set_prefetch(options_.prefetch);
  reg->set_chunked_results(true);
  for (const std::string& task : options_.tasks) reg->add_tasks(task);
  if (!options_.async_tasks.empty()) {
    reg->set_concurrency(options_.concurrency);
    for (const std::string& task : options_.async_tasks) {
      reg->add_async_tasks(task);
    }
  }
  // Everything we still hold, so that a broker that restarted (or forgot
  // us) keeps these attempts assigned to us instead of running them again.
  // Sorted so the frame does not depend on hash order.
  std::vector<TaskKey> held;
  held.reserve(active_.size() + unsent_.size());
  for (const auto& [key, run_id] : active_) held.push_back(key);
  for (const wire::TaskResult& r : unsent_) held.push_back(KeyOf(r));
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  for (const TaskKey& key : held) {
    wire::TaskRef* ref = reg->add_held();
    ref->set_job_id(key.first);
    ref->set_attempt(key.second);
  }
  Send(std::move(frame), now, out);
}

void WorkerCore::OnFrame(wire::Frame& frame, absl::Time now,
                         WorkerOutbox* out) {
  if (left_) return;
  in_bad_burst_ = false;
  last_recv_ = now;  // any frame counts as a heartbeat
  switch (frame.body_case()) {
    case wire::Frame::kWelcome:
      OnWelcome(frame.welcome(), now, out);
      break;
    case wire::Frame::kDispatch:
      OnDispatch(*frame.mutable_dispatch(), now, out);
      break;
    case wire::Frame::kAbandon:
      OnAbandon(frame.abandon(), out);
      break;
    case wire::Frame::kReconnect:
      if (register_pending_) {
        DEXEC_LOG(DEBUG) << "Reconnect ignored: registration under way "
                            "worker="
                         << options_.name;
        break;
      }
      DEXEC_LOG(INFO) << "broker asked to register again worker="
                      << options_.name;
      SendRegister(now, out);
      break;
    case wire::Frame::kHeartbeat:
      break;  // liveness only
    default:
      OnBadFrame("frame of a kind only workers send", now, out);
      break;
  }
}

void WorkerCore::OnBadFrame(absl::string_view why, absl::Time now,
                            WorkerOutbox* out) {
  ++bad_frames_;
  if (in_bad_burst_ && now - last_bad_log_ < kBadFrameLogInterval) return;
  in_bad_burst_ = true;
  last_bad_log_ = now;
  out->bad_frame_log =
      absl::StrCat("reason=\"", why, "\" bad_frames_total=", bad_frames_);
}

void WorkerCore::OnWelcome(const wire::Welcome& welcome, absl::Time now,
                           WorkerOutbox* out) {
  interval_ = absl::Milliseconds(welcome.heartbeat_interval_ms());
  liveness_ = welcome.liveness();
  max_result_bytes_ = static_cast<uint64_t>(welcome.max_result_bytes());
  max_frame_bytes_ = static_cast<uint64_t>(welcome.max_frame_bytes());
  max_chunk_bytes_ = static_cast<uint64_t>(welcome.max_chunk_bytes());
  backoff_ = kInitialBackoff;
  welcomed_ = true;
  register_pending_ = false;
  DEXEC_LOG(INFO) << "registered with broker worker=" << options_.name
                  << " heartbeat=" << absl::FormatDuration(interval_)
                  << " liveness=" << liveness_
                  << " pending_results=" << unsent_.size();
  if (draining_) {
    // A new broker session: say again that we take no more work.
    wire::Frame frame;
    frame.mutable_worker_state()->set_draining(true);
    Send(std::move(frame), now, out);
  }
  Flush(now, out);
}

void WorkerCore::OnDispatch(wire::Dispatch& dispatch, absl::Time now,
                            WorkerOutbox* out) {
  out->start.reserve(out->start.size() + dispatch.tasks_size());
  for (wire::Task& task : *dispatch.mutable_tasks()) {
    const TaskKey key(task.job_id(), task.attempt());
    const uint64_t run_id = next_run_id_;
    if (!active_.emplace(key, run_id).second) {
      DEXEC_LOG(DEBUG) << "duplicate dispatch ignored job=" << key.first
                       << " attempt=" << key.second;
      continue;
    }
    ++next_run_id_;
    // timeout_ms is relative because the two hosts' clocks differ; the
    // deadline starts when the task reaches us.
    const absl::Time deadline =
        task.timeout_ms() > 0 ? now + absl::Milliseconds(task.timeout_ms())
                              : absl::InfiniteFuture();
    out->start.push_back(TaskStart{run_id, std::move(task), deadline});
  }
}

void WorkerCore::OnAbandon(const wire::Abandon& abandon, WorkerOutbox* out) {
  absl::flat_hash_set<TaskKey> finished;
  for (const wire::TaskRef& ref : abandon.tasks()) {
    const TaskKey key(ref.job_id(), ref.attempt());
    auto it = active_.find(key);
    if (it == active_.end()) {
      finished.insert(key);
      continue;
    }
    // The broker has already settled this attempt: cancel it (a sleeping
    // task wakes at once, sys.exec kills its process group) and never
    // report it, whatever it returns.
    out->cancel.push_back(it->second);
    active_.erase(it);
  }
  if (finished.empty()) return;
  // Finished already: the result may still wait for a Welcome (the broker
  // abandons held attempts of settled jobs right after one), or be kept in
  // doubt. Either way, never offer it again.
  unsent_.erase(std::remove_if(unsent_.begin(), unsent_.end(),
                               [&finished](const wire::TaskResult& r) {
                                 return finished.contains(KeyOf(r));
                               }),
                unsent_.end());
  for (auto d = in_doubt_.begin(); d != in_doubt_.end();) {
    if (!finished.contains(KeyOf(d->result))) {
      ++d;
      continue;
    }
    in_doubt_bytes_ -= CostOf(d->result);
    d = in_doubt_.erase(d);
  }
}

void WorkerCore::OnFinished(uint64_t run_id, wire::TaskResult result) {
  if (left_) return;
  auto it = active_.find(KeyOf(result));
  if (it == active_.end() || it->second != run_id) return;
  active_.erase(it);
  unsent_.push_back(std::move(result));
}

void WorkerCore::Flush(absl::Time now, WorkerOutbox* out) {
  if (unsent_.empty() || !welcomed_) return;
  // Bytes per frame: the budget, and under the broker's frame limit with
  // room for the envelope (ids, error text: wire.h).
  size_t budget = kResultsFrameBudget;
  if (max_frame_bytes_ > wire::kFrameEnvelopeBytes) {
    budget =
        std::min<size_t>(budget, max_frame_bytes_ - wire::kFrameEnvelopeBytes);
  }
  wire::Frame frame;
  size_t bytes = 0;
  auto add = [&](wire::TaskResult piece) {
    // The result's bytes in the frame, and a little for its tag and length.
    const size_t size = piece.ByteSizeLong() + 16;
    if (frame.results().results_size() > 0 && bytes + size > budget) {
      Send(std::move(frame), now, out);
      frame = wire::Frame();
      bytes = 0;
    }
    bytes += size;
    *frame.mutable_results()->add_results() = std::move(piece);
  };
  for (wire::TaskResult& r : unsent_) {
    if (max_result_bytes_ > 0 && r.output().size() > max_result_bytes_) {
      const size_t size = r.output().size();
      r.clear_output();
      r.set_ok(false);
      r.set_error_kind(std::string(error_kind::kResultTooLarge));
      r.set_error_message(wire::ResultTooLargeMessage(size, max_result_bytes_));
    }
    const size_t size = r.output().size();
    if (max_chunk_bytes_ == 0 || size <= max_chunk_bytes_) {
      add(r);
    } else {
      // In pieces, back to back: the broker takes one output at a time per
      // worker. The last piece says how the task ended.
      for (size_t offset = 0; offset < size; offset += max_chunk_bytes_) {
        const size_t n = std::min<size_t>(max_chunk_bytes_, size - offset);
        wire::TaskResult piece;
        piece.set_job_id(r.job_id());
        piece.set_attempt(r.attempt());
        piece.set_output_size(size);
        piece.set_output_offset(offset);
        piece.set_output(r.output().data() + offset, n);
        if (offset + n == size) {
          piece.set_ok(r.ok());
          piece.set_error_kind(r.error_kind());
          piece.set_error_message(r.error_message());
          piece.set_started_at_us(r.started_at_us());
          piece.set_finished_at_us(r.finished_at_us());
        }
        add(std::move(piece));
      }
    }
    in_doubt_bytes_ += CostOf(r);
    in_doubt_.push_back(SentResult{now, std::move(r)});
  }
  unsent_.clear();
  Send(std::move(frame), now, out);
  ForgetSettledResults();
}

void WorkerCore::ForgetSettledResults() {
  // Sent a heartbeat interval before the broker's latest frame: it has
  // almost surely read them by then, and its journal (group commit,
  // milliseconds) has them too. A heuristic: the protocol has no acks.
  const absl::Time settled_before = last_recv_ - interval_;
  while (!in_doubt_.empty() && (in_doubt_.front().sent_at < settled_before ||
                                in_doubt_bytes_ > kMaxInDoubtBytes)) {
    in_doubt_bytes_ -= CostOf(in_doubt_.front().result);
    in_doubt_.pop_front();
  }
}

void WorkerCore::PresumeBrokerDead(absl::Time now, WorkerOutbox* out) {
  DEXEC_LOG(WARNING) << "broker lost worker=" << options_.name
                     << " silent_for=" << absl::FormatDuration(now - last_recv_)
                     << " retry_in=" << absl::FormatDuration(backoff_)
                     << " tasks=" << active_.size();
  // Whatever is still queued for a dead peer is worthless: no linger.
  Close(0, out);
  reconnect_at_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
}

void WorkerCore::Tick(absl::Time now, WorkerOutbox* out) {
  if (left_) return;
  if (draining_ && active_.empty() && unsent_.empty()) {
    Leave(now, "drained", out);
    return;
  }
  if (draining_ && now >= drain_deadline_) {
    Leave(now, "drain timeout", out);
    return;
  }
  if (!connected_) {
    if (now >= reconnect_at_) out->connect = true;
    return;
  }
  if (now - last_recv_ >= interval_ * liveness_) {
    PresumeBrokerDead(now, out);
    return;
  }
  ForgetSettledResults();
  if (welcomed_ && now - last_send_ >= interval_) {
    wire::Frame frame;
    frame.mutable_heartbeat()->set_busy(busy_);
    Send(std::move(frame), now, out);
  }
}

absl::Time WorkerCore::NextTimer() const {
  if (left_) return absl::InfiniteFuture();
  absl::Time next = drain_deadline_;
  if (!connected_) return std::min(next, reconnect_at_);
  next = std::min(next, last_recv_ + interval_ * liveness_);
  if (welcomed_) next = std::min(next, last_send_ + interval_);
  return next;
}

void WorkerCore::Drain(absl::Time now, WorkerOutbox* out) {
  if (draining_ || left_) return;
  draining_ = true;
  drain_deadline_ = now + options_.drain_timeout;
  DEXEC_LOG(INFO) << "worker draining worker=" << options_.name
                  << " tasks=" << active_.size() << " timeout="
                  << absl::FormatDuration(options_.drain_timeout);
  if (welcomed_) {
    wire::Frame frame;
    frame.mutable_worker_state()->set_draining(true);
    Send(std::move(frame), now, out);
  }
  Tick(now, out);
}

void WorkerCore::Stop(absl::Time now, WorkerOutbox* out) {
  if (left_) return;
  Leave(now, "stopped", out);
}

void WorkerCore::Leave(absl::Time now, absl::string_view why,
                       WorkerOutbox* out) {
  for (const auto& [key, run_id] : active_) out->cancel.push_back(run_id);
  const size_t unreported = active_.size();
  active_.clear();
  Flush(now, out);
  if (connected_) {
    wire::Frame frame;
    frame.mutable_worker_state()->set_leaving(true);
    Send(std::move(frame), now, out);
  }
  Close(kLeaveLingerMs, out);
  left_ = true;
  out->left = true;
  out->left_reason = std::string(why);
  DEXEC_LOG(INFO) << "worker left broker worker=" << options_.name
                  << " reason=\"" << why << "\" cancelled=" << unreported
                  << " unreported=" << unreported + unsent_.size();
}

}  // namespace dexec::worker
