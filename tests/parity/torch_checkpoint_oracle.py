"""Fixtures for tests/model/torch_checkpoint_test.cpp (model/io/torch_checkpoint.*).

Usage: torch_checkpoint_oracle.py OUTDIR

Writes torch.save files made by the installed torch, each next to the tensors torch.load returns
for it, flattened with '.' between dict keys, as a safetensors file the C++ reader must match bit
for bit:
  state_{zip,legacy}.pt        OrderedDict state dict (with _metadata) of a small nn.Module
  mixed_{zip,legacy}.pt        nested dicts, every supported dtype, strided / offset views, two
                               tensors sharing a storage, an nn.Parameter, int keys, plain values
  ip_adapter.bin               IP-Adapter layout {"image_proj": {...}, "ip_adapter": {...}}
  *.expected.safetensors       the expected tensors of each of the above
  facenet_paths.txt            facenet-pytorch's shipped pnet/rnet/onet.pt (legacy format), one a line
  facenet_{pnet,rnet,onet}.expected.safetensors   torch.load of those files
  photo.safetensors            scikit-image's astronaut, uint8 [H, W, 3], for MTCNN detections
and hostile or broken inputs the reader must refuse with an error naming the file:
  evil_{zip,legacy}.pt         a pickle calling os.system (hand-written protocol 2 opcodes)
  bad_view.pt                  a tensor view reaching past its storage (legacy, hand-built)
  bad_dtype.pt                 a complex64 storage (not a supported dtype)
  bad_opcode.pt                a pickle with an opcode torch.save never emits
  bad_compressed.pt            a zip checkpoint whose entries are deflated
"""
import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import torch
from safetensors.torch import save_file

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def expect(tensors, path):
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, path)


def flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    elif isinstance(obj, torch.Tensor):
        out[prefix] = obj
    return out


def save_both(obj, outdir, stem):
    """Saves `obj` in both formats, checks torch.load reads each back, writes the expectation."""
    for fmt, zip_format in (("zip", True), ("legacy", False)):
        path = os.path.join(outdir, f"{stem}_{fmt}.pt")
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        back = flatten(torch.load(path, weights_only=True))
        ref = flatten(obj)
        assert back.keys() == ref.keys()
        for k in ref:
            assert torch.equal(back[k], ref[k]), k
    expect(flatten(obj), os.path.join(outdir, f"{stem}.expected.safetensors"))


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)


def mixed(gen):
    f = torch.randn(5, 6, generator=gen)
    dtypes = {
        "f32": torch.randn(3, 4, generator=gen),
        "f64": torch.randn(3, generator=gen, dtype=torch.float64),
        "f16": torch.randn(2, 3, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64": torch.tensor([-(2**62), -1, 0, 2**62], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 7, 2**31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-32768, 5, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
    }
    shared = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {
        "strided": f[1:, ::2],            # offset and non-unit strides
        "transposed": f.t(),
        "shared_row": shared[1],          # these two share one storage
        "shared_tail": shared[2:],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "expanded": torch.randn(1, 3, generator=gen).expand(4, 3),  # stride 0
    }
    return {
        "image_proj": {"latents": torch.randn(1, 4, 8, generator=gen), "proj_in": {"weight": f}},
        "dtypes": dtypes,
        "views": views,
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
        "ints": {0: torch.ones(2), 1: torch.zeros(1)},
        "list": [torch.full((2,), 7.0), "text", 3],
        "meta": {"step": 12, "lr": 1e-4, "big": 2**40, "neg": -5, "name": "ip-adapter", "none": None,
                 "flag": True, "tuple": (1, 2.5, "x"), "list": [1, [2, 3]]},
    }


def facenet(outdir):
    import importlib.util
    # Located without importing: facenet_pytorch's __init__ needs torchvision, absent beside this torch.
    spec = importlib.util.find_spec("facenet_pytorch")
    data = os.path.join(os.path.dirname(spec.origin), "data")
    paths = []
    for name in ("pnet", "rnet", "onet"):
        path = os.path.join(data, f"{name}.pt")
        with open(path, "rb") as f:
            assert f.read(2) == b"\x80\x02", f"{path}: expected the legacy (non-zip) torch.save format"
        expect(torch.load(path, weights_only=True), os.path.join(outdir, f"facenet_{name}.expected.safetensors"))
        paths.append(path)
    with open(os.path.join(outdir, "facenet_paths.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")


def photo(outdir):
    import numpy as np
    import skimage.data
    image = torch.from_numpy(np.array(skimage.data.astronaut(), dtype=np.uint8, copy=True))
    save_file({"image": image}, os.path.join(outdir, "photo.safetensors"))


def legacy_file(path, main_pickle, storages):
    """A legacy-format file around a hand-made main pickle; storages: [(key, numel, raw bytes)]."""
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(main_pickle)
        pickle.dump([k for k, _, _ in storages], f, protocol=2)
        for _, numel, raw in storages:
            f.write(struct.pack("<q", numel))
            f.write(raw)


def zip_file(path, data_pkl, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")


def tensor_pickle(storage_global, key, numel, offset, size, stride):
    """Protocol-2 pickle of {"w": _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}."""
    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    def s(text):
        raw = text.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    return (b"\x80\x02}" + s("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" +
            b"(" + s("storage") + b"ctorch\n" + storage_global + b"\n" + s(key) + s("cpu") +
            b"J" + struct.pack("<i", numel) + b"NtQ" + b"J" + struct.pack("<i", offset) + ints(size) + ints(stride) +
            b"\x89ccollections\nOrderedDict\n)RtRs.")


def hostile(outdir):
    # os.system("echo pwned"), then a dict around it so only the GLOBAL can stop it.
    evil = b"\x80\x02}X\x01\x00\x00\x00xcos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85Rs."
    zip_file(os.path.join(outdir, "evil_zip.pt"), evil)
    legacy_file(os.path.join(outdir, "evil_legacy.pt"), evil, [])

    # The hand-built tensor pickle is checked against torch.load in its valid form first.
    raw = torch.arange(6, dtype=torch.float32).numpy().tobytes()
    good = os.path.join(outdir, "handmade.pt")
    legacy_file(good, tensor_pickle(b"FloatStorage", "k0", 6, 1, [2, 2], [2, 1]), [("k0", 6, raw)])
    assert torch.equal(torch.load(good, weights_only=True)["w"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    legacy_file(os.path.join(outdir, "bad_view.pt"), tensor_pickle(b"FloatStorage", "k0", 6, 1, [3, 2], [2, 1]),
                [("k0", 6, raw)])
    legacy_file(os.path.join(outdir, "bad_dtype.pt"), tensor_pickle(b"ComplexFloatStorage", "k0", 3, 0, [3], [1]),
                [("k0", 3, raw)])
    legacy_file(os.path.join(outdir, "bad_opcode.pt"), b"\x80\x02}X\x01\x00\x00\x00xI42\ns.", [])

    buf = io.BytesIO()
    torch.save({"w": torch.ones(64)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(os.path.join(outdir, "bad_compressed.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = Small()
    net.bn.running_mean.normal_(generator=gen)
    state = net.state_dict()
    assert isinstance(state, collections.OrderedDict) and hasattr(state, "_metadata")
    save_both(state, outdir, "state")
    save_both(mixed(gen), outdir, "mixed")
    ip = {"image_proj": {"latents": torch.randn(1, 4, 8, generator=gen), "proj_in.weight": torch.randn(8, 6)},
          "ip_adapter": {"1.to_k_ip.weight": torch.randn(8, 6).half(), "1.to_v_ip.weight": torch.randn(8, 6).half()}}
    torch.save(ip, os.path.join(outdir, "ip_adapter.bin"))
    expect(flatten(ip), os.path.join(outdir, "ip_adapter.expected.safetensors"))
    facenet(outdir)
    photo(outdir)
    hostile(outdir)
    print(f"torch {torch.__version__}: wrote fixtures to {outdir}", flush=True)


if __name__ == "__main__":
    main()
