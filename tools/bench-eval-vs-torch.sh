#!/bin/bash
# `dfq eval` of the MobileNetV2 fixture against PyTorch evaluating the same
# file on the same images, side by side in one run (issue 15,
# docs/performance.md): wall time of the whole process and its peak RSS.
#
#   tools/bench-eval-vs-torch.sh [-C BUILDDIR] [-t THREADS] [-n IMAGES] [-b "BATCH ..."]
#
# Defaults: build-perf, 2 threads, the first 1000 test images, batches 100 and
# 500 (the figures of the issue). -n 0 evaluates all 10,000. As
# tools/bench-vs-torch.sh, both sides run with OMP_WAIT_POLICY=passive and, on
# an AVX-512 CPU, OPENBLAS_CORETYPE=SkylakeX. Needs ../shared/fixtures.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build="$here/build-perf"
threads=2
images=1000
batches="100 500"
while getopts "C:t:n:b:h" opt; do
  case $opt in
    C) build=$(cd "$OPTARG" && pwd) ;;
    t) threads=$OPTARG ;;
    n) images=$OPTARG ;;
    b) batches=$OPTARG ;;
    h|*) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
if [[ " $flags " == *" avx512f "* && " $flags " == *" avx512bw "* && " $flags " == *" avx512dq "* && " $flags " == *" avx512vl "* ]]; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=$threads
export DFQ_PLUGIN_PATH="$build/plugins"
pipeline="$here/pipelines/eval/mobilenetv2-fmnist-fixture.yaml"
limit=()
[ "$images" -gt 0 ] && limit=(--limit "$images")

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc --all) cores"
echo "# threads $threads, images ${images/#0/10000}, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| side | batch | top-1 % | wall s | img/s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for b in $batches; do
  out=$( { /usr/bin/time -f "TIME %e %M" "$build/core/dfq" eval "$pipeline" --set "threads=$threads" \
           --set "eval.batch=$b" "${limit[@]}" ; } 2>&1 )
  top1=$(echo "$out" | sed -n 's/^top-1 \([0-9.]*\) %.*/\1/p')
  read -r _ wall rss <<<"$(echo "$out" | grep '^TIME')"
  n=$(echo "$out" | sed -n 's/.*(\([0-9]*\) images.*/\1/p')
  echo "| dfqlab | $b | $top1 | $wall | $(awk "BEGIN{printf \"%.0f\", $n/$wall}") | $((rss / 1024)) |"
  out=$( { /usr/bin/time -f "TIME %e %M" /usr/bin/python3 "$here/tools/eval_torch_fixture.py" --batch "$b" \
           --threads "$threads" "${limit[@]}" ; } 2>&1 )
  top1=$(echo "$out" | sed -n 's/.* top1=\([0-9.]*\) .*/\1/p')
  read -r _ wall rss <<<"$(echo "$out" | grep '^TIME')"
  n=$(echo "$out" | sed -n 's/.* images=\([0-9]*\) .*/\1/p')
  echo "| PyTorch | $b | $top1 | $wall | $(awk "BEGIN{printf \"%.0f\", $n/$wall}") | $((rss / 1024)) |"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
