#!/usr/bin/env bash
# Renders the evaluation report of two synthetic runs in headless Chromium and checks the parsed DOM
# (table#summary rows, grids, images, plot points) and a screenshot in which every grid image must
# be painted in its colour (so the relative image paths resolve and the PNGs decode).
# Usage: report_chromium.sh REPORT_TOOL WORK_DIR
set -euo pipefail
tool=$1
work=$2
width=1400
height=2600

# setup installs chromium: a missing browser is a failure, not a skip.
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "FAIL: chromium not found (install it with ./launch/setup)" >&2
  exit 1
fi

rm -rf "$work"
mkdir -p "$work"
"$tool" write "$work"
url="file://$work/report/report.html"
# --no-sandbox: the test runs as root in CI containers, where Chromium's sandbox refuses to start.
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --disable-extensions
       --user-data-dir="$work/profile" --hide-scrollbars --force-device-scale-factor=1
       --virtual-time-budget=10000)

timeout 120 "$browser" "${flags[@]}" --dump-dom "$url" > "$work/dom.html" 2> "$work/chromium-dom.log" || {
  echo "FAIL: chromium --dump-dom failed:" >&2
  cat "$work/chromium-dom.log" >&2
  exit 1
}
"$tool" check-dom "$work/dom.html"

timeout 120 "$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$work/screenshot.png" "$url" \
  > "$work/chromium-shot.log" 2>&1 || {
  echo "FAIL: chromium --screenshot failed:" >&2
  cat "$work/chromium-shot.log" >&2
  exit 1
}
"$tool" check-screenshot "$work/screenshot.png" "$width" "$height"
echo "report rendered: $work/screenshot.png"
