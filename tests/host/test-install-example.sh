#!/bin/sh
# Installation test (suite host): stage `meson install --destdir`, then, as a
# third party would, build every example plugin of docs/examples out of tree
# with its Makefile (cc + `pkg-config --cflags --libs dfq` against the staged
# dfq.pc, nothing else), load each with the staged dfq through
# $DFQ_PLUGIN_PATH, check its version in `dfq inspect`, validate its pipeline,
# run the custom op's own gradient check, and (with Fashion-MNIST installed)
# run every example in its tiny pipeline on a freshly trained tiny teacher,
# checking the result and that the manifest records the plugin's own version.
# The examples are the ones docs/writing-a-plugin.md walks through:
#   example-plugin      logits losses (example-l1, example-sum)
#   attention-transfer  a feature-map loss (taps)
#   lsq-quantizer       a quantizer with learnable parameters
#   custom-op           an op of one's own, with its dfq_gradcheck test
#   test-install-example.sh MESON BUILD_ROOT SOURCE_ROOT PREFIX LIBDIR BINDIR
set -eu
# Under meson's valgrind setup the wrapper runs this shell, whose own leaks
# would fail the test: skip (the CLI is checked under valgrind separately).
case $(readlink /proc/$$/exe 2>/dev/null) in *memcheck*|*valgrind*)
    echo "skipped under valgrind (dash itself leaks)"; exit 77 ;;
esac
meson=$1 build=$2 source=$3 prefix=$4 libdir=$5 bindir=$6

stage=$(mktemp -d "${TMPDIR:-/tmp}/dfq-install-XXXXXX")
trap '[ -n "${DFQ_KEEP_STAGE:-}" ] || rm -rf "$stage"' EXIT
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac
fail () { echo "not ok: $*"; exit 1; }

echo "# staging the install in $stage"
"$meson" install -C "$build" --destdir "$stage" --no-rebuild --quiet >/dev/null

pc=$stage$libdir/pkgconfig/dfq.pc
test -f "$pc" || fail "no $pc"
grep -q '^plugindir=${libdir}/dfq-1' "$pc" || fail "dfq.pc has no plugindir variable"
# The staged .pc still says prefix=$prefix (where it will live): relocate a
# copy into the stage, as a packager's sysroot would.
mkdir -p "$stage/pkgconfig"
sed "s|^prefix=.*|prefix=$stage$prefix|" "$pc" > "$stage/pkgconfig/dfq.pc"
export PKG_CONFIG_PATH="$stage/pkgconfig"
pkg-config --exists dfq
plugindir=$(pkg-config --variable=plugindir dfq)
echo "# pkg-config: cflags '$(pkg-config --cflags dfq)', plugindir $plugindir"
case $plugindir in */dfq-1) ;; *) fail "plugindir '$plugindir' does not end in /dfq-1" ;; esac
for h in dfq.h dfq-custom-op.h dfq-gradcheck.h; do
    test -f "$stage$prefix/include/dfq-1/dfq/$h" || fail "header $h not installed"
done

# The staged dfq, its staged libdfq, the examples plus the staged plugins
# (tiny-cnn, gdfq, ... for the pipelines); nothing from the system. No
# LD_LIBRARY_PATH: the installed dfq finds its libdfq through its RUNPATH
# ($ORIGIN/../<libdir>), wherever the prefix lies.
unset LD_LIBRARY_PATH
dfq=$stage$bindir/dfq
resolved_lib=$(ldd "$dfq" | sed -n 's/^[[:space:]]*libdfq\.so\.[0-9]* => \([^ ]*\) .*/\1/p')
case $resolved_lib in
    "$stage"/*) echo "# the staged dfq loads $resolved_lib" ;;
    *) fail "the staged dfq does not find the staged libdfq (ldd: '$resolved_lib')" ;;
esac
"$dfq" --version

# example dir : plugin file : plugin version : a feature : its pipeline
examples="example-plugin:example:1.0.0:example-l1:example.yaml
attention-transfer:attention:0.1.0:attention-transfer:pipeline.yaml
lsq-quantizer:lsq:0.1.0:example-lsq:pipeline.yaml
custom-op:charbonnier:0.1.0:example-charbonnier-kd:pipeline.yaml"

path=
for e in $examples; do
    dir=${e%%:*}
    echo "# building $dir out of tree"
    cp -r "$source/docs/examples/$dir" "$stage/$dir"
    make -s -C "$stage/$dir" CFLAGS="-O1 -g -Wall -Wextra -Wno-unused-parameter -Werror"
    path=$path$stage/$dir:
done
export DFQ_PLUGIN_PATH="$path$plugindir" DFQ_PLUGIN_SYSTEM_PATH=

for e in $examples; do
    IFS=: read -r dir plugin version feature pipeline <<EOT
$e
EOT
    test -f "$stage/$dir/libdfq-$plugin.so" || fail "$dir: no libdfq-$plugin.so"
    out=$("$dfq" inspect "$feature")
    echo "$out" | sed -n '1,6s/^/# /p'
    echo "$out" | grep -q "Plugin:       $plugin $version " || fail "$feature: not loaded from $plugin $version"
done

# The custom op's own test: dfq_gradcheck on its backward, out of tree.
make -s -C "$stage/custom-op" check | sed 's/^/# /'

# The logits example: params, struct params and located errors.
out=$("$dfq" inspect example-l1)
echo "$out" | grep -q "window" || fail "inspect does not show the struct param"
"$dfq" inspect --json example-sum | grep -q '"feature_kind" : "loss"'
resolved=$("$dfq" validate "$stage/example-plugin/example.yaml" --print-config)
echo "$resolved" | grep -q "use: example-sum" || fail "resolved config lacks example-sum"
set +e
err=$("$dfq" validate "$stage/example-plugin/example.yaml" --set 'train.losses[0].window.stop=0' \
      --set 'train.losses[0].reduction=median' 2>&1)
status=$?
set -e
echo "# $err"
test $status -eq 2 || fail "expected exit status 2, got $status"
echo "$err" | grep -q "invalid value 'median' (valid: mean, sum)" || fail "unexpected message"

# The feature-map example: the tap names it matches, and a pattern that
# matches nothing is a validate error at its file:line:col listing the taps.
"$dfq" inspect tiny-cnn --taps | grep -q "^  bn2:out  *bn-out  *\[1, 16, 14, 14\]" || fail "inspect --taps"
"$dfq" inspect tiny-cnn --sites | grep -q "^  conv1  *weight  *\[8, 1, 3, 3\]" || fail "inspect --sites"
# The same from a pipeline's teacher section, as JSON.
"$dfq" inspect --taps --json --pipeline "$stage/attention-transfer/pipeline.yaml" | tr -d ' \n' |
    grep -q '"model":"tiny-cnn","taps":\[{"name":"input","kind":"input","shape":\[1,1,28,28\]}' ||
    fail "inspect --taps --json --pipeline"
sed "s/taps: \['bn\*:out'\]/taps: ['bn*:output']/" "$stage/attention-transfer/pipeline.yaml" > "$stage/bad-taps.yaml"
line=$(grep -n "bn\*:output" "$stage/bad-taps.yaml" | cut -d: -f1)
set +e
err=$("$dfq" validate "$stage/bad-taps.yaml" 2>&1)
status=$?
set -e
echo "# $err"
test $status -eq 2 || fail "a tap pattern that matches nothing: exit status $status, expected 2"
echo "$err" | grep -q "^$stage/bad-taps.yaml:$line:[0-9]*: train.losses\[1\] (attention-transfer): tap pattern 'bn\*:output'" ||
    fail "the tap error is not located at line $line"
echo "$err" | grep -q "(taps: input, conv1:out, bn1:in, bn1:out, conv2:out, bn2:in, bn2:out, feature, logits)" ||
    fail "the tap error does not list the taps"

for e in $examples; do
    IFS=: read -r dir plugin version feature pipeline <<EOT
$e
EOT
    "$dfq" validate "$stage/$dir/$pipeline" | sed 's/^/# /'
done

# Each example in its tiny pipeline, on a tiny teacher trained here.
set +e
"$dfq" train "$source/pipelines/smoke-teacher-tiny.yaml" --set threads=1 --set train.epochs=1 --set train.iters=20 \
    --eval-limit 200 --run-dir "$stage/teacher" >"$stage/teacher.log" 2>&1
status=$?
set -e
if [ $status -ne 0 ]; then
    if grep -q "not found" "$stage/teacher.log"; then
        echo "# Fashion-MNIST is not installed: the runs are skipped"
        echo "ok"
        exit 0
    fi
    sed 's/^/# /' "$stage/teacher.log"
    fail "training the tiny teacher failed"
fi
teacher=$stage/teacher/model.safetensors
test -f "$teacher" || fail "dfq train wrote no $teacher"
for e in $examples; do
    IFS=: read -r dir plugin version feature pipeline <<EOT
$e
EOT
    run=$stage/run-$dir
    "$dfq" run "$stage/$dir/$pipeline" --set teacher.weights="$teacher" --eval-limit 64 --run-dir "$run" \
        >"$run.log" 2>&1 || { sed 's/^/# /' "$run.log"; fail "$dir: dfq run failed"; }
    grep -q '"status" : "finished"' "$run/result.json" || fail "$dir: the run did not finish"
    tr -d '\n ' < "$run/manifest.json" | grep -q "\"plugin\":\"$plugin\",\"version\":\"$version\"" ||
        fail "$dir: the manifest does not record $plugin $version"
    echo "# $dir: $(tail -n 1 "$run.log")"
done
echo "ok"
