#!/usr/bin/env python3
"""Ratios of the activation ranges (upper ends, from the calibrate phase's checkpoint tensors
quant.<site>.act_range) of several W3A3 min/max runs, as ratios to a reference
run's (real images).  Usage: act-ranges.py REF_RUN RUN... (run directories)."""
import array, json, re, struct, sys


def ranges(run):
    with open(f"{run}/checkpoint.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in head.items():
        if k.startswith("quant.") and k.endswith(".act_range"):
            a = array.array("f")
            o = v["data_offsets"]
            a.frombytes(body[o[0]:o[1]])
            out[k[len("quant."):-len(".act_range")]] = a[1]
    return out


def label(run):
    cfg = open(f"{run}/config.yaml").read()
    synth = re.search(r"^synthesizer:\n  use: (\S+)", cfg, re.M).group(1)
    ref = re.search(r"reference: (\S+)", cfg)
    return f"{synth} ({ref.group(1)} margins)" if synth == "dsg" else synth


ref = ranges(sys.argv[1])
runs = [(label(r), ranges(r)) for r in sys.argv[2:]]
print("| site | real hi (abs) | " + " | ".join(n for n, _ in runs) + " |")
print("|---|---:|" + "---:|" * len(runs))
for site, hi in ref.items():
    print(f"| {site} | {hi:.3f} | " + " | ".join(f"{r[site] / hi:.2f}" for _, r in runs) + " |")
