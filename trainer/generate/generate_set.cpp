// `lookahead data generate` (see generate_set.h).
#include "trainer/generate/generate_set.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/atomic_file.h"
#include "common/seed.h"
#include "data/image_io.h"
#include "data/manifest.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"
#include "model/pipeline/sdxl_text_to_image.h"
#include "trainer/generate/generate_error.h"
#include "trainer/generate/generate_report.h"
#include "trainer/generate/generation_plan.h"
#include "trainer/generate/identity_bank.h"
#include "trainer/generate/prompt_bank.h"

namespace lookahead::trainer::generate {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

/// Names of the per-record columns every generated file holds.
constexpr const char* kColDecision = "decision";
constexpr const char* kColScore = "score";
constexpr const char* kColSeed = "seed";
constexpr const char* kColIndex = "image_index";
constexpr const char* kColFullPrompt = "full_prompt";
constexpr const char* kColDescription = "description";
constexpr const char* kColFaceBox = "face_box";
constexpr const char* kColFaceProb = "face_prob";
constexpr const char* kColEmbedding = "id_embedding";
/// File attribute holding the hash of the settings that made the file.
constexpr const char* kAttrSettings = "generation_settings_hash";
constexpr int64_t kEmbeddingDim = 512;

std::string numbered(const char* prefix, int64_t n, int width, const char* suffix) {
  std::ostringstream s;
  s << prefix << std::setw(width) << std::setfill('0') << n << suffix;
  return s.str();
}

std::string hex(uint64_t v) {
  std::ostringstream s;
  s << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

/// The settings that decide the content, as stored in generate.json: a rerun must match them.
struct Settings {
  json j;
  uint64_t hash = 0;
};

/// A fingerprint of the pipeline folder's files (names, sizes, modification times) so that a
/// resumed run refuses weights swapped under it without hashing gigabytes.
json folder_fingerprint(const std::string& root) {
  json files = json::object();
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    files[fs::relative(e.path(), root).string()] = e.file_size();
  }
  return files;
}

Settings make_settings(const GenerateOptions& o, const std::vector<std::string>& descriptions,
                       const PromptTemplates& templates) {
  Settings s;
  json& j = s.j;
  j["generator"] = "lookahead data generate";
  j["pipeline"] = fs::absolute(o.pipeline).lexically_normal().string();
  j["pipeline_files"] = folder_fingerprint(o.pipeline);
  j["variant"] = o.variant;
  j["identities"] = static_cast<int64_t>(descriptions.size());
  j["identities_source"] = o.identities_file.empty() ? "built-in" : fs::absolute(o.identities_file).string();
  std::string all;
  for (const auto& d : descriptions) all += d + "\n";
  j["identities_hash"] = hex(dist::hash_string(all));
  j["vanilla_templates"] = templates.vanilla;
  j["style_templates"] = templates.stylized;
  j["vanilla"] = o.vanilla;
  j["style_rounds"] = o.style_rounds;
  j["seed"] = o.seed;
  j["placeholder"] = o.placeholder;
  j["steps"] = o.steps;
  j["guidance"] = o.guidance;
  j["resolution"] = o.resolution;
  j["batch"] = o.batch;
  j["consistency"] = to_string(o.consistency);
  j["share_rate"] = o.share_rate;
  j["dtype"] = o.dtype;
  j["detect"] = o.detect;
  if (o.detect) {
    j["mtcnn"] = fs::absolute(o.face.mtcnn).string();
    j["min_face_size"] = o.face.min_face_size;
    j["arcface"] = o.face.arcface.empty() ? "" : fs::absolute(o.face.arcface).string();
    j["arcface_network"] = o.face.arcface_network;
    j["keep_threshold"] = o.filter.keep_threshold;
    j["min_survivors"] = o.filter.min_survivors;
    j["stylized_threshold"] = o.filter.stylized_threshold ? json(*o.filter.stylized_threshold) : json(nullptr);
  }
  j["image_format"] = o.image_format;
  j["jpeg_quality"] = o.jpeg_quality;
  j["identities_per_shard"] = o.identities_per_shard;
  s.hash = dist::hash_string(j.dump());
  return s;
}

/// Which settings differ between a stored generate.json and this run (for the refusal message).
std::string first_difference(const json& stored, const json& now) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!stored.contains(it.key())) return it.key() + " (not in the stored settings)";
    if (stored[it.key()] != it.value())
      return it.key() + " (stored " + stored[it.key()].dump().substr(0, 200) + ", now " +
             it.value().dump().substr(0, 200) + ")";
  }
  return "the settings' format";
}

at::ScalarType resolve_dtype(const std::string& name, const at::Device& device) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp16") return at::kHalf;
  return device.is_cuda() ? at::kHalf : at::kFloat;  // auto
}

/// One image of an identity, as generated and checked.
struct ImageResult {
  PlannedImage plan;
  std::vector<uint8_t> encoded;
  int64_t height = 0, width = 0;
  FaceResult face;
  at::Tensor embedding;  // [512]
  Decision decision = Decision::kKept;
  float score = std::numeric_limits<float>::quiet_NaN();
};

/// Everything the run needs, built once per rank.
class Generator {
 public:
  Generator(dist::World& world, const GenerateOptions& o, std::vector<std::string> descriptions,
            PromptTemplates templates, Settings settings)
      : world_(world),
        o_(o),
        descriptions_(std::move(descriptions)),
        templates_(std::move(templates)),
        settings_(std::move(settings)) {
    plan_.vanilla_per_identity = o.vanilla;
    plan_.style_rounds = o.style_rounds;
    plan_.seed = o.seed;
    plan_.placeholder = o.placeholder;
    plan_.validate();
  }

  int64_t identities() const { return static_cast<int64_t>(descriptions_.size()); }
  int64_t shards() const { return (identities() + o_.identities_per_shard - 1) / o_.identities_per_shard; }
  int64_t images_per_identity() const {
    return o_.vanilla + o_.style_rounds * static_cast<int64_t>(templates_.stylized.size());
  }
  fs::path shard_path(int64_t s, const char* suffix) const {
    return fs::path(o_.out) / "shards" / numbered("", s, 5, suffix);
  }
  fs::path part_path(int64_t id) const { return fs::path(o_.out) / "parts" / numbered("id-", id, 7, ".h5"); }

  /// Whether shard s is complete: its marker names this run's settings and both files are as it says.
  bool shard_done(int64_t s, json* marker = nullptr) const {
    const fs::path m = shard_path(s, ".json");
    if (!fs::is_regular_file(m)) return false;
    std::ifstream in(m);
    json j;
    try {
      j = json::parse(in);
    } catch (const json::exception&) {
      return false;
    }
    if (j.value("settings_hash", std::string()) != hex(settings_.hash)) return false;
    for (const char* kind : {"kept", "rejected"}) {
      const json& e = j[kind];
      const fs::path f = fs::path(o_.out) / e["path"].get<std::string>();
      std::error_code ec;
      if (!fs::is_regular_file(f) || static_cast<int64_t>(fs::file_size(f, ec)) != e["bytes"].get<int64_t>())
        return false;
    }
    if (marker) *marker = j;
    return true;
  }

  /// Generates every unfinished shard of this rank; returns what it did.
  GenerateSummary run() {
    GenerateSummary sum;
    const auto start = Clock::now();
    std::vector<int64_t> mine;
    for (int64_t s = world_.rank(); s < shards(); s += world_.size()) mine.push_back(s);
    int64_t todo = 0;
    for (int64_t s : mine)
      if (!shard_done(s)) todo += shard_size(s);
    if (todo > 0) load_models();
    int64_t done_ids = 0, made = 0;
    for (int64_t s : mine) {
      if (shard_done(s)) {
        sum.skipped_identities += shard_size(s);
        // A kill between the marker and the removal of the parts leaves them behind: they are merged.
        for (int64_t id = s * o_.identities_per_shard; id < (s * o_.identities_per_shard) + shard_size(s); ++id)
          fs::remove(part_path(id));
        continue;
      }
      const int64_t first = s * o_.identities_per_shard;
      for (int64_t id = first; id < first + shard_size(s); ++id) {
        if (part_done(id)) {
          ++sum.skipped_identities;
          continue;
        }
        std::vector<ImageResult> images = generate_identity(id);
        write_part(id, images);
        made += static_cast<int64_t>(images.size());
        ++done_ids;
        report_progress(done_ids, todo, made, start);
      }
      merge_shard(s);
    }
    sum.images = made;
    sum.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    sum.images_per_second = sum.seconds > 0 ? made / sum.seconds : 0;
    return sum;
  }

  /// Rank 0, after its own shards: waits until every shard is complete.
  void wait_for_shards() const {
    auto last = Clock::now();
    for (int64_t s = 0; s < shards(); ++s) {
      while (!shard_done(s)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        if (o_.progress && Clock::now() - last > std::chrono::seconds(30)) {
          std::cerr << "data generate: waiting for shard " << s << " of " << shards() << " (rank " << s % world_.size()
                    << ")\n";
          last = Clock::now();
        }
      }
    }
  }

  /// Rank 0: manifest, statistics, histograms, duplicates and the report.
  void finalize(GenerateSummary& sum) const;

 private:
  int64_t shard_size(int64_t s) const {
    return std::min(o_.identities_per_shard, identities() - s * o_.identities_per_shard);
  }

  bool part_done(int64_t id) const {
    const fs::path p = part_path(id);
    if (!fs::is_regular_file(p)) return false;
    try {
      auto set = data::TrainingSet::open(p.string());
      return set->attribute(kAttrSettings) == hex(settings_.hash) && set->size() == images_per_identity();
    } catch (const std::exception&) {
      return false;  // a part is renamed into place only when complete: anything else is regenerated
    }
  }

  void load_models() {
    const at::Device device = world_.device();
    dtype_ = resolve_dtype(o_.dtype, device);
    pipe_ = std::make_unique<model::pipeline::SdxlTextToImage>(
        model::pipeline::SdxlTextToImage::from_pretrained(o_.pipeline, device, dtype_, o_.variant));
    if (o_.detect) face_ = std::make_unique<FaceCheck>(o_.face, device);
  }

  std::vector<ImageResult> generate_identity(int64_t id) {
    const std::vector<PlannedImage> plan = plan_identity(plan_, templates_, id, descriptions_[id]);
    std::vector<ImageResult> out;
    model::pipeline::TextToImageOptions t;
    t.steps = o_.steps;
    t.guidance_scale = o_.guidance;
    t.height = t.width = o_.resolution;
    std::vector<at::Tensor> all_images;
    for (size_t first = 0; first < plan.size(); first += static_cast<size_t>(o_.batch)) {
      const size_t last = std::min(plan.size(), first + static_cast<size_t>(o_.batch));
      std::vector<std::string> prompts;
      std::vector<uint64_t> seeds;
      for (size_t i = first; i < last; ++i) {
        prompts.push_back(plan[i].full_prompt);
        seeds.push_back(plan[i].seed);
      }
      if (o_.consistency == Consistency::kSharedAttention) {
        auto sharing = std::make_shared<model::nn::BatchSharing>();
        sharing->groups.assign(prompts.size(), id);
        sharing->rate = o_.share_rate;
        sharing->seed = common::splitmix64(o_.seed ^ common::splitmix64(static_cast<uint64_t>(id) * 1000003u + first));
        t.sharing = sharing;
      }
      const model::pipeline::TextToImageOutput g = pipe_->generate(prompts, seeds, t);
      for (size_t i = first; i < last; ++i) {
        ImageResult r;
        r.plan = plan[i];
        const at::Tensor img = g.images[static_cast<int64_t>(i - first)];  // [H, W, 3]
        r.height = img.size(0);
        r.width = img.size(1);
        r.encoded = o_.image_format == "png" ? data::encode_png(img) : data::encode_jpeg(img, o_.jpeg_quality);
        all_images.push_back(img);
        out.push_back(std::move(r));
      }
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (auto& r : out) {
      r.face.box = at::full({4}, nan);
      r.face.landmarks = at::full({5, 2}, nan);
      r.embedding = at::zeros({kEmbeddingDim});
    }
    if (!o_.detect) return out;                       // nothing to filter on: every image is kept
    const at::Tensor images = at::stack(all_images);  // [n, H, W, 3]
    const std::vector<FaceResult> faces = face_->detect(images);
    std::vector<bool> found, vanilla;
    for (size_t i = 0; i < out.size(); ++i) {
      out[i].face = faces[i];
      found.push_back(faces[i].found);
      vanilla.push_back(out[i].plan.vanilla);
    }
    if (!face_->has_embedder()) {
      for (auto& r : out) r.decision = r.face.found ? Decision::kKept : Decision::kNoFace;
      return out;
    }
    const at::Tensor emb = face_->embed(images, faces);  // [n, 512]
    const FilterResult f = filter_identity(emb, found, vanilla, o_.filter);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i].embedding = emb[static_cast<int64_t>(i)].clone();
      out[i].decision = f.decisions[i];
      out[i].score = f.scores[i];
    }
    return out;
  }

  /// One identity's images, all of them, as a training-set file with the generation columns.
  void write_part(int64_t id, const std::vector<ImageResult>& images) const {
    fs::create_directories(part_path(id).parent_path());
    data::TrainingSetWriter w(part_path(id).string());
    for (const auto& r : images) {
      data::RecordData d;
      d.image = r.encoded;
      d.height = r.height;
      d.width = r.width;
      d.identity = id;
      d.prompt = r.plan.training_prompt;
      d.photo = r.plan.vanilla;
      d.landmarks = r.face.landmarks;
      w.add(d);
    }
    const auto n = static_cast<int64_t>(images.size());
    at::Tensor seed = at::empty({n}, at::kLong), index = at::empty({n}, at::kLong);
    at::Tensor score = at::empty({n}), prob = at::empty({n});
    std::vector<at::Tensor> boxes, emb;
    std::vector<std::string> decision, full, desc;
    for (int64_t i = 0; i < n; ++i) {
      const ImageResult& r = images[static_cast<size_t>(i)];
      seed[i] = static_cast<int64_t>(r.plan.seed);
      index[i] = r.plan.index;
      score[i] = r.score;
      prob[i] = r.face.prob;
      boxes.push_back(r.face.box);
      emb.push_back(r.embedding);
      decision.emplace_back(to_string(r.decision));
      full.push_back(r.plan.full_prompt);
      desc.push_back(descriptions_[id]);
    }
    w.set_column(kColSeed, seed);
    w.set_column(kColIndex, index);
    w.set_column(kColScore, score);
    w.set_column(kColFaceProb, prob);
    w.set_column(kColFaceBox, at::stack(boxes));
    w.set_column(kColEmbedding, at::stack(emb));
    w.set_string_column(kColDecision, decision);
    w.set_string_column(kColFullPrompt, full);
    w.set_string_column(kColDescription, desc);
    w.set_attribute(kAttrSettings, hex(settings_.hash));
    w.finish();
  }

  /// The shard's parts split into its kept and rejected files; then the marker; then the parts go.
  void merge_shard(int64_t s) const {
    fs::create_directories(shard_path(s, "").parent_path());
    const int64_t first = s * o_.identities_per_shard;
    struct Out {
      std::unique_ptr<data::TrainingSetWriter> w;
      std::map<std::string, std::vector<at::Tensor>> cols;
      std::map<std::string, std::vector<std::string>> strs;
    } kept, rejected;
    kept.w = std::make_unique<data::TrainingSetWriter>(shard_path(s, ".h5").string());
    rejected.w = std::make_unique<data::TrainingSetWriter>(shard_path(s, ".rejected.h5").string());
    int64_t ids_kept = 0, images = 0;
    for (int64_t id = first; id < first + shard_size(s); ++id) {
      auto part = data::TrainingSet::open(part_path(id).string());
      const std::vector<std::string> decision = part->string_column(kColDecision);
      bool any = false;
      for (int64_t i = 0; i < part->size(); ++i) {
        const bool keep = decision.at(static_cast<size_t>(i)) == to_string(Decision::kKept);
        any = any || keep;
        Out& out = keep ? kept : rejected;
        out.w->add(data::record_data(*part, i));
        for (const auto& name : part->column_names()) {
          const at::Tensor c = part->column(name);
          if (c.defined())
            out.cols[name].push_back(c[i].unsqueeze(0));
          else
            out.strs[name].push_back(part->string_column(name).at(static_cast<size_t>(i)));
        }
        ++images;
      }
      ids_kept += any ? 1 : 0;
    }
    json marker;
    marker["shard"] = s;
    marker["identities"] = {first, first + shard_size(s)};
    marker["identities_kept"] = ids_kept;
    marker["images"] = images;
    marker["settings_hash"] = hex(settings_.hash);
    const std::vector<std::string> all_cols = {kColSeed,      kColIndex,    kColScore,      kColFaceProb,   kColFaceBox,
                                               kColEmbedding, kColDecision, kColFullPrompt, kColDescription};
    for (auto* o : {&kept, &rejected}) {
      const bool is_kept = o == &kept;
      for (const auto& name : all_cols) {
        if (o->cols.count(name)) o->w->set_column(name, at::cat(o->cols[name]));
        if (o->strs.count(name)) o->w->set_string_column(name, o->strs[name]);
      }
      if (o->w->size() == 0) {
        // An empty file still carries the columns, so that every shard of the set has the same ones.
        o->w->set_column(kColSeed, at::empty({0}, at::kLong));
        o->w->set_column(kColIndex, at::empty({0}, at::kLong));
        o->w->set_column(kColScore, at::empty({0}));
        o->w->set_column(kColFaceProb, at::empty({0}));
        o->w->set_column(kColFaceBox, at::empty({0, 4}));
        o->w->set_column(kColEmbedding, at::empty({0, kEmbeddingDim}));
        for (const char* name : {kColDecision, kColFullPrompt, kColDescription}) o->w->set_string_column(name, {});
      }
      o->w->set_attribute(kAttrSettings, hex(settings_.hash));
      const int64_t records = o->w->finish();
      const fs::path file = shard_path(s, is_kept ? ".h5" : ".rejected.h5");
      marker[is_kept ? "kept" : "rejected"] = {{"path", fs::relative(file, o_.out).string()},
                                               {"records", records},
                                               {"bytes", static_cast<int64_t>(fs::file_size(file))}};
    }
    common::write_file_atomically(shard_path(s, ".json").string(), marker.dump(1) + "\n");
    for (int64_t id = first; id < first + shard_size(s); ++id) fs::remove(part_path(id));
  }

  void report_progress(int64_t done, int64_t todo, int64_t images, Clock::time_point start) {
    if (!o_.progress || !world_.is_root()) return;
    const double t = std::chrono::duration<double>(Clock::now() - start).count();
    if (done < todo && Clock::now() - last_progress_ < std::chrono::seconds(5)) return;
    last_progress_ = Clock::now();
    const double rate = t > 0 ? images / t : 0;
    const double eta = done > 0 ? t / done * (todo - done) : 0;
    std::fprintf(stderr,
                 "data generate: rank 0 %lld/%lld identities, %lld images, %.2f images/s (about %.2f on %d ranks), "
                 "ETA %02d:%02d:%02d\n",
                 static_cast<long long>(done), static_cast<long long>(todo), static_cast<long long>(images), rate,
                 rate * world_.size(), world_.size(), static_cast<int>(eta / 3600), static_cast<int>(eta / 60) % 60,
                 static_cast<int>(eta) % 60);
  }

  dist::World& world_;
  const GenerateOptions& o_;
  std::vector<std::string> descriptions_;
  PromptTemplates templates_;
  Settings settings_;
  PlanOptions plan_;
  at::ScalarType dtype_ = at::kFloat;
  std::unique_ptr<model::pipeline::SdxlTextToImage> pipe_;
  std::unique_ptr<FaceCheck> face_;
  Clock::time_point last_progress_{};
};

void Generator::finalize(GenerateSummary& sum) const {
  data::Manifest manifest;
  json rejected = json::array();
  std::vector<std::shared_ptr<data::TrainingSet>> files;  // kept and rejected, shard by shard
  for (int64_t s = 0; s < shards(); ++s) {
    json marker;
    TORCH_CHECK(shard_done(s, &marker), "data generate: shard ", s, " is not complete");
    const json& k = marker["kept"];
    manifest.shards.push_back({k["path"].get<std::string>(), k["records"].get<int64_t>(), k["bytes"].get<int64_t>()});
    rejected.push_back(marker["rejected"]);
    sum.identities_kept += marker["identities_kept"].get<int64_t>();
    sum.kept += k["records"].get<int64_t>();
    files.push_back(data::TrainingSet::open((fs::path(o_.out) / k["path"].get<std::string>()).string()));
    files.push_back(
        data::TrainingSet::open((fs::path(o_.out) / marker["rejected"]["path"].get<std::string>()).string()));
  }
  sum.identities = identities();

  // Per-identity statistics from the stored columns.
  std::map<Decision, int64_t> per_decision;
  std::map<int64_t, std::vector<at::Tensor>> kept_vanilla;  // id -> kept vanilla embeddings
  std::vector<at::Tensor> hist_emb;
  std::vector<int64_t> hist_id;
  int64_t total = 0;
  for (const auto& f : files) {
    const std::vector<std::string> decision = f->string_column(kColDecision);
    const at::Tensor emb = f->column(kColEmbedding);  // [n, 512]
    const at::Tensor prob = f->column(kColFaceProb);  // [n]
    for (int64_t i = 0; i < f->size(); ++i) {
      ++total;
      const std::string& d = decision.at(static_cast<size_t>(i));
      for (Decision k : {Decision::kKept, Decision::kNoFace, Decision::kBelowThreshold, Decision::kIdentityDropped})
        if (d == to_string(k)) ++per_decision[k];
      const bool has_face = prob[i].item<float>() > 0;
      if (!o_.detect || o_.face.arcface.empty() || !has_face || !f->photo(i)) continue;
      hist_emb.push_back(emb[i]);
      hist_id.push_back(f->identity(i));
      if (d == to_string(Decision::kKept)) kept_vanilla[f->identity(i)].push_back(emb[i]);
    }
  }
  sum.images = total;
  std::vector<at::Tensor> centroids;
  std::vector<int64_t> centroid_ids;
  for (const auto& [id, list] : kept_vanilla) {
    const at::Tensor c = at::stack(list).mean(0);
    centroids.push_back(c / c.norm().clamp_min(1e-12));
    centroid_ids.push_back(id);
  }
  std::vector<double> dup_cos;
  std::vector<std::pair<int64_t, int64_t>> dups;
  if (centroids.size() >= 2)
    dups = find_duplicates(at::stack(centroids), centroid_ids, o_.filter.duplicate_threshold, &dup_cos);
  sum.duplicate_pairs = static_cast<int64_t>(dups.size());
  Histogram genuine, impostor;
  genuine.counts.assign(50, 0);
  impostor.counts.assign(50, 0);
  if (hist_emb.size() >= 2)
    std::tie(genuine, impostor) = similarity_histograms(at::stack(hist_emb), hist_id, 50, 2000000, o_.seed);

  json stats;
  stats["identities"] = sum.identities;
  stats["identities_kept"] = sum.identities_kept;
  stats["identities_dropped"] = sum.identities - sum.identities_kept;
  stats["images"] = total;
  stats["images_kept"] = sum.kept;
  json by = json::object();
  for (const auto& [k, v] : per_decision) by[to_string(k)] = v;
  stats["images_per_decision"] = by;
  stats["duplicate_pairs"] = sum.duplicate_pairs;
  stats["filter"] = {{"detect", o_.detect},
                     {"embed", o_.detect && !o_.face.arcface.empty()},
                     {"keep_threshold", o_.filter.keep_threshold},
                     {"min_survivors", o_.filter.min_survivors},
                     {"duplicate_threshold", o_.filter.duplicate_threshold}};
  json dj = json::array();
  for (size_t i = 0; i < dups.size(); ++i)
    dj.push_back({{"a", dups[i].first}, {"b", dups[i].second}, {"cosine", dup_cos[i]}});
  json hj = {{"lo", genuine.lo}, {"hi", genuine.hi}, {"genuine", genuine.counts}, {"impostor", impostor.counts}};
  common::write_file_atomically((fs::path(o_.out) / "filter_stats.json").string(), stats.dump(1) + "\n");
  common::write_file_atomically((fs::path(o_.out) / "duplicates.json").string(), dj.dump(1) + "\n");
  common::write_file_atomically((fs::path(o_.out) / "histograms.json").string(), hj.dump(1) + "\n");

  manifest.extra = {{"generator", "lookahead data generate"},
                    {"settings", settings_.j},
                    {"settings_hash", hex(settings_.hash)},
                    {"rejected", rejected},
                    {"statistics", stats}};
  data::write_manifest((fs::path(o_.out) / "manifest.json").string(), manifest);

  // The report: the first identities, kept and rejected images, from the shard files.
  GenerateReport rep;
  rep.images_per_decision = per_decision;
  rep.identities_kept = sum.identities_kept;
  rep.identities_dropped = sum.identities - sum.identities_kept;
  for (size_t i = 0; i < dups.size(); ++i) rep.duplicates.push_back({dups[i].first, dups[i].second, dup_cos[i]});
  rep.genuine = genuine;
  rep.impostor = impostor;
  rep.keep_threshold = o_.filter.keep_threshold;
  rep.settings = settings_.j;
  rep.settings.erase("pipeline_files");
  if (!o_.detect)
    rep.note =
        "--filter none: no face detection and no identity filter in this run; every image is kept, none has "
        "landmarks, and the histograms are empty.";
  else if (o_.face.arcface.empty())
    rep.note =
        "--filter detect: images without a face are rejected; no ArcFace embeddings, so no identity filter "
        "and empty histograms.";
  std::map<int64_t, ReportIdentity> shown;
  const int64_t limit = std::min(o_.report_identities, identities());
  for (const auto& f : files) {
    const std::vector<std::string> decision = f->string_column(kColDecision);
    const std::vector<std::string> full = f->string_column(kColFullPrompt);
    const std::vector<std::string> desc = f->string_column(kColDescription);
    const at::Tensor score = f->column(kColScore), seed = f->column(kColSeed);
    for (int64_t i = 0; i < f->size(); ++i) {
      const int64_t id = f->identity(i);
      if (id >= limit) continue;
      ReportIdentity& ri = shown[id];
      ri.id = id;
      ri.description = desc.at(static_cast<size_t>(i));
      ReportImage im;
      const std::vector<uint8_t> bytes = f->image_bytes(i);
      im.pixels = data::decode_image(bytes.data(), bytes.size(), f->path(), i);  // the report scales it
      im.vanilla = f->photo(i);
      for (Decision k : {Decision::kKept, Decision::kNoFace, Decision::kBelowThreshold, Decision::kIdentityDropped})
        if (decision.at(static_cast<size_t>(i)) == to_string(k)) im.decision = k;
      im.score = score[i].item<float>();
      im.prompt = full.at(static_cast<size_t>(i));
      im.seed = static_cast<uint64_t>(seed[i].item<int64_t>());
      ri.images.push_back(std::move(im));
    }
  }
  for (auto& [id, ri] : shown) {
    ri.kept = std::any_of(ri.images.begin(), ri.images.end(),
                          [](const ReportImage& m) { return m.decision == Decision::kKept; });
    rep.identities.push_back(std::move(ri));
  }
  write_generate_report(rep, fs::path(o_.out) / "report.html", o_.report_identities);
}

}  // namespace

Consistency parse_consistency(const std::string& name) {
  if (name == "collapse") return Consistency::kCollapse;
  if (name == "shared-attention") return Consistency::kSharedAttention;
  throw std::invalid_argument("data generate: --consistency must be collapse or shared-attention, got '" + name + "'");
}

const char* to_string(Consistency c) { return c == Consistency::kCollapse ? "collapse" : "shared-attention"; }

void GenerateOptions::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("data generate: " + what);
  };
  need(!pipeline.empty(), "--pipeline is required (a diffusers SDXL pipeline folder, e.g. sdxl-turbo)");
  need(!out.empty(), "--out is required (the output folder)");
  need(identities >= 0, "--identities must be >= 0");
  need(identities > 0 || !identities_file.empty(), "--identities must be >= 1 without --identities-file");
  need(vanilla >= 1, "--vanilla must be >= 1 (references are drawn from vanilla images)");
  need(style_rounds >= 0, "--style-rounds must be >= 0");
  need(steps >= 1 && steps <= 1000, "--steps must be in [1, 1000]");
  need(std::isfinite(guidance) && guidance >= 0, "--guidance must be a finite number >= 0");
  need(resolution >= 0, "--resolution must be >= 0 (0: the pipeline's default)");
  need(batch >= 1, "--batch must be >= 1");
  need(share_rate >= 0 && share_rate <= 1, "--share-rate must be in [0, 1]");
  need(dtype == "auto" || dtype == "fp32" || dtype == "bf16" || dtype == "fp16",
       "--dtype must be auto, fp32, bf16 or fp16");
  need(image_format == "png" || image_format == "jpeg", "--image-format must be png or jpeg");
  need(jpeg_quality >= 1 && jpeg_quality <= 100, "--jpeg-quality must be in [1, 100]");
  need(identities_per_shard >= 1, "--identities-per-shard must be >= 1");
  need(report_identities >= 0, "--report-identities must be >= 0");
  need(placeholder.find_first_of("{}") == std::string::npos && !placeholder.empty(),
       "--placeholder must be a non-empty word without braces");
  if (detect) {
    need(!face.mtcnn.empty(), "--mtcnn is required unless --filter none (facenet-pytorch's data folder)");
    need(face.min_face_size > 0, "--min-face-size must be > 0");
  }
  auto threshold = [&](double v, const char* name) {
    need(std::isfinite(v) && v >= -1 && v <= 1,
         std::string(name) + " must be a cosine in [-1, 1], got " + std::to_string(v));
  };
  threshold(filter.keep_threshold, "--keep-threshold");
  threshold(filter.duplicate_threshold, "--duplicate-threshold");
  if (filter.stylized_threshold) threshold(*filter.stylized_threshold, "--stylized-threshold");
  need(filter.min_survivors >= 1, "--min-survivors must be >= 1");
}

GenerateSummary generate_set(dist::World& world, const GenerateOptions& o) {
  o.validate();
  // Bad input is found before any weight is read: the identities, the templates, the folder.
  std::vector<std::string> descriptions;
  PromptTemplates templates;
  try {
    if (o.identities_file.empty()) {
      for (int64_t i = 0; i < o.identities; ++i) descriptions.push_back(describe_identity(o.seed, i));
    } else {
      descriptions = read_identity_file(o.identities_file);
      if (o.identities > 0 && o.identities < static_cast<int64_t>(descriptions.size()))
        descriptions.resize(o.identities);
    }
    templates = o.prompts_file.empty() ? official_templates() : read_prompt_file(o.prompts_file);
  } catch (const GenerateInputError& e) {
    throw std::invalid_argument(std::string("data generate: ") + e.what());
  }
  try {
    model::pipeline::make_pipeline_sampler(model::pipeline::locate_pipeline(o.pipeline, o.variant));
  } catch (const c10::Error& e) {
    throw std::invalid_argument(std::string("data generate: ") + e.what_without_backtrace());
  }
  Settings settings = make_settings(o, descriptions, templates);
  const fs::path settings_file = fs::path(o.out) / "generate.json";
  if (world.is_root()) {
    fs::create_directories(o.out);
    if (fs::exists(settings_file)) {
      std::ifstream in(settings_file);
      json stored;
      try {
        stored = json::parse(in);
      } catch (const json::exception&) {
        throw std::invalid_argument("data generate: " + settings_file.string() + " is not valid JSON");
      }
      if (stored != settings.j)
        throw std::invalid_argument(
            "data generate: " + o.out + " holds a run with other settings, so it cannot be resumed: " +
            first_difference(stored, settings.j) + ". Use a new --out, or the same arguments as that run.");
    } else {
      common::write_file_atomically(settings_file.string(), settings.j.dump(1) + "\n");
    }
  }
  world.check_consistent("the generation settings", settings.hash);

  Generator gen(world, o, std::move(descriptions), std::move(templates), std::move(settings));
  GenerateSummary sum = gen.run();
  if (world.is_root()) {
    gen.wait_for_shards();
    const int64_t generated = sum.images;
    const double seconds = sum.seconds;
    gen.finalize(sum);
    sum.seconds = seconds;
    sum.images_per_second = seconds > 0 ? generated * world.size() / seconds : 0;
  }
  return sum;
}

}  // namespace lookahead::trainer::generate
