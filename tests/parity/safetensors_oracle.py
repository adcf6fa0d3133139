#!/usr/bin/env python3
"""Reference side of the safetensors parity test (SafetensorsParity.* in
tests/model/safetensors_test.cpp): the Python `safetensors` package writes files for the C++ reader,
and reads and re-writes files the C++ writer made, to check values and byte-identical layout.

  safetensors_oracle.py write OUT --metadata one|many
  safetensors_oracle.py check IN OUT --metadata one|many
"""
import argparse
import json
import struct
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# Metadata sets. The reference writer keeps metadata in a hash map, so with several keys their
# order in the header varies from run to run and only the parsed content can be compared.
METADATA = {
    "one": {"format": "pt"},
    "many": {"format": "pt", "note": 'ünïcode "quoted" \\ \n', "step": "10"},
}


def recipe():
    """The tensors both sides build; keep in step with parity_tensors() in safetensors_test.cpp."""
    t = {}
    floats = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    for name, dtype in floats.items():
        t[name] = (torch.arange(12, dtype=torch.float64) * 0.75 - 3.0).to(dtype).reshape(3, 4)
    ints = {"i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8}
    for name, dtype in ints.items():
        t[name] = (torch.arange(12, dtype=torch.int64) - 3).to(dtype).reshape(2, 6)
    t["u8"] = (torch.arange(12, dtype=torch.int64) * 37 % 256).to(torch.uint8)
    t["bool"] = (torch.arange(10) % 3 == 0).reshape(2, 5)
    t["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    t["empty"] = torch.zeros(0, 3, dtype=torch.float16)
    t["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    t["specials"] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-45, 3.4e38],
                                 dtype=torch.float32)
    t['odd "name" \\ é ✓\n\t\x01'] = torch.arange(3, dtype=torch.int32)
    t["zz.second"] = torch.ones(2, dtype=torch.float32)
    t["aa.first"] = torch.full((2,), 7.0, dtype=torch.float32)
    return t


def raw(tensor):
    """Bytes of a tensor, so that NaN payloads and -0.0 compare exactly."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def write(path, metadata):
    # The reference writer only takes contiguous tensors; the C++ writer takes views as they are.
    save_file({k: v.contiguous() for k, v in recipe().items()}, path, metadata=metadata)


def split(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    return n, blob[8:8 + n], blob[8 + n:]


def check(path, out, metadata, exact):
    errors = []
    expected = recipe()
    loaded = load_file(path)
    if set(loaded) != set(expected):
        errors.append(f"tensor names differ: {sorted(set(loaded) ^ set(expected))}")
    for name, want in expected.items():
        got = loaded.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(raw(got), raw(want)):
            errors.append(f"tensor {name!r}: got {got.dtype} {tuple(got.shape)} {got}, want {want.dtype} "
                          f"{tuple(want.shape)} {want}")
    with safe_open(path, framework="pt") as f:
        if f.metadata() != metadata:
            errors.append(f"metadata {f.metadata()} != {metadata}")

    write(out, metadata)
    ours = open(path, "rb").read()
    theirs = open(out, "rb").read()
    if exact:
        if ours != theirs:
            errors.append(f"files differ: ours {len(ours)} bytes, reference {len(theirs)} bytes\n"
                          f"  ours:      {split(ours)[1]!r}\n  reference: {split(theirs)[1]!r}")
    else:
        n1, h1, d1 = split(ours)
        n2, h2, d2 = split(theirs)
        if n1 != n2 or json.loads(h1) != json.loads(h2) or d1 != d2:
            errors.append(f"parsed headers or data sections differ\n  ours:      {h1!r}\n  reference: {h2!r}")
        compact = json.dumps(json.loads(h1), separators=(",", ":"), ensure_ascii=False).encode()
        if h1.rstrip(b" ") != compact or len(h1) % 8:
            errors.append(f"our header is not compact JSON padded to a multiple of 8: {h1!r}")
    for e in errors:
        print(f"safetensors_oracle: {e}", file=sys.stderr)
    print(f"safetensors_oracle: checked {path} against the reference ({len(expected)} tensors): "
          f"{'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the recipe with the reference writer")
    w.add_argument("out")
    w.add_argument("--metadata", choices=METADATA, default="one")
    c = sub.add_parser("check", help="check a C++-written file and compare it with the reference writer's")
    c.add_argument("input")
    c.add_argument("out", help="where the reference writer's file for the same tensors goes")
    c.add_argument("--metadata", choices=METADATA, default="one")
    args = parser.parse_args()
    metadata = METADATA[args.metadata]
    if args.command == "write":
        write(args.out, metadata)
        return 0
    return check(args.input, args.out, metadata, exact=len(metadata) <= 1)


if __name__ == "__main__":
    sys.exit(main())
