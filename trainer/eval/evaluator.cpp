// The evaluation loop: items (identity x prompt) over ranks in lockstep, gathered on rank 0.
#include "trainer/eval/evaluator.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "common/seed.h"
#include "data/image_io.h"
#include "data/training_set.h"
#include "dist/sharded_engine.h"
#include "model/lookahead/conditioner.h"
#include "model/lookahead/generation.h"
#include "model/sched/make_sampler.h"
#include "model/sched/sampler.h"
#include "model/text/clip_tokenizer.h"
#include "model/vision/clip_vision.h"
#include "trainer/conditioning.h"
#include "trainer/eval/clip_score.h"
#include "trainer/eval/eval_report.h"
#include "trainer/eval/eval_stats.h"
#include "trainer/eval/id_similarity.h"

namespace lookahead::trainer {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// Restores the default CPU generator when it goes out of scope, so that building random
/// evaluation networks (tiny preset) leaves the training's random stream untouched.
class GlobalRngGuard {
 public:
  GlobalRngGuard() : state_(at::detail::getDefaultCPUGenerator().get_state()) {}
  ~GlobalRngGuard() {
    at::Generator g = at::detail::getDefaultCPUGenerator();
    g.set_state(state_);
  }
  GlobalRngGuard(const GlobalRngGuard&) = delete;
  GlobalRngGuard& operator=(const GlobalRngGuard&) = delete;

 private:
  at::Tensor state_;
};

/// [3, S, S] in [-1, 1] -> uint8 [S, S, 3].
at::Tensor to_uint8_hwc(const at::Tensor& chw) {
  return ((chw.to(at::kCPU, at::kFloat) + 1.0) * 127.5).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
}

json nullable(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

/// Framing of one rank's item result for the gather: the JSON text, then each blob, each
/// preceded by its length (8 bytes, native order; every rank of a job shares the architecture).
std::string frame(const std::string& text, const std::vector<std::vector<uint8_t>>& blobs) {
  std::string out;
  auto put = [&](const void* p, size_t n) {
    const uint64_t len = n;
    out.append(reinterpret_cast<const char*>(&len), sizeof(len));
    out.append(static_cast<const char*>(p), n);
  };
  put(text.data(), text.size());
  for (const auto& b : blobs) put(b.data(), b.size());
  return out;
}

std::vector<std::string> unframe(const std::string& bytes) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t len = 0;
    TORCH_INTERNAL_ASSERT(pos + sizeof(len) <= bytes.size(), "evaluation gather: truncated frame");
    std::memcpy(&len, bytes.data() + pos, sizeof(len));
    pos += sizeof(len);
    TORCH_INTERNAL_ASSERT(pos + len <= bytes.size(), "evaluation gather: truncated frame");
    parts.emplace_back(bytes.substr(pos, len));
    pos += len;
  }
  return parts;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  TORCH_CHECK(out.good(), "evaluation: cannot write ", path.string());
}

/// Mean, CI etc. of one group of samples (the <metric block> of docs/evaluation.md).
json metric_block(const std::vector<const json*>& samples) {
  std::vector<double> id, strict, cos, score;
  int64_t failures = 0;
  for (const json* s : samples) {
    const bool found = (*s)["face_found"].get<bool>();
    if (found) {
      id.push_back((*s)["id_similarity"].get<double>());
      strict.push_back(id.back());
    } else {
      ++failures;
      strict.push_back(0.0);
    }
    cos.push_back((*s)["clip_cosine"].get<double>());
    score.push_back((*s)["clip_score"].get<double>());
  }
  json b;
  b["n"] = static_cast<int64_t>(samples.size());
  b["id_similarity"] = to_json(summarize(id));
  b["id_similarity_strict"] = to_json(summarize(strict));
  b["face_failure_rate"] = samples.empty() ? json(nullptr) : json(static_cast<double>(failures) / static_cast<double>(samples.size()));
  b["clip_cosine"] = to_json(summarize(cos));
  b["clip_score"] = to_json(summarize(score));
  return b;
}

}  // namespace

uint64_t eval_sample_seed(uint64_t base_seed, int64_t identity, int64_t prompt_index, int64_t sample) {
  uint64_t h = common::splitmix64(base_seed);
  h = common::splitmix64(h ^ static_cast<uint64_t>(identity));
  h = common::splitmix64(h ^ static_cast<uint64_t>(prompt_index));
  h = common::splitmix64(h ^ static_cast<uint64_t>(sample));
  return h >> 1;  // below 2^63: a valid seed for every generator API
}

std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream in(path);
  TORCH_CHECK(in.good(), "eval.prompts: cannot open '", path, "'");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    prompts.push_back(line.substr(start));
  }
  TORCH_CHECK(!prompts.empty(), "eval.prompts: '", path, "' holds no prompt");
  return prompts;
}

EvalGuidance EvalGuidance::from_config(const EvalConfig& c) {
  EvalGuidance g;
  g.mode = c.guidance;
  g.cfg_scale = c.cfg_scale;
  g.scale_nokv = c.scale_nokv;
  g.scale_full = c.scale_full;
  g.scale_kv = c.scale_kv;
  return g;
}

std::string EvalGuidance::describe() const {
  std::ostringstream s;
  s << std::setprecision(4);
  if (mode == model::GuidanceMode::kCfg) s << "cfg " << cfg_scale;
  else s << scale_nokv << "/" << scale_full << "/" << scale_kv;
  return s.str();
}

struct Evaluator::Impl {
  dist::World& world;
  TrainConfig config;
  model::LookaheadModel& model;
  dist::ShardedEngine* engine;
  std::unique_ptr<model::Conditioner> cond;
  model::face::Mtcnn mtcnn{nullptr};
  std::unique_ptr<IdSimilarity> id;
  std::unique_ptr<ClipScorer> clip;
  std::shared_ptr<data::TrainingSet> set;
  std::vector<int64_t> identities;   // evaluated identities, in order of first appearance
  std::vector<int64_t> ref_records;  // the reference record of each
  std::vector<std::string> prompts;
  at::Tensor encoder_prompt, encoder_pooled, clip_uncond;
  /// An identity's reference, prepared once per rank that needs it.
  struct Reference {
    at::Tensor image;      // uint8 [S, S, 3]: the photo as the model sees it (resized, cropped)
    at::Tensor landmarks;  // [5, 2] in its pixels (NaN: unknown)
    at::Tensor latents;    // [1, 4, h, w]
    at::Tensor features;   // [1, T, D] CLIP image features
  };
  std::map<int64_t, Reference> references;  // by identity index

  Impl(dist::World& w, const TrainConfig& c, model::LookaheadModel& m, dist::ShardedEngine* e)
      : world(w), config(c), model(m), engine(e) {}

  at::Device device() const { return model.tensor_options().device(); }

  const Reference& reference(int64_t i) {
    auto it = references.find(i);
    if (it != references.end()) return it->second;
    data::Record r = set->get(ref_records.at(static_cast<size_t>(i)));
    data::CropTransform t;
    at::Tensor pixels = data::resize_center_crop(r.image, config.eval.resolution, &t);  // [3, S, S] in [-1, 1]
    at::Tensor px = pixels.unsqueeze(0).to(device());                                   // [1, 3, S, S]
    Reference ref{to_uint8_hwc(pixels), data::transform_landmarks(r.landmarks, t), cond->encode_latents(px),
                  cond->clip_features((px + 1.0) / 2.0)};
    return references.emplace(i, std::move(ref)).first->second;
  }

  /// Generates, scores and encodes one item; returns its frame.
  std::string run_item(int64_t item, const EvalGuidance& guidance, bool keep) {
    const int64_t n_prompts = static_cast<int64_t>(prompts.size());
    const int64_t ii = item / n_prompts, pi = item % n_prompts;
    const int64_t identity = identities.at(static_cast<size_t>(ii));
    const std::string& prompt = prompts.at(static_cast<size_t>(pi));
    const int64_t n = config.eval.samples;
    const Reference& ref = reference(ii);
    const auto embeds = cond->encode_prompts({prompt});
    const double s = static_cast<double>(config.eval.resolution);
    model::GenerationInputs in;
    in.ref_latents = ref.latents;
    in.clip_ref = ref.features;
    in.clip_uncond = clip_uncond;
    in.prompt = embeds.context;
    in.pooled = embeds.pooled;
    in.encoder_prompt = encoder_prompt;
    in.encoder_pooled = encoder_pooled;
    in.time_ids = at::tensor({s, s, 0.0, 0.0, s, s}, at::kFloat).view({1, 6}).to(device());

    model::GenerationOptions go;
    go.sampler = config.eval.sampler;
    if (!config.eval.scheduler_config.empty()) {
      std::ifstream f(config.eval.scheduler_config);
      TORCH_CHECK(f.good(), "eval.scheduler_config: cannot open '", config.eval.scheduler_config, "'");
      go.scheduler_config = json::parse(f);
    }
    go.steps = config.eval.steps;
    go.guidance.mode = guidance.mode;
    go.guidance.cfg_scale = guidance.cfg_scale;
    go.guidance.scale_nokv = guidance.scale_nokv;
    go.guidance.scale_full = guidance.scale_full;
    go.guidance.scale_kv = guidance.scale_kv;
    std::vector<uint64_t> seeds;
    for (int64_t k = 0; k < n; ++k) seeds.push_back(eval_sample_seed(config.eval.seed, identity, pi, k));

    at::Tensor latents = model::generate(model, in, seeds, go);  // [N, 4, h, w]
    if (engine) engine->end_step();
    at::Tensor images = cond->decode_latents(latents).to(at::kCPU, at::kFloat);  // [N, 3, H, W] in [-1, 1]
    // Scores are taken on the 8-bit images that are saved, so a reader of the PNGs gets the same numbers.
    std::vector<at::Tensor> u8;
    for (int64_t k = 0; k < n; ++k) u8.push_back(to_uint8_hwc(images[k]));
    at::Tensor gen_u8 = at::stack(u8);                                           // [N, H, W, 3]

    std::vector<bool> ref_found;
    at::Tensor ref_emb = id->embed(ref.image.unsqueeze(0), ref.landmarks.unsqueeze(0), &ref_found);  // [1, 512]
    std::vector<IdScore> ids = id->score(ref_emb[0], gen_u8);
    if (engine) engine->end_step();
    at::Tensor gen01 = gen_u8.permute({0, 3, 1, 2}).to(at::kFloat).div(255.0);  // [N, 3, H, W]
    std::vector<ClipScore> clips = clip->score(gen01.to(device()), std::vector<std::string>(static_cast<size_t>(n), prompt));
    if (!keep) return {};

    json r;
    r["item"] = item;
    r["reference_face_found"] = static_cast<bool>(ref_found.at(0));
    json samples = json::array();
    std::vector<std::vector<uint8_t>> blobs;
    // The reference image travels once, with the identity's first prompt.
    if (config.eval.save_images && pi == 0) blobs.push_back(data::encode_png(ref.image));
    for (int64_t k = 0; k < n; ++k) {
      const IdScore& sc = ids.at(static_cast<size_t>(k));
      const bool found = ref_found.at(0) && sc.face_found;
      std::ostringstream img;
      img << "images/id" << std::setw(4) << std::setfill('0') << identity << "/p" << std::setw(2) << pi << "_s"
          << std::setw(2) << k << ".png";
      json j;
      j["identity"] = identity;
      j["identity_index"] = ii;
      j["prompt_index"] = pi;
      j["prompt"] = prompt;
      j["sample"] = k;
      j["seed"] = seeds.at(static_cast<size_t>(k));
      j["image"] = config.eval.save_images ? img.str() : std::string();
      j["face_found"] = found;
      j["id_similarity"] = found ? nullable(sc.similarity) : json(nullptr);
      j["clip_cosine"] = clips.at(static_cast<size_t>(k)).cosine;
      j["clip_score"] = clips.at(static_cast<size_t>(k)).score;
      samples.push_back(j);
      if (config.eval.save_images) blobs.push_back(data::encode_png(u8.at(static_cast<size_t>(k))));
    }
    r["samples"] = samples;
    return frame(r.dump(), blobs);
  }
};

Evaluator::Evaluator(dist::World& world, const TrainConfig& config, model::LookaheadModel& model,
                     dist::ShardedEngine* engine)
    : impl_(std::make_unique<Impl>(world, config, model, engine)) {
  Impl& m = *impl_;
  const EvalConfig& e = config.eval;
  TORCH_CHECK(!e.eval_set.empty(), "eval.eval_set is required (an HDF5 set of reference photos, docs/evaluation.md)");
  TORCH_CHECK(!e.prompts.empty(), "eval.prompts is required (a text file, one prompt per line)");
  TORCH_CHECK(!config.model.mtcnn.empty(),
              "model.mtcnn is required for evaluation (the folder of facenet-pytorch's pnet.pt, rnet.pt, onet.pt)");
  m.prompts = read_prompts(e.prompts);
  m.set = data::TrainingSet::open(e.eval_set);
  // One reference per identity: its first photo record (else its first record).
  std::map<int64_t, size_t> seen;
  for (int64_t r = 0; r < m.set->size(); ++r) {
    const int64_t identity = m.set->identity(r);
    auto it = seen.find(identity);
    if (it == seen.end()) {
      seen.emplace(identity, m.identities.size());
      m.identities.push_back(identity);
      m.ref_records.push_back(r);
    } else if (!m.set->photo(m.ref_records[it->second]) && m.set->photo(r)) {
      m.ref_records[it->second] = r;
    }
  }
  if (e.identities > 0 && static_cast<size_t>(e.identities) < m.identities.size()) {
    m.identities.resize(static_cast<size_t>(e.identities));
    m.ref_records.resize(static_cast<size_t>(e.identities));
  }
  TORCH_CHECK(!m.identities.empty(), "eval.eval_set: '", e.eval_set, "' holds no record");

  const at::Device device = model.tensor_options().device();
  m.cond = build_conditioner(config, device);
  {
    at::NoGradGuard no_grad;
    const auto enc = m.cond->encode_prompts({e.encoder_prompt});
    m.encoder_prompt = enc.context;
    m.encoder_pooled = enc.pooled;
    m.clip_uncond = m.cond->clip_uncond();
  }
  const std::string& d = config.model.mtcnn;
  m.mtcnn = model::face::Mtcnn(model::face::MtcnnOptions());
  m.mtcnn->load_weights(d + "/pnet.pt", d + "/rnet.pt", d + "/onet.pt");
  m.mtcnn->eval();
  model::LookaheadModel* lm = &model;
  const at::TensorOptions opts = model.tensor_options();
  m.id = std::make_unique<IdSimilarity>(m.mtcnn, [lm, opts](const at::Tensor& faces) {
    at::NoGradGuard no_grad;
    return lm->arcface(faces.to(opts)).to(at::kCPU, at::kFloat);
  });

  const at::TensorOptions clip_opts = at::TensorOptions().device(device).dtype(opts.dtype());
  if (!e.clip_model.empty()) {
    auto clip_model = model::vision::clip_model_from_pretrained(e.clip_model, clip_opts);
    clip_model->eval();
    m.clip = std::make_unique<ClipScorer>(clip_model, model::text::ClipTokenizer::from_pretrained(e.clip_model),
                                          e.clip_model_name);
  } else {
    TORCH_CHECK(config.model.preset == Preset::kTiny,
                "eval.clip_model is required (a transformers CLIPModel folder, e.g. openai/clip-vit-large-patch14)");
    // A small random CLIP of the real architecture: the tiny preset tests the pipeline, not the numbers.
    GlobalRngGuard rng;
    at::manual_seed(0x11c0);
    model::vision::ClipModel clip_model(model::text::ClipTextConfig::tiny(), model::vision::ClipVisionConfig::tiny(),
                                        8, clip_opts);
    clip_model->eval();
    m.clip = std::make_unique<ClipScorer>(clip_model, model::text::ClipTokenizer::byte_level(),
                                          "random tiny CLIP (tiny preset; not a real CLIP model)");
  }
}

Evaluator::~Evaluator() = default;

int64_t Evaluator::num_items() const {
  return static_cast<int64_t>(impl_->identities.size() * impl_->prompts.size());
}
int64_t Evaluator::num_identities() const { return static_cast<int64_t>(impl_->identities.size()); }

json Evaluator::run(const std::string& out_dir, const EvalRunInfo& info, const EvalGuidance& guidance) {
  Impl& m = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  const int world = m.world.size(), rank = m.world.rank();
  const int64_t items = num_items();
  const int64_t rounds = (items + world - 1) / world;
  if (m.engine) m.engine->end_step();
  at::NoGradGuard no_grad;
  std::vector<std::string> results(static_cast<size_t>(items));
  for (int64_t round = 0; round < rounds; ++round) {
    // Ranks without a real item this round repeat item 0 and drop it: every rank must issue the
    // same unit calls, whose weight gathers are collectives.
    const int64_t item = round * world + rank;
    const bool real = item < items;
    std::string mine = m.run_item(real ? item : 0, guidance, real);
    std::vector<std::string> all = dist::all_gather_strings(*m.world.comm(), mine);
    for (int r = 0; r < world; ++r) {
      const int64_t k = round * world + r;
      if (k < items) results[static_cast<size_t>(k)] = std::move(all[static_cast<size_t>(r)]);
    }
  }
  if (!m.world.is_root()) {
    m.world.comm()->barrier()->wait();
    return json::object();
  }

  const fs::path out(out_dir);
  fs::create_directories(out);
  json all_samples = json::array();
  json identities = json::array();
  std::vector<bool> ref_found(m.identities.size(), true);
  for (int64_t k = 0; k < items; ++k) {
    std::vector<std::string> parts = unframe(results[static_cast<size_t>(k)]);
    TORCH_INTERNAL_ASSERT(!parts.empty(), "evaluation: item ", k, " has no result");
    json r = json::parse(parts[0]);
    const int64_t ii = k / static_cast<int64_t>(m.prompts.size());
    ref_found[static_cast<size_t>(ii)] = r["reference_face_found"].get<bool>();
    size_t blob = 1;
    if (m.config.eval.save_images && k % static_cast<int64_t>(m.prompts.size()) == 0) {
      std::ostringstream ref;
      ref << "images/id" << std::setw(4) << std::setfill('0') << m.identities[static_cast<size_t>(ii)] << "/reference.png";
      write_bytes(out / ref.str(), parts.at(blob++));
    }
    for (auto& s : r["samples"]) {
      if (m.config.eval.save_images) write_bytes(out / s["image"].get<std::string>(), parts.at(blob++));
      all_samples.push_back(s);
    }
  }
  for (size_t ii = 0; ii < m.identities.size(); ++ii) {
    std::vector<const json*> group;
    for (const auto& s : all_samples)
      if (s["identity_index"].get<int64_t>() == static_cast<int64_t>(ii)) group.push_back(&s);
    json b = metric_block(group);
    std::ostringstream ref;
    ref << "images/id" << std::setw(4) << std::setfill('0') << m.identities[ii] << "/reference.png";
    b["identity"] = m.identities[ii];
    b["identity_index"] = static_cast<int64_t>(ii);
    b["reference"] = m.config.eval.save_images ? ref.str() : std::string();
    b["reference_face_found"] = static_cast<bool>(ref_found[ii]);
    identities.push_back(b);
  }
  json prompts = json::array();
  for (size_t pi = 0; pi < m.prompts.size(); ++pi) {
    std::vector<const json*> group;
    for (const auto& s : all_samples)
      if (s["prompt_index"].get<int64_t>() == static_cast<int64_t>(pi)) group.push_back(&s);
    json b = metric_block(group);
    b["prompt_index"] = static_cast<int64_t>(pi);
    b["prompt"] = m.prompts[pi];
    prompts.push_back(b);
  }
  std::vector<const json*> everything;
  for (const auto& s : all_samples) everything.push_back(&s);

  const EvalConfig& e = m.config.eval;
  json settings;
  settings["checkpoint"] = info.checkpoint;
  settings["step"] = info.step;
  settings["eval_set"] = e.eval_set;
  settings["prompts"] = m.prompts;
  settings["identities"] = static_cast<int64_t>(m.identities.size());
  settings["samples"] = e.samples;
  settings["sampler"] = std::string(config_name(e.sampler));
  settings["scheduler_config"] = e.scheduler_config;
  settings["steps"] = e.steps;
  settings["guidance"] = {{"mode", std::string(config_name(guidance.mode))},
                          {"scale_nokv", guidance.scale_nokv},
                          {"scale_full", guidance.scale_full},
                          {"scale_kv", guidance.scale_kv},
                          {"cfg_scale", guidance.cfg_scale}};
  settings["encoder_prompt"] = e.encoder_prompt;
  settings["resolution"] = e.resolution;
  settings["seed"] = e.seed;
  settings["preset"] = std::string(config_name(m.config.model.preset));
  settings["id_model"] = m.config.model.preset == Preset::kTiny ? std::string("random tiny iresnet (tiny preset)")
                                                         : m.config.model.arcface_network + " (" + m.config.model.arcface + ")";
  settings["face_detector"] = "mtcnn (" + m.config.model.mtcnn + ")";
  settings["clip_model"] = m.clip->model_name();

  json doc;
  doc["format"] = "lookahead-eval";
  doc["version"] = 1;
  doc["label"] = info.label;
  doc["settings"] = settings;
  doc["samples"] = all_samples;
  doc["identities"] = identities;
  doc["prompts"] = prompts;
  doc["overall"] = metric_block(everything);
  {
    std::ofstream f(out / "metrics.json");
    f << doc.dump(2) << "\n";
    TORCH_CHECK(f.good(), "evaluation: cannot write ", (out / "metrics.json").string());
  }
  // How it ran (not part of metrics.json, which must not depend on the number of ranks).
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    std::ofstream f(out / "run.json");
    f << json{{"world_size", world}, {"seconds", seconds}, {"items", items}, {"rounds", rounds}}.dump(2) << "\n";
  }
  write_report({ReportEntry{info.label, doc, out.string()}}, out.string(), "Lookahead evaluation: " + info.label);
  m.world.comm()->barrier()->wait();
  return doc;
}

std::vector<std::pair<std::string, double>> eval_log_values(const json& metrics) {
  std::vector<std::pair<std::string, double>> out;
  const json& o = metrics.at("overall");
  auto mean = [&](const char* key) {
    const json& v = o.at(key).at("mean");
    return v.is_null() ? std::nan("") : v.get<double>();
  };
  out.emplace_back("eval_id_similarity", mean("id_similarity"));
  out.emplace_back("eval_id_similarity_strict", mean("id_similarity_strict"));
  const json& f = o.at("face_failure_rate");
  out.emplace_back("eval_face_failure_rate", f.is_null() ? std::nan("") : f.get<double>());
  out.emplace_back("eval_clip_score", mean("clip_score"));
  out.emplace_back("eval_clip_cosine", mean("clip_cosine"));
  return out;
}

}  // namespace lookahead::trainer
