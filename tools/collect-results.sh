#!/bin/bash
# Copies the small files of finished runs (config.yaml, manifest.json,
# metrics.jsonl, result.json, trial.json: no weights) into docs/results/<dest>/,
# where `tools/dfq report docs/results/<dest>` recomputes the tables of
# docs/methods/*.md from them.
#
#   tools/collect-results.sh DEST RUN_DIR...
#   e.g. tools/collect-results.sh gdfq/fixture runs/gdfq-vs-bag-cakd-r20-fmnist/*gdfq*
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
# RUN_DIRs are taken relative to the caller's directory; DEST to the repository.
dest=$(cd "$(dirname "$0")/.." && pwd)/docs/results/$1
shift
for run in "$@"; do
    if ! grep -q '"status" *: *"finished"' "$run/result.json" 2>/dev/null; then
        echo "skipped (not finished): $run" >&2
        continue
    fi
    out="$dest/$(basename "$run")"
    mkdir -p "$out"
    for f in config.yaml manifest.json metrics.jsonl result.json trial.json; do
        [ -f "$run/$f" ] && cp "$run/$f" "$out/"
    done
    echo "$out"
done
