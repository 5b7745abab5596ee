#!/usr/bin/env bash
# Behaviour check between two builds of dfq (e.g. before and after a runner
# change): runs the smoke teacher (dfq train), the smoke GDFQ pipeline on it and
# a shrunk GDFQ W3A3 on the fixture teacher with each build, then compares
# metrics.jsonl (less "seconds" and "phase"), result.json (less wall_seconds)
# and the tensors of every weights file.
#
#   tools/ab-runs.sh BUILD_A BUILD_B [OUT]     e.g. tools/ab-runs.sh /tmp/build-old build
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
a=$(realpath "$1"); b=$(realpath "$2"); out=$(realpath -m "${3:-/tmp/dfq-ab}")
runs () {
    local build=$1 dir=$2
    mkdir -p "$dir"
    export DFQ_BUILD_DIR=$build
    "$here/tools/dfq" train "$here/pipelines/smoke-teacher-tiny.yaml" --run-dir "$dir/teacher" > "$dir/teacher.log" 2>&1
    "$here/tools/dfq" run "$here/pipelines/smoke-gdfq.yaml" --set teacher.weights="$dir/teacher/model.safetensors" \
        --run-dir "$dir/smoke" > "$dir/smoke.log" 2>&1
    "$here/tools/dfq" run "$here/pipelines/gdfq-r20-fmnist-w3a3-fixture.yaml" --set train.epochs=3 --set train.iters=5 \
        --set train.batch=16 --set train.range_epochs=2 --set train.warmup_epochs=1 --set threads=2 --eval-limit 500 \
        --run-dir "$dir/w3a3" > "$dir/w3a3.log" 2>&1
}
rm -rf "$out"
runs "$a" "$out/a"
runs "$b" "$out/b"
python3 - "$out/a" "$out/b" <<'PY'
import hashlib, json, os, sys
a, b = sys.argv[1], sys.argv[2]
def lines(p):
    out = []
    for l in open(p):
        d = json.loads(l); d.pop('seconds', None); d.pop('phase', None); out.append(json.dumps(d))
    return out
def tensors(p):
    d = open(p, 'rb').read(); n = int.from_bytes(d[:8], 'little'); h = json.loads(d[8:8 + n]); h.pop('__metadata__', None)
    return hashlib.sha256(json.dumps(h, sort_keys=True).encode() + d[8 + n:]).hexdigest()
ok = True
for run in ['teacher', 'smoke', 'w3a3']:
    same = lines(f'{a}/{run}/metrics.jsonl') == lines(f'{b}/{run}/metrics.jsonl')
    ok &= same
    print(f'{run}: metrics.jsonl {"identical" if same else "DIFFER"}')
    for f in sorted(os.listdir(f'{a}/{run}')):
        if f.endswith('.safetensors') and f != 'checkpoint.safetensors':
            s = tensors(f'{a}/{run}/{f}') == tensors(f'{b}/{run}/{f}')
            ok &= s
            print(f'  {f}: tensors {"identical" if s else "DIFFER"}')
    ra, rb = (json.load(open(f'{x}/{run}/result.json')) for x in (a, b))
    ra.pop('wall_seconds'); rb.pop('wall_seconds')
    ok &= ra == rb
    print(f'  result.json {"identical" if ra == rb else "DIFFER"}')
print('ALL IDENTICAL' if ok else 'DIFFERENCES')
sys.exit(0 if ok else 1)
PY
