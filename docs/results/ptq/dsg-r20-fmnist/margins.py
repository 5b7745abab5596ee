#!/usr/bin/env python3
"""Per-layer margins (delta: means, gamma: spreads) that bns-slack wrote to
<run>/bns-slack-margins.safetensors, side by side.  Usage: margins.py RUN..."""
import array, json, struct, sys


def margins(run):
    with open(f"{run}/bns-slack-margins.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k in ("delta", "gamma"):
        a = array.array("f")
        o = head[k]["data_offsets"]
        a.frombytes(body[o[0]:o[1]])
        out[k] = list(a)
    return head["__metadata__"]["layers"].split(","), head["__metadata__"]["reference"], out


cols = [margins(r) for r in sys.argv[1:]]
layers = cols[0][0]
print("| layer | " + " | ".join(f"delta ({c[1]}) | gamma ({c[1]})" for c in cols) + " |")
print("|---|" + "---:|---:|" * len(cols))
for i, name in enumerate(layers):
    print(f"| {name} | " + " | ".join(f"{c[2]['delta'][i]:.4f} | {c[2]['gamma'][i]:.4f}" for c in cols) + " |")
