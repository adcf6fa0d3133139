// LookaheadModel: every tensor in exactly one sharding unit and role, live tensors (in-place and
// set_data edits change the output), the SDXL role counts on the meta device, step draws that do
// not depend on the batch split, both losses finite with gradients on every trainable tensor and
// none on frozen ones, landmark masking, the α schedule, and the LCM scale reaching branch 2 only.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <set>

#include "model/face/align.h"
#include "model/face/layers.h"
#include "model/io/safetensors.h"
#include "model/lookahead/alpha_schedule.h"
#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/step_draw.h"
#include "model/nn/lora_loader.h"
#include "model/nn/skip_init.h"

namespace lookahead::model {
namespace {

const std::vector<int64_t> kLatent{4, 8, 8};
using Named = std::vector<std::pair<std::string, at::Tensor>>;

/// A random batch of the tiny model: 8x8 latents (64x64 previews), landmarks near the template.
Batch tiny_batch(int64_t n) {
  Batch b;
  b.z_tgt = at::randn({n, 4, 8, 8});
  b.z_ref = at::randn({n, 4, 8, 8});
  b.clip_ref = at::randn({n, 5, 12});
  b.clip_uncond = at::randn({1, 5, 12});
  b.tgt_prompt = at::randn({n, 3, 24});
  b.ref_prompt = at::randn({n, 3, 24});
  b.tgt_pooled = at::randn({n, 16});
  b.ref_pooled = at::randn({n, 16});
  b.time_ids = at::randn({n, 6});
  b.ref_landmarks = (face::arcface_template(64.0).unsqueeze(0).repeat({n, 1, 1}) + at::randn({n, 5, 2}, at::kDouble));
  at::Tensor r = at::randn({n, 512});
  b.ref_id = r / r.norm(2, {1}, true);
  return b;
}

/// The tiny model with one intra-op thread: its tensors are so small that worker threads only add
/// synchronisation, which on a loaded 2-core machine costs ~100x (measured).
std::unique_ptr<LookaheadModel> tiny_model() {
  at::set_num_threads(1);
  return std::make_unique<LookaheadModel>(LookaheadModelConfig::tiny());
}

/// Trainable tensors get random values so that every LoRA (zero up at creation) changes outputs
/// and passes gradients to its down matrix.
void randomize_trainable(LookaheadModel& m) {
  at::NoGradGuard no_grad;
  for (auto& [k, t] : m.adapter_parameters()) t.normal_(0.0, 0.2);
  for (auto& [k, t] : m.lora_parameters()) t.normal_(0.0, 0.2);
}

/// Every tensor the model computes with, by TensorImpl.
std::set<const c10::TensorImpl*> all_model_tensors(LookaheadModel& m) {
  std::set<const c10::TensorImpl*> out;
  auto add_module = [&](torch::nn::Module& mod) {
    for (auto& p : mod.parameters()) out.insert(p.unsafeGetTensorImpl());
    for (auto& b : mod.buffers()) out.insert(b.unsafeGetTensorImpl());
  };
  add_module(*m.unet());
  add_module(*m.ip_adapter());
  add_module(*m.taesd_decoder());
  add_module(*m.arcface_module());
  for (auto& [path, layer] : nn::lora_layers(*m.unet())) {
    const std::vector<nn::LoraAdapter>* a = nullptr;
    if (auto* lin = dynamic_cast<nn::LoraLinearImpl*>(layer.get())) a = &lin->adapters();
    if (auto* conv = dynamic_cast<nn::LoraConv2dImpl*>(layer.get())) a = &conv->adapters();
    for (const auto& ad : *a) {
      out.insert(ad.down.unsafeGetTensorImpl());
      out.insert(ad.up.unsafeGetTensorImpl());
    }
  }
  for (auto& [k, t] : m.encoder().trainable_parameters()) out.insert(t.unsafeGetTensorImpl());
  return out;
}

TEST(LookaheadModel, UnitsCoverEveryTensorExactlyOnce) {
  at::manual_seed(0);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  auto units = m.units();
  ASSERT_GE(units.size(), 4u);
  EXPECT_EQ(units.front().name, "image_proj");
  EXPECT_EQ(units[1].name, "stem_in");
  EXPECT_EQ(units[units.size() - 3].name, "stem_out");
  EXPECT_EQ(units[units.size() - 2].name, "taesd.decoder");
  EXPECT_EQ(units.back().name, "arcface");

  std::map<const c10::TensorImpl*, std::string> seen;
  std::set<std::string> names;
  int64_t lcm = 0, adapter = 0, lora = 0;
  for (const auto& u : units) {
    auto visit = [&](const Named& list, bool trainable, const char* role) {
      for (const auto& [name, t] : list) {
        EXPECT_TRUE(names.insert(name).second) << "duplicate name " << name;
        auto [it, fresh] = seen.emplace(t.unsafeGetTensorImpl(), u.name + "/" + role + "/" + name);
        EXPECT_TRUE(fresh) << name << " in " << u.name << " already in " << it->second;
        EXPECT_EQ(t.requires_grad(), trainable) << u.name << " " << role << " " << name;
      }
    };
    visit(u.frozen, false, "frozen");
    visit(u.lcm, false, "lcm");
    visit(u.adapter, true, "adapter");
    visit(u.lora, true, "lora");
    lcm += static_cast<int64_t>(u.lcm.size());
    adapter += static_cast<int64_t>(u.adapter.size());
    lora += static_cast<int64_t>(u.lora.size());
  }
  const auto all = all_model_tensors(m);
  EXPECT_EQ(seen.size(), all.size());
  for (const auto* impl : all) EXPECT_TRUE(seen.contains(impl)) << "a model tensor is in no unit";
  EXPECT_EQ(adapter, static_cast<int64_t>(m.adapter_parameters().size()));
  EXPECT_EQ(lora, static_cast<int64_t>(m.lora_parameters().size()));
  EXPECT_GT(lcm, 0);
  // Names follow the checkpoints: diffusers keys, IP-Adapter keys, the LCM adapter's layer path.
  EXPECT_TRUE(names.contains("conv_in.weight"));
  EXPECT_TRUE(names.contains("ip_adapter.1.to_k_ip.weight"));
  EXPECT_TRUE(names.contains("image_proj.latents"));
  EXPECT_TRUE(names.contains("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lcm.lora_down.weight"));
  EXPECT_TRUE(names.contains("down_blocks.1.attentions.0.transformer_blocks.0.extract_kv1.to_k.lora_up.weight"));
}

TEST(LookaheadModel, UnitTensorsAreLive) {
  at::manual_seed(1);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  randomize_trainable(m);
  Batch b = tiny_batch(2);
  StepDraw d = m.draw(3, 7, 2, 0, 2, kLatent);
  at::NoGradGuard no_grad;
  const double base = m.lookahead_loss(b, d, 1.0).per_sample.sum().item<double>();
  auto units = m.units();
  // In place on a frozen base weight (conv_in, in stem_in).
  at::Tensor w = units[1].frozen.front().second;
  w.add_(0.5);
  const double edited = m.lookahead_loss(b, d, 1.0).per_sample.sum().item<double>();
  EXPECT_NE(edited, base);
  w.sub_(0.5);
  EXPECT_NEAR(m.lookahead_loss(b, d, 1.0).per_sample.sum().item<double>(), base, 1e-6 * std::abs(base) + 1e-9);
  // set_data on an LCM-LoRA tensor, as a sharded engine re-points gathered weights.
  for (auto& u : units) {
    if (u.lcm.empty()) continue;
    at::Tensor t = u.lcm.front().second;
    at::Tensor old = t.detach().clone();
    t.set_data(old * 3.0);
    EXPECT_NE(m.lookahead_loss(b, d, 1.0).per_sample.sum().item<double>(), base) << u.lcm.front().first;
    t.set_data(old);
    break;
  }
}

TEST(LookaheadModel, SdxlRoleCountsOnMeta) {
  LookaheadModel m(LookaheadModelConfig::sdxl(), at::kMeta);
  int64_t frozen = 0, lcm = 0, adapter = 0, lora = 0, frozen_taesd = 0, frozen_arcface = 0;
  for (const auto& u : m.units()) {
    int64_t f = 0;
    for (const auto& [k, t] : u.frozen) f += t.numel();
    if (u.name == "taesd.decoder") frozen_taesd = f;
    if (u.name == "arcface") frozen_arcface = f;
    frozen += f;
    for (const auto& [k, t] : u.lcm) lcm += t.numel();
    for (const auto& [k, t] : u.adapter) adapter += t.numel();
    for (const auto& [k, t] : u.lora) lora += t.numel();
  }
  int64_t taesd = 0, arcface = 0;
  for (auto& t : m.taesd_decoder()->parameters()) taesd += t.numel();
  for (auto& t : m.arcface_module()->parameters()) arcface += t.numel();
  for (auto& t : m.arcface_module()->buffers()) arcface += t.numel();
  EXPECT_EQ(frozen_taesd, taesd);
  EXPECT_EQ(frozen_arcface, arcface);
  EXPECT_EQ(frozen - taesd - arcface, 2567463684LL);
  EXPECT_EQ(adapter, 423748864LL);
  int64_t expected_lora = 0;
  for (auto& [k, t] : m.encoder().trainable_parameters()) expected_lora += t.numel();
  EXPECT_EQ(lora, expected_lora);
  EXPECT_GT(lora, 0);
  EXPECT_EQ(lcm, 0);  // the LCM-LoRA arrives with load_weights
  std::printf("SDXL units: frozen %lld (UNet 2567463684 + TAESD decoder %lld + IR-SE50 %lld), adapter %lld, "
              "lora %lld\n",
              static_cast<long long>(frozen), static_cast<long long>(taesd), static_cast<long long>(arcface),
              static_cast<long long>(adapter), static_cast<long long>(lora));
}

TEST(StepDraw, IsSplitInvariant) {
  StepDrawOptions o;
  o.adapter_drop_p = 0.5;
  StepDraw full = draw_step(o, 42, 9, 4, 0, 4, kLatent);
  StepDraw a = draw_step(o, 42, 9, 4, 0, 2, kLatent);
  StepDraw b = draw_step(o, 42, 9, 4, 2, 2, kLatent);
  EXPECT_TRUE(at::equal(full.noise, at::cat({a.noise, b.noise})));
  EXPECT_TRUE(at::equal(full.timesteps, at::cat({a.timesteps, b.timesteps})));
  EXPECT_TRUE(at::equal(full.lcm_timesteps, at::cat({a.lcm_timesteps, b.lcm_timesteps})));
  EXPECT_TRUE(at::equal(full.adapter_drop, at::cat({a.adapter_drop, b.adapter_drop})));
  EXPECT_EQ(full.kv_drop_seed, a.kv_drop_seed);
  EXPECT_EQ(full.kv_drop_seed, b.kv_drop_seed);
  EXPECT_EQ(full.lcm_kv_drop_seed, b.lcm_kv_drop_seed);
  EXPECT_NE(full.kv_drop_seed, full.lcm_kv_drop_seed);
  // Another step or seed draws something else; shapes and ranges are as documented.
  EXPECT_FALSE(at::equal(full.noise, draw_step(o, 42, 10, 4, 0, 4, kLatent).noise));
  EXPECT_FALSE(at::equal(full.noise, draw_step(o, 43, 9, 4, 0, 4, kLatent).noise));
  EXPECT_EQ(full.noise.sizes(), (std::vector<int64_t>{4, 4, 8, 8}));
  EXPECT_EQ(full.timesteps.scalar_type(), at::kLong);
  EXPECT_THROW(draw_step(o, 42, 9, 4, 3, 2, kLatent), c10::Error);
  // Branch 1 favours noisier timesteps more than branch 2 (a = 0.5 vs 0.2) and drops ~p adapters.
  StepDraw big = draw_step(StepDrawOptions{}, 1, 0, 4000, 0, 4000, {1, 1, 1});
  EXPECT_GT(big.timesteps.to(at::kDouble).mean().item<double>(),
            big.lcm_timesteps.to(at::kDouble).mean().item<double>());
  const double drop = big.adapter_drop.to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(drop, 0.1, 0.02);
}

/// Samples [first, first + count) of a batch (clip_uncond is shared).
Batch slice(const Batch& b, int64_t first, int64_t count) {
  Batch s = b;
  for (at::Tensor* t : {&s.z_tgt, &s.z_ref, &s.clip_ref, &s.tgt_prompt, &s.ref_prompt, &s.tgt_pooled, &s.ref_pooled,
                        &s.time_ids, &s.ref_landmarks, &s.ref_id})
    *t = t->narrow(0, first, count);
  return s;
}

TEST(LookaheadModel, LossesDoNotDependOnTheBatchSplit) {
  // Two ranks holding halves of the global batch compute what one rank holding all of it does.
  at::manual_seed(6);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  randomize_trainable(m);
  Batch b = tiny_batch(4);
  at::NoGradGuard no_grad;
  const StepDraw full = m.draw(11, 3, 4, 0, 4, kLatent);
  const StepDraw lo = m.draw(11, 3, 4, 0, 2, kLatent), hi = m.draw(11, 3, 4, 2, 2, kLatent);
  const double d_full = m.diffusion_loss(b, full).item<double>();
  const double d_split = (m.diffusion_loss(slice(b, 0, 2), lo).item<double>() +
                          m.diffusion_loss(slice(b, 2, 2), hi).item<double>()) / 2;
  EXPECT_NEAR(d_full, d_split, 1e-5 * std::abs(d_full));
  const at::Tensor l_full = m.lookahead_loss(b, full, 0.6).per_sample;
  const at::Tensor l_split = at::cat({m.lookahead_loss(slice(b, 0, 2), lo, 0.6).per_sample,
                                      m.lookahead_loss(slice(b, 2, 2), hi, 0.6).per_sample});
  EXPECT_TRUE(at::allclose(l_full, l_split, 1e-4, 1e-9)) << l_full << l_split;
}

TEST(LookaheadModel, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(7);
  auto model = tiny_model();
  LookaheadModel& cpu = *model;
  randomize_trainable(cpu);
  LookaheadModel gpu(LookaheadModelConfig::tiny(), at::Device(at::kCUDA, 0));
  // Units are aligned by name: copy every tensor, as a checkpoint restore would.
  auto cu = cpu.units(), gu = gpu.units();
  ASSERT_EQ(cu.size(), gu.size());
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < cu.size(); ++i)
      for (auto role : {&dist::ShardingUnit::frozen, &dist::ShardingUnit::lcm, &dist::ShardingUnit::adapter, &dist::ShardingUnit::lora}) {
        const auto &src = cu[i].*role, &dst = gu[i].*role;
        ASSERT_EQ(src.size(), dst.size()) << cu[i].name;
        for (size_t j = 0; j < src.size(); ++j) {
          ASSERT_EQ(src[j].first, dst[j].first);
          at::Tensor d = dst[j].second;
          d.copy_(src[j].second);
        }
      }
  }
  Batch b = tiny_batch(2);
  Batch g = b;
  for (at::Tensor* t : {&g.z_tgt, &g.z_ref, &g.clip_ref, &g.clip_uncond, &g.tgt_prompt, &g.ref_prompt, &g.tgt_pooled,
                        &g.ref_pooled, &g.time_ids, &g.ref_id})
    *t = t->cuda();
  const StepDraw d = cpu.draw(1, 0, 2, 0, 2, kLatent);
  at::Tensor l_cpu = cpu.diffusion_loss(b, d) + cpu.lookahead_loss(b, d, 0.5).loss;
  at::Tensor l_gpu = gpu.diffusion_loss(g, d) + gpu.lookahead_loss(g, d, 0.5).loss;
  EXPECT_NEAR(l_cpu.item<double>(), l_gpu.item<double>(), 1e-3 * std::abs(l_cpu.item<double>()));
  l_gpu.backward();
  for (auto& [k, t] : gpu.lora_parameters()) ASSERT_TRUE(t.grad().defined()) << k;
}

TEST(LookaheadModel, BothLossesReachEveryTrainableTensorAndNoFrozenOne) {
  at::manual_seed(2);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  randomize_trainable(m);
  Batch b = tiny_batch(2);
  StepDraw d = m.draw(5, 0, 2, 0, 2, kLatent);
  d.adapter_drop = at::tensor({1, 0}).to(at::kBool);  // both IP paths (conditional and unconditional) run

  auto check = [&](const char* what, const at::Tensor& loss) {
    ASSERT_TRUE(std::isfinite(loss.item<double>())) << what;
    for (auto& [k, t] : m.adapter_parameters()) t.mutable_grad() = at::Tensor();
    for (auto& [k, t] : m.lora_parameters()) t.mutable_grad() = at::Tensor();
    loss.backward();
    for (const auto& u : m.units()) {
      for (const auto* list : {&u.adapter, &u.lora})
        for (const auto& [k, t] : *list) {
          ASSERT_TRUE(t.grad().defined()) << what << ": no gradient reaches " << k;
          EXPECT_TRUE(at::isfinite(t.grad()).all().item<bool>()) << what << " " << k;
          EXPECT_GT(t.grad().abs().max().item<double>(), 0.0) << what << ": zero gradient on " << k;
        }
      for (const auto* list : {&u.frozen, &u.lcm})
        for (const auto& [k, t] : *list)
          EXPECT_FALSE(t.grad().defined()) << what << ": frozen " << k << " has a gradient";
    }
  };
  check("diffusion", m.diffusion_loss(b, d));
  LookaheadLoss l = m.lookahead_loss(b, d, 0.7);
  EXPECT_EQ(l.valid_count, 2);
  EXPECT_EQ(l.preview.sizes(), (std::vector<int64_t>{2, 3, 64, 64}));
  check("lookahead", l.loss);
}

TEST(LookaheadModel, SamplesWithoutLandmarksAreMaskedOut) {
  at::manual_seed(3);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  randomize_trainable(m);
  Batch b = tiny_batch(2);
  StepDraw d = m.draw(5, 0, 2, 0, 2, kLatent);
  LookaheadLoss both = m.lookahead_loss(b, d, 1.0);
  b.ref_landmarks[1].fill_(std::numeric_limits<double>::quiet_NaN());
  LookaheadLoss one = m.lookahead_loss(b, d, 1.0);
  EXPECT_EQ(one.valid_count, 1);
  EXPECT_FALSE(one.valid[1].item<bool>());
  EXPECT_EQ(one.per_sample[1].item<float>(), 0.0f);
  EXPECT_NEAR(one.loss.item<double>(), both.per_sample[0].item<double>(), 1e-6);
  b.ref_landmarks[0].fill_(std::numeric_limits<double>::infinity());
  LookaheadLoss none = m.lookahead_loss(b, d, 1.0);
  EXPECT_EQ(none.valid_count, 0);
  EXPECT_EQ(none.loss.item<double>(), 0.0);
  EXPECT_TRUE(none.loss.requires_grad());  // the graph is still there to free
}

TEST(LookaheadModel, LcmScaleChangesOnlyTheLookaheadBranch) {
  at::manual_seed(4);
  auto model = tiny_model();
  LookaheadModel& m = *model;
  randomize_trainable(m);
  Batch b = tiny_batch(2);
  StepDraw d = m.draw(8, 1, 2, 0, 2, kLatent);
  at::NoGradGuard no_grad;
  const double diff_before = m.diffusion_loss(b, d).item<double>();
  // The raw identity term (per_sample / α) depends on α through the LCM-LoRA, beyond the α factor.
  const double raw1 = m.lookahead_loss(b, d, 1.0).per_sample.sum().item<double>() / 1.0;
  const double raw05 = m.lookahead_loss(b, d, 0.5).per_sample.sum().item<double>() / 0.5;
  EXPECT_NE(raw1, raw05);
  EXPECT_DOUBLE_EQ(m.lcm_scale()->value, 0.5);
  EXPECT_EQ(m.diffusion_loss(b, d).item<double>(), diff_before);  // the decoder runs without the LCM-LoRA
}

TEST(AlphaSchedule, Statistics) {
  AlphaSchedule s(123);
  int full = 0, n = 0;
  for (int64_t step = 0; step < 2000 * 5; step += 5) {
    const double a = s.at(step);
    for (int64_t k = 1; k < 5; ++k) EXPECT_EQ(s.value(step + k), a) << "step " << step + k;
    EXPECT_EQ(s.state().drawn_at, step);
    if (a == 1.0) {
      ++full;
    } else {
      EXPECT_GE(a, 0.1);
      EXPECT_LE(a, 1.0);
    }
    ++n;
  }
  const double frac = static_cast<double>(full) / n;
  EXPECT_GT(frac, 0.45);
  EXPECT_LT(frac, 0.55);
  // Deterministic from (seed, step); restore checks the seed.
  AlphaSchedule again(123);
  EXPECT_EQ(again.at(17), s.value(17));
  EXPECT_EQ(again.state().drawn_at, 15);
  AlphaSchedule other(124);
  EXPECT_NO_THROW(other.restore(AlphaSchedule::State{}));
  bool differs = false;
  for (int64_t step = 0; step < 100; step += 5) differs = differs || other.value(step) != s.value(step);
  EXPECT_TRUE(differs);
  EXPECT_THROW(other.restore(again.state()), c10::Error);
  s.restore(again.state());
  EXPECT_EQ(s.state().alpha, again.state().alpha);
}


// Networks whose weights come from a file are built without initial values: no random number is
// drawn for them (at SDXL size that is tens of seconds), and the scope ends with the guard.
TEST(SkipInit, LeavesParametersUndrawnInsideItsScopeOnly) {
  auto draws_after = [](const std::function<void()>& build) {
    at::manual_seed(1);
    build();
    return at::randn({8});
  };
  const at::Tensor untouched = draws_after([] {});
  auto build_all = [] {
    nn::LoraLinear linear(nn::LinearOptions(16, 8));
    nn::LoraConv2d conv(nn::Conv2dOptions(4, 8, 3));
    face::Conv face_conv(face::ConvOptions(4, 8, 3));
    face::Linear face_linear(16, 8, at::TensorOptions());
  };
  EXPECT_FALSE(at::equal(draws_after(build_all), untouched)) << "the layers draw their initial values";
  EXPECT_FALSE(nn::SkipInit::active());
  const at::Tensor skipped = draws_after([&] {
    nn::SkipInit outer;
    {
      nn::SkipInit inner;
      build_all();
    }
    EXPECT_TRUE(nn::SkipInit::active()) << "the inner guard restores the outer one's state";
    build_all();
  });
  EXPECT_TRUE(at::equal(skipped, untouched)) << "under SkipInit no layer drew a random number";
  EXPECT_FALSE(nn::SkipInit::active());
}

// A model built from files (uninitialized, then a strict load) holds exactly the files' values,
// and hands over the IP-Adapter's tensors for the fp32 masters.
TEST(LookaheadModel, BuiltFromFilesHoldsTheFilesValues) {
  at::set_num_threads(1);
  at::manual_seed(5);
  LookaheadModel source(LookaheadModelConfig::tiny());
  const std::string dir = testing::TempDir() + "lookahead_model_files";
  std::filesystem::create_directories(dir);
  auto state = [](torch::nn::Module& m, const std::string& prefix) {
    Named out;
    for (const auto& p : m.named_parameters()) out.emplace_back(prefix + p.key(), p.value().detach());
    for (const auto& b : m.named_buffers()) out.emplace_back(prefix + b.key(), b.value());
    return out;
  };
  LookaheadWeightFiles files{dir + "/unet.safetensors", dir + "/ip.safetensors", "", dir + "/taesd.safetensors",
                             dir + "/arcface.safetensors", ""};
  io::save_file(files.unet, state(*source.unet(), ""));
  io::save_file(files.ip_adapter, state(*source.ip_adapter(), ""));
  io::save_file(files.taesd, state(*source.taesd_decoder(), "decoder."));
  io::save_file(files.arcface, state(*source.arcface_module(), ""));

  at::manual_seed(6);  // other random values everywhere no file reaches
  LookaheadModel loaded(LookaheadModelConfig::tiny(), at::kCPU, files);
  auto expect_same = [](torch::nn::Module& a, torch::nn::Module& b, const std::string& what) {
    const auto pa = a.named_parameters(), pb = b.named_parameters();
    ASSERT_EQ(pa.size(), pb.size()) << what;
    for (const auto& p : pa) EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << what << " " << p.key();
    const auto ba = a.named_buffers(), bb = b.named_buffers();
    for (const auto& x : ba) EXPECT_TRUE(at::equal(x.value(), bb[x.key()])) << what << " " << x.key();
  };
  expect_same(*source.unet(), *loaded.unet(), "unet");
  expect_same(*source.ip_adapter(), *loaded.ip_adapter(), "ip_adapter");
  expect_same(*source.taesd_decoder(), *loaded.taesd_decoder(), "taesd");
  expect_same(*source.arcface_module(), *loaded.arcface_module(), "arcface");
  // Frozen as the model requires, trainables trainable.
  for (const auto& p : loaded.unet()->parameters()) EXPECT_FALSE(p.requires_grad());
  for (const auto& p : loaded.ip_adapter()->parameters()) EXPECT_TRUE(p.requires_grad());
  const std::map<std::string, at::Tensor> trainables = loaded.take_file_trainables();
  EXPECT_EQ(trainables.size(), loaded.ip_adapter()->named_parameters().size());
  EXPECT_TRUE(loaded.take_file_trainables().empty()) << "moved out by the first call";
  // Files cannot be loaded into a model of shapes only.
  EXPECT_THROW(LookaheadModel(LookaheadModelConfig::tiny(), at::kMeta, files), c10::Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lookahead::model
