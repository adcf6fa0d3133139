// HDF5 training set -> model::Batch.
#include "trainer/hdf5_batch_source.h"

#include <ATen/ATen.h>

#include <sstream>

#include "data/loader.h"
#include "data/training_set.h"
#include "trainer/conditioning.h"
#include "trainer/encode_set.h"

namespace lookahead::trainer {

namespace {

class Hdf5BatchSource : public BatchSource {
 public:
  Hdf5BatchSource(const TrainConfig& config, int rank, int world_size, const c10::Device& device)
      : path_(config.data.train_set) {
    set_ = data::TrainingSet::open(path_);
    bool precomputed = true;
    for (const char* name : {data::kLatents, data::kPromptEmbeds, data::kPooledPromptEmbeds, data::kClipFeatures}) {
      if (set_->has_extra(name)) continue;
      precomputed = false;
      TORCH_CHECK(can_build_conditioner(config), path_, ": the training set has no precomputed '", name,
                  "'; the trainer reads latents, prompt embeddings and CLIP features from the set (docs/data.md: "
                  "`lookahead data encode`) or encodes them on the fly with model.sdxl_folder and "
                  "model.image_encoder, which are not set");
    }
    data::LoaderOptions o;
    o.resolution = config.data.resolution;
    o.global_batch = config.train.batch_per_rank * world_size;
    o.rank = rank;
    o.world_size = world_size;
    o.seed = config.train.seed;
    o.threads = static_cast<int>(config.data.loader_threads);
    o.prefetch = static_cast<int>(config.data.prefetch_batches);
    o.skip_corrupt = config.data.skip_corrupt;
    o.random_crop = config.data.random_crop;
    o.hflip_p = config.data.hflip_p;
    augment_ = o.random_crop || o.hflip_p > 0;
    TORCH_CHECK(!augment_ || !precomputed, path_,
                ": data.random_crop / data.hflip_p need on-the-fly encoding, but the set carries precomputed latents, "
                "prompt embeddings and CLIP features of the unaugmented images; train on the set before `lookahead "
                "data encode`, or turn augmentation off");
    loader_ = std::make_unique<data::Loader>(set_, o);
    resolution_ = config.data.resolution;
    std::vector<int64_t> clip;
    if (precomputed) {
      const auto latent = set_->extra_shape(data::kLatents);
      latent_shape_.assign(latent.begin(), latent.end());
      clip = set_->extra_shape(data::kClipFeatures);
    } else {
      // Each rank encodes its own samples with the encoders `data encode` would use.
      conditioner_ = build_conditioner(config, device);
      const auto& vae = conditioner_->config().vae;
      const int64_t f = int64_t{1} << (vae.block_out_channels.size() - 1);
      TORCH_CHECK(resolution_ % f == 0, "data.resolution ", resolution_, " must be a multiple of the VAE's factor ", f);
      latent_shape_ = {vae.latent_channels, resolution_ / f, resolution_ / f};
    }
    clip_uncond_ = set_->global(data::kClipUncond);
    if (clip_uncond_.defined()) {
      uncond_source_ = "the set's globals/clip_uncond";
      clip_uncond_ = clip_uncond_.to(at::kFloat);
      if (precomputed)
        TORCH_CHECK(clip_uncond_.dim() == 3 && clip_uncond_.size(0) == 1 && clip_uncond_.size(1) == clip.at(0) &&
                        clip_uncond_.size(2) == clip.at(1),
                    path_, ": globals/", data::kClipUncond, " is ", clip_uncond_.sizes(), ", expected [1, ", clip.at(0),
                    ", ", clip.at(1), "] (the clip_features of one record)");
    } else if (conditioner_) {
      uncond_source_ = "the image encoder on all-zero pixels";
      clip_uncond_ = conditioner_->clip_uncond().cpu();
    } else {
      // Sets encoded elsewhere may lack the features of the all-zero image: zeros stand in.
      uncond_source_ = "zeros (the set has no globals/clip_uncond)";
      clip_uncond_ = at::zeros({1, clip.at(0), clip.at(1)});
    }
  }

  RankBatch next() override {
    data::LoadedBatch b = loader_->next();
    RankBatch out;
    const int64_t n = b.size();
    if (conditioner_ && n > 0) {
      encode(b, out.batch);
    } else {
      out.batch.z_tgt = b.target_latents.to(at::kFloat);
      out.batch.z_ref = b.reference_latents.to(at::kFloat);
      out.batch.clip_ref = b.reference_clip_features.to(at::kFloat);
      out.batch.tgt_prompt = b.target_prompt_embeds.to(at::kFloat);
      out.batch.tgt_pooled = b.target_pooled_prompt_embeds.to(at::kFloat);
      out.batch.ref_prompt = b.reference_prompt_embeds.to(at::kFloat);
      out.batch.ref_pooled = b.reference_pooled_prompt_embeds.to(at::kFloat);
    }
    out.batch.clip_uncond = clip_uncond_;  // [1, T, D]
    // SDXL micro-conditioning: original size, crop offset, target size (square crops).
    const double s = static_cast<double>(resolution_);
    out.batch.time_ids = at::tensor({s, s, 0.0, 0.0, s, s}, at::kFloat).repeat({n, 1});  // [B, 6]
    out.ref_pixels = b.reference_images;
    out.ref_pixel_landmarks = b.reference_landmarks;
    out.skipped_records = b.skipped;
    return out;
  }

  data::Cursor cursor() const override { return loader_->cursor(); }
  void seek(const data::Cursor& c) override { loader_->set_cursor(c); }
  std::vector<int64_t> latent_shape() const override { return latent_shape_; }
  std::string describe() const override {
    std::ostringstream s;
    s << path_ << ": " << set_->size() << " records, " << loader_->num_pairs() << " training pairs ("
      << loader_->excluded_identities() << " single-record identities left out); "
      << (conditioner_ ? "latents, prompt embeddings and CLIP features encoded on the fly"
                       : "precomputed latents, prompt embeddings and CLIP features")
      << "; unconditional CLIP features: " << uncond_source_;
    return s.str();
  }

 private:
  /// The batch's model inputs from its images and prompts, as `lookahead data encode` computes them.
  void encode(const data::LoadedBatch& b, model::Batch& out) {
    const int64_t n = b.size();
    out.z_tgt = conditioner_->encode_latents(b.target_images).cpu();     // [B, 4, h, w]
    out.z_ref = conditioner_->encode_latents(b.reference_images).cpu();  // [B, 4, h, w]
    std::vector<std::string> prompts = b.target_prompts;
    prompts.insert(prompts.end(), b.reference_prompts.begin(), b.reference_prompts.end());
    const model::text::SdxlPromptEmbeds p = conditioner_->encode_prompts(prompts);  // [2B, M, C], [2B, P]
    out.tgt_prompt = p.context.slice(0, 0, n).cpu();
    out.ref_prompt = p.context.slice(0, n, 2 * n).cpu();
    out.tgt_pooled = p.pooled.slice(0, 0, n).cpu();
    out.ref_pooled = p.pooled.slice(0, n, 2 * n).cpu();
    const int64_t size = conditioner_->config().image_encoder.image_size;
    std::vector<at::Tensor> pixels;
    if (augment_) {
      // The image the model sees: the augmented crop.
      out.clip_ref = conditioner_->clip_features((b.reference_images + 1.0) / 2.0).cpu();  // [B, T, D]
    } else {
      for (const data::Pair& pair : b.pairs) pixels.push_back(clip_pixels(set_->get(pair.reference).image, size));
      out.clip_ref = conditioner_->image_features(at::cat(pixels)).cpu();  // [B, T, D]
    }
  }

  std::string path_;
  bool augment_ = false;
  std::shared_ptr<data::TrainingSet> set_;
  std::unique_ptr<data::Loader> loader_;
  int64_t resolution_ = 0;
  std::vector<int64_t> latent_shape_;
  std::unique_ptr<model::Conditioner> conditioner_;
  at::Tensor clip_uncond_;
  std::string uncond_source_;
};

}  // namespace

std::unique_ptr<BatchSource> open_hdf5_batch_source(const TrainConfig& config, int rank, int world_size,
                                                    const c10::Device& device) {
  return std::make_unique<Hdf5BatchSource>(config, rank, world_size, device);
}

}  // namespace lookahead::trainer
