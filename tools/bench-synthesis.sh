#!/bin/bash
# synthesis cost: 50 iterations on 64 images, 1 thread, zeroq vs genie-d (with/without swing), alternating, 3 rounds
# usage: tools/bench-synthesis.sh (results under /tmp/synth-bench; docs/performance.md)
cd "$(dirname "$0")/.."
for r in 1 2 3; do
  for p in zeroq-r20-fmnist-w4a4 zeroq-swing-r20-fmnist-w4a4 genie-d-r20-fmnist-w4a4 genie-d-swing-r20-fmnist-w4a4; do
    d=/tmp/synth-bench/$p-$r; rm -rf $d
    nice -n 5 tools/dfq run pipelines/ptq/$p.yaml --set threads=1 --set synthesizer.iters=50 \
      --set synthesize.reuse=false --set phases='[synthesize]' --run-dir $d > /dev/null 2>&1
    s=$(head -1 $d/metrics.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
    echo "$p round $r: $s s for 50 iterations x 64 images; load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
