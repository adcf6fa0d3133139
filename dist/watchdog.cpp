// Watchdog polling loop and timeout report.
#include "dist/watchdog.h"

#include <c10/core/ScalarType.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstdio>
#include <optional>
#include <sstream>

namespace lookahead::dist {

Watchdog::Watchdog(double poll_s, std::shared_ptr<const FlightRecorder> recorder, Clock::time_point origin,
                   TimeoutHandler on_timeout, c10::Device device)
    : poll_s_(poll_s > 0 ? poll_s : 0.05),
      recorder_(std::move(recorder)),
      origin_(origin),
      on_timeout_(std::move(on_timeout)),
      device_(device),
      thread_([this] { loop(); }) {
  // Nothing is watched before the thread has selected its device.
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return bound_; });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::watch(WorkHandle work, std::weak_ptr<Abortable> comm, double timeout_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back(Entry{std::move(work), std::move(comm), timeout_s});
}

size_t Watchdog::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

void Watchdog::report_on_stop(const std::atomic<bool>* flag, double stalled_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  stop_flag_ = flag;
  stop_stalled_s_ = stalled_s;
  stop_reported_ = false;
}

c10::Device Watchdog::thread_device() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return thread_device_;
}

void Watchdog::loop() {
  // The current device is per thread; select the process's before anything touches CUDA here.
  c10::Device current = device_;
  try {
    const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device_.type());
    if (!device_.is_cpu()) impl->setDevice(device_);
    current = impl->getDevice();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[lookahead %s] watchdog: cannot select %s: %s\n", where().c_str(), device_.str().c_str(),
                 e.what());
  }
  auto period = std::chrono::duration<double>(poll_s_);
  std::unique_lock<std::mutex> lock(mutex_);
  thread_device_ = current;
  bound_ = true;
  cv_.notify_all();
  while (!stop_) {
    cv_.wait_for(lock, period, [&] { return stop_; });
    if (stop_) break;
    std::vector<Entry> expired;
    auto now = Clock::now();
    for (size_t i = 0; i < entries_.size();) {
      Entry& e = entries_[i];
      // is_done() polls the backend (CUDA events, NCCL async errors) and may fail the work itself.
      if (e.work->is_done()) {
        entries_[i] = std::move(entries_.back());
        entries_.pop_back();
        continue;
      }
      // A queued collective waits behind a running one; only the running one's clock counts,
      // otherwise one stuck op would be reported once per op queued behind it.
      if (e.timeout_s > 0 && e.work->state() == WorkState::kRunning &&
          std::chrono::duration<double>(now - e.work->start_time()).count() > e.timeout_s) {
        expired.push_back(std::move(e));
        entries_[i] = std::move(entries_.back());
        entries_.pop_back();
        continue;
      }
      ++i;
    }
    std::optional<Entry> stalled;  // reported once a stop signal came in (report_on_stop)
    if (stop_flag_ && !stop_reported_ && stop_flag_->load()) {
      // A stop signal while this rank waits in a collective: the usual preemption finishes the
      // collective within moments; a dead peer never does, and the launcher kills us shortly.
      for (const Entry& e : entries_)
        if (e.work->state() == WorkState::kRunning &&
            std::chrono::duration<double>(now - e.work->start_time()).count() >= stop_stalled_s_) {
          stalled = e;
          stop_reported_ = true;
          break;
        }
    }
    if (expired.empty() && !stalled) continue;
    lock.unlock();
    if (stalled) {
      const double waited = std::chrono::duration<double>(now - stalled->work->start_time()).count();
      std::fprintf(stderr,
                   "[lookahead %s] stop signal received while this rank has waited %.1f s for %s. If the job is "
                   "ending because a rank died, it is one of those this rank waits for. Recent collectives on this "
                   "rank (oldest first, times from start):\n%s",
                   where().c_str(), waited, describe(*stalled).c_str(), recorder_->dump(origin_).c_str());
      std::fflush(stderr);
    }
    for (const Entry& e : expired)
      fire(e, std::chrono::duration<double>(now - e.work->start_time()).count());
    lock.lock();
  }
}

std::string Watchdog::describe(const Entry& entry) const {
  const WorkInfo& info = entry.work->info();
  auto comm = entry.comm.lock();
  std::ostringstream s;
  char head[256];
  std::snprintf(head, sizeof head, "%s #%llu (%s, %lld bytes)", to_string(info.op),
                static_cast<unsigned long long>(info.seq), dtype_name(info.dtype),
                static_cast<long long>(info.bytes));
  s << head << " on communicator '" << info.comm_name << "' (" << info.backend;
  if (comm) s << ", rank " << comm->rank() << " of " << comm->size();
  s << ")";
  return s.str();
}

void Watchdog::fire(const Entry& entry, double elapsed_s) {
  std::ostringstream report;
  report << "collective timeout: " << describe(entry) << " did not complete within " << entry.timeout_s
         << " s (running for " << elapsed_s << " s) at "
         << where() << ".\n"
         << "A peer rank is stuck, dead or issued a different collective. Recent collectives on this rank "
            "(oldest first, times from start):\n"
         << recorder_->dump(origin_);
  std::string text = report.str();
  // Report first: failing the work wakes the waiting caller, whose handler ends the job.
  if (on_timeout_) on_timeout_(text);
  entry.work->mark_failed(ErrorKind::kTimeout, text);
  if (auto comm = entry.comm.lock()) comm->abort(text);
}

}  // namespace lookahead::dist
