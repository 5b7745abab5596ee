#!/usr/bin/env bash
# Renders a `dfq report` page to a PNG with headless Chromium: the check that
# report.html displays (tests/sweep/test-sweep.c runs it) and how
# docs/report-example.png is made.
#
#   tools/render-report.sh REPORT.html OUT.png [WIDTH HEIGHT]     (default 1200 1600)
#
# Needs Debian's chromium (apt-get install -y chromium); exits 77 (the "skip"
# status of test harnesses) when none is installed. As root, Chromium needs
# --no-sandbox. The page has no script and no external asset, so nothing is
# fetched; networking and background services are disabled anyway.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH HEIGHT]" >&2
    exit 2
fi
html=$1
png=$2
width=${3:-1200}
height=${4:-1600}
[ -f "$html" ] || { echo "render-report.sh: $html: no such file" >&2; exit 2; }

chrome=
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then chrome=$c; break; fi
done
if [ -z "$chrome" ]; then
    echo "render-report.sh: no Chromium found (apt-get install -y chromium)" >&2
    exit 77
fi

html_abs=$(realpath "$html")
png_abs=$(realpath -m "$png")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$png_abs"
args=(--headless --disable-gpu --disable-background-networking --disable-component-update
      --no-first-run --disable-sync --hide-scrollbars --user-data-dir="$profile"
      --screenshot="$png_abs" --window-size="$width,$height")
if [ "$(id -u)" = 0 ]; then
    args+=(--no-sandbox)
fi
log="$profile/chromium.log"
if ! timeout 180 "$chrome" "${args[@]}" "file://$html_abs" >"$log" 2>&1 || [ ! -s "$png_abs" ]; then
    echo "render-report.sh: $chrome did not write $png_abs:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
echo "$png_abs"
