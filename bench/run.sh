#!/usr/bin/env bash
# What `make bench` runs: the training benchmark (bench/bench_train.py), ftune against PyTorch +
# PEFT on the SmolLM-135M shape, printed side by side and saved under bench/results/. Extra
# arguments go to bench_train.py (e.g. --steps 5, --skip-torch). The Python side uses the test venv
# (tools/venv.sh creates it once under ~/.cache/ftune/); the model is made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash tools/venv.sh)
exec "$venv/bin/python" bench/bench_train.py --ftune "${FTUNE_BIN:-$PWD/build/ftune}" "$@"
