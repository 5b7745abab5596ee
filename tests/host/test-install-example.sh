#!/bin/sh
# Installation test (suite host): stage `meson install --destdir`, build the
# example third-party plugin (docs/examples/example-plugin) out of tree with
# its Makefile, i.e. cc + `pkg-config --cflags --libs dfq` against the staged
# dfq.pc, then load it with the staged dfq through $DFQ_PLUGIN_PATH and
# validate a pipeline that uses it.
#   test-install-example.sh MESON BUILD_ROOT SOURCE_ROOT PREFIX LIBDIR BINDIR
set -eu
# Under meson's valgrind setup the wrapper runs this shell, whose own leaks
# would fail the test: skip (the CLI is checked under valgrind separately).
case $(readlink /proc/$$/exe 2>/dev/null) in *memcheck*|*valgrind*)
    echo "skipped under valgrind (dash itself leaks)"; exit 77 ;;
esac
meson=$1 build=$2 source=$3 prefix=$4 libdir=$5 bindir=$6

stage=$(mktemp -d "${TMPDIR:-/tmp}/dfq-install-XXXXXX")
trap 'rm -rf "$stage"' EXIT
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac

echo "# staging the install in $stage"
"$meson" install -C "$build" --destdir "$stage" --no-rebuild --quiet >/dev/null

pc=$stage$libdir/pkgconfig/dfq.pc
test -f "$pc" || { echo "not ok: no $pc"; exit 1; }
grep -q '^plugindir=${libdir}/dfq-1' "$pc" || { echo "not ok: dfq.pc has no plugindir variable"; exit 1; }
# The staged .pc still says prefix=$prefix (where it will live): relocate a
# copy into the stage, as a packager's sysroot would.
mkdir -p "$stage/pkgconfig"
sed "s|^prefix=.*|prefix=$stage$prefix|" "$pc" > "$stage/pkgconfig/dfq.pc"
export PKG_CONFIG_PATH="$stage/pkgconfig"
pkg-config --exists dfq
plugindir=$(pkg-config --variable=plugindir dfq)
echo "# pkg-config: cflags '$(pkg-config --cflags dfq)', plugindir $plugindir"
case $plugindir in */dfq-1) ;; *) echo "not ok: plugindir '$plugindir' does not end in /dfq-1"; exit 1 ;; esac
test -f "$stage$prefix/include/dfq-1/dfq/dfq.h" || { echo "not ok: headers not installed"; exit 1; }

echo "# building the example out of tree"
work=$stage/example
cp -r "$source/docs/examples/example-plugin" "$work"
make -s -C "$work" CFLAGS="-O1 -g -Wall -Wextra -Wno-unused-parameter -Werror"
test -f "$work/libdfq-example.so"

# The staged dfq, its staged libdfq, the example plus the staged plugins
# (tiny-cnn for the pipeline's teacher); nothing from the system. No
# LD_LIBRARY_PATH: the installed dfq finds its libdfq through its RUNPATH
# ($ORIGIN/../<libdir>), wherever the prefix lies.
unset LD_LIBRARY_PATH
export DFQ_PLUGIN_PATH="$work:$plugindir" DFQ_PLUGIN_SYSTEM_PATH=
dfq=$stage$bindir/dfq
resolved_lib=$(ldd "$dfq" | sed -n 's/^[[:space:]]*libdfq\.so\.[0-9]* => \([^ ]*\) .*/\1/p')
case $resolved_lib in
    "$stage"/*) echo "# the staged dfq loads $resolved_lib" ;;
    *) echo "not ok: the staged dfq does not find the staged libdfq (ldd: '$resolved_lib')"; exit 1 ;;
esac
"$dfq" --version

out=$("$dfq" inspect example-l1)
echo "$out" | sed 's/^/# /'
echo "$out" | grep -q "Plugin:       example" || { echo "not ok: example-l1 not loaded from the example plugin"; exit 1; }
echo "$out" | grep -q "Plugin:       example 1.0.0 " || { echo "not ok: inspect does not show the plugin's own version"; exit 1; }
echo "$out" | grep -q "window" || { echo "not ok: inspect does not show the struct param"; exit 1; }
"$dfq" inspect --json example-sum | grep -q '"feature_kind" : "loss"'

if ! "$dfq" inspect tiny-cnn >/dev/null 2>&1; then
    echo "# tiny-cnn is not installed: pipeline part skipped"
    echo "ok"
    exit 0
fi
"$dfq" validate "$work/example.yaml"
resolved=$("$dfq" validate "$work/example.yaml" --print-config)
echo "$resolved" | grep -q "use: example-sum" || { echo "not ok: resolved config lacks example-sum"; exit 1; }
# A bad value in the example's own params is located and refused (exit 2).
set +e
err=$("$dfq" validate "$work/example.yaml" --set 'train.losses[0].window.stop=0' --set 'train.losses[0].reduction=median' 2>&1)
status=$?
set -e
echo "# $err"
test $status -eq 2 || { echo "not ok: expected exit status 2, got $status"; exit 1; }
echo "$err" | grep -q "invalid value 'median' (valid: mean, sum)" || { echo "not ok: unexpected message"; exit 1; }
echo "ok"
