#!/usr/bin/env python3
"""Fixture for tests/trainer/eval/metrics_test.cpp (trainer/eval/id_similarity): real photos and MTCNN weights.

Usage: eval_photos_oracle.py OUTDIR

Writes
  astronaut.safetensors     scikit-image's astronaut (Eileen Collins, public domain), "image" uint8 [H, W, 3]
  grace_hopper.safetensors  matplotlib's sample grace_hopper.jpg (public domain), "image" uint8 [H, W, 3]
  facenet_paths.txt         facenet-pytorch's shipped pnet.pt / rnet.pt / onet.pt, one path a line
"""
import importlib.util
import os
import sys

import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image
from safetensors.torch import save_file


def save_image(array, path):
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, array.shape
    save_file({"image": torch.from_numpy(np.ascontiguousarray(array))}, path)


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    save_image(np.array(skimage.data.astronaut(), dtype=np.uint8), os.path.join(outdir, "astronaut.safetensors"))
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    save_image(np.array(Image.open(hopper).convert("RGB"), dtype=np.uint8), os.path.join(outdir, "grace_hopper.safetensors"))
    # Located without importing: facenet_pytorch's __init__ needs torchvision, absent beside this torch.
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None:
        raise SystemExit("facenet-pytorch is not installed")
    data = os.path.join(os.path.dirname(spec.origin), "data")
    paths = [os.path.join(data, f"{name}.pt") for name in ("pnet", "rnet", "onet")]
    for p in paths:
        if not os.path.isfile(p):
            raise SystemExit(f"missing MTCNN weights {p}")
    with open(os.path.join(outdir, "facenet_paths.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")
    print(f"eval_photos_oracle: wrote fixtures to {outdir}", flush=True)


if __name__ == "__main__":
    main()
