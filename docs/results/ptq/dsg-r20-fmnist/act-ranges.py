#!/usr/bin/env python3
"""Activation ranges (upper ends, from the calibrate phase's checkpoint tensors
quant.<site>.act_range) of several W3A3 min/max runs, as ratios to a reference
run's (real images).  Usage: act-ranges.py REF_RUN RUN... (run directories)."""
import array, json, struct, sys


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


ref = ranges(sys.argv[1])
runs = [(r.rstrip("/").split("/")[-1][:24], ranges(r)) for r in sys.argv[2:]]
print("| site | real hi | " + " | ".join(n for n, _ in runs) + " |")
print("|---|---:|" + "---:|" * len(runs))
for site, hi in ref.items():
    print(f"| {site} | {hi:.3f} | " + " | ".join(f"{r[site] / hi:.2f}" for _, r in runs) + " |")
