// One UNet forward + backward on CPU in fp32 (Google Benchmark), for a mid-size SDXL-family
// config (bench/unet_bench_config.json: SDXL's block structure at 1/5 of its width, latent 32x32,
// batch 2). bench/run_unet_bench.sh runs diffusers eager on the same config and thread count in
// the same run and reports the ratio.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "model/unet/unet_2d_condition.h"

namespace {

std::string g_config = "bench/unet_bench_config.json";

void BM_UNetForwardBackward(benchmark::State& state) {
  using namespace lookahead::model::unet;
  at::manual_seed(0);
  auto config = UNetConfig::from_file(g_config);
  UNet2DConditionModel unet(config);
  const int64_t b = 2, side = 32;
  UNetInputs in;
  in.sample = at::randn({b, config.in_channels, side, side});
  in.timestep = at::tensor({500, 20}, at::kLong);
  in.encoder_hidden_states = at::randn({b, 77, config.cross_attention_dim[0]});
  in.text_embeds = at::randn({b, config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim});
  in.time_ids = at::tensor({1024.f, 1024.f, 0.f, 0.f, 1024.f, 1024.f}).repeat({b, 1});
  auto step = [&] {
    unet->zero_grad();
    at::Tensor out = unet->forward(in);
    out.square().mean().backward();
  };
  for (int i = 0; i < 2; ++i) step();  // warm-up, as the diffusers side does
  for (auto _ : state) {
    unet->zero_grad();
    at::Tensor out = unet->forward(in);
    out.square().mean().backward();
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["threads"] = at::get_num_threads();
}
}  // namespace

int main(int argc, char** argv) {
  // --config=PATH selects another UNet config.json, --iters=N fixes the iteration count (the
  // diffusers side runs the same count); the rest goes to Google Benchmark.
  std::vector<char*> rest;
  int64_t iters = 0;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--config=", 0) == 0)
      g_config = a.substr(9);
    else if (a.rfind("--iters=", 0) == 0)
      iters = std::stoll(a.substr(8));
    else
      rest.push_back(argv[i]);
  }
  auto* bm = benchmark::RegisterBenchmark("BM_UNetForwardBackward", BM_UNetForwardBackward);
  bm->Unit(benchmark::kMillisecond)->UseRealTime();
  if (iters > 0) bm->Iterations(iters);
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
