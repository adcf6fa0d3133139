// Images per second of model/pipeline/sdxl_text_to_image (prompt encoding, the scheduler loop and
// the UNet, the VAE decode, post-processing to uint8) on a diffusers pipeline folder, CPU, float32.
// bench/run_generate_bench.sh builds a small SDXL-family pipeline and runs diffusers'
// StableDiffusionXLPipeline on the same folder, prompts, seeds, batch, steps and thread count in the
// same run (bench/text_to_image_reference.py, which times the same way: one warm-up call, then the
// mean of --iters calls).
// Usage: bench_text_to_image --pipeline=DIR [--batch=4] [--steps=1] [--iters=5]   -> one JSON line
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "model/pipeline/sdxl_text_to_image.h"

int main(int argc, char** argv) {
  using namespace lookahead::model::pipeline;
  std::string pipeline;
  int64_t batch = 4, steps = 1, iters = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--pipeline=", 0) == 0) {
      pipeline = a.substr(11);
    } else if (a.rfind("--batch=", 0) == 0) {
      batch = std::stoll(a.substr(8));
    } else if (a.rfind("--steps=", 0) == 0) {
      steps = std::stoll(a.substr(8));
    } else if (a.rfind("--iters=", 0) == 0) {
      iters = std::stoll(a.substr(8));
    } else {
      std::fprintf(stderr, "bench_text_to_image: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (pipeline.empty() || batch < 1 || steps < 1 || iters < 1) {
    std::fprintf(stderr, "bench_text_to_image: --pipeline=DIR is required; --batch, --steps, --iters must be >= 1\n");
    return 2;
  }
  SdxlTextToImage pipe = SdxlTextToImage::from_pretrained(pipeline, at::kCPU, at::kFloat);
  std::vector<std::string> prompts;
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < batch; ++i) {
    prompts.push_back("A photo of a 34-year-old woman with short curly black hair, smiling, variant " +
                      std::to_string(i));
    seeds.push_back(static_cast<uint64_t>(1000 + i));
  }
  TextToImageOptions o;
  o.steps = steps;
  pipe.generate(prompts, seeds, o);  // warm-up, as the diffusers side does
  double total = 0;
  for (int64_t it = 0; it < iters; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    const TextToImageOutput out = pipe.generate(prompts, seeds, o);
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (out.images.size(0) != batch) return 1;
  }
  const double mean = total / static_cast<double>(iters);
  std::printf("{\"mean_ms\": %.3f, \"images_per_s\": %.4f, \"threads\": %d}\n", 1000 * mean,
              static_cast<double>(batch) / mean, at::get_num_threads());
  return 0;
}
