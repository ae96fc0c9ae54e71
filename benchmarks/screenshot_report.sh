#!/usr/bin/env bash
# Render a report in headless Chromium (Debian's `chromium`) and save a full-page screenshot,
# to look at it as a reader would. Usage: benchmarks/screenshot_report.sh REPORT.html OUT.png [WIDTH]
set -euo pipefail
report=$(realpath "$1"); out=$(realpath -m "$2"); width=${3:-1280}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size="$width",2400 --screenshot="$out" "file://$report" 2>/dev/null
echo "wrote $out"
