#!/usr/bin/env bash
# Where one ftune training step spends its time: `perf record -g` of `ftune train` on the
# SmolLM-135M shape (random weights, made by bench_train.py / tools/make_model.py) at B x T = 4 x 512 (--bt),
# LoRA r=16 on all seven projections, 2 threads, one step (the model load, under a second here, is
# in the profile too). Prints the top symbols by share of samples, self time, and writes
# bench/results/profile-<UTC timestamp>.txt. The event is cpu-clock (a software timer), because
# this KVM guest has no hardware counters (`perf stat -e instructions true` says "not supported").
#     bash bench/profile.sh [--steps N] [--bt BxT] [extra ftune train options]
set -euo pipefail
cd "$(dirname "$0")/.."
ftune=${FTUNE_BIN:-$PWD/build/ftune}
model=${FTUNE_CACHE:-$HOME/.cache/ftune}/bench-models/smollm-135m-f32
steps=1
bt=4x512
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --bt) bt=$2; shift 2 ;;
    *) break ;;
  esac
done
batch=${bt%x*} seq=${bt#*x}
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
[ -e "$model/config.json" ] || "$(bash tools/venv.sh)/bin/python" tools/make_model.py --shape smollm-135m --out "$model"
work=$(mktemp -d /tmp/ftune-profile-XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 -c "
import json, random
r = random.Random(0)
with open('$work/train.jsonl', 'w') as f:
    for _ in range($batch * $steps):
        f.write(json.dumps({'input_ids': [r.randrange(49152) for _ in range($seq)]}) + '\n')"
perf record -e cpu-clock -F 999 -g -o "$work/perf.data" -- "$ftune" train --model "$model" \
  --data "$work/train.jsonl" --out "$work/run" --lora-r 16 --lora-alpha 32 --lora-dropout 0 \
  --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --batch-size "$batch" \
  --seq-len "$seq" --steps "$steps" --lr 1e-4 --schedule constant --threads 2 --no-shuffle \
  --overwrite --quiet "$@" 2> "$work/perf.err"
mkdir -p bench/results
out=bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "# perf record -e cpu-clock -g: ftune train, SmolLM-135M shape, $bt, $steps step(s), 2 threads"
  echo "# $ftune (tree at $(git rev-parse --short=12 HEAD)); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
  perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.5 \
    -g none 2>/dev/null | grep -v '^$'
} > "$out"
grep -v '^#\s*$' "$out" | head -45
echo "written: $out"
