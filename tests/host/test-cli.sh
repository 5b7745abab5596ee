#!/bin/sh
# The dfq command line (suite host): exit statuses (0 ok, 2 usage or invalid
# pipeline), --help and --version, inspect as text/JSON/Markdown, validate
# with --set and --print-config (round trip), warnings for broken plugins.
# Uses the build tree's dfq and the fixture plugins of tests/fixtures/bad-plugins.
#   test-cli.sh DFQ FIXTURE_DIR
set -u
# Under meson's valgrind setup the wrapper runs this shell, whose own leaks
# would fail the test: skip (the CLI is checked under valgrind separately).
case $(readlink /proc/$$/exe 2>/dev/null) in *memcheck*|*valgrind*)
    echo "1..0 # SKIP under valgrind: dash itself leaks; run dfq under valgrind directly"; exit 0 ;;
esac
dfq=$1 fixtures=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfq-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0

check () { # check DESCRIPTION EXPECTED_STATUS COMMAND... ; output in $tmp/out, $tmp/err
    desc=$1 want=$2
    shift 2
    n=$((n + 1))
    "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    if [ "$got" -eq "$want" ]; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc (exit $got, expected $want)"
        sed 's/^/# /' "$tmp/err"
        failed=$((failed + 1))
    fi
}
expect () { # expect DESCRIPTION FILE PATTERN
    n=$((n + 1))
    if grep -q -- "$3" "$2"; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1: '$3' not in:"
        sed 's/^/# /' "$2"
        failed=$((failed + 1))
    fi
}

export DFQ_PLUGIN_SYSTEM_PATH=
export DFQ_PLUGIN_PATH="$fixtures/libdfq-good.so"

check "--version" 0 "$dfq" --version
expect "--version names the ABI" "$tmp/out" "plugin ABI 1"
check "--help" 0 "$dfq" --help
expect "--help lists validate" "$tmp/out" "validate"
check "no command is a usage error" 2 "$dfq"
check "unknown command" 2 "$dfq" valdate
expect "unknown command suggests" "$tmp/err" "did you mean 'validate'"
check "unknown global option" 2 "$dfq" --bogus inspect
check "validate --help" 0 "$dfq" validate --help
expect "validate --help shows --set" "$tmp/out" "\-\-set"
check "inspect --help" 0 "$dfq" inspect --help
check "unknown subcommand option" 2 "$dfq" validate --bogus
check "validate without a file" 2 "$dfq" validate

check "inspect lists features" 0 "$dfq" inspect
expect "inspect shows the loss" "$tmp/out" "fixture-good .*\[good\]"
expect "inspect counts" "$tmp/out" "2 features from 1 plugin"
check "inspect one feature" 0 "$dfq" inspect fixture-good
expect "inspect shows range and default" "$tmp/out" "range 0 .. 100; default 1.5"
expect "inspect shows enum values" "$tmp/out" "values mean, sum; default mean"
expect "inspect shows the plugin's own version" "$tmp/out" "Plugin:       good 2.3.1-fixture"
check "--taps needs a model" 2 "$dfq" inspect fixture-good --taps
expect "--taps names the models" "$tmp/err" "'fixture-good' is not one (models: fixture-good-model)"
check "--taps of a feature that is no DfqModel fails cleanly" 1 "$dfq" inspect fixture-good-model --taps
expect "--taps says why" "$tmp/err" "is not a built model"
check "--taps and --sites together are a usage error" 2 "$dfq" inspect fixture-good-model --taps --sites
check "inspect --json" 0 "$dfq" inspect --json fixture-good
expect "JSON names the feature" "$tmp/out" '"name" : "fixture-good"'
check "inspect --json (all)" 0 "$dfq" inspect --json
expect "JSON lists plugins with sha256" "$tmp/out" '"sha256" : "[0-9a-f]\{64\}"'
check "inspect --markdown" 0 "$dfq" inspect --markdown
expect "Markdown has a section per feature" "$tmp/out" '### `fixture-good`'
expect "Markdown table" "$tmp/out" '| `scale` | double | `1.5` | 0 .. 100 | Scale of the loss |'
check "inspect --schema" 0 "$dfq" inspect --schema --markdown
expect "schema lists nested keys" "$tmp/out" '`train.optimizer.lr`'
check "inspect unknown feature" 2 "$dfq" inspect fixture-godo
expect "inspect suggests" "$tmp/err" "did you mean 'fixture-good'"
check "--plugin-path after the command" 0 env DFQ_PLUGIN_PATH= "$dfq" inspect --plugin-path "$fixtures/libdfq-good.so" fixture-good

cat > "$tmp/good.yaml" <<'YAML'
version: 1
name: cli
teacher:
  model: {use: fixture-good-model, depth: 3}
train:
  losses: [{use: fixture-good, weight: 2, mode: sum}]
YAML
check "validate a good pipeline" 0 "$dfq" validate "$tmp/good.yaml"
expect "validate summary" "$tmp/out" "valid (teacher fixture-good-model"
check "--print-config" 0 "$dfq" validate "$tmp/good.yaml" --print-config --set seed=5
cp "$tmp/out" "$tmp/printed.yaml"
expect "--set applied" "$tmp/printed.yaml" "^seed: 5"
check "printed config validates" 0 "$dfq" validate "$tmp/printed.yaml" --print-config
n=$((n + 1))
if cmp -s "$tmp/out" "$tmp/printed.yaml"; then echo "ok $n - print-config round trip"; else
    echo "not ok $n - print-config round trip"; diff "$tmp/printed.yaml" "$tmp/out" | sed 's/^/# /'; failed=$((failed + 1)); fi

printf 'version: 1\nteacher: {model: fixture-good-model}\ntrain:\n  itres: 3\n' > "$tmp/bad.yaml"
check "invalid pipeline exits 2" 2 "$dfq" validate "$tmp/bad.yaml"
expect "error located" "$tmp/err" "bad.yaml:4:3: unknown parameter 'itres' in 'train'"
check "bad --set exits 2" 2 "$dfq" validate "$tmp/good.yaml" --set train.epochs=many
expect "--set error names the key once" "$tmp/err" "^--set train.epochs: expected an integer"
check "missing pipeline exits 2" 2 "$dfq" validate "$tmp/nope.yaml"
printf 'version: 1\nname: s\npipeline: good.yaml\nseeds: [1, 2]\n' > "$tmp/sweep.yaml"
check "a sweep file given to validate exits 2" 2 "$dfq" validate "$tmp/sweep.yaml"
expect "validate says it is a sweep file" "$tmp/err" "is a sweep file .*dfq sweep --dry-run"

# Broken plugins on the path: warnings naming each file, the good one works.
check "broken plugins do not stop inspect" 0 env DFQ_PLUGIN_PATH="$fixtures/libdfq-good.so:$fixtures" "$dfq" inspect fixture-good
expect "warning for the ABI mismatch" "$tmp/err" "warning: .*libdfq-abi-mismatch.so: built for plugin ABI"
expect "warning for the missing symbol" "$tmp/err" "warning: .*libdfq-missing-symbol.so: cannot open plugin"

echo "1..$n"
[ "$failed" -eq 0 ]
