// Ordered prefetching: workers claim batch sequence numbers in order (advancing the shared
// epoch order under the lock), decode without the lock, and park finished batches in numbered slots;
// the consumer takes slot `consumed_` only. Claims run at most `prefetch` ahead of the consumer.
#include "data/loader.h"

#include "data/image_io.h"
#include "data/random.h"

namespace lookahead::data {

namespace {

/// Replacement pairs tried for one sample before data.skip_corrupt gives up on the set.
constexpr int kMaxReplacements = 16;

Pairing pairing_for(const TrainingSet& set, uint64_t seed, int64_t epoch) {
  return make_pairs(set.identities(), set.photo_flags(), seed, epoch);
}

// Stacks per-sample tensors to [B, ...]; an empty batch gives [0, ...row] so shapes stay valid.
at::Tensor stack(const std::vector<at::Tensor>& xs, const std::vector<int64_t>& row, at::ScalarType dtype) {
  if (xs.empty()) {
    std::vector<int64_t> shape{0};
    shape.insert(shape.end(), row.begin(), row.end());
    return at::empty(shape, dtype);
  }
  return at::stack(xs);
}

}  // namespace

Loader::Loader(std::shared_ptr<const TrainingSet> set, const LoaderOptions& options)
    : set_(std::move(set)),
      opt_(options),
      order_([&] {
        TORCH_CHECK(set_, "Loader: no training set");
        TORCH_CHECK(options.resolution > 0, "Loader: resolution must be positive");
        TORCH_CHECK(options.threads >= 0 && options.prefetch >= 1, "Loader: threads must be >= 0 and prefetch >= 1");
        Pairing p = pairing_for(*set_, options.seed, 0);
        num_pairs_ = static_cast<int64_t>(p.pairs.size());
        excluded_identities_ = p.excluded_identities;
        excluded_records_ = p.excluded_records;
        if (num_pairs_ < options.global_batch)
          throw DataError(set_->path(), -1,
                          std::to_string(num_pairs_) + " usable pairs (" + std::to_string(excluded_identities_) +
                              " identities with a single record excluded) are fewer than one global batch of " +
                              std::to_string(options.global_batch));
        pairing_cache_.emplace(0, std::move(p.pairs));
        return EpochOrder(num_pairs_, options.global_batch, options.rank, options.world_size, options.seed);
      }()) {
  cursor_ = order_.cursor();
  start();
}

Loader::~Loader() { stop(); }

int64_t Loader::batches_per_epoch() const { return order_.batches_per_epoch(); }

Cursor Loader::cursor() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cursor_;
}

int64_t Loader::skipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return skipped_;
}

void Loader::start() {
  stopping_ = false;
  for (int i = 0; i < opt_.threads; ++i) threads_.emplace_back([this] { worker(); });
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Loader::set_cursor(const Cursor& c) {
  stop();
  std::lock_guard<std::mutex> lock(mu_);
  order_.set_cursor(c);
  cursor_ = order_.cursor();
  slots_.clear();
  claimed_ = consumed_ = 0;
  start();
}

std::vector<Pair> Loader::pairs_of(const RankSlice& sb) {
  auto it = pairing_cache_.find(sb.epoch);
  if (it == pairing_cache_.end()) {
    // Keep only recent epochs: with prefetch the consumer may still be in the previous one.
    while (pairing_cache_.size() >= 2) pairing_cache_.erase(pairing_cache_.begin());
    it = pairing_cache_.emplace(sb.epoch, pairing_for(*set_, opt_.seed, sb.epoch).pairs).first;
  }
  std::vector<Pair> out;
  out.reserve(sb.indices.size());
  for (int64_t i : sb.indices) out.push_back(it->second.at(static_cast<size_t>(i)));
  return out;
}

void Loader::worker() {
  for (;;) {
    int64_t seq;
    RankSlice sb;
    std::vector<Pair> pairs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || claimed_ < consumed_ + opt_.prefetch; });
      if (stopping_) return;
      seq = claimed_++;
      sb = order_.next();
      pairs = pairs_of(sb);
    }
    Slot slot;
    try {
      slot.batch = load(sb, pairs);
    } catch (...) {
      slot.error = std::current_exception();
    }
    slot.ready = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      slots_[seq] = std::move(slot);
    }
    done_cv_.notify_all();
  }
}

LoadedBatch Loader::next() {
  Slot slot;
  if (opt_.threads == 0) {
    RankSlice sb;
    std::vector<Pair> pairs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sb = order_.next();
      pairs = pairs_of(sb);
    }
    slot.batch = load(sb, pairs);  // errors propagate directly
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] {
      auto it = slots_.find(consumed_);
      return it != slots_.end() && it->second.ready;
    });
    auto it = slots_.find(consumed_);
    slot = std::move(it->second);
    slots_.erase(it);
    ++consumed_;
    work_cv_.notify_all();
  }
  if (slot.error) std::rethrow_exception(slot.error);
  std::lock_guard<std::mutex> lock(mu_);
  cursor_ = slot.batch.next;
  skipped_ += slot.batch.skipped;
  return std::move(slot.batch);
}

LoadedBatch Loader::load(const RankSlice& sb, const std::vector<Pair>& pairs) const {
  const TrainingSet& set = *set_;
  const int64_t S = opt_.resolution;
  LoadedBatch b;
  b.epoch = sb.epoch;
  b.step = sb.step;
  b.start = sb.start;
  b.next = {sb.start.epoch, sb.start.index + opt_.global_batch};
  std::vector<at::Tensor> timg, rimg, tlm, rlm, tlat, rlat, tpe, rpe, tpp, rpp, rclip;
  auto get = [&](int64_t index) {
    try {
      return set.get(index);
    } catch (const DataError&) {
      throw;
    } catch (const c10::Error& e) {
      throw DataError(set.path(), index, std::string("loading failed: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw DataError(set.path(), index, std::string("loading failed: ") + e.what());
    }
  };
  std::vector<Pair> epoch_pairs;  // this epoch's pairing, built on the first corrupt sample
  for (size_t j = 0; j < pairs.size(); ++j) {
    Pair p = pairs[j];
    Record t, r;
    for (int attempt = 0;; ++attempt) {
      try {
        t = get(p.target);
        r = get(p.reference);
        break;
      } catch (const DataError& e) {
        if (!opt_.skip_corrupt) throw;
        ++b.skipped;
        if (attempt + 1 >= kMaxReplacements)
          throw DataError(
              e.file(), e.record(),  // the shard of a manifest set, and the index in it
              "data.skip_corrupt: " + std::to_string(kMaxReplacements) +
                  " pairs in a row were corrupt for one sample; the set is damaged beyond skipping (last: " + e.what() +
                  ")");
        // A corrupt pair is replaced, not dropped, so that every rank's batch keeps its size. The
        // replacement is drawn from (seed, epoch, sample index, attempt) alone: any rank count
        // picks the same one, and the epoch order and its cursor are untouched.
        if (epoch_pairs.empty()) epoch_pairs = pairing_for(set, opt_.seed, sb.epoch).pairs;
        SplitMix pick(derive_seed(opt_.seed ^ 0x736b6970ull, static_cast<uint64_t>(sb.epoch),
                                  static_cast<uint64_t>(sb.indices.at(j)) * 64 + static_cast<uint64_t>(attempt)));
        p = epoch_pairs[pick.next() % epoch_pairs.size()];
      }
    }
    // Augmentation draws depend on (seed, epoch, sample index) only.
    SplitMix aug(derive_seed(opt_.seed ^ 0x61756721ull, static_cast<uint64_t>(sb.epoch),
                             static_cast<uint64_t>(sb.indices.at(j))));
    auto placement = [&] {
      CropPlacement c;
      if (opt_.random_crop) {
        c.x = aug.uniform01();
        c.y = aug.uniform01();
      }
      c.flip = opt_.hflip_p > 0 && aug.uniform01() < opt_.hflip_p;
      return c;
    };
    const CropPlacement tp = placement(), rp = placement();
    CropTransform tt, rt;
    timg.push_back(resize_crop(t.image, S, tp, &tt));
    rimg.push_back(resize_crop(r.image, S, rp, &rt));
    at::Tensor tl = transform_landmarks(t.landmarks, tt), rl = transform_landmarks(r.landmarks, rt);
    tlm.push_back(tt.flipped ? flip_landmark_order(tl) : tl);
    rlm.push_back(rt.flipped ? flip_landmark_order(rl) : rl);
    if (t.latents.defined()) {
      tlat.push_back(t.latents);
      rlat.push_back(r.latents);
    }
    if (t.prompt_embeds.defined()) {
      tpe.push_back(t.prompt_embeds);
      rpe.push_back(r.prompt_embeds);
    }
    if (t.pooled_prompt_embeds.defined()) {
      tpp.push_back(t.pooled_prompt_embeds);
      rpp.push_back(r.pooled_prompt_embeds);
    }
    if (r.clip_features.defined()) rclip.push_back(r.clip_features);
    b.pairs.push_back(p);
    b.identities.push_back(t.identity);
    b.target_prompts.push_back(std::move(t.prompt));
    b.reference_prompts.push_back(std::move(r.prompt));
  }
  b.target_images = stack(timg, {3, S, S}, at::kFloat);
  b.reference_images = stack(rimg, {3, S, S}, at::kFloat);
  b.target_landmarks = stack(tlm, {5, 2}, at::kFloat);
  b.reference_landmarks = stack(rlm, {5, 2}, at::kFloat);
  auto optional = [&](const std::vector<at::Tensor>& xs, const char* name) {
    auto shape = set.extra_shape(name);
    if (shape.empty()) return at::Tensor();
    at::ScalarType dtype = xs.empty() ? at::kFloat : xs[0].scalar_type();
    return stack(xs, shape, dtype);
  };
  b.target_latents = optional(tlat, kLatents);
  b.reference_latents = optional(rlat, kLatents);
  b.target_prompt_embeds = optional(tpe, kPromptEmbeds);
  b.reference_prompt_embeds = optional(rpe, kPromptEmbeds);
  b.target_pooled_prompt_embeds = optional(tpp, kPooledPromptEmbeds);
  b.reference_pooled_prompt_embeds = optional(rpp, kPooledPromptEmbeds);
  b.reference_clip_features = optional(rclip, kClipFeatures);
  return b;
}

}  // namespace lookahead::data
