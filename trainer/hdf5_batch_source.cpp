// HDF5 training set -> model::Batch.
#include "trainer/hdf5_batch_source.h"

#include <ATen/ATen.h>

#include <sstream>

#include "data/dataset.h"
#include "data/loader.h"

namespace lookahead::trainer {

namespace {

class Hdf5BatchSource : public BatchSource {
 public:
  Hdf5BatchSource(const TrainConfig& config, int rank, int world_size) : path_(config.data.train_set) {
    set_ = data::TrainingSet::open(path_);
    for (const char* name : {data::kLatents, data::kPromptEmbeds, data::kPooledPromptEmbeds, data::kClipFeatures})
      TORCH_CHECK(set_->has_extra(name), path_, ": the training set has no precomputed '", name,
                  "'; the trainer reads latents, prompt embeddings and CLIP features from the set (docs/data.md)");
    data::LoaderOptions o;
    o.resolution = config.data.resolution;
    o.global_batch = config.train.batch_per_rank * world_size;
    o.rank = rank;
    o.world_size = world_size;
    o.seed = config.train.seed;
    o.threads = static_cast<int>(config.data.loader_threads);
    o.prefetch = static_cast<int>(config.data.prefetch_batches);
    o.skip_corrupt = config.data.skip_corrupt;
    loader_ = std::make_unique<data::Loader>(set_, o);
    resolution_ = config.data.resolution;
    const auto latent = set_->extra_shape(data::kLatents);
    latent_shape_.assign(latent.begin(), latent.end());
    const auto clip = set_->extra_shape(data::kClipFeatures);
    clip_uncond_ = at::zeros({1, clip.at(0), clip.at(1)});
  }

  RankBatch next() override {
    data::Batch b = loader_->next();
    RankBatch out;
    const int64_t n = b.size();
    out.batch.z_tgt = b.target_latents.to(at::kFloat);
    out.batch.z_ref = b.reference_latents.to(at::kFloat);
    out.batch.clip_ref = b.reference_clip_features.to(at::kFloat);
    // CLIP of an all-zero image would need the CLIP-H weights at training time; the features of
    // the unconditional image are taken as zeros (docs/training.md).
    out.batch.clip_uncond = clip_uncond_;
    out.batch.tgt_prompt = b.target_prompt_embeds.to(at::kFloat);
    out.batch.tgt_pooled = b.target_pooled_prompt_embeds.to(at::kFloat);
    out.batch.ref_prompt = b.reference_prompt_embeds.to(at::kFloat);
    out.batch.ref_pooled = b.reference_pooled_prompt_embeds.to(at::kFloat);
    // SDXL micro-conditioning: original size, crop offset, target size (square crops).
    const double s = static_cast<double>(resolution_);
    out.batch.time_ids = at::tensor({s, s, 0.0, 0.0, s, s}, at::kFloat).repeat({n, 1});  // [B, 6]
    out.ref_pixels = b.reference_images;
    out.ref_pixel_landmarks = b.reference_landmarks;
    out.skipped_records = b.skipped;
    return out;
  }

  DataCursor cursor() const override {
    const data::Cursor c = loader_->cursor();
    return DataCursor{c.epoch, c.index};
  }
  void seek(const DataCursor& c) override { loader_->set_cursor(data::Cursor{c.epoch, c.index}); }
  std::vector<int64_t> latent_shape() const override { return latent_shape_; }
  std::string describe() const override {
    std::ostringstream s;
    s << path_ << ": " << set_->size() << " records, " << loader_->num_pairs() << " training pairs ("
      << loader_->excluded_identities() << " single-record identities left out)";
    return s.str();
  }

 private:
  std::string path_;
  std::shared_ptr<data::TrainingSet> set_;
  std::unique_ptr<data::Loader> loader_;
  int64_t resolution_ = 0;
  std::vector<int64_t> latent_shape_;
  at::Tensor clip_uncond_;
};

}  // namespace

std::unique_ptr<BatchSource> open_hdf5_batch_source(const TrainConfig& config, int rank, int world_size) {
  return std::make_unique<Hdf5BatchSource>(config, rank, world_size);
}

}  // namespace lookahead::trainer
