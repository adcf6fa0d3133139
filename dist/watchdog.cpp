// Watchdog polling loop and timeout report.
#include "dist/watchdog.h"

#include <c10/core/ScalarType.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstdio>
#include <sstream>

#include "dist/communicator.h"

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

void Watchdog::watch(WorkHandle work, std::weak_ptr<Communicator> comm, double timeout_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back(Entry{std::move(work), std::move(comm), timeout_s});
}

size_t Watchdog::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
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
    if (expired.empty()) continue;
    lock.unlock();
    for (const Entry& e : expired)
      fire(e, std::chrono::duration<double>(now - e.work->start_time()).count());
    lock.lock();
  }
}

void Watchdog::fire(const Entry& entry, double elapsed_s) {
  const WorkInfo& info = entry.work->info();
  auto comm = entry.comm.lock();
  std::ostringstream report;
  char head[256];
  std::snprintf(head, sizeof head, "%s #%llu (%s, %lld bytes)", to_string(info.op),
                static_cast<unsigned long long>(info.seq), dtype_name(info.dtype),
                static_cast<long long>(info.bytes));
  report << "collective timeout: " << head << " on communicator '" << info.comm_name << "' (" << info.backend;
  if (comm) report << ", rank " << comm->rank() << " of " << comm->size();
  report << ") did not complete within " << entry.timeout_s << " s (running for " << elapsed_s << " s) at "
         << where() << ".\n"
         << "A peer rank is stuck, dead or issued a different collective. Recent collectives on this rank "
            "(oldest first, times from start):\n"
         << recorder_->dump(origin_);
  std::string text = report.str();
  // Report first: failing the work wakes the waiting caller, whose handler ends the job.
  if (on_timeout_) on_timeout_(text);
  entry.work->mark_failed(ErrorKind::kTimeout, text);
  if (comm) comm->abort(text);
}

}  // namespace lookahead::dist
