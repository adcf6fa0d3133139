// What the trainer decides from the World's device, checked without a GPU: `dtype = auto` resolves
// to bf16 for a CUDA device in the model configuration and in the dry-run memory report (which
// builds its model on the meta device, and so must be told where the run will compute); an
// explicit bf16 is honoured on the CPU.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "trainer/trainer.h"

namespace lookahead::trainer {
namespace {

const c10::Device kCpu(c10::kCPU);
const c10::Device kGpu(c10::kCUDA, 0);

/// GiB figure of one line of the report ("  frozen shard     4.8 GiB").
double gib(const std::string& report, const std::string& line) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(report, m, std::regex(line + R"(\s+([0-9.]+) GiB)"))) << report;
  return m.empty() ? -1.0 : std::stod(m[1].str());
}

TEST(TrainerDevice, AutoDtypeIsBf16OnAGpuAndFp32OnTheCpu) {
  TrainConfig c;
  c.model.preset = Preset::kTiny;
  c.model.dtype = ModelDtype::kAuto;
  EXPECT_EQ(model_config(c, kCpu).dtype, at::kFloat);
  EXPECT_EQ(model_config(c, kGpu).dtype, at::kBFloat16);
  c.model.dtype = ModelDtype::kFp32;
  EXPECT_EQ(model_config(c, kGpu).dtype, at::kFloat);
  c.model.dtype = ModelDtype::kBf16;
  EXPECT_EQ(model_config(c, kCpu).dtype, at::kBFloat16);
}

TEST(TrainerDevice, DryRunMemoryIsThatOfTheDeviceTheRunUses) {
  TrainConfig c;  // the SDXL preset, dtype = auto
  ASSERT_EQ(c.model.preset, Preset::kSdxl);
  ASSERT_EQ(c.model.dtype, ModelDtype::kAuto);
  // 2 ranks, so that frozen weights are really gathered (one rank uses its whole copy in place).
  const std::string cpu = describe_model(c, 2, 2, kCpu);
  const std::string gpu = describe_model(c, 2, 2, kGpu);
  EXPECT_NE(cpu.find("on CPU"), std::string::npos) << cpu;
  EXPECT_NE(cpu.find("frozen weights in fp32"), std::string::npos) << cpu;
  EXPECT_NE(gpu.find("on GPU"), std::string::npos) << gpu;
  EXPECT_NE(gpu.find("frozen weights in bf16"), std::string::npos) << gpu;
  // Frozen shard and gather ring halve in bf16; fp32 masters, gradients and moments do not.
  const double frozen = gib(cpu, "frozen shard");
  ASSERT_GT(frozen, 1.0);  // 2.6 B frozen SDXL parameters over two ranks
  ASSERT_GT(gib(cpu, "gather ring"), 0.1);
  EXPECT_NEAR(gib(gpu, "frozen shard"), frozen / 2, 0.1);
  EXPECT_NEAR(gib(gpu, "gather ring"), gib(cpu, "gather ring") / 2, 0.1);
  EXPECT_EQ(gib(gpu, "trainable shard"), gib(cpu, "trainable shard"));
  EXPECT_EQ(gib(gpu, "AdamW moments"), gib(cpu, "AdamW moments"));
}

TEST(TrainerDevice, ExplicitBf16IsHonouredOnTheCpu) {
  TrainConfig c;  // the SDXL preset
  c.model.dtype = ModelDtype::kBf16;
  const std::string cpu_bf16 = describe_model(c, 2, 2, kCpu);
  EXPECT_NE(cpu_bf16.find("on CPU, placement full, frozen weights in bf16"), std::string::npos) << cpu_bf16;
  EXPECT_EQ(cpu_bf16.rfind(describe_precision(ModelDtype::kBf16, kCpu), 0), 0u) << cpu_bf16;
  // The same bytes as a GPU run in bf16.
  c.model.dtype = ModelDtype::kAuto;
  const std::string gpu_auto = describe_model(c, 2, 2, kGpu);
  EXPECT_EQ(gib(cpu_bf16, "frozen shard"), gib(gpu_auto, "frozen shard"));
  EXPECT_EQ(gib(cpu_bf16, "gather ring"), gib(gpu_auto, "gather ring"));

  EXPECT_EQ(describe_precision(ModelDtype::kBf16, kCpu),
            "model.dtype = bf16 (frozen weights stored and gathered in bf16; trainables fp32 masters computed in "
            "bf16; gradients reduced and AdamW in fp32) on CPU");
  EXPECT_EQ(describe_precision(ModelDtype::kAuto, kCpu),
            "model.dtype = auto -> fp32 (every weight, gradient and optimizer state in fp32) on CPU");
  EXPECT_EQ(describe_precision(ModelDtype::kAuto, kGpu).rfind("model.dtype = auto -> bf16 (", 0), 0u);
  EXPECT_EQ(describe_precision(ModelDtype::kFp32, kGpu).rfind("model.dtype = fp32 (", 0), 0u);
}

}  // namespace
}  // namespace lookahead::trainer
