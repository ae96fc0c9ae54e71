#!/usr/bin/env bash
# The README's demo: record -> analyze -> report the paper's model on a 50% split.
set -euo pipefail
cd "$(dirname "$0")/.."
run=trajectories/p97_w256_tf0.5_noise0_seed0.h5
.venv/bin/mechgrok record --train-frac 0.5 --resume
.venv/bin/mechgrok analyze "$run"
.venv/bin/mechgrok report "$run" --html --force
