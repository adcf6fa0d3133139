"""Parity oracle for model/face: small reference implementations of ArcFace iresnet
(insightface arcface_torch backbones/iresnet.py; docs/models.md, "Faces") and IR-SE
(TreB1eN/InsightFace_Pytorch model.py), written from those specs in plain torch with the
checkpoints' key layout, plus a reference 5-point similarity alignment (Umeyama, no reflection)
and a cv2.warpAffine-convention bilinear warp written with explicit loops over numpy-free torch.

Usage: face_oracle.py OUTDIR SEED   (SEED an integer, or "random": $LA_PARITY_SEED when set,
else a fresh seed; the seed is printed). Writes OUTDIR/{iresnet,irse}_weights.safetensors and
OUTDIR/face_cases.safetensors (inputs and expected outputs), and facenet-pytorch 2.6.0's shipped
MTCNN weights as OUTDIR/mtcnn_{pnet,rnet,onet}.safetensors with their outputs on random crops,
and facenet-pytorch's detections on scikit-image's astronaut and matplotlib's grace_hopper photos
(OUTDIR/mtcnn_photos.safetensors, images as uint8 [H, W, 3]).
"""
import os
import random
import sys
import types

import torch
from torch import nn
from safetensors.torch import save_file


# ----------------------------------------------------------------------------- iresnet
class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes, eps=1e-5)) if downsample else None)

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    def __init__(self, layers, num_features=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (n, planes) in enumerate(zip(layers, [64, 128, 256, 512])):
            blocks = [IBasicBlock(inplanes, planes, 2, True)] + [IBasicBlock(planes, planes, 1, False)
                                                                 for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


# ----------------------------------------------------------------------------- IR-SE
class SEModule(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * w


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channel, depth, stride):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
                                       nn.PReLU(depth), nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
                                       nn.BatchNorm2d(depth), SEModule(depth, 16))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        in_channel = 64
        for depth, n in [(64, 3), (128, 4), (256, 14), (512, 3)]:
            units.append(BottleneckIRSE(in_channel, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
            in_channel = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x):
        return self.output_layer(self.body(self.input_layer(x)))


def randomize(model, gen):
    """Random weights and BatchNorm statistics (so a missed buffer load shows)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            elif "prelu" in name:
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5)
            elif name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    model.eval()


def state(model):
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def l2(x):
    return x / x.norm(2, 1, True)


# ----------------------------------------------------------------------------- alignment
ARCFACE_DST = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


def umeyama(src, dst):
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src
    [N,2] onto dst [N,2] (skimage SimilarityTransform.estimate / Umeyama 1991). Returns [2,3]."""
    src = src.double()
    dst = dst.double()
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / n
    u, sv, vh = torch.linalg.svd(cov)
    d = torch.ones(2, dtype=torch.float64)
    if torch.det(cov) < 0:
        d[1] = -1
    r = u @ torch.diag(d) @ vh
    var_s = (s_c ** 2).sum() / n
    scale = (sv * d).sum() / var_s
    t = mu_d - scale * (r @ mu_s)
    return torch.cat([scale * r, t[:, None]], 1)


def warp_affine_ref(img, m, out_h, out_w):
    """cv2.warpAffine(img, M, (out_w, out_h), INTER_LINEAR, BORDER_CONSTANT 0) semantics with
    pixel centres at integer coordinates: dst(x, y) = bilinear src at M^-1 (x, y). img [C,H,W]."""
    c, h, w = img.shape
    a = torch.cat([m.double(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)], 0)
    inv = torch.linalg.inv(a)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                            indexing="ij")
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = torch.floor(sx), torch.floor(sy)
    fx, fy = sx - x0, sy - y0
    src = img.double()
    out = torch.zeros(c, out_h, out_w, dtype=torch.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = (x0 + dx).long(), (y0 + dy).long()
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            v = src[:, yi.clamp(0, h - 1), xi.clamp(0, w - 1)] * valid
            out += v * (wx * wy)
    return out


# ----------------------------------------------------------------------------- MTCNN
def nms_reference(boxes, scores, iou_threshold):
    """Greedy NMS on [N,4] (x1,y1,x2,y2) boxes, torchvision.ops.nms semantics."""
    order = scores.argsort(descending=True)
    keep = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(boxes[i, 0], boxes[:, 0])
        yy1 = torch.maximum(boxes[i, 1], boxes[:, 1])
        xx2 = torch.minimum(boxes[i, 2], boxes[:, 2])
        yy2 = torch.minimum(boxes[i, 3], boxes[:, 3])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        suppressed |= inter / (area[i] + area - inter) > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms_reference(boxes, scores, idxs, iou_threshold):
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms_reference(boxes + offsets[:, None], scores, iou_threshold)


def import_facenet_mtcnn():
    """facenet_pytorch imports torchvision (ops.boxes.batched_nms, transforms.functional), which
    cannot be installed beside this torch: register a minimal stand-in with a pure-torch NMS."""
    try:
        import torchvision.ops.boxes  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        boxes = types.ModuleType("torchvision.ops.boxes")
        boxes.batched_nms = batched_nms_reference
        boxes.nms = nms_reference
        ops.boxes = boxes
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        transforms.functional = functional
        tv.ops, tv.transforms = ops, transforms
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
                            "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})
    from facenet_pytorch.models import mtcnn
    return mtcnn


def mtcnn_cases(outdir, gen, cases):
    mtcnn = import_facenet_mtcnn()
    h, w = (int(v) for v in torch.randint(12, 60, (2,), generator=gen))
    combined = {}  # all three under pnet./rnet./onet., the single file `model run --model mtcnn` takes
    for name, net, shape in (("pnet", mtcnn.PNet(), (2, 3, h, w)), ("rnet", mtcnn.RNet(), (3, 3, 24, 24)),
                             ("onet", mtcnn.ONet(), (3, 3, 48, 48))):
        net.eval()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  os.path.join(outdir, f"mtcnn_{name}.safetensors"))
        combined.update({f"{name}.{k}": v.contiguous() for k, v in net.state_dict().items()})
        x = (torch.randint(0, 256, shape, generator=gen).float() - 127.5) * 0.0078125
        with torch.no_grad():
            out = net(x)
        cases[f"{name}.input"] = x
        cases[f"{name}.regression"] = out[0]
        cases[f"{name}.probability"] = out[-1]
        if name == "onet":
            cases["onet.landmarks"] = out[1]
    save_file(combined, os.path.join(outdir, "mtcnn_all.safetensors"))


def mtcnn_photo_cases(outdir):
    """facenet-pytorch MTCNN.detect (defaults: min_face_size 20, factor 0.709, thresholds
    [0.6, 0.7, 0.7], select_largest) on real photos, decoded here and handed over as uint8 RGB."""
    import matplotlib.cbook
    import numpy as np
    import skimage.data
    from PIL import Image
    mtcnn = import_facenet_mtcnn()
    detector = mtcnn.MTCNN(device="cpu")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    photos = {"astronaut": skimage.data.astronaut(), "grace_hopper": hopper}
    out = {}
    for name, img in photos.items():
        image = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
        boxes, probs, points = detector.detect(image, landmarks=True)
        out[f"{name}.image"] = image
        out[f"{name}.boxes"] = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
        out[f"{name}.probs"] = torch.as_tensor(np.asarray(probs, dtype=np.float32))
        out[f"{name}.landmarks"] = torch.as_tensor(np.asarray(points, dtype=np.float32))
        print(f"mtcnn {name} {tuple(image.shape)}: {len(boxes)} faces, first box {boxes[0]}", flush=True)
    save_file(out, os.path.join(outdir, "mtcnn_photos.safetensors"))


def main():
    outdir, seed_arg = sys.argv[1], sys.argv[2]
    if seed_arg == "random":
        seed = int(os.environ.get("LA_PARITY_SEED", random.SystemRandom().randrange(2**31)))
    else:
        seed = int(seed_arg)
    print(f"face_oracle seed {seed} (reproduce: face_oracle.py OUTDIR {seed})", flush=True)
    os.makedirs(outdir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cases = {}

    # iresnet: a reduced depth (same arithmetic per block) keeps the fixture small.
    layers = [int(v) for v in torch.randint(1, 4, (4,), generator=gen)]
    ires = IResNet(layers)
    randomize(ires, gen)
    x = torch.rand(2, 3, 112, 112, generator=gen) * 2 - 1
    with torch.no_grad():
        feat = ires(x)
    save_file(state(ires), os.path.join(outdir, "iresnet_weights.safetensors"))
    cases["iresnet.layers"] = torch.tensor(layers, dtype=torch.int64)
    cases["iresnet.input"] = x
    cases["iresnet.features"] = feat
    cases["iresnet.embedding"] = l2(feat)

    irse = IRSE50()
    randomize(irse, gen)
    x = torch.rand(2, 3, 112, 112, generator=gen) * 2 - 1
    with torch.no_grad():
        feat = irse(x)
    save_file(state(irse), os.path.join(outdir, "irse_weights.safetensors"))
    cases["irse.input"] = x
    cases["irse.features"] = feat
    cases["irse.embedding"] = l2(feat)

    # Alignment: template points under a random similarity plus noise, in a random image.
    dst = torch.tensor(ARCFACE_DST, dtype=torch.float64)
    ang = (torch.rand(1, generator=gen, dtype=torch.float64) - 0.5) * 1.0
    sc = 1.5 + torch.rand(1, generator=gen, dtype=torch.float64) * 2
    rot = torch.stack([torch.cat([torch.cos(ang), -torch.sin(ang)]), torch.cat([torch.sin(ang), torch.cos(ang)])])
    src = (dst @ rot.T) * sc + torch.tensor([40.0, 30.0], dtype=torch.float64)
    src = src + torch.randn(5, 2, generator=gen, dtype=torch.float64) * 2
    m = umeyama(src, dst)
    img = torch.rand(3, 300, 280, generator=gen) * 2 - 1
    cases["align.points"] = src.float()
    cases["align.matrix"] = m
    cases["align.image"] = img
    cases["align.warped"] = warp_affine_ref(img, m, 112, 112).float()
    mtcnn_cases(outdir, gen, cases)
    mtcnn_photo_cases(outdir)
    save_file({k: v.contiguous() for k, v in cases.items()}, os.path.join(outdir, "face_cases.safetensors"))
    print(f"iresnet layers {layers}; wrote {outdir}", flush=True)


if __name__ == "__main__":
    main()
