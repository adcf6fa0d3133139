// encode_training_set (see encode_set.h).
#include "trainer/encode_set.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "data/image_io.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"
#include "model/vision/clip_vision.h"

namespace lookahead::trainer {

namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

/// One row of the gathered buffer: a record's tensors, flattened and concatenated in this order.
struct RowLayout {
  std::vector<int64_t> latent, prompt, clip;
  int64_t pooled = 0;
  int64_t latent_n() const { return numel_of(latent); }
  int64_t prompt_n() const { return numel_of(prompt); }
  int64_t clip_n() const { return numel_of(clip); }
  int64_t total() const { return latent_n() + prompt_n() + pooled + clip_n(); }
};

/// Encodes records [first, first + count) of `set`, zero-padded to `batch` rows: [batch, row total].
at::Tensor encode_block(model::Conditioner& cond, const data::TrainingSet& set, int64_t first, int64_t count,
                        int64_t batch, int64_t resolution, const RowLayout& layout) {
  const int64_t clip_size = cond.config().image_encoder.image_size;
  std::vector<at::Tensor> images, pixels;
  std::vector<std::string> prompts;
  for (int64_t k = 0; k < batch; ++k) {
    if (k < count) {
      const data::Record r = set.get(first + k);
      images.push_back(data::resize_center_crop(r.image, resolution));  // [3, S, S] in [-1, 1]
      pixels.push_back(clip_pixels(r.image, clip_size));
      prompts.push_back(r.prompt);
    } else {
      images.push_back(at::zeros({3, resolution, resolution}));
      pixels.push_back(at::zeros({1, 3, clip_size, clip_size}));
      prompts.emplace_back();
    }
  }
  const at::Tensor latents = cond.encode_latents(at::stack(images));  // [B, 4, h, w]
  const model::text::SdxlPromptEmbeds embeds = cond.encode_prompts(prompts);
  const at::Tensor clip = cond.image_features(at::cat(pixels));       // [B, T, D]
  TORCH_CHECK(latents.sizes().slice(1).vec() == layout.latent && embeds.context.sizes().slice(1).vec() == layout.prompt &&
                  embeds.pooled.size(1) == layout.pooled && clip.sizes().slice(1).vec() == layout.clip,
              "encode_training_set: the conditioner's outputs changed shape between calls");
  return at::cat({latents.reshape({batch, -1}), embeds.context.reshape({batch, -1}), embeds.pooled.reshape({batch, -1}),
                  clip.reshape({batch, -1})},
                 1)
      .contiguous();  // [B, row total]
}

}  // namespace

at::Tensor clip_pixels(const at::Tensor& image, int64_t size) {
  TORCH_CHECK(image.dim() == 3 && image.size(2) == 3 && image.scalar_type() == at::kByte,
              "clip_pixels: image must be uint8 [H, W, 3], got ", image.scalar_type(), " ", image.sizes());
  // CLIP sees the whole decoded image, preprocessed as CLIPImageProcessor does.
  const at::Tensor unit = image.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255.0);  // [1, 3, H, W]
  return model::vision::clip_preprocess(unit, size);
}

EncodeReport encode_training_set(dist::World& world, model::Conditioner& cond, const EncodeOptions& o) {
  TORCH_CHECK(!o.in.empty() && !o.out.empty(), "data encode: --in and --out are required");
  TORCH_CHECK(o.batch >= 1, "data encode: batch must be >= 1, got ", o.batch);
  const auto& vae = cond.config().vae;
  const int64_t factor = int64_t{1} << (vae.block_out_channels.size() - 1);
  TORCH_CHECK(o.resolution >= factor && o.resolution % factor == 0, "data encode: resolution ", o.resolution,
              " must be a positive multiple of the VAE's downsampling factor ", factor);
  const auto start = std::chrono::steady_clock::now();
  const auto set = data::TrainingSet::open(o.in);
  const int64_t n = set->size();
  const int world_size = world.size(), rank = world.rank();

  // Shapes from one probe of each encoder (the text length comes from the tokenizers).
  const model::text::SdxlPromptEmbeds probe = cond.encode_prompts({""});
  const at::Tensor uncond = cond.clip_uncond();  // [1, T, D]
  RowLayout layout;
  layout.latent = {vae.latent_channels, o.resolution / factor, o.resolution / factor};
  layout.prompt = probe.context.sizes().slice(1).vec();
  layout.pooled = probe.pooled.size(1);
  layout.clip = uncond.sizes().slice(1).vec();
  const int64_t row = layout.total();

  const at::Device device = cond.device();
  auto comm = world.comm_for(device);
  const int64_t blocks = (n + o.batch - 1) / o.batch;
  const int64_t rounds = (blocks + world_size - 1) / world_size;
  std::unique_ptr<data::TrainingSetWriter> writer;
  if (world.is_root()) writer = std::make_unique<data::TrainingSetWriter>(o.out);

  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t block = round * world_size + rank;
    const int64_t first = block * o.batch;
    const int64_t count = block < blocks ? std::min(o.batch, n - first) : 0;
    at::Tensor mine = count > 0 ? encode_block(cond, *set, first, count, o.batch, o.resolution, layout)
                                : at::zeros({o.batch, row}, at::TensorOptions().dtype(at::kFloat).device(device));
    mine = mine.to(device).contiguous();
    at::Tensor all = at::empty({world_size * o.batch, row}, mine.options());  // [W * B, row]
    comm->all_gather(all, mine)->wait();
    if (!writer) continue;
    const at::Tensor rows = all.cpu();
    for (int64_t r = 0; r < world_size; ++r) {
      const int64_t b = round * world_size + r;
      if (b >= blocks) break;
      const int64_t f = b * o.batch, c = std::min(o.batch, n - f);
      for (int64_t k = 0; k < c; ++k) {
        const int64_t index = f + k;
        const at::Tensor v = rows[r * o.batch + k];  // [row]
        int64_t offset = 0;
        auto take = [&](const std::vector<int64_t>& shape) {
          const int64_t len = numel_of(shape);
          at::Tensor t = v.slice(0, offset, offset + len).reshape(shape).clone();
          offset += len;
          return t;
        };
        data::RecordData rec = data::record_data(*set, index);
        rec.latents = take(layout.latent);
        if (o.half_latents) rec.latents = rec.latents.to(at::kHalf);
        rec.prompt_embeds = take(layout.prompt);
        rec.pooled_prompt_embeds = take({layout.pooled});
        rec.clip_features = take(layout.clip);
        writer->add(rec);
      }
    }
  }
  if (writer) {
    writer->set_global(data::kClipUncond, uncond.cpu());
    // The input's metadata columns and attributes (e.g. a generated set's seeds, prompts and filter
    // scores) travel with the records: encoding adds tensors and drops nothing.
    for (const auto& name : set->column_names()) {
      const at::Tensor c = set->column(name);
      if (c.defined())
        writer->set_column(name, c);
      else
        writer->set_string_column(name, set->string_column(name));
    }
    for (const auto& name : set->attribute_names()) writer->set_attribute(name, set->attribute(name));
    writer->finish();
  }
  EncodeReport report;
  report.records = n;
  report.latent_shape = layout.latent;
  report.prompt_shape = layout.prompt;
  report.pooled_dim = layout.pooled;
  report.clip_shape = layout.clip;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lookahead::trainer
