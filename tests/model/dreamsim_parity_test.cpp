// Parity of model/vision/dreamsim with the `dreamsim` package (0.2.1, PEFT 0.21): reads what
// tests/parity/dreamsim_oracle.py wrote (directory in LA_DREAMSIM_PARITY_DIR): a full-size random
// cache folder of the package's ensemble layout, written with torch.save and PEFT's save_pretrained,
// and the package's outputs on it. load_dreamsim reads the same folder; per-extractor features,
// embeddings and distances must agree to 1e-4 (fp32) and the distance's gradient with respect to
// the image to 1e-4 of its largest element. Also: our keys are the package's merged keys, the
// adapter_model.bin variant loads the same weights, our writer's layout is the package's, every
// LoraConfig field is in our key table, and dreamsim_input is F.interpolate's bicubic resize.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "model/io/config_keys.h"
#include "model/io/safetensors.h"
#include "model/vision/dreamsim.h"

namespace lookahead::model::vision {
namespace {

constexpr double kTol = 1e-4;

std::string parity_dir() {
  const char* dir = std::getenv("LA_DREAMSIM_PARITY_DIR");
  return dir == nullptr ? std::string() : std::string(dir);
}

nlohmann::json read_manifest() {
  std::ifstream in(parity_dir() + "/manifest.json");
  EXPECT_TRUE(in) << "cannot open " << parity_dir() << "/manifest.json";
  return nlohmann::json::parse(in);
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>();
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// One load of the 1 GB folder and the oracle's tensors for every test of the suite.
class DreamSimParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (parity_dir().empty()) return;
    const auto start = std::chrono::steady_clock::now();
    model_ = new DreamSim(load_dreamsim(parity_dir() + "/cache"));
    std::printf("dreamsim: loaded the ensemble (%lld parameters) in %.1f s\n",
                static_cast<long long>(parameter_count(**model_)), seconds_since(start));
    io_ = new std::map<std::string, at::Tensor>(io::load_file(parity_dir() + "/io.safetensors"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete io_;
    model_ = nullptr;
    io_ = nullptr;
  }
  void SetUp() override {
    if (parity_dir().empty()) GTEST_SKIP() << "LA_DREAMSIM_PARITY_DIR unset";
    ASSERT_NE(io_, nullptr) << "loading " << parity_dir() << " failed (SetUpTestSuite's error above)";
  }
  static int64_t parameter_count(torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.numel();
    return n;
  }
  static const at::Tensor& ref(const std::string& key) { return io_->at(key); }

  static DreamSim* model_;
  static std::map<std::string, at::Tensor>* io_;
};

DreamSim* DreamSimParity::model_ = nullptr;
std::map<std::string, at::Tensor>* DreamSimParity::io_ = nullptr;

TEST_F(DreamSimParity, FeaturesEmbeddingsDistanceAndGradient) {
  DreamSim& m = *model_;
  const at::Tensor a = ref("a"), b = ref("b");
  auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> fa, fb;
  {
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < m->num_extractors(); ++i) {
      fa.push_back(m->features(i, a));
      fb.push_back(m->features(i, b));
      const std::string ia = "features_a_" + std::to_string(i), ib = "features_b_" + std::to_string(i);
      const double err = std::max(max_abs(fa.back(), ref(ia)), max_abs(fb.back(), ref(ib)));
      const double scale = ref(ia).abs().max().item<double>();
      std::printf("dreamsim: extractor %lld (%s) features [2, %lld]: max |err| %.3e (max |value| %.3g)\n",
                  static_cast<long long>(i), m->options.extractors[static_cast<size_t>(i)].model_type.c_str(),
                  static_cast<long long>(fa.back().size(1)), err, scale);
      EXPECT_LE(err, kTol) << ia;
    }
    const double embed_err = std::max(max_abs(m->combine(fa), ref("embed_a")), max_abs(m->combine(fb), ref("embed_b")));
    std::printf("dreamsim: embeddings [2, %lld]: max |err| %.3e\n", static_cast<long long>(m->options.embed_dim()),
                embed_err);
    EXPECT_LE(embed_err, kTol);
    // The merged LoRA matters far beyond the tolerance.
    const double lora_effect = max_abs(ref("embed_a"), ref("embed_a_base"));
    std::printf("dreamsim: the LoRA moves embed(a) by up to %.3e\n", lora_effect);
    EXPECT_GT(lora_effect, 100 * kTol);
  }
  std::printf("dreamsim: features of a and b in %.1f s\n", seconds_since(start));

  start = std::chrono::steady_clock::now();
  const at::Tensor a_in = a.clone().set_requires_grad(true);
  const at::Tensor d = m->distance(a_in, b);
  d.sum().backward();
  const double d_err = max_abs(d, ref("distance"));
  const at::Tensor g_ref = ref("grad_a");
  const double g_scale = g_ref.abs().max().item<double>();
  const double g_err = max_abs(a_in.grad(), g_ref) / g_scale;
  std::printf("dreamsim: distance [%.6f, %.6f] vs package [%.6f, %.6f]: max |err| %.3e\n", d[0].item<double>(),
              d[1].item<double>(), ref("distance")[0].item<double>(), ref("distance")[1].item<double>(), d_err);
  std::printf("dreamsim: d distance / d a: max |err| / max |grad| = %.3e (max |grad| %.3e); %.1f s\n", g_err, g_scale,
              seconds_since(start));
  EXPECT_LE(d_err, kTol);
  EXPECT_LE(g_err, kTol);
}

// named_parameters() are the package's keys after merge_and_unload(), less the DINO head and plus
// the CLIP extractors' `proj` (a plain tensor attribute there).
TEST_F(DreamSimParity, KeysAreThePackagesMergedKeys) {
  const auto manifest = read_manifest();
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& [k, shape] : manifest["merged_state_dict"].items())
    if (k.rfind("extractor_list.0.proj.", 0) != 0) want[k] = shape.get<std::vector<int64_t>>();
  for (const auto& [k, shape] : manifest["proj_attributes"].items()) want[k] = shape.get<std::vector<int64_t>>();
  std::map<std::string, std::vector<int64_t>> ours;
  for (const auto& p : (*model_)->named_parameters()) ours[p.key()] = p.value().sizes().vec();
  EXPECT_EQ(ours, want);
  std::printf("dreamsim: %zu tensors, keys and shapes as the package's merged model\n", ours.size());
  for (int64_t i = 0; i < (*model_)->num_extractors(); ++i) {
    const std::string prefix = (*model_)->extractor_prefix(i);
    size_t n = 0;
    for (const auto& k : want) n += k.first.rfind(prefix, 0) == 0;
    EXPECT_EQ((*model_)->extractor(i).named_parameters().size(), n) << prefix;
  }
  for (const auto& p : (*model_)->parameters()) EXPECT_FALSE(p.requires_grad());
}

// PEFT's other format: the same LoRA saved as adapter_model.bin merges to the same weights.
TEST_F(DreamSimParity, AdapterBinLoadsTheSameWeights) {
  DreamSim bin = load_dreamsim(parity_dir() + "/cache_bin");
  const auto ours = (*model_)->named_parameters();
  size_t n = 0;
  for (const auto& p : bin->named_parameters()) {
    ASSERT_TRUE(ours.contains(p.key())) << p.key();
    EXPECT_TRUE(at::equal(p.value(), ours[p.key()])) << p.key();
    ++n;
  }
  EXPECT_EQ(n, ours.size());
}

// The files write_random_dreamsim writes have the names, dtypes and shapes of the package's files.
TEST_F(DreamSimParity, WriterLayoutIsThePackagesLayout) {
  const auto manifest = read_manifest();
  std::set<std::string> seen;
  for (const DreamSimFileLayout& file : dreamsim_file_layout(DreamSimOptions::ensemble())) {
    ASSERT_TRUE(manifest["files"].contains(file.path)) << file.path << " is not in the package's folder";
    const auto& want = manifest["files"][file.path];
    std::map<std::string, std::vector<int64_t>> ours, theirs;
    for (const auto& t : file.tensors) {
      ours[t.name] = t.shape;
      EXPECT_EQ(t.dtype, at::kFloat) << t.name;
    }
    for (const auto& [k, v] : want.items()) {
      theirs[k] = v[1].get<std::vector<int64_t>>();
      EXPECT_EQ(v[0].get<std::string>(), "float32") << file.path << ": " << k;
    }
    EXPECT_EQ(ours, theirs) << file.path;
    seen.insert(file.path);
  }
  EXPECT_EQ(seen.size(), manifest["files"].size());
}

TEST_F(DreamSimParity, EveryLoraConfigFieldIsInTheTable) {
  const auto manifest = read_manifest();
  const io::ConfigKeyTable table = dreamsim_lora_config_keys();
  std::set<std::string> fields;
  for (const auto& f : manifest["lora_config_fields"]) {
    fields.insert(f.get<std::string>());
    EXPECT_NE(io::find_config_key(table, f.get<std::string>()), nullptr)
        << "PEFT " << manifest["peft_version"].get<std::string>() << " LoraConfig field '" << f.get<std::string>()
        << "' is not in dreamsim_lora_config_keys()";
  }
  for (const io::ConfigKey& row : table) EXPECT_TRUE(fields.count(row.name)) << row.name << " is no LoraConfig field";
  // PEFT's own adapter_config.json (every field, as save_pretrained writes it) loads: the fixture did.
}

TEST_F(DreamSimParity, InputIsInterpolateBicubic) {
  const at::Tensor got = dreamsim_input(ref("input_pm1"));
  const double err = max_abs(got, ref("input_224"));
  std::printf("dreamsim_input: [2, 3, 64, 64] -> %s, max |err| vs F.interpolate bicubic %.3e\n",
              c10::str(got.sizes()).c_str(), err);
  EXPECT_LE(err, 1e-6);
}

}  // namespace
}  // namespace lookahead::model::vision
