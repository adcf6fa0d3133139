// model/vision/dreamsim and dino_vit without Python: the ensemble's module tree on the meta device,
// the tiny cache folder write_random_dreamsim writes loading back (sizes inferred, LoRA merged,
// frozen), the embedding's and distance's properties and gradients, and the loader's refusals,
// each naming the file and, where there is one, the key.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "model/init/random_weights.h"
#include "model/io/safetensors.h"
#include "model/io/torch_checkpoint.h"
#include "model/io/torch_save.h"
#include "model/vision/dreamsim.h"

namespace lookahead::model::vision {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test holding write_random_dreamsim's tiny ensemble.
class DreamSimFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() / ("la_dreamsim_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir);
    files = write_random_dreamsim(dir.string(), DreamSimOptions::tiny(), 7);
  }
  void TearDown() override { fs::remove_all(dir); }

  // load_dreamsim must throw with every one of `parts` in its message.
  void expect_refused(const std::vector<std::string>& parts) {
    try {
      load_dreamsim(dir.string());
      ADD_FAILURE() << "load_dreamsim accepted the folder";
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
  }
  void write_config(const std::function<void(nlohmann::json&)>& edit) {
    const fs::path path = dir / kDreamSimLoraDir / "adapter_config.json";
    nlohmann::json j;
    {
      std::ifstream in(path);
      j = nlohmann::json::parse(in);
    }
    edit(j);
    std::ofstream(path) << j.dump(2);
  }
  // Rewrites one torch.save file of the layout with `edit` applied to its entries.
  void rewrite(const std::string& rel, const std::function<void(std::vector<io::TensorInfo>&)>& edit) {
    for (DreamSimFileLayout file : dreamsim_file_layout(DreamSimOptions::tiny())) {
      if (file.path != rel) continue;
      edit(file.tensors);
      io::save_torch_file((dir / rel).string(), file.tensors,
                          [](const io::TensorInfo& e) { return init::random_weight(1, e); }, file.nesting);
      return;
    }
    FAIL() << rel << " is not in the layout";
  }

  fs::path dir;
  std::vector<std::string> files;
};

at::Tensor test_images(int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor low = at::rand({n, 3, 7, 7}, gen);
  return at::upsample_bilinear2d(low, {224, 224}, false).contiguous();  // [n, 3, 224, 224] in [0, 1]
}

TEST(DreamSim, EnsembleModuleTreeOnMeta) {
  DreamSimOptions o = DreamSimOptions::ensemble();
  o.tensor_options = at::TensorOptions().device(at::kMeta);
  DreamSim m(o);
  EXPECT_EQ(m->num_extractors(), 3);
  EXPECT_EQ(m->options.embed_dim(), 768 + 512 + 512);
  const auto params = m->named_parameters();
  int64_t total = 0;
  for (const auto& p : params) total += p.value().numel();
  // Three ViT-B/16 (85.8 M each with the CLIP ones' pre-norm) and two [768, 512] projections.
  EXPECT_EQ(total, 3 * 85798656 + 2 * (2 * 768) + 2 * (768 * 512));
  EXPECT_EQ(params["extractor_list.0.model.pos_embed"].sizes(), at::IntArrayRef({1, 197, 768}));
  EXPECT_EQ(params["extractor_list.1.model.blocks.11.attn.qkv.weight"].sizes(), at::IntArrayRef({2304, 768}));
  EXPECT_EQ(params["extractor_list.2.proj"].sizes(), at::IntArrayRef({768, 512}));
  EXPECT_TRUE(params.contains("extractor_list.1.model.pos_drop.weight"));
  EXPECT_FALSE(params.contains("extractor_list.0.model.pos_drop.weight"));  // DINO's pos_drop is a Dropout
  EXPECT_FALSE(params.contains("extractor_list.0.proj"));                   // 'cls' has no projection
  EXPECT_EQ(m->extractor_prefix(2), "extractor_list.2.");
  // cls_token, pos_embed, patch_embed (2), pos_drop (2), 12 blocks of 12, norm (2), proj.
  EXPECT_EQ(m->extractor(1).named_parameters().size(), 2u + 2u + 2u + 144u + 2u + 1u);
  EXPECT_EQ(m->options.extractors[0].cls_layer, 11);
  EXPECT_EQ(m->options.extractors[1].vit.activation(), DinoVitActivation::kQuickGelu);
  EXPECT_EQ(m->options.extractors[2].vit.activation(), DinoVitActivation::kGelu);
  EXPECT_DOUBLE_EQ(m->options.extractors[0].vit.layer_norm_eps(), 1e-6);
  EXPECT_DOUBLE_EQ(m->options.extractors[2].vit.layer_norm_eps(), 1e-5);
}

TEST_F(DreamSimFolder, WritesThePackagesLayout) {
  std::vector<std::string> rel;
  for (const auto& f : files) rel.push_back(fs::relative(f, dir).string());
  EXPECT_EQ(rel, (std::vector<std::string>{kDreamSimDinoHubFile, kDreamSimDinoHeadFile, kDreamSimClipFile,
                                           kDreamSimOpenClipFile, "ensemble_lora/adapter_model.safetensors",
                                           "ensemble_lora/adapter_config.json"}));
  const auto clip = io::load_torch_file((dir / kDreamSimClipFile).string());
  EXPECT_EQ(clip.at("state_dict.proj").sizes(), at::IntArrayRef({32, 16}));
  EXPECT_EQ(clip.at("state_dict.pos_drop.weight").sizes(), at::IntArrayRef({32}));
  const auto head = io::load_torch_file((dir / kDreamSimDinoHeadFile).string());
  EXPECT_EQ(head.at("student.module.head.mlp.0.weight").sizes(), at::IntArrayRef({128, 32}));
  // CLIP and OpenCLIP hold the same names with different values.
  const auto open_clip = io::load_torch_file((dir / kDreamSimOpenClipFile).string());
  EXPECT_FALSE(
      at::equal(clip.at("state_dict.blocks.0.attn.qkv.weight"), open_clip.at("state_dict.blocks.0.attn.qkv.weight")));
}

TEST_F(DreamSimFolder, TinyLoadsMergedAndFrozen) {
  DreamSim m = load_dreamsim(dir.string());
  ASSERT_EQ(m->num_extractors(), 3);
  EXPECT_EQ(m->options.embed_dim(), 64);
  for (const auto& e : m->options.extractors) {
    EXPECT_EQ(e.vit.embed_dim(), 32);
    EXPECT_EQ(e.vit.depth(), 2);
    EXPECT_EQ(e.vit.num_heads(), 2);
    EXPECT_EQ(e.vit.mlp_hidden(), 128);
    EXPECT_EQ(e.vit.image_size(), 224);
  }
  EXPECT_EQ(m->options.extractors[0].cls_layer, 1);
  EXPECT_EQ(m->options.extractors[1].proj_dim, 16);
  for (const auto& p : m->parameters()) EXPECT_FALSE(p.requires_grad());

  // W_qkv = W + alpha / r * B A (alpha 0.5, r 16), the rest as stored.
  const auto clip = io::load_torch_file((dir / kDreamSimClipFile).string());
  const auto lora = io::load_file((dir / "ensemble_lora/adapter_model.safetensors").string());
  const std::string layer = "base_model.model.extractor_list.1.model.blocks.1.attn.qkv";
  const at::Tensor want = clip.at("state_dict.blocks.1.attn.qkv.weight") +
                          0.5 / 16 * at::matmul(lora.at(layer + ".lora_B.weight"), lora.at(layer + ".lora_A.weight"));
  const auto params = m->named_parameters();
  EXPECT_TRUE(at::allclose(params["extractor_list.1.model.blocks.1.attn.qkv.weight"], want, 0, 1e-7));
  EXPECT_GT((params["extractor_list.1.model.blocks.1.attn.qkv.weight"] - clip.at("state_dict.blocks.1.attn.qkv.weight"))
                .abs()
                .max()
                .item<double>(),
            1e-3);
  EXPECT_TRUE(at::equal(params["extractor_list.1.model.blocks.1.mlp.fc1.weight"],
                        clip.at("state_dict.blocks.1.mlp.fc1.weight")));
  EXPECT_TRUE(at::equal(params["extractor_list.1.proj"], clip.at("state_dict.proj")));
}

TEST_F(DreamSimFolder, EmbeddingDistanceAndGradient) {
  DreamSim m = load_dreamsim(dir.string());
  const at::Tensor x = test_images(2, 1), y = test_images(2, 2);
  at::Tensor e;
  {
    at::NoGradGuard no_grad;
    e = m->embed(x);  // [2, 64]
    ASSERT_EQ(e.sizes(), at::IntArrayRef({2, 64}));
    EXPECT_TRUE(at::allclose(e.norm(2, {-1}), at::ones({2}), 1e-5, 1e-5));
    EXPECT_LT(e.mean({-1}).abs().max().item<double>(), 1e-6);
    EXPECT_EQ(m->features(0, x).sizes(), at::IntArrayRef({2, 32}));
    EXPECT_EQ(m->features(2, x).sizes(), at::IntArrayRef({2, 16}));
    EXPECT_LT(m->distance(x, x).abs().max().item<double>(), 1e-6);
    EXPECT_GT(m->distance(x, y).min().item<double>(), 1e-4);
  }
  // embed = combine(features), the per-extractor path the trainer can shard.
  std::vector<at::Tensor> f;
  for (int64_t i = 0; i < m->num_extractors(); ++i) f.push_back(m->features(i, x).detach());
  EXPECT_TRUE(at::allclose(m->combine(f), e, 1e-6, 1e-6));

  const at::Tensor x_in = x.clone().set_requires_grad(true);
  m->distance(x_in, y).sum().backward();
  ASSERT_TRUE(x_in.grad().defined());
  EXPECT_TRUE(at::isfinite(x_in.grad()).all().item<bool>());
  EXPECT_GT(x_in.grad().abs().max().item<double>(), 0.0);
  for (const auto& p : m->parameters()) EXPECT_FALSE(p.grad().defined());

  // Through dreamsim_input from [-1, 1] images of another size, as the loss feeds it.
  const at::Tensor pm1 = (test_images(2, 3).slice(2, 0, 96).slice(3, 0, 96) * 2 - 1).set_requires_grad(true);
  m->distance(dreamsim_input(pm1), y).sum().backward();
  EXPECT_GT(pm1.grad().abs().max().item<double>(), 0.0);
}

TEST_F(DreamSimFolder, AdapterBinLoadsTheSame) {
  DreamSim st = load_dreamsim(dir.string());
  DreamSimWriteOptions w;
  w.adapter_bin = true;
  const fs::path bin_dir = dir / "bin";
  write_random_dreamsim(bin_dir.string(), DreamSimOptions::tiny(), 7, w);
  EXPECT_TRUE(fs::is_regular_file(bin_dir / "ensemble_lora/adapter_model.bin"));
  DreamSim bin = load_dreamsim(bin_dir.string());
  const auto a = st->named_parameters();
  for (const auto& p : bin->named_parameters()) EXPECT_TRUE(at::equal(p.value(), a[p.key()])) << p.key();
}

TEST_F(DreamSimFolder, LoadsToDtype) {
  DreamSim m = load_dreamsim(dir.string(), at::kCPU, at::kBFloat16);
  for (const auto& p : m->parameters()) EXPECT_EQ(p.scalar_type(), at::kBFloat16);
  at::NoGradGuard no_grad;
  const at::Tensor d = m->distance(test_images(1, 1), test_images(1, 2));
  EXPECT_EQ(d.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::isfinite(d).all().item<bool>());
}

TEST_F(DreamSimFolder, MissingFilesNameTheFile) {
  fs::remove(dir / kDreamSimClipFile);
  expect_refused({kDreamSimClipFile, "not found"});
}

TEST_F(DreamSimFolder, MissingHubCheckpointNamesIt) {
  fs::remove(dir / kDreamSimDinoHubFile);
  expect_refused({"dino_vitbase16_pretrain.pth", "torch hub"});
}

TEST_F(DreamSimFolder, MissingAdapterNamesTheFolder) {
  fs::remove(dir / kDreamSimLoraDir / "adapter_model.safetensors");
  expect_refused({"ensemble_lora", "adapter_model.bin"});
  fs::remove(dir / kDreamSimLoraDir / "adapter_config.json");
  expect_refused({"adapter_config.json", "not found"});
}

TEST_F(DreamSimFolder, TruncatedFileNamesTheFile) {
  const fs::path path = dir / kDreamSimOpenClipFile;
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_refused({kDreamSimOpenClipFile});
  write_random_dreamsim(dir.string(), DreamSimOptions::tiny(), 7);
  const fs::path adapter = dir / kDreamSimLoraDir / "adapter_model.safetensors";
  fs::resize_file(adapter, fs::file_size(adapter) - 100);
  expect_refused({"adapter_model.safetensors"});
}

TEST_F(DreamSimFolder, WrongShapeNamesTheKey) {
  rewrite(kDreamSimClipFile, [](std::vector<io::TensorInfo>& t) {
    for (auto& e : t)
      if (e.name == "state_dict.blocks.1.attn.qkv.weight") e.shape = {96, 16};
  });
  expect_refused({kDreamSimClipFile, "blocks.1.attn.qkv.weight"});
}

TEST_F(DreamSimFolder, MissingAndUnexpectedKeysAreNamed) {
  rewrite(kDreamSimDinoHubFile, [](std::vector<io::TensorInfo>& t) {
    std::erase_if(t, [](const io::TensorInfo& e) { return e.name == "blocks.0.mlp.fc2.bias"; });
  });
  expect_refused({kDreamSimDinoHubFile, "blocks.0.mlp.fc2.bias"});
  rewrite(kDreamSimDinoHubFile, [](std::vector<io::TensorInfo>& t) {
    io::TensorInfo extra = t.front();
    extra.name = "head.weight";
    t.push_back(extra);
  });
  expect_refused({kDreamSimDinoHubFile, "head.weight"});
  rewrite(kDreamSimOpenClipFile, [](std::vector<io::TensorInfo>& t) {
    std::erase_if(t, [](const io::TensorInfo& e) { return e.name == "state_dict.proj"; });
  });
  expect_refused({kDreamSimOpenClipFile, "state_dict.proj"});
}

TEST_F(DreamSimFolder, UnknownLoraTargetIsRefused) {
  write_config([](nlohmann::json& j) { j["target_modules"] = {"qkv", "to_q"}; });
  expect_refused({"adapter_config.json", "'to_q'"});
  // `proj` would also reach the patch convolution, which PEFT would give a conv LoRA.
  write_config([](nlohmann::json& j) { j["target_modules"] = {"proj"}; });
  expect_refused({"adapter_config.json", "patch_embed.proj", "not a Linear"});
  write_config([](nlohmann::json& j) { j["target_modules"] = ".*qkv"; });
  expect_refused({"adapter_config.json", "target_modules"});
}

TEST_F(DreamSimFolder, AdapterKeysMustMatchTheTargets) {
  // The file's qkv matrices are for layers fc1 does not name.
  write_config([](nlohmann::json& j) { j["target_modules"] = {"fc1"}; });
  expect_refused({"adapter_model.safetensors", "attn.qkv.lora_A.weight", "does not name"});
  // A rank the matrices do not have.
  write_config([](nlohmann::json& j) {
    j["target_modules"] = {"qkv"};
    j["r"] = 8;
  });
  expect_refused({"adapter_model.safetensors", "lora_A.weight", "must be [8, 32]"});
}

TEST_F(DreamSimFolder, UnsupportedLoraConfigIsRefused) {
  write_config([](nlohmann::json& j) { j["use_dora"] = true; });
  expect_refused({"adapter_config.json", "use_dora"});
  write_config([](nlohmann::json& j) {
    j["use_dora"] = false;
    j["bias"] = "all";
  });
  expect_refused({"adapter_config.json", "bias"});
  write_config([](nlohmann::json& j) {
    j["bias"] = "none";
    j["init_lora_weights"] = "pissa";
  });
  expect_refused({"adapter_config.json", "init_lora_weights"});
  write_config([](nlohmann::json& j) {
    j["init_lora_weights"] = false;
    j.erase("lora_alpha");
  });
  expect_refused({"adapter_config.json", "lora_alpha"});
  // Keys PEFT does not know are ignored, as PEFT ignores them.
  write_config([](nlohmann::json& j) {
    j["lora_alpha"] = 0.5;
    j["merge_weights"] = false;
  });
  EXPECT_NO_THROW(load_dreamsim(dir.string()));
}

TEST(DreamSim, InputMapsToUnitRangeAtSize) {
  const at::Tensor x = at::full({2, 3, 50, 70}, -1.0);
  x.select(0, 1).fill_(1.0);
  const at::Tensor y = dreamsim_input(x);
  ASSERT_EQ(y.sizes(), at::IntArrayRef({2, 3, 224, 224}));
  EXPECT_TRUE(at::allclose(y.select(0, 0), at::zeros({3, 224, 224}), 0, 1e-6));
  EXPECT_TRUE(at::allclose(y.select(0, 1), at::ones({3, 224, 224}), 0, 1e-6));
  EXPECT_EQ(dreamsim_input(x, 32).sizes(), at::IntArrayRef({2, 3, 32, 32}));
}

TEST(DreamSim, RefusesOtherImageSizes) {
  DreamSim m(DreamSimOptions::tiny());
  EXPECT_THROW(m->embed(at::rand({1, 3, 64, 64})), c10::Error);
  EXPECT_THROW(m->features(3, at::rand({1, 3, 224, 224})), c10::Error);
}

}  // namespace
}  // namespace lookahead::model::vision
