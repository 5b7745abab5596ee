#!/usr/bin/env bash
# The README's quickstart: installs the Debian packages, builds dfqlab, and
# runs a small comparative sweep on real Fashion-MNIST data
# (pipelines/quickstart.yaml): post-training quantization of the ResNet-20
# teacher calibrated on ZeroQ images against real and noise images, at W4A4
# and W3A3, on the real PTQ protocol (6 trials, minutes on 2 cores), then
# `dfq report`: the table on the terminal and the path of the HTML page with
# its plots. Rerunning skips the trials that finished.
# DFQ_BUILD_DIR picks another build directory (default ./build).
# Full-size experiments: docs/sweeps.md, pipelines/sweeps/, docs/methods/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
build="${DFQ_BUILD_DIR:-build}"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" --buildtype=debugoptimized
fi
ninja -C "$build"
export DFQ_BUILD_DIR="$(realpath "$build")"

# -j: up to 4 trials at once, each with cores / jobs threads (docs/sweeps.md)
cores=$(nproc)
jobs=$(( cores < 4 ? cores : 4 ))
echo "== dfq sweep pipelines/quickstart.yaml -j $jobs  (6 trials; the ZeroQ images take a few minutes)"
status=0
tools/dfq sweep pipelines/quickstart.yaml -j "$jobs" --out runs/quickstart || status=$?
echo
echo "== dfq report runs/quickstart"
tools/dfq report runs/quickstart
exit "$status"
