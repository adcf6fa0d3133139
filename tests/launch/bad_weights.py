"""Broken and foreign weight files for the bad-input launch tests (bad_input_test.sh).

  reshape SRC DST KEY [--hole]         SRC (safetensors) with tensor KEY's shape changed, same bytes
  shard SRC DIR N [--variant V] [--hole] [--truncate K]
                                       SRC split into N shards + index as diffusers names them
                                       (diffusion_pytorch_model[.V]-0000k-of-0000N.safetensors,
                                       diffusion_pytorch_model.safetensors.index[.V].json); shard K
                                       (1-based) cut to half its data
  sd15-lora OUT [--rank R]             a kohya LCM-LoRA for SD1.5 (the LCM script's target layers)
  sd15-ip-adapter OUT.bin              IP-Adapter Plus Face for SD1.5 as torch.save writes it
  sd15 LORA_OUT IP_OUT.bin             both (one import of diffusers)

--hole leaves the data section a hole (a sparse file of zeros): the refusals under test come from
the headers, and a full-size UNet is then written in milliseconds without 5 GB of disk. The SD1.5
layouts come from diffusers' UNet2DConditionModel with SD1.5's config, built on the meta device.
"""
import json
import os
import struct
import sys

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header, 8 + n


def header_bytes(header):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text


def write(path, header, data_size, copy_from=None, hole=False):
    """header + a data section of data_size bytes: copied from (file, offset) pairs, or a hole."""
    with open(path, "wb") as f:
        f.write(header_bytes(header))
        start = f.tell()
        if hole or copy_from is None:
            f.truncate(start + data_size)
            return
        for src, offset, size in copy_from:
            with open(src, "rb") as s:
                s.seek(offset)
                left = size
                while left:
                    chunk = s.read(min(left, 64 << 20))
                    f.write(chunk)
                    left -= len(chunk)


def tensors_of(header):
    return sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"])


def reshape(src, dst, key, hole):
    header, data_at = read_header(src)
    shape = header[key]["shape"]
    if len(shape) >= 2 and shape[0] != shape[1]:
        new = [shape[1], shape[0]] + shape[2:]
    else:  # same element count, another shape
        new = [shape[0] // 2, 2] + shape[1:] if shape and shape[0] % 2 == 0 else [1] + shape
    header[key]["shape"] = new
    size = os.path.getsize(src) - data_at
    write(dst, header, size, [(src, data_at, size)], hole)
    print(f"{dst}: '{key}' {shape} -> {new}")


def shard(src, out, n, variant, hole, truncate):
    header, data_at = read_header(src)
    tensors = tensors_of(header)
    total = sum(v["data_offsets"][1] - v["data_offsets"][0] for _, v in tensors)
    os.makedirs(out, exist_ok=True)
    v = f".{variant}" if variant else ""
    groups, bound = [[] for _ in range(n)], total / n
    for name, info in tensors:  # contiguous runs of about total / n bytes
        groups[min(n - 1, int(info["data_offsets"][0] / bound))].append((name, info))
    weight_map = {}
    for k, group in enumerate(groups, 1):
        file = f"diffusion_pytorch_model{v}-{k:05d}-of-{n:05d}.safetensors"
        h, offset, copy = {}, 0, []
        for name, info in group:
            b, e = info["data_offsets"]
            h[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + e - b]}
            copy.append((src, data_at + b, e - b))
            offset += e - b
            weight_map[name] = file
        path = os.path.join(out, file)
        write(path, h, offset, copy, hole)
        if k == truncate:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) - offset // 2)
            print(f"{path}: cut to {os.path.getsize(path)} bytes")
    index = os.path.join(out, f"diffusion_pytorch_model.safetensors.index{v}.json")
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    print(index)


def sd15_unet():
    import torch
    from diffusers import UNet2DConditionModel

    # UNet2DConditionModel's defaults are SD1.5's layout; its text is CLIP ViT-L's 768 wide.
    with torch.device("meta"):
        return UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)


LCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def sd15_lora(out, rank):
    import torch

    header, offset = {}, 0

    def add(name, dtype, shape):
        nonlocal offset
        size = ITEMSIZE[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size

    for path, m in sd15_unet().named_modules():
        if not path.endswith(LCM_TARGETS) or not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        key = "lora_unet_" + path.replace(".", "_")
        if isinstance(m, torch.nn.Linear):
            add(key + ".lora_down.weight", "F16", [rank, m.in_features])
            add(key + ".lora_up.weight", "F16", [m.out_features, rank])
        else:
            add(key + ".lora_down.weight", "F16", [rank, m.in_channels, *m.kernel_size])
            add(key + ".lora_up.weight", "F16", [m.out_channels, rank, 1, 1])
        add(key + ".alpha", "F16", [])
    write(out, header, offset)
    # Zeros everywhere but the alphas (8, as the SDXL file): a loader reading them sees a real value.
    with open(out, "r+b") as f:
        _, data_at = read_header(out)
        for name, info in header.items():
            if name.endswith(".alpha"):
                f.seek(data_at + info["data_offsets"][0])
                f.write(struct.pack("<e", 8.0))
    print(f"{out}: {len(header) // 3} layers, rank {rank}")


def sd15_ip_adapter(out):
    import torch

    dim, heads, depth, queries, embed, ff = 768, 12, 4, 16, 1280, 4  # IP-Adapter Plus SD1.5's Resampler
    z = lambda *s: torch.zeros(*s, dtype=torch.float16)
    proj = {"latents": z(1, queries, dim), "proj_in.weight": z(dim, embed), "proj_in.bias": z(dim),
            "proj_out.weight": z(768, dim), "proj_out.bias": z(768), "norm_out.weight": z(768), "norm_out.bias": z(768)}
    for i in range(depth):
        p = f"layers.{i}."
        for n in ("norm1", "norm2"):
            proj[p + f"0.{n}.weight"], proj[p + f"0.{n}.bias"] = z(dim), z(dim)
        proj[p + "0.to_q.weight"] = z(64 * heads, dim)
        proj[p + "0.to_kv.weight"] = z(2 * 64 * heads, dim)
        proj[p + "0.to_out.weight"] = z(dim, 64 * heads)
        proj[p + "1.0.weight"], proj[p + "1.0.bias"] = z(dim), z(dim)
        proj[p + "1.1.weight"] = z(dim * ff, dim)
        proj[p + "1.3.weight"] = z(dim, dim * ff)
    ip, unet = {}, sd15_unet()
    attn2 = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for j, name in enumerate(attn2):
        to_k = unet.get_submodule(name[: -len(".processor")] + ".to_k")
        ip[f"{2 * j + 1}.to_k_ip.weight"] = z(to_k.out_features, 768)
        ip[f"{2 * j + 1}.to_v_ip.weight"] = z(to_k.out_features, 768)
    torch.save({"image_proj": proj, "ip_adapter": ip}, out)
    print(f"{out}: {len(proj)} image_proj + {len(ip)} ip_adapter tensors")


def main(argv):
    flags = {a for a in argv if a in ("--hole",)}
    args = [a for a in argv if a not in flags]

    def option(name, default=None):
        if name in args:
            i = args.index(name)
            value = args[i + 1]
            del args[i : i + 2]
            return value
        return default

    variant, truncate, rank = option("--variant"), option("--truncate"), option("--rank", "64")
    cmd, rest = args[0], args[1:]
    if cmd == "reshape":
        reshape(rest[0], rest[1], rest[2], "--hole" in flags)
    elif cmd == "shard":
        shard(rest[0], rest[1], int(rest[2]), variant, "--hole" in flags, int(truncate) if truncate else 0)
    elif cmd == "sd15-lora":
        sd15_lora(rest[0], int(rank))
    elif cmd == "sd15-ip-adapter":
        sd15_ip_adapter(rest[0])
    elif cmd == "sd15":
        sd15_lora(rest[0], int(rank))
        sd15_ip_adapter(rest[1])
    else:
        sys.exit(f"bad_weights.py: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
