#!/usr/bin/python3
"""An independent PyTorch GDFQ on Fashion-MNIST, to cross-check dfqlab.

Not part of dfqlab: a development tool written from METHODS.md sections 1.3,
1.4 and 2 (the GDFQ fake quantizer, the training skeleton, the losses), with
dfqlab's parameter names so that it can read dfqlab's files.

  eval   evaluate a dfqlab run checkpoint (quantized student + frozen
         activation ranges) in PyTorch: the figure must match the run's
         metrics.jsonl "top1" for that epoch.
  train  run GDFQ on the short protocol (or --epochs/--iters) from a teacher,
         printing per-epoch test top-1, optionally starting from a dfqlab
         checkpoint (--resume CKPT) to continue the same state in PyTorch.

Run with Debian's python3 (python3-torch):
    /usr/bin/python3 tools/reference/gdfq_torch.py eval --ckpt RUN/checkpoint.safetensors --bits 3
    /usr/bin/python3 tools/reference/gdfq_torch.py train --teacher T.safetensors --bits 3 --seed 1"""
import argparse, gzip, json, os, struct, sys, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_torch import Generator, ResNet20, load_safetensors  # noqa: E402

MEAN, STD = 0.2860, 0.3530
DATA = os.environ.get("DFQ_DATA_DIR", "/usr/share/datasets/fashion-mnist")


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_meta(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


def test_set():
    x = idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    return (torch.from_numpy(x).unsqueeze(1) - MEAN) / STD, torch.from_numpy(y)


# ---- the GDFQ fake quantizer (METHODS.md 1.3) ----
def fake_quant(x, lo, hi, k):
    s = (2 ** k - 1) / torch.clamp(hi - lo, min=1e-8)
    zp = torch.round(s * lo) + 2 ** (k - 1)
    q = torch.clamp(torch.round(s * x - zp), -2 ** (k - 1), 2 ** (k - 1) - 1)
    return (q + zp) / s


def ste(x, xq):
    return x + (xq - x).detach()


def quant_weight(w, k):
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(1, keepdim=True)[0].detach()
    hi = flat.max(1, keepdim=True)[0].detach()
    return ste(w, fake_quant(flat, lo, hi, k).reshape(w.shape))


class ActQuant:
    """Per-tensor range of one ReLU output: the official EMA with its quirk,
    or a plain EMA."""
    def __init__(s, k, plain=False, beta=0.9):
        s.k, s.plain, s.beta = k, plain, beta
        s.lo, s.hi, s.beta_t, s.n = 0.0, 0.0, 1.0, 0
        s.calibrating = False

    def __call__(s, x):
        if s.calibrating:
            m, M = x.min().item(), x.max().item()
            if s.plain:
                if s.n == 0:
                    s.lo, s.hi = m, M
                else:
                    s.lo = s.lo * s.beta + m * (1 - s.beta)
                    s.hi = s.hi * s.beta + M * (1 - s.beta)
                s.n += 1
            else:
                s.beta_t *= s.beta
                s.lo = (s.lo * s.beta + m * (1 - s.beta)) / (1 - s.beta_t)
                s.hi = (s.hi * s.beta + M * (1 - s.beta)) / (1 - s.beta_t)
        lo, hi = torch.tensor(s.lo), torch.tensor(s.hi)
        return ste(x, fake_quant(x, lo, hi, s.k))


class QResNet20(ResNet20):
    """ResNet-20 with GDFQ quantization: every conv/fc weight per output
    channel, every ReLU output per tensor; image, residual inputs, BN outputs,
    pooled features and logits in float."""
    def setup_quant(s, k, plain=False):
        s.k = k
        s.acts = {"relu": ActQuant(k, plain)}
        for i in range(9):
            s.acts[f"layers.{i}.relu1"] = ActQuant(k, plain)
            s.acts[f"layers.{i}.relu2"] = ActQuant(k, plain)

    def forward(s, x):
        x = s.acts["relu"](F.relu(s.bn(s.conv_q(s.conv, x))))
        for i, u in enumerate(s.layers):
            y = s.acts[f"layers.{i}.relu1"](F.relu(u.bn1(s.conv_q(u.conv1, x))))
            y = u.bn2(s.conv_q(u.conv2, y))
            sc = x if u.down is None else u.down[1](s.conv_q(u.down[0], x))
            x = s.acts[f"layers.{i}.relu2"](F.relu(y + sc))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.linear(x, quant_weight(s.fc.weight, s.k), s.fc.bias)

    def conv_q(s, m, x):
        return F.conv2d(x, quant_weight(m.weight, s.k), None, m.stride, m.padding)

    def calibrating(s, on):
        for a in s.acts.values():
            a.calibrating = on


def evaluate(model, xs, ys, batch=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            correct += (model(xs[i:i + batch]).argmax(1) == ys[i:i + batch]).sum().item()
    return 100.0 * correct / len(xs)


def load_student(tensors, prefix, k, plain):
    s = QResNet20(1)
    s.setup_quant(k, plain)
    state = s.state_dict()
    for key in state:
        if not key.endswith("num_batches_tracked"):
            state[key] = tensors[prefix + key].reshape(state[key].shape)
    s.load_state_dict(state)
    return s


def load_ranges(student, tensors):
    for name, a in student.acts.items():
        r = tensors["quant." + name + ".act_range"].tolist()
        a.lo, a.hi = r[0], r[1]
        if a.plain:
            a.n = int(r[2])
        else:
            a.beta_t = r[2]


# ---- dfqlab's counter-based RNG (core/tensor/dfq-rand.c), to draw its z and y ----
M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
GDFQ_STREAM_BASE = 0x6764667100000000


def philox(seed, stream, n):
    idx = np.arange(n, dtype=np.uint64)
    mask = np.uint64(0xFFFFFFFF)
    c0, c1 = idx & mask, idx >> np.uint64(32)
    c2 = np.full(n, stream & 0xFFFFFFFF, np.uint64)
    c3 = np.full(n, stream >> 32, np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    for _ in range(10):
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0)
        n1 = p1 & mask
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1)
        n3 = p0 & mask
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
    return c0, c1


def dfq_normal(seed, stream, shape):
    r0, r1 = philox(seed, stream, int(np.prod(shape)))
    u1 = (r0.astype(np.float64) + 1.0) / 4294967296.0
    u2 = r1.astype(np.float64) / 4294967296.0
    return torch.from_numpy((np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32).reshape(shape))


def dfq_int(seed, stream, n, classes):
    r0, _ = philox(seed, stream, n)
    return torch.from_numpy(((r0 * np.uint64(classes)) >> np.uint64(32)).astype(np.int64))


def cmd_eval(args):
    t = load_safetensors(args.ckpt)
    s = load_student(t, "student.", args.bits, False)
    load_ranges(s, t)
    xs, ys = test_set()
    print(f"torch top1 {evaluate(s, xs, ys):.2f}")


def kd_loss(s_logits, t_logits, temp):
    return F.kl_div(F.log_softmax(s_logits / temp, 1), F.softmax(t_logits / temp, 1), reduction="mean") * temp * temp


def multistep(base, epoch, milestones, gamma=0.1):
    return base * gamma ** sum(1 for m in milestones if epoch >= m)


GEN_NAMES = {"emb.weight": "label_emb.weight", "l1.weight": "l1.0.weight", "l1.bias": "l1.0.bias",
             "b0": "conv_blocks0.0", "c1": "conv_blocks1.0", "b1": "conv_blocks1.1",
             "c2": "conv_blocks2.0", "b2": "conv_blocks2.1", "c3": "conv_blocks2.3", "b3": "conv_blocks2.5"}


def gen_name(key):
    mod, _, leaf = key.partition(".")
    return "generator." + (GEN_NAMES.get(key) or GEN_NAMES[mod] + "." + leaf)


class Gdfq:
    """Teacher, quantized student, generator and both optimisers."""
    def __init__(s, args):
        tt = load_safetensors(args.teacher)
        s.teacher = ResNet20(1)
        state = s.teacher.state_dict()
        for key in state:
            if not key.endswith("num_batches_tracked"):
                state[key] = tt[key].reshape(state[key].shape)
        s.teacher.load_state_dict(state)
        s.teacher.eval()
        for p in s.teacher.parameters():
            p.requires_grad_(False)
        s.student = load_student(tt, "", args.bits, args.plain_ema)
        s.gen = Generator(100, 10, 28, 1)
        s.bn_in = []
        for m in s.teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.register_forward_hook(lambda mod, inp, out: s.bn_in.append((mod, inp[0])))
        s.opt_s = torch.optim.SGD(s.student.parameters(), lr=args.lr_s, momentum=0.9, nesterov=True, weight_decay=1e-4)
        s.opt_g = torch.optim.Adam(s.gen.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def load_dfq(s, ck, meta, bits, plain):
        """The state of a dfqlab run checkpoint, optimiser state included."""
        s.student = load_student(ck, "student.", bits, plain)
        load_ranges(s.student, ck)
        gs = s.gen.state_dict()
        for key in gs:
            if not key.endswith("num_batches_tracked"):
                gs[key] = ck["synth." + gen_name(key)].reshape(gs[key].shape)
        s.gen.load_state_dict(gs)
        lr_s = s.opt_s.param_groups[0]["lr"]
        s.opt_s = torch.optim.SGD(s.student.parameters(), lr=lr_s, momentum=0.9, nesterov=True, weight_decay=1e-4)
        for name, p in s.student.named_parameters():
            key = "optim." + name + ".momentum_buffer"
            if key in ck:
                s.opt_s.state[p] = {"momentum_buffer": ck[key].reshape(p.shape).clone()}
        step = float(meta.get("synth_optim_step", 0))
        for name, p in s.gen.named_parameters():
            key = "synth." + gen_name(name)
            if key + ".exp_avg" in ck:
                s.opt_g.state[p] = {"step": torch.tensor(step), "exp_avg": ck[key + ".exp_avg"].reshape(p.shape).clone(),
                                    "exp_avg_sq": ck[key + ".exp_avg_sq"].reshape(p.shape).clone()}

    def set_lr(s, lr_s, lr_g):
        for g in s.opt_s.param_groups:
            g["lr"] = lr_s
        for g in s.opt_g.param_groups:
            g["lr"] = lr_g

    def iterate(s, z, y, update_student):
        x = s.gen(z, y)
        s.bn_in.clear()
        t_logits = s.teacher(x)
        ce_g = F.cross_entropy(t_logits, y)
        bns = 0.0
        for mod, inp in s.bn_in:
            mu = inp.mean((0, 2, 3))
            var = inp.var((0, 2, 3), unbiased=False)
            bns = bns + F.mse_loss(mu, mod.running_mean) + F.mse_loss(var, mod.running_var)
        bns = bns / len(s.bn_in)
        loss_g = ce_g + 0.1 * bns
        s.opt_g.zero_grad()
        loss_g.backward()
        s.opt_g.step()
        s_logits = s.student(x.detach())
        kd = kd_loss(s_logits, t_logits.detach(), 20.0)
        ce_s = F.cross_entropy(s_logits, y)
        loss_s = kd + ce_s
        if update_student:
            s.opt_s.zero_grad()
            loss_s.backward()
            s.opt_s.step()
        return [ce_g.item(), float(bns), kd.item(), ce_s.item()]


def cmd_train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    g = Gdfq(args)
    if args.resume:
        g.load_dfq(load_safetensors(args.resume), load_meta(args.resume), args.bits, args.plain_ema)
    xs, ys = test_set()
    print(f"teacher top1 {evaluate(g.teacher, xs, ys):.2f}", flush=True)
    for epoch in range(args.start_epoch, args.epochs):
        g.set_lr(multistep(args.lr_s, epoch, args.milestones), multistep(1e-3, epoch, args.milestones))
        g.student.calibrating(epoch < args.range_epochs)
        g.student.eval()
        g.gen.train()
        t0 = time.time()
        sums = np.zeros(4)
        for it in range(args.iters):
            if args.dfq_rng:
                step = epoch * args.iters + it
                z = dfq_normal(args.seed, GDFQ_STREAM_BASE + 2 * step, (args.batch, 100))
                y = dfq_int(args.seed, GDFQ_STREAM_BASE + 2 * step + 1, args.batch, 10)
            else:
                z = torch.randn(args.batch, 100)
                y = torch.randint(0, 10, (args.batch,))
            sums += g.iterate(z, y, epoch >= args.warmup)
        g.student.calibrating(False)
        if epoch == args.range_epochs - 1:
            print("ranges " + " ".join(f"{n}={a.hi:.4f}" for n, a in g.student.acts.items()), flush=True)
        top1 = evaluate(g.student, xs, ys)
        m = sums / args.iters
        print(f"epoch {epoch} top1 {top1:.2f} gen.ce {m[0]:.4f} gen.bns {m[1]:.4f} student.kd {m[2]:.4f} "
              f"student.ce {m[3]:.4f} seconds {time.time() - t0:.1f}", flush=True)


def cmd_step_check(args):
    """One iteration in PyTorch from dfqlab's checkpoint --before (after
    global step --step - 1) compared with dfqlab's checkpoint --after."""
    torch.set_num_threads(args.threads)
    g = Gdfq(args)
    a, b = load_safetensors(args.before), load_safetensors(args.after)
    g.load_dfq(a, load_meta(args.before), args.bits, args.plain_ema)
    g.set_lr(args.lr_s, 1e-3)
    g.student.calibrating(args.calibrating)
    g.student.eval()
    g.gen.train()
    z = dfq_normal(args.seed, GDFQ_STREAM_BASE + 2 * args.step, (args.batch, 100))
    y = dfq_int(args.seed, GDFQ_STREAM_BASE + 2 * args.step + 1, args.batch, 10)
    terms = g.iterate(z, y, args.update_student)
    print("torch terms gen.ce %.6f gen.bns %.6f student.kd %.6f student.ce %.6f" % tuple(terms))

    def report(title, pairs):
        worst = []
        for name, mine, before, theirs in pairs:
            d = (mine - theirs).abs().max().item()
            moved = (theirs - before).abs().max().item()
            worst.append((d / max(moved, 1e-30), d, moved, name))
        worst.sort(reverse=True)
        print(f"{title}: worst |torch - dfq| relative to the step's own change:")
        for r, d, moved, name in worst[:args.show]:
            print(f"  {name:45s} diff {d:.3e} step {moved:.3e} ratio {r:.3f}")

    report("generator", [(name, p.detach(), a["synth." + gen_name(name)].reshape(p.shape),
                          b["synth." + gen_name(name)].reshape(p.shape)) for name, p in g.gen.named_parameters()])
    report("student", [(name, p.detach(), a["student." + name].reshape(p.shape), b["student." + name].reshape(p.shape))
                       for name, p in g.student.named_parameters()])
    for n, act in g.student.acts.items():
        rb = b["quant." + n + ".act_range"].tolist()
        if abs(rb[1] - act.hi) > 1e-5 * max(1.0, abs(rb[1])):
            print(f"range {n}: torch {act.hi:.6f} dfq {rb[1]:.6f}")


def add_common(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--bits", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr-s", type=float, default=1e-4)
    p.add_argument("--plain-ema", action="store_true")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--bits", type=int, required=True)
    t = sub.add_parser("train")
    add_common(t)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--start-epoch", type=int, default=0)
    t.add_argument("--iters", type=int, default=60)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--range-epochs", type=int, default=4)
    t.add_argument("--milestones", type=int, nargs="*", default=[15, 30, 35])
    t.add_argument("--dfq-rng", action="store_true", help="draw z and y as dfqlab's gdfq does")
    t.add_argument("--resume", help="a dfqlab run checkpoint to start from (student, ranges, generator, optimisers)")
    c = sub.add_parser("step-check")
    add_common(c)
    c.add_argument("--before", required=True)
    c.add_argument("--after", required=True)
    c.add_argument("--step", type=int, required=True, help="the global step dfqlab ran between the two checkpoints")
    c.add_argument("--calibrating", action="store_true")
    c.add_argument("--update-student", action="store_true")
    c.add_argument("--show", type=int, default=6)
    args = ap.parse_args()
    {"eval": cmd_eval, "train": cmd_train, "step-check": cmd_step_check}[args.cmd](args)


if __name__ == "__main__":
    main()
