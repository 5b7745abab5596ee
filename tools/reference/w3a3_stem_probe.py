"""Why a W3A3 GDFQ student's accuracy jumps between two levels late in training
(docs/methods/gdfq.md): loads a dfqlab checkpoint into the PyTorch reference
(gdfq_torch.py), counts the weights that sit within 1e-3 of a step from a
rounding boundary of their per-channel 3-bit grid, and perturbs one layer at a
time by 1e-5 of its mean |w|, printing the layers whose perturbation moves
test accuracy by more than 0.5 points. Run with Debian's python3:

    /usr/bin/python3 tools/reference/w3a3_stem_probe.py RUN/checkpoint.safetensors
"""
import os, sys, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gdfq_torch as G
torch.set_num_threads(1)
t = G.load_safetensors(sys.argv[1])
xs, ys = G.test_set()
def fresh():
    s = G.load_student(t, "student.", 3, False); G.load_ranges(s, t); return s
s = fresh()
base = G.evaluate(s, xs, ys)
print("as saved", base, flush=True)
# which weights sit near a rounding boundary of the per-channel 3-bit grid
near = {}
for name, p in s.named_parameters():
    if p.dim() < 2: continue
    flat = p.detach().reshape(p.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
    sc = 7 / torch.clamp(hi - lo, min=1e-8); zp = torch.round(sc * lo) + 4
    v = sc * flat - zp
    d = (v - torch.floor(v) - 0.5).abs()
    near[name] = int((d < 1e-3).sum())
print("weights within 1e-3 step of a rounding boundary:", {k: v for k, v in near.items() if v}, flush=True)
# perturb one layer at a time by a tiny relative amount
torch.manual_seed(0)
for name in [n for n, p in s.named_parameters() if p.dim() >= 2]:
    s2 = fresh()
    with torch.no_grad():
        p = dict(s2.named_parameters())[name]
        p.add_(p.abs().mean() * 1e-5 * torch.randn_like(p))
    a = G.evaluate(s2, xs, ys)
    if abs(a - base) > 0.5:
        print(f"perturb {name} by 1e-5 relative: {a:.2f}", flush=True)
print("done", flush=True)
