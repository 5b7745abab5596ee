#!/usr/bin/python3
"""The PyTorch side of tools/bench-vs-torch.sh (docs/performance.md).

The workloads, models and step sequence of shared/reference/torch_resnet20_bench.py
(ResNet-20 train step and inference at batch 128, one GDFQ generator step at
batch 32, on 1x28x28 and 3x32x32; issue 15's ZeroQ image-optimisation step at
batch 64 and block-reconstruction step at batch 32 on both), and issue 15's MobileNetV2 (train step at
batch 64, inference at batch 128, 1x28x28) built as the shared fixture's network
(fixtures/README.md: nn.Sequential names) and given dfqlab's weights through the
rename rules of pipelines/eval/mobilenetv2-fmnist-fixture.yaml; fed the very inputs and initial weights that
`dfq-bench --dump DIR` wrote, and timed the way dfq-bench times them: --warmup
untimed training steps, then the median of --reps timed steps. Parameter names
follow dfqlab's resnet-cifar plugin (the layout of tests/interop/make-torch-fixtures.py).

Prints "RESULT side=torch ..." lines in dfq-bench's format.
Run with Debian's python3 (python3-torch), not the first python3 on PATH:
    /usr/bin/python3 tools/bench_torch.py --dir DIR [--threads 2] [--only PATTERN]"""
import argparse, fnmatch, json, resource, statistics, struct, sys, time
import torch, torch.nn as nn, torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    types = {"F32": torch.float32, "I32": torch.int32, "I64": torch.int64}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + lo:base + hi]), dtype=types[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


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


class ResNet20(nn.Module):  # the reference's ResNet20, with dfqlab's parameter names
    def __init__(s, cin, classes=10, width=16):
        super().__init__()
        s.conv = nn.Conv2d(cin, width, 3, 1, 1, bias=False); s.bn = nn.BatchNorm2d(width)
        layers, c = [], width
        for stage in range(3):
            for i in range(3):
                cout = width << stage
                layers.append(Unit(c, cout, 2 if (i == 0 and stage > 0) else 1)); c = cout
        s.layers = nn.Sequential(*layers)
        s.fc = nn.Linear(c, classes)

    def forward(s, x):
        x = s.layers(F.relu(s.bn(s.conv(x))))
        return s.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Generator(nn.Module):  # exactly the reference's GDFQ-style generator
    def __init__(s, nz=100, ncls=10, size=32, ch=1):
        super().__init__()
        s.init = size // 4; s.emb = nn.Embedding(ncls, nz)
        s.l1 = nn.Linear(nz, 128 * s.init ** 2)
        s.b0 = nn.BatchNorm2d(128); s.c1 = nn.Conv2d(128, 128, 3, 1, 1); s.b1 = nn.BatchNorm2d(128, 0.8)
        s.c2 = nn.Conv2d(128, 64, 3, 1, 1); s.b2 = nn.BatchNorm2d(64, 0.8)
        s.c3 = nn.Conv2d(64, ch, 3, 1, 1); s.b3 = nn.BatchNorm2d(ch, affine=False)

    def forward(s, z, y):
        x = s.l1(z * s.emb(y)).view(z.size(0), 128, s.init, s.init)
        x = F.interpolate(s.b0(x), scale_factor=2)
        x = F.leaky_relu(s.b1(s.c1(x)), 0.2)
        x = F.interpolate(x, scale_factor=2)
        x = F.leaky_relu(s.b2(s.c2(x)), 0.2)
        return s.b3(torch.tanh(s.c3(x)))


class InvertedResidual(nn.Module):  # the fixture's block: a `body` Sequential
    def __init__(s, cin, cout, stride, t):
        super().__init__()
        hidden, layers = cin * t, []
        if t != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        s.body = nn.Sequential(*layers)
        s.residual = stride == 1 and cin == cout

    def forward(s, x):
        y = s.body(x)
        return x + y if s.residual else y


class MobileNetV2Fixture(nn.Module):  # the layout of shared/fixtures/mobilenetv2-fmnist-torch.safetensors
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]

    def __init__(s, cin=1, classes=10):
        super().__init__()
        layers, c = [nn.Conv2d(cin, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()], 32
        for t, cout, n, stride in s.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, stride if i == 0 else 1, t)); c = cout
        layers += [nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        s.features = nn.Sequential(*layers)
        s.fc = nn.Linear(1280, classes)

    def forward(s, x):
        return s.fc(F.adaptive_avg_pool2d(s.features(x), 1).flatten(1))


def fixture_rename_rules(here):
    """The 'regex=>replacement' rules of the fixture's eval pipeline, in order."""
    import os, re
    path = os.path.join(here, "..", "pipelines", "eval", "mobilenetv2-fmnist-fixture.yaml")
    rules = []
    for line in open(path):
        m = re.match(r"\s*- '(.*)=>(.*)'\s*$", line)
        if m:
            rules.append((m.group(1), m.group(2)))
    return rules


def load_renamed(module, tensors, prefix, rules):
    """Each of @module's names, renamed by @rules (as dfqlab renames the fixture), is looked up as prefix + name."""
    import re
    state = module.state_dict()
    for k in state:
        if k.endswith("num_batches_tracked"):
            continue
        name = k
        for pat, rep in rules:
            name = re.sub(pat, rep, name)
        state[k] = tensors[prefix + name].reshape(state[k].shape)
    module.load_state_dict(state)


def load_into(module, tensors, prefix):
    state = module.state_dict()
    for k in state:
        if k.endswith("num_batches_tracked"):
            continue
        state[k] = tensors[prefix + k].reshape(state[k].shape)
    module.load_state_dict(state)


class FlopCounter:
    """Conv/linear FLOPs with dfq-bench's rule: forward 2*MACs, plus as much for
    the weight gradient and for the input gradient when they are computed."""
    def __init__(s, *modules):
        s.fwd = s.train = 0.0
        s.handles = [m.register_forward_hook(s.hook) for mod in modules for m in mod.modules()
                     if isinstance(m, (nn.Conv2d, nn.Linear))]

    def hook(s, m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs = out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs = out.numel() * m.in_features
        f = 2.0 * macs
        s.fwd += f
        s.train += f
        if torch.is_grad_enabled() and m.weight.requires_grad:
            s.train += f
        if torch.is_grad_enabled() and inp[0].requires_grad:
            s.train += f

    def remove(s):
        for h in s.handles:
            h.remove()


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, reps):
    """Wall and process CPU time (all threads) of each of reps calls."""
    times, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return times, cpu


def report(workload, shape, batch, timing, flops, peak):
    times, cpu = timing
    med = statistics.median(times)
    g = flops / med * 1e-9
    print(f"RESULT side=torch workload={workload} in={shape} batch={batch} img_s={batch / med:.1f} "
          f"ms={med * 1e3:.2f} min_ms={min(times) * 1e3:.2f} max_ms={max(times) * 1e3:.2f} "
          f"cpu_ms={statistics.median(cpu) * 1e3:.2f} "
          f"gflop={flops * 1e-9:.3f} gflops={g:.1f} sgemm_gflops={peak:.1f} "
          f"frac_peak={g / peak if peak else 0:.3f} maxrss_mib={maxrss_mib():.1f}", flush=True)


def sgemm_peak(n):
    a = torch.rand(n, n) - 0.5; b = torch.rand(n, n) - 0.5
    best = 1e9
    for r in range(4):
        t = time.perf_counter(); torch.mm(a, b); dt = time.perf_counter() - t
        if r > 0:
            best = min(best, dt)
    return 2.0 * n ** 3 / best * 1e-9


def run_mv2(a, selected, shape, peak):
    """MobileNetV2: train step at batch 64 (the first 64 images), inference at batch 128."""
    import os
    d = load_safetensors(f"{a.dir}/bench-{shape}.safetensors")
    x, y = d["x"], d["y"].long()
    m = MobileNetV2Fixture()
    load_renamed(m, d, "mv2.", fixture_rename_rules(os.path.dirname(os.path.abspath(__file__))))
    opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
    x64, y64 = x[:64].contiguous(), y[:64].contiguous()

    def train():
        opt.zero_grad(); F.cross_entropy(m(x64), y64).backward(); opt.step()

    m.train()
    for _ in range(a.warmup):
        train()
    fc = FlopCounter(m); train(); fc.remove()
    if selected(f"mobilenetv2-train-{shape}"):
        report("mobilenetv2-train", shape, 64, timed(train, a.reps), fc.train, peak)
    if selected(f"mobilenetv2-infer-{shape}"):
        m.eval()
        with torch.no_grad():
            m(x)
            report("mobilenetv2-infer", shape, 128, timed(lambda: m(x), a.reps), fc.fwd * 2, peak)


def zeroq_step(m, cin, hw, gen):
    """One ZeroQ image-optimisation step as dfq-bench's zeroq-step: fresh images
    (randint(0, 255) - 127.5) / 5418.75 of batch 64, the frozen eval-mode
    teacher's forward with every BN input hooked, the loss of dfqlab's zeroq
    defaults (bns-sample summed over the BN layers + image-prior, eps 1e-6:
    per-sample channel mean and sqrt(unbiased spatial var + eps) against the
    running mean and sqrt(running var + eps), resp. 0 and 1, each
    ||.||^2 / B), the backward to the images, one Adam step (lr 0.5); the
    official distill_data.py's loop body."""
    eps, bns, feats = 1e-6, [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)], []
    hooks = [bn.register_forward_hook(lambda mod, inp, out: feats.append((mod, inp[0]))) for bn in bns]
    def stats(t):
        return t.mean((2, 3)), torch.sqrt(t.var((2, 3), unbiased=True) + eps)
    def term(s, target):
        return ((s - target) ** 2).sum() / s.size(0)
    def step():
        x = ((torch.randint(0, 256, (64, cin, hw, hw), generator=gen).float() - 127.5) / 5418.75).requires_grad_()
        opt = torch.optim.Adam([x], 0.5)
        feats.clear(); opt.zero_grad()
        m(x)
        loss = 0.0
        for bn, t in feats:
            mu, sigma = stats(t)
            loss = loss + term(mu, bn.running_mean) + term(sigma, torch.sqrt(bn.running_var + eps))
        mu, sigma = stats(x)
        loss = loss + term(mu, 0.0) + term(sigma, 1.0)
        loss.backward(); opt.step()
    return step, hooks
def recon_step(d, cin, x):
    """One block-reconstruction step as dfq-bench's recon-step: a fresh ResNet-20
    (the dumped initial weights, frozen, eval-mode BN) as the student, its first
    basic block learning under AdaRound-style W4A4 quantization: per-channel
    asymmetric weights W^ = s (clamp(floor(W/s) + h(V) + zp, 0, 15) - zp) with
    soft bits h(V) = clamp(sigmoid(V) 1.2 - 0.1, 0, 1) started at frac(W/s),
    per-tensor LSQ steps on the block's two ReLU outputs (gradient scale
    1/sqrt(numel qp)); the block's input and full-precision output on the first
    32 images; loss = sum (out - y)^2 / (B H W) + 0.01 sum(1 - |2h(V) - 1|^beta)
    at half of beta's 20 -> 2 annealing; backward into V and the steps; Adam
    on V (lr 1e-3) and on the steps (lr 4e-5)."""
    m = ResNet20(cin); load_into(m, d, "teacher."); m.eval()
    for prm in m.parameters():
        prm.requires_grad_(False)
    blk = m.layers[0]
    with torch.no_grad():
        xb = F.relu(m.bn(m.conv(x[:32]))); yb = blk(xb)
        a1 = F.relu(blk.bn1(blk.conv1(F.relu(m.bn(m.conv(x)))))).max() / 15
        a2 = blk(F.relu(m.bn(m.conv(x)))).max() / 15
    def soft_init(w):
        lo = w.amin((1, 2, 3), keepdim=True).clamp(max=0); hi = w.amax((1, 2, 3), keepdim=True).clamp(min=0)
        sc = ((hi - lo) / 15).clamp(min=1e-8); zp = torch.round(-lo / sc)
        base = torch.floor(w / sc); rest = (w / sc - base).clamp(0.01, 0.99)
        return sc, zp, base, (-torch.log(1.2 / (rest + 0.1) - 1)).requires_grad_()
    w1, w2 = soft_init(blk.conv1.weight), soft_init(blk.conv2.weight)
    s1, s2 = a1.clone().requires_grad_(), a2.clone().requires_grad_()
    def h(v):
        return torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1)
    def wq(q):
        sc, zp, base, v = q
        return sc * (torch.clamp(base + h(v) + zp, 0, 15) - zp)
    def lsq(t, step):
        g = 1.0 / (t.numel() * 15) ** 0.5
        st = step * g + (step - step * g).detach()
        u = t / st
        return torch.clamp(u + (u.round() - u).detach(), 0, 15) * st
    opt_v = torch.optim.Adam([w1[3], w2[3]], 1e-3); opt_s = torch.optim.Adam([s1, s2], 4e-5)
    beta = 20 + 0.5 * (2 - 20)
    def step():
        opt_v.zero_grad(); opt_s.zero_grad()
        t = lsq(F.relu(blk.bn1(F.conv2d(xb, wq(w1), padding=1))), s1)
        t = lsq(F.relu(blk.bn2(F.conv2d(t, wq(w2), padding=1)) + xb), s2)
        loss = ((t - yb) ** 2).sum() * t.size(1) / t.numel()
        reg = sum((1 - (2 * h(q[3]) - 1).abs() ** beta).sum() for q in (w1, w2))
        (loss + 0.01 * reg).backward(); opt_v.step(); opt_s.step()
    return step
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="where dfq-bench --dump wrote bench-CxHxW.safetensors")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sgemm", type=int, default=2048)
    ap.add_argument("--only", default=None)
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True): denormal floats read and written as zero")
    a = ap.parse_args()
    # before any thread exists: the OpenMP workers take the FP mode of the
    # thread that creates them
    if a.flush_denormal and not torch.set_flush_denormal(True):
        print("# bench_torch: this CPU cannot flush denormals", file=sys.stderr)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    def selected(i):
        return a.only is None or a.only in i or fnmatch.fnmatch(i, a.only)

    print(f"# bench_torch: torch {torch.__version__}, threads {torch.get_num_threads()}, reps {a.reps}, "
          f"warm-up {a.warmup} training steps, inputs and weights from {a.dir}, "
          f"denormals {'flushed' if a.flush_denormal else 'kept'}")
    peak = 0.0
    if a.sgemm > 0:
        peak = sgemm_peak(a.sgemm)
        print(f"RESULT side=torch workload=sgemm n={a.sgemm} gflops={peak:.1f}")
    for cin, hw in [(1, 28), (3, 32)]:
        shape = f"{cin}x{hw}x{hw}"
        if cin == 1 and (selected(f"mobilenetv2-train-{shape}") or selected(f"mobilenetv2-infer-{shape}")):
            run_mv2(a, selected, shape, peak)
        ids = [f"resnet20-train-{shape}", f"resnet20-infer-{shape}", f"gdfq-gen-{shape}", f"zeroq-step-{shape}",
               f"recon-step-{shape}"]
        if not any(selected(i) for i in ids):
            continue
        d = load_safetensors(f"{a.dir}/bench-{shape}.safetensors")
        x, y = d["x"], d["y"].long()
        z, yl = d["z"], d["yl"].long()
        m = ResNet20(cin); load_into(m, d, "teacher.")
        g = Generator(size=hw if hw % 4 == 0 else 28, ch=cin); load_into(g, d, "gen.")
        opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
        gopt = torch.optim.Adam(g.parameters(), 1e-3)

        def train():
            opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step()

        def gstep():
            gopt.zero_grad(); m.zero_grad(); F.cross_entropy(m(g(z, yl)), yl).backward(); gopt.step()

        m.train()
        for _ in range(a.warmup):
            train()
        fc = FlopCounter(m); train(); fc.remove()
        if selected(ids[0]):
            report("resnet20-train", shape, 128, timed(train, a.reps), fc.train, peak)
        if selected(ids[1]):
            m.eval()
            with torch.no_grad():
                m(x)
                report("resnet20-infer", shape, 128, timed(lambda: m(x), a.reps), fc.fwd, peak)
            m.train()
        if selected(ids[2]):
            fc = FlopCounter(m, g); gstep(); fc.remove()
            report("gdfq-gen", shape, 32, timed(gstep, a.reps), fc.train, peak)
        if selected(ids[3]):
            m.eval()
            for prm in m.parameters():
                prm.requires_grad_(False)
            zstep, hooks = zeroq_step(m, cin, hw, torch.Generator().manual_seed(1))
            fc = FlopCounter(m); zstep(); fc.remove()
            zstep()  # untimed, as dfq-bench's two
            report("zeroq-step", shape, 64, timed(zstep, a.reps), fc.train, peak)
            for h in hooks:
                h.remove()
        if selected(ids[4]):
            rstep = recon_step(d, cin, x)
            rstep()  # the FLOPs: 2 convs forward and weight gradient, conv2's input gradient
            rstep()
            blk_fwd = 2.0 * 32 * hw * hw * 16 * 16 * 9 * 2
            report("recon-step", shape, 32, timed(rstep, a.reps), blk_fwd * 2.5, peak)


if __name__ == "__main__":
    main()
