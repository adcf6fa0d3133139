// build_conditioner (see conditioning.h).
#include "trainer/conditioning.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <mutex>

namespace lookahead::trainer {

namespace {

/// Reseeds the default CPU generator and puts its previous state back at the end of the scope
/// (also on an exception), so drawing fixed weights leaves the caller's random stream untouched.
class CpuRngScope {
 public:
  explicit CpuRngScope(uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    saved_ = gen_.get_state();
    gen_.set_current_seed(seed);
  }
  ~CpuRngScope() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_);
  }
  CpuRngScope(const CpuRngScope&) = delete;
  CpuRngScope& operator=(const CpuRngScope&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

at::ScalarType conditioner_dtype(const TrainConfig& c, const c10::Device& device) {
  return frozen_in_bf16(c.model.dtype, device.is_cuda()) ? at::kBFloat16 : at::kFloat;
}

}  // namespace

bool can_build_conditioner(const TrainConfig& c) {
  if (c.model.preset == Preset::kTiny) return true;
  return !c.model.sdxl_folder.empty() && !c.model.image_encoder.empty();
}

std::unique_ptr<model::Conditioner> build_conditioner(const TrainConfig& c, const c10::Device& device) {
  const at::ScalarType dtype = conditioner_dtype(c, device);
  if (c.model.preset == Preset::kTiny) {
    CpuRngScope rng(kTinyConditionerSeed);
    return std::make_unique<model::Conditioner>(model::ConditionerConfig::tiny(), device, dtype);
  }
  TORCH_CHECK(!c.model.sdxl_folder.empty(),
              "model.sdxl_folder is not set: the SDXL base folder (text_encoder/, text_encoder_2/, tokenizer/, "
              "tokenizer_2/, vae/) is needed to encode prompts and images");
  TORCH_CHECK(!c.model.image_encoder.empty(),
              "model.image_encoder is not set: the IP-Adapter image encoder folder (CLIP ViT-H/14) is needed to "
              "encode CLIP features");
  // Random weights are replaced by load(); seeding keeps the caller's stream as it was.
  CpuRngScope rng(kTinyConditionerSeed);
  auto cond = std::make_unique<model::Conditioner>(model::ConditionerConfig::sdxl(), device, dtype);
  cond->load({c.model.sdxl_folder, c.model.vae, c.model.image_encoder});
  return cond;
}

}  // namespace lookahead::trainer
