#!/usr/bin/env python3
"""The DSG vs ZeroQ table from a sweep's run directories (result.json and
config.yaml of each trial): rows = images (zeroq / dsg with real-image
margins / dsg with warm-up margins), columns = quantizer settings; per seed
and mean +- sample std.  Usage: table.py SWEEP_DIR"""
import glob, json, os, re, statistics, sys

rows = {}
for d in sorted(glob.glob(os.path.join(sys.argv[1], "*", "result.json"))):
    run = os.path.dirname(d)
    cfg = open(os.path.join(run, "config.yaml")).read()
    res = json.load(open(d))
    synth = re.search(r"^synthesizer:\n  use: (\S+)", cfg, re.M).group(1)
    if synth == "dsg":
        synth = "dsg, " + re.search(r"reference: (\S+)", cfg).group(1) + " margins"
    bits = re.search(r"w_bits: (\d+)", cfg).group(1)
    rng = re.search(r"act_range: (\S+)", cfg).group(1)
    col = f"W{bits}A{bits} {rng}"
    seed = int(re.search(r"^seed: (\d+)", cfg, re.M).group(1))
    rows.setdefault(synth, {}).setdefault(col, {})[seed] = res["last_top1"]

cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (c.split()[1] != "minmax", -int(c[1])))
print("| images | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
for synth, r in rows.items():
    cells = []
    for c in cols:
        v = r.get(c, {})
        if not v:
            cells.append("")
            continue
        xs = [v[s] for s in sorted(v)]
        m = statistics.mean(xs)
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cells.append(f"**{m:.2f} +- {sd:.2f}** ({', '.join(f'{x:.2f}' for x in xs)})")
    print(f"| {synth} | " + " | ".join(cells) + " |")
