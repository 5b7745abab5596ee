#!/usr/bin/env bash
# The test command of the README: configure (warnings are errors), build, and run
# every test suite but 'failing'. Usage: tools/test.sh [build-dir] [meson test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Dwerror=true --buildtype=debugoptimized
fi
ninja -C "$build"
meson test -C "$build" --print-errorlogs --num-processes 2 "$@"
