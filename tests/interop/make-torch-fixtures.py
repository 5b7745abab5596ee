#!/usr/bin/python3
"""Writes the project-owned interop fixtures: small resnet-cifar and
mobilenetv2-cifar models built in PyTorch (Debian python3-torch), their weights,
an input batch and the logits PyTorch computes in eval-mode and train-mode
batchnorm. tests/models/test-interop.c checks dfqlab against them.

Run with Debian's python3 (not the first python3 on PATH here):
    /usr/bin/python3 tests/interop/make-torch-fixtures.py tests/interop
The safetensors files are written by the small writer below (the format is an
8-byte little-endian header length, a JSON header, then raw little-endian data),
since Debian ships no python3-safetensors."""
import json, struct, sys
import torch, torch.nn as nn, torch.nn.functional as F

torch.manual_seed(1234)
out_dir = sys.argv[1] if len(sys.argv) > 1 else "."


def save_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.float32:
            dtype, data = "F32", t.numpy().astype("<f4").tobytes()
        elif t.dtype == torch.int64:
            dtype, data = "I64", t.numpy().astype("<i8").tobytes()
        else:
            raise ValueError(t.dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class Unit(nn.Module):
    def __init__(s, cin, cout, stride):
        super().__init__()
        s.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); s.bn1 = nn.BatchNorm2d(cout)
        s.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(cout)
        s.down = None
        if stride != 1 or cin != cout:
            s.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(s, x):
        y = s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x)))))
        return F.relu(y + (x if s.down is None else s.down(x)))


class ResNetCifar(nn.Module):
    def __init__(s, depth, cin, classes, width):
        super().__init__()
        n = (depth - 2) // 6
        s.conv = nn.Conv2d(cin, width, 3, 1, 1, bias=False); s.bn = nn.BatchNorm2d(width)
        layers, c = [], width
        for stage in range(3):
            for i in range(n):
                cout = width << stage
                layers.append(Unit(c, cout, 2 if (i == 0 and stage > 0) else 1)); c = cout
        s.layers = nn.Sequential(*layers)
        s.fc = nn.Linear(c, classes)

    def forward(s, x):
        x = s.layers(F.relu(s.bn(s.conv(x))))
        return s.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def divisible(v, d=8):
    new_v = max(d, int(v + d / 2) // d * d)
    if new_v < 0.9 * v:
        new_v += d
    return new_v


class ConvBNReLU(nn.Sequential):
    def __init__(s, cin, cout, k, stride, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(s, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        s.res = stride == 1 and cin == cout
        layers = []
        if t != 1:
            layers.append(ConvBNReLU(cin, hidden, 1, 1))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        s.conv = nn.Sequential(*layers)

    def forward(s, x):
        return x + s.conv(x) if s.res else s.conv(x)


class MobileNetV2Cifar(nn.Module):
    setting = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(s, cin, classes, width_mult):
        super().__init__()
        c = divisible(32 * width_mult)
        last = divisible(1280 * max(1.0, width_mult))
        feats = [ConvBNReLU(cin, c, 3, 1)]
        for t, ch, n, st in s.setting:
            out = divisible(ch * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(c, out, st if i == 0 else 1, t)); c = out
        feats.append(ConvBNReLU(c, last, 1, 1))
        s.features = nn.Sequential(*feats)
        s.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(s, x):
        return s.classifier(F.adaptive_avg_pool2d(s.features(x), 1).flatten(1))


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)


def emit(name, model, x):
    randomise_bn(model)
    state = {k: v for k, v in model.state_dict().items()}
    save_safetensors(f"{out_dir}/{name}.safetensors", state)
    model.eval()
    with torch.no_grad():
        logits_eval = model(x)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # train-mode BN without dropout noise
    with torch.no_grad():
        logits_train = model(x)
    running = {k + ".after_train": v for k, v in model.state_dict().items() if k.endswith("running_var")}
    save_safetensors(f"{out_dir}/{name}.io.safetensors",
                     {"input": x, "logits_eval": logits_eval, "logits_train": logits_train, **running})
    print(name, "params", sum(p.numel() for p in model.parameters()), "logits", tuple(logits_eval.shape))


emit("resnet-cifar-d8-w4", ResNetCifar(8, 3, 10, 4), torch.randn(4, 3, 16, 16))
emit("resnet-cifar-d20-w8-c1", ResNetCifar(20, 1, 10, 8), torch.randn(3, 1, 28, 28))
emit("mobilenetv2-cifar-w025", MobileNetV2Cifar(3, 10, 0.25), torch.randn(2, 3, 32, 32))
