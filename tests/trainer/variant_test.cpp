// The ablation variants of the training step (docs/ablations.md) under mpiexec -n 1..3: each
// switch changes exactly what it should (counted by the engine's per-unit forward calls and by the
// tensors that exist), N ranks reproduce one unsharded model of the same variant, and a checkpoint
// of one variant refuses to resume into another, naming the key.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "checkpoints/checkpoint.h"
#include "model/lookahead/lookahead_model.h"
#include "model/lookahead/synthetic_batch.h"
#include "tests/test_main.h"
#include "trainer/run_variant.h"
#include "trainer/train_state.h"

namespace lookahead::trainer {
namespace {

using model::LookaheadModel;
using test::world;

constexpr int kSteps = 4;
constexpr uint64_t kSeed = 77;
constexpr double kLr[2] = {2e-3, 1e-3};  // adapter, lora
const std::vector<int64_t> kLatent{4, 8, 8};

int64_t global_batch() { return world().size() == 3 ? 6 : 4; }

/// One row of the ablation table, as the model and the configuration spell it.
struct Variant {
  std::string name;
  bool kv = true;
  model::PreviewKind preview = model::PreviewKind::kLcm;
  double lambda_id = 1.0;  // weighs like the diffusion loss, so its gradients matter in the comparison
  double lambda_dreamsim = 0.0;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v{{"full", true, model::PreviewKind::kLcm, 1.0},
                                      {"kv_off", false, model::PreviewKind::kLcm, 1.0},
                                      {"x0", false, model::PreviewKind::kX0, 1.0},
                                      {"x0_kv", true, model::PreviewKind::kX0, 1.0},
                                      {"diffusion_only", false, model::PreviewKind::kLcm, 0.0},
                                      {"official", true, model::PreviewKind::kLcm, 1.0, 1.0},
                                      {"dreamsim_x0", false, model::PreviewKind::kX0, 0.0, 1.0}};
  return v;
}

model::LookaheadModelConfig model_config(const Variant& v) {
  auto c = model::LookaheadModelConfig::tiny();
  c.lambda_id = v.lambda_id;
  c.use_kv_encoder = v.kv;
  c.preview = v.preview;
  c.lambda_dreamsim = v.lambda_dreamsim;
  return c;
}

TrainConfig train_config(const Variant& v, const std::string& out = "") {
  TrainConfig c;
  c.model.preset = Preset::kTiny;
  c.model.kv_encoder = v.kv ? model::KvEncoderMode::kOn : model::KvEncoderMode::kOff;
  c.loss.preview = v.preview;
  c.loss.lambda_id = v.lambda_id;
  c.loss.lambda_dreamsim = v.lambda_dreamsim;
  c.train.seed = kSeed;
  c.train.threads = 1;
  c.optim.lr_adapter = kLr[0];
  c.optim.lr_lora = kLr[1];
  c.optim.weight_decay = 0.01;
  c.optim.clip = 1.0;
  c.train.out = out;
  // What parse_train_config records, reduced to the keys a checkpoint's variant is read from.
  c.resolved_ini = "[model]\nkv_encoder = " + std::string(config_name(c.model.kv_encoder)) +
                   "\n[loss]\npreview = " + std::string(config_name(c.loss.preview)) +
                   "\nlambda_id = " + std::to_string(v.lambda_id) +
                   "\nlambda_dreamsim = " + std::to_string(v.lambda_dreamsim) + "\n";
  return c;
}

void randomize_loras(LookaheadModel& m) {
  at::NoGradGuard no_grad;
  for (auto& [k, t] : m.lora_parameters()) t.normal_(0.0, 0.1);
}

/// Samples [first, first + count) of step `step`'s global batch, with what the variant's losses
/// need of the reference photos (as the trainer prepares them: ArcFace, DreamSim).
model::Batch make_batch(LookaheadModel& m, const Variant& v, int step, int64_t first, int64_t count) {
  model::SyntheticBatch sb = model::synthetic_batch(model_config(v), model::SyntheticShape{}, step, first, count);
  m.set_reference(sb.batch, sb.ref_pixels, sb.ref_pixel_landmarks);
  return sb.batch;
}

struct Trace {
  std::vector<double> diffusion, lookahead;
  std::map<std::string, at::Tensor> params;
  std::vector<std::map<std::string, int64_t>> calls;  // per step
};

/// The variant composed by hand on one unsharded model, trained with torch's AdamW.
Trace reference_run(const Variant& v) {
  at::set_num_threads(1);
  at::manual_seed(kSeed);
  LookaheadModel m(model_config(v), world().device());
  randomize_loras(m);
  std::vector<torch::optim::OptimizerParamGroup> pg;
  std::vector<at::Tensor> all;
  for (int g = 0; g < 2; ++g) {
    std::vector<at::Tensor> params;
    for (auto& [k, t] : g == 0 ? m.adapter_parameters() : m.lora_parameters()) params.push_back(t);
    if (params.empty()) continue;
    all.insert(all.end(), params.begin(), params.end());
    pg.emplace_back(
        params, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(kLr[g]).weight_decay(0.01)));
  }
  torch::optim::AdamW opt(pg, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
  model::AlphaSchedule alpha(kSeed);
  Trace trace;
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    const model::Batch batch = make_batch(m, v, step, 0, global_batch());
    const model::StepDraw draw = m.draw(kSeed, step, global_batch(), 0, global_batch(), kLatent);
    at::Tensor l1, l2 = at::zeros({});
    if (v.lambda_id == 0 && v.lambda_dreamsim == 0) {
      l1 = m.diffusion_loss(batch, draw);
    } else if (v.preview == model::PreviewKind::kX0) {
      const model::DiffusionBranch b1 = m.diffusion_branch(batch, draw, true);
      l1 = b1.loss;
      l2 = m.x0_lookahead_loss(batch, b1).loss;
    } else {
      l1 = m.diffusion_loss(batch, draw);
      l2 = m.lookahead_loss(batch, draw, alpha.value(step)).loss;
    }
    (l1 + l2).backward();
    torch::nn::utils::clip_grad_norm_(all, 1.0);
    opt.step();
    trace.diffusion.push_back(l1.item<double>());
    trace.lookahead.push_back(l2.item<double>());
  }
  for (auto& [k, t] : m.adapter_parameters()) trace.params[k] = t.detach().cpu().clone();
  for (auto& [k, t] : m.lora_parameters()) trace.params[k] = t.detach().cpu().clone();
  return trace;
}

Trace sharded_run(const Variant& v, int steps = kSteps) {
  auto& w = world();
  TrainState state(w, train_config(v), TrainStateOptions{model_config(v), randomize_loras});
  const int64_t per_rank = global_batch() / w.size(), first = w.rank() * per_rank;
  Trace trace;
  for (int step = 0; step < steps; ++step) {
    const model::Batch batch = make_batch(state.model(), v, step, first, per_rank);
    const StepStats st = state.step(batch, state.draw(per_rank, kLatent), state.alpha());
    trace.diffusion.push_back(st.loss_diffusion);
    trace.lookahead.push_back(st.loss_lookahead);
    trace.calls.push_back(st.times.unit_calls);
  }
  trace.params = state.trainable_tensors();
  return trace;
}

int64_t calls_of(const std::map<std::string, int64_t>& calls, const std::string& unit) {
  const auto it = calls.find(unit);
  return it == calls.end() ? 0 : it->second;
}

TEST(Variants, EachSwitchChangesExactlyWhatItShould) {
  // UNet runs per step, told apart by two units: stem_out runs once per full UNet run (the
  // decoder, the LCM branch), never in the encoder (it stops after up_blocks[1]);
  // down_blocks.1.attentions.0 runs in every UNet run, the encoder's included.
  // ArcFace runs on the reference (before the step, counted in it) and on the preview; each
  // DreamSim network likewise.
  struct Want {
    int64_t stem_out, attention, taesd, arcface, dreamsim;
  };
  const std::map<std::string, Want> want{{"full", {2, 4, 1, 2, 0}},    // decoder + LCM, each with an encoder run
                                         {"kv_off", {2, 2, 1, 2, 0}},  // no encoder runs
                                         {"x0", {1, 1, 1, 2, 0}},      // one UNet run: the x̂0 is branch 1's
                                         {"x0_kv", {1, 2, 1, 2, 0}},   // + its encoder
                                         {"diffusion_only", {1, 1, 0, 0, 0}},  // no preview, no ArcFace
                                         {"official", {2, 4, 1, 2, 2}},        // + DreamSim
                                         {"dreamsim_x0", {1, 1, 1, 0, 2}}};    // DreamSim without ArcFace
  for (const Variant& v : variants()) {
    const Trace t = sharded_run(v, 1);
    const auto& calls = t.calls.at(0);
    const Want& w = want.at(v.name);
    EXPECT_EQ(calls_of(calls, "stem_out"), w.stem_out) << v.name;
    EXPECT_EQ(calls_of(calls, "down_blocks.1.attentions.0"), w.attention) << v.name;
    EXPECT_EQ(calls_of(calls, "taesd.decoder"), w.taesd) << v.name;
    EXPECT_EQ(calls_of(calls, "arcface"), w.arcface) << v.name;
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(calls_of(calls, "dreamsim.extractor_list." + std::to_string(i)), w.dreamsim) << v.name << " " << i;

    // The tensors a variant holds: no LCM-LoRA where the LCM never runs, no LoRA trainables and no
    // encoder without the KV encoder.
    at::manual_seed(kSeed);
    LookaheadModel m(model_config(v), at::kMeta);
    int64_t lcm = 0, lora = 0;
    for (const auto& u : m.units()) {
      lcm += static_cast<int64_t>(u.lcm.size());
      lora += static_cast<int64_t>(u.lora.size());
    }
    EXPECT_EQ(lcm > 0, v.preview == model::PreviewKind::kLcm && (v.lambda_id > 0 || v.lambda_dreamsim > 0)) << v.name;
    EXPECT_EQ(m.dreamsim().is_empty(), v.lambda_dreamsim == 0) << v.name;
    EXPECT_EQ(lora > 0, v.kv) << v.name;
    EXPECT_EQ(m.has_kv_encoder(), v.kv) << v.name;
    EXPECT_EQ(m.lora_parameters().empty(), !v.kv) << v.name;
    if (!v.kv) {
      EXPECT_THROW(m.encoder(), c10::Error) << v.name;
    }
    if (lcm == 0) {
      model::Batch b;  // the LCM branch is refused before it reads anything
      EXPECT_THROW(m.lookahead_loss(b, model::StepDraw{}, 1.0), c10::Error) << v.name;
    }
  }
}

TEST(Variants, NRanksReproduceOneRankForEachVariant) {
  for (const Variant& v : variants()) {
    const Trace want = reference_run(v);
    const Trace got = sharded_run(v);
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(got.diffusion[s], want.diffusion[s], 1e-5 * std::abs(want.diffusion[s]) + 1e-7)
          << v.name << " step " << s;
      EXPECT_NEAR(got.lookahead[s], want.lookahead[s], 1e-5 * std::abs(want.lookahead[s]) + 1e-7)
          << v.name << " step " << s;
    }
    if (v.lambda_id > 0 || v.lambda_dreamsim > 0) {
      EXPECT_GT(want.lookahead.back(), 0.0) << v.name;
    }
    ASSERT_EQ(got.params.size(), want.params.size()) << v.name;
    double worst = 0;
    std::string worst_key;
    for (const auto& [k, t] : want.params) {
      ASSERT_TRUE(got.params.contains(k)) << v.name << ": " << k;
      const double err = (got.params.at(k) - t).abs().max().item<double>();
      if (err > worst) worst = err, worst_key = k;
    }
    // fp32 with other summation orders; AdamW's per-coordinate normalisation turns rounding noise
    // in near-zero gradients into steps of up to lr (2e-3): within 10 % of one step (the x0 variant's
    // 1/sqrt(ᾱ_t) amplifies that noise: 1.07e-4 measured on 2 ranks).
    EXPECT_LT(worst, 2e-4) << v.name << ": worst parameter " << worst_key;
  }
}

TEST(Variants, ACheckpointRefusesToResumeIntoAnotherVariant) {
  auto& w = world();
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("lookahead_variant_test_np" + std::to_string(w.size()))).string();
  if (w.is_root()) std::filesystem::remove_all(dir);
  w.comm()->barrier()->wait();
  const Variant full = variants()[0];
  {
    TrainState saved(w, train_config(full, dir), TrainStateOptions{model_config(full), randomize_loras});
    saved.save(data::Cursor{});
  }
  struct Case {
    Variant variant;
    std::string key;
  };
  Variant id_off = full;
  id_off.name = "id_off";
  id_off.lambda_id = 0.0;
  const std::vector<Case> cases{
      {variants()[1], "model.kv_encoder"}, {variants()[3], "loss.preview"}, {id_off, "loss.lambda_id"}};
  for (const Case& c : cases) {
    TrainState other(w, train_config(c.variant, dir), TrainStateOptions{model_config(c.variant), randomize_loras});
    try {
      other.load("latest");
      ADD_FAILURE() << c.variant.name << ": the checkpoint of the full model loaded";
    } catch (const std::exception& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(c.key + ": the checkpoint's run had"), std::string::npos) << c.variant.name << ": " << what;
    }
  }
  // The same variant with another λ loads (a hyper-parameter, not a variant).
  Variant same = full;
  same.lambda_id = 0.5;
  TrainState again(w, train_config(same, dir), TrainStateOptions{model_config(same), randomize_loras});
  EXPECT_EQ(again.load("latest").path.empty(), false);
  w.comm()->barrier()->wait();
  if (w.is_root()) std::filesystem::remove_all(dir);
}

TEST(Variants, TheDreamSimTermsGradientReachesEveryTrainable) {
  // λ_ID 0: the branch's only loss is DreamSim, so every gradient of its backward came through the
  // DreamSim networks, the TAESD preview, the LCM UNet and the reference K/V.
  Variant v{"dreamsim_only", true, model::PreviewKind::kLcm, 0.0, 1.0};
  at::manual_seed(kSeed);
  LookaheadModel m(model_config(v), at::kCPU);
  randomize_loras(m);
  const model::Batch batch = make_batch(m, v, 0, 0, 2);
  const model::LookaheadLoss l = m.lookahead_loss(batch, m.draw(kSeed, 0, 2, 0, 2, kLatent), 1.0);
  ASSERT_TRUE(l.dreamsim_loss.defined());
  EXPECT_GT(l.dreamsim_loss.item<double>(), 0.0);
  EXPECT_EQ(l.loss.item<double>(), l.dreamsim_loss.item<double>());
  l.loss.backward();
  int64_t with_grad = 0, total = 0;
  for (auto& [k, t] : m.adapter_parameters()) {
    ++total;
    with_grad += t.grad().defined() && t.grad().abs().sum().item<double>() > 0;
  }
  for (auto& [k, t] : m.lora_parameters()) {
    ++total;
    with_grad += t.grad().defined() && t.grad().abs().sum().item<double>() > 0;
  }
  // The last block's LoRAs reach no extracted K/V (docs/training.md); nearly all others move.
  EXPECT_GT(with_grad, total * 9 / 10) << with_grad << " of " << total << " trainables have a gradient";
}

TEST(RunVariant, ReadsTheResolvedIniAndNamesTheDifferingKey) {
  const RunVariant old_checkpoint = RunVariant::from_ini("[model]\npreset = tiny\n[loss]\nlambda_id = 0.001\n");
  EXPECT_EQ(old_checkpoint.describe(), "preview=lcm kv_encoder=on lambda_id=0.001 lambda_dreamsim=0");
  const RunVariant x0 =
      RunVariant::from_ini("[model]\nkv_encoder = off\n[loss]\npreview = x0\nlambda_id = 0.002\nlambda_dreamsim = 0\n");
  EXPECT_EQ(x0.describe(), "preview=x0 kv_encoder=off lambda_id=0.002 lambda_dreamsim=0");
  EXPECT_NE(variant_mismatch(old_checkpoint, x0).find("model.kv_encoder: the checkpoint's run had on"),
            std::string::npos);
  RunVariant ds = old_checkpoint;
  ds.lambda_dreamsim = 1e-3;
  EXPECT_NE(variant_mismatch(old_checkpoint, ds).find("loss.lambda_dreamsim"), std::string::npos);
  RunVariant off = old_checkpoint;
  off.lambda_id = 0;
  off.preview = model::PreviewKind::kX0;  // without a lookahead branch the preview is not used
  RunVariant off2 = off;
  off2.preview = model::PreviewKind::kLcm;
  EXPECT_EQ(variant_mismatch(off, off2), "");
  EXPECT_THROW(RunVariant::from_ini("[loss]\npreview = lcm2\n"), c10::Error);
  // A preset file, as the benchmarks read one, applied to a configuration.
  const std::string path =
      (std::filesystem::temp_directory_path() / ("lookahead_variant_preset_" + std::to_string(world().rank()) + ".ini"))
          .string();
  {
    std::ofstream f(path);
    f << "# a preset\n[model]\nkv_encoder = off\n\n[loss]\npreview = x0\nlambda_id = 0.001\nlambda_dreamsim = 0\n";
  }
  TrainConfig c;
  RunVariant::from_file(path).apply(c);
  EXPECT_EQ(RunVariant::of(c).describe(), "preview=x0 kv_encoder=off lambda_id=0.001 lambda_dreamsim=0");
  std::filesystem::remove(path);
  try {
    RunVariant::from_file(path);
    ADD_FAILURE() << "a missing preset file was read";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(RunVariant::from_ini("[loss]\nlambda_id = abc\n"), c10::Error);
}

}  // namespace
}  // namespace lookahead::trainer
