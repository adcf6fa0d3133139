// The replay: one clock for the compute stream, one for the communication channel.
#include "trainer/step_timeline.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <map>

namespace lookahead::trainer {
namespace {

class Replay {
 public:
  Replay(const std::vector<TimedCall>& calls, const TimelineOptions& o) : calls_(calls), o_(o) {
    TORCH_CHECK(o.ring >= 1, "simulate_step: ring must be >= 1, got ", o.ring);
  }

  void forward_branch(int branch) {
    for (size_t i = 0; i < calls_.size(); ++i)
      if (calls_[i].branch == branch) forward(i);
  }

  void backward_branch(int branch) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < calls_.size(); ++i)
      if (calls_[i].branch == branch && calls_[i].with_grad) idx.push_back(i);
    for (size_t k = idx.size(); k-- > 0;) {
      const TimedCall& c = calls_[idx[k]];
      Unit& u = units_[c.unit];
      ensure_gathered(c, true);  // a kept unit is still gathered
      // The next backwards are the previous forward calls' (other units').
      int64_t ahead = 0;
      for (size_t j = k; j-- > 0 && ahead + 1 < o_.ring;)
        if (calls_[idx[j]].unit != c.unit) {
          prefetch(calls_[idx[j]], true);
          ++ahead;
        }
      u.running = true;
      compute(c.backward_s);
      u.running = false;
      --u.pending_backward;
      if (c.reduce_s > 0) reductions_end_ = issue(c.reduce_s, t_.reduce);
      if (!((o_.keep_gathered || c.kept) && u.pending_backward > 0)) u.state = State::kReleased;
    }
  }

  /// Waits for every reduction issued so far.
  void finish_reductions() {
    if (reductions_end_ > now_) {
      t_.reduce_wait += reductions_end_ - now_;
      now_ = reductions_end_;
    }
  }

  void release_all_but_pending() {
    for (auto& [name, u] : units_)
      if (!((o_.keep_gathered || u.kept) && u.pending_backward > 0)) u.state = State::kReleased;
  }

  void optimizer() {
    now_ += o_.optimizer_s;
    t_.step = now_;
  }

  const Timeline& timeline() const { return t_; }

  /// Forward call i; the recorded order forward prefetch follows is the calls' order.
  void forward(size_t i) {
    const TimedCall& c = calls_[i];
    Unit& u = units_[c.unit];
    ensure_gathered(c, false);
    for (size_t j = i + 1; j < calls_.size() && j < i + static_cast<size_t>(o_.ring); ++j) prefetch(calls_[j], false);
    u.running = true;
    compute(c.forward_s);
    u.running = false;
    if (c.with_grad) ++u.pending_backward;
    u.kept = c.kept;
    if (!((o_.keep_gathered || c.kept) && c.with_grad)) u.state = State::kReleased;
  }

 private:
  enum class State { kReleased, kGathered };
  struct Unit {
    State state = State::kReleased;
    double ready = 0;  // when its gather ends
    bool running = false, kept = false;
    int64_t pending_backward = 0;
    bool holds_activations() const { return kept && pending_backward > 0; }
  };

  int64_t gathered_units() const {
    int64_t n = 0;
    for (const auto& [name, u] : units_) n += u.state != State::kReleased && !u.holds_activations();
    return n;
  }

  /// Queues `cost` on the channel; returns when it ends.
  double issue(double cost, double& account) {
    channel_ = std::max(channel_, now_) + cost;
    account += cost;
    return channel_;
  }

  void gather(const TimedCall& c, Unit& u, bool backward) {
    u.state = State::kGathered;
    u.ready = issue(c.gather_s, t_.gather);
    t_.phase(c.branch, backward).gather += c.gather_s;
    ++t_.gathers;
  }

  void ensure_gathered(const TimedCall& c, bool backward) {
    Unit& u = units_[c.unit];
    if (c.gather_s <= 0) return;  // whole on every rank
    if (u.state == State::kReleased) {
      for (auto& [name, other] : units_) {
        if (gathered_units() < o_.ring) break;
        if (&other == &u || other.running || other.state == State::kReleased || other.holds_activations()) continue;
        if (o_.keep_gathered && other.pending_backward > 0) continue;
        other.state = State::kReleased;  // the transfer, once issued, still takes the channel
      }
      gather(c, u, backward);
    }
    if (u.ready > now_) {
      const double wait = u.ready - now_;
      t_.gather_wait += wait;
      t_.waits.push_back({c.unit, c.branch, backward, wait});
      t_.phase(c.branch, backward).gather_wait += wait;
      if (first_) t_.exposed_first = wait;
      now_ = u.ready;
    }
    first_ = false;
  }

  void prefetch(const TimedCall& c, bool backward) {
    Unit& u = units_[c.unit];
    if (!o_.prefetch || c.gather_s <= 0 || u.state != State::kReleased) return;
    if (gathered_units() >= o_.ring) return;
    gather(c, u, backward);
  }

  void compute(double s) {
    now_ += s;
    t_.compute += s;
  }

  const std::vector<TimedCall>& calls_;
  const TimelineOptions& o_;
  std::map<std::string, Unit> units_;
  double now_ = 0, channel_ = 0, reductions_end_ = 0;
  bool first_ = true;
  Timeline t_;
};

}  // namespace

Timeline simulate_step(const std::vector<TimedCall>& calls, const TimelineOptions& options) {
  Replay r(calls, options);
  r.forward_branch(0);
  r.forward_branch(1);
  r.backward_branch(1);
  if (options.mode == LossMode::kAlternate) {
    r.release_all_but_pending();
    r.finish_reductions();
    r.optimizer();  // the first of alternate mode's two optimizer steps
  }
  r.forward_branch(2);
  if (options.mode == LossMode::kSum) r.finish_reductions();
  r.backward_branch(2);
  r.release_all_but_pending();
  r.finish_reductions();
  r.optimizer();
  return r.timeline();
}

}  // namespace lookahead::trainer
