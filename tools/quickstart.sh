#!/usr/bin/env bash
# The README's quickstart: installs the Debian packages, builds dfqlab, and runs
# a small end-to-end demonstration on real Fashion-MNIST data:
#   1. evaluates the shipped ResNet-20 teacher (data/teachers/, or the fixture of
#      ../shared when the shipped one is not there yet) on the test split;
#   2. trains a tiny CNN teacher for a few hundred steps (dfq train);
#   3. quantizes it to W4A4 with GDFQ (dfq run pipelines/smoke-gdfq.yaml).
# Full-size experiments: see docs/methods/gdfq.md and data/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=debugoptimized
fi
ninja -C build
mkdir -p runs

teacher=data/teachers/resnet20-fmnist.safetensors
[ -f "$teacher" ] || teacher=../shared/fixtures/resnet20-fmnist-torch.safetensors
if [ -f "$teacher" ]; then
    echo "== 1. the ResNet-20 teacher $teacher on the Fashion-MNIST test split"
    tools/dfq eval pipelines/gdfq-r20-fmnist-w4a4.yaml --weights "$teacher"
fi
echo "== 2. a tiny CNN teacher trained by dfq train"
tools/dfq train pipelines/smoke-teacher-tiny.yaml --run-dir runs/quickstart-teacher --restart
echo "== 3. GDFQ W4A4 on it (dfq run)"
tools/dfq run pipelines/smoke-gdfq.yaml --set teacher.weights=runs/quickstart-teacher/model.safetensors \
    --run-dir runs/quickstart-gdfq --restart
echo "== run directory: runs/quickstart-gdfq (config.yaml, manifest.json, metrics.jsonl, result.json, weights)"
