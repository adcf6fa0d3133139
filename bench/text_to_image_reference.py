#!/usr/bin/env python3
"""diffusers' StableDiffusionXLPipeline images/s on a pipeline folder, CPU, float32: the reference
side of bench/run_generate_bench.sh (same prompts, seeds, batch, steps and thread count as
bench_text_to_image).

  text_to_image_reference.py PIPELINE_DIR BATCH STEPS THREADS ITERS   -> JSON on stdout
"""
import json
import sys
import time

import torch


def main():
    folder, batch, steps, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"A photo of a 34-year-old woman with short curly black hair, smiling, variant {i}" for i in range(batch)]

    def run():
        gens = [torch.Generator("cpu").manual_seed(1000 + i) for i in range(batch)]
        with torch.no_grad():
            return pipe(prompt=prompts, generator=gens, num_inference_steps=steps, guidance_scale=0.0,
                        output_type="np").images

    run()  # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    print(json.dumps({"mean_ms": 1000 * mean, "images_per_s": batch / mean, "threads": threads}))


if __name__ == "__main__":
    main()
