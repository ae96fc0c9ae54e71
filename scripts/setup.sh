#!/usr/bin/env bash
# Set up mechgrok in ./.venv on a fresh machine (idempotent). torch is pinned here, not in
# pyproject: 2.13.0 is the CPU build this machine kind installs locally and quickly, while an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,dev,docs]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import mechgrok, torch, h5py, xarray, h5netcdf, click, rich, matplotlib, dask.distributed, safetensors, plotly" \
  || { echo "setup.sh: mechgrok's dependencies did not install" >&2; exit 1; }
# The explorer's browser tests drive Debian's Chromium through Playwright (whose own browser
# download is not reachable here); install it when missing and apt can.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "setup.sh: could not install chromium; the browser tests will fail" >&2
fi
