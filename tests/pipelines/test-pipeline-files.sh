#!/bin/sh
# Every file under pipelines/ runs as it is from the repository root (suite
# pipelines): a pipeline validates (includes, features, tap patterns); a sweep
# file (top-level `pipeline:`) passes `dfq sweep --dry-run`; a teacher.weights
# file inside the repository exists, unless it lies under runs/ (made by
# `dfq train`), and then the pipeline's comments say the `dfq train` command
# that makes it; one outside it (the shared fixture teachers) is skipped where
# it is absent.
#   test-pipeline-files.sh DFQ SOURCE_ROOT
set -u
case $(readlink /proc/$$/exe 2>/dev/null) in *memcheck*|*valgrind*)
    echo "1..0 # SKIP under valgrind: dash itself leaks"; exit 0 ;;
esac
dfq=$1
cd "$2" || exit 1
root=$(pwd -P)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfq-pipeline-files-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
ok () { n=$((n + 1)); echo "ok $n - $1"; }
not_ok () { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; sed 's/^/# /' "$tmp/err"; }

for f in $(find pipelines -name '*.yaml' | sort); do
    if grep -q '^pipeline:' "$f"; then
        if "$dfq" sweep --dry-run "$f" >"$tmp/out" 2>"$tmp/err"; then ok "$f: dfq sweep --dry-run"; else not_ok "$f: dfq sweep --dry-run"; fi
        continue
    fi
    if ! "$dfq" validate "$f" --print-config >"$tmp/out" 2>"$tmp/err"; then
        not_ok "$f: dfq validate"
        continue
    fi
    weights=$(sed -n 's/^  weights: //p' "$tmp/out" | head -n 1)
    case $weights in
        ""|null) ok "$f: valid (no teacher weights: trains one)" ;;
        */runs/*)
            if grep -q "dfq train" "$f"; then
                ok "$f: valid; says how to make its teacher $weights"
            else
                echo "teacher $weights is made by dfq train, but the file does not say how" >"$tmp/err"
                not_ok "$f: names how to make its teacher"
            fi ;;
        "$root"/*)
            if [ -f "$weights" ]; then ok "$f: valid; teacher $weights exists"
            else echo "missing: $weights" >"$tmp/err"; not_ok "$f: teacher weights exist"; fi ;;
        *)
            # Outside the repository (the shared fixture teachers next to the
            # checkout): there on the project's machines, maybe not elsewhere.
            if [ -f "$weights" ]; then ok "$f: valid; teacher $weights exists"
            else n=$((n + 1)); echo "ok $n - $f: valid # SKIP external teacher $weights is not on this machine"; fi ;;
    esac
done
echo "1..$n"
[ "$failed" -eq 0 ]
