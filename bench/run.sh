#!/usr/bin/env bash
# What `make bench-train` runs: the training benchmark (bench/bench_train.py), ftune against
# PyTorch + PEFT on the SmolLM-135M and Qwen3-0.6B shapes, printed as a table and saved under
# bench/results/. BENCH_QUICK=1: SmolLM-135M at 4x512 only. Extra arguments go to bench_train.py
# (e.g. --configs ftune-fp32,torch-fp32 or --shapes qwen3-0.6b; --estimate: how long, from earlier
# results); `run.sh --merge A B ...` joins per-shape results files into one, `run.sh --show A`
# prints a stored file's table, `run.sh --compare [A B]` compares two results files;
# `run.sh --generate ...`: the generation benchmark (bench/bench_generate.py, make bench-generate).
# The Python side uses the test venv (tools/venv.sh creates it once under ~/.cache/ftune/); the
# models are made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--compare" ]; then
  shift
  exec python3 bench/bench_train.py --compare "$@"
fi
venv=$(bash tools/venv.sh)
if [ "${1:-}" = "--generate" ]; then
  shift
  make -s build/ftune build/bench/membw # run directly, not through make bench-generate
  exec "$venv/bin/python" bench/bench_generate.py --ftune "${FTUNE_BIN:-$PWD/build/ftune}" "$@"
fi
exec "$venv/bin/python" bench/bench_train.py --ftune "${FTUNE_BIN:-$PWD/build/ftune}" "$@"
