// What the trainer decides from the World's device, checked without a GPU: `dtype = auto` resolves
// to bf16 for a CUDA device in the model configuration and in the dry-run memory report (which
// builds its model on the meta device, and so must be told where the run will compute).
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

}  // namespace
}  // namespace lookahead::trainer
