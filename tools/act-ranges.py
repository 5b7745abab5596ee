#!/usr/bin/python3
"""The calibrated activation ranges of finished runs, side by side.

Reads <run>/checkpoint.safetensors (the quantizer state of a `dfq run`: the
uniform quantizer's '<site>.act_range' = [min, max, aux]) and prints a Markdown
table of each site's upper range (max), averaged over the runs of a column.

  tools/act-ranges.py LABEL=GLOB [LABEL=GLOB ...]

e.g. (docs/methods/dsg.md, "Why DSG loses with percentile ranges"):
  tools/act-ranges.py 'real=runs/ptq-real-mv2-fmnist/s1,real,quantizer3-*' \\
      'zeroq=runs/ptq-dsg-mv2-fmnist/s[23],zeroq,quantizer3-*'
Standard library only (no numpy)."""
import array
import glob
import json
import struct
import sys


def load_ranges(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for key, v in header.items():
            if key == '__metadata__' or not key.endswith('.act_range'):
                continue
            if v['dtype'] != 'F32':
                sys.exit(f'{path}: {key} is {v["dtype"]}, not F32')
            a, b = v['data_offsets']
            f.seek(base + a)
            arr = array.array('f')
            arr.frombytes(f.read(b - a))
            out[key[len('quant.'):-len('.act_range')] if key.startswith('quant.') else key] = list(arr)
        return out


def main(argv):
    if len(argv) < 2 or any('=' not in a for a in argv[1:]):
        sys.exit(__doc__)
    cols = []
    for spec in argv[1:]:
        label, pattern = spec.split('=', 1)
        dirs = sorted(glob.glob(pattern))
        if not dirs:
            sys.exit(f'{label}: no run matches {pattern}')
        cols.append((label, [load_ranges(d + '/checkpoint.safetensors') for d in dirs]))
    sites = list(cols[0][1][0].keys())
    print('| site | ' + ' | '.join(f'{label} (n={len(runs)})' for label, runs in cols) + ' |')
    print('|---|' + '---:|' * len(cols))
    for site in sites:
        cells = []
        for _, runs in cols:
            his = [r[site][1] for r in runs if site in r]
            cells.append(f'{sum(his) / len(his):.3f}' if his else '-')
        print(f'| {site} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main(sys.argv)
