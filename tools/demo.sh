#!/usr/bin/env bash
# make demo: a real LoRA fine-tune with no download and no Python.
# 1. ftune init writes a small random Llama-style model folder (Hugging Face format).
# 2. The shipped text (tools/demo_text.txt) becomes byte-level token ids (id = byte + 3;
#    1 = BOS, 2 = EOS), one JSONL example per line.
# 3. ftune train fine-tunes LoRA adapters on all linear layers; the loss falls as the model
#    learns the text's letters and words. The run folder holds a PEFT adapter, metrics.jsonl and
#    run_config.json.
set -euo pipefail
bin=${1:-build/ftune}
here=$(cd "$(dirname "$0")" && pwd)
out=${FTUNE_DEMO_DIR:-demo-run}
rm -rf "$out"
mkdir -p "$out"
"$bin" init --arch llama --size small --vocab 259 --seed 1 --out "$out/model"
while IFS= read -r line; do
  [ -n "$line" ] || continue
  ids=$(printf '%s' "$line" | od -An -v -tu1 | tr -s ' \n' ' ' | awk '{for (i = 1; i <= NF; i++) printf ", %d", $i + 3}')
  printf '{"input_ids": [1%s, 2]}\n' "$ids"
done < "$here/demo_text.txt" > "$out/data.jsonl"
echo "data: $(wc -l < "$out/data.jsonl") examples in $out/data.jsonl"
"$bin" train --model "$out/model" --data "$out/data.jsonl" --out "$out/run" \
  --lora-targets all-linear --lora-r 16 --lora-alpha 32 --lr 3e-3 --schedule cosine \
  --warmup-steps 5 --steps 80 --batch-size 8 --seed 1
first=$(head -1 "$out/run/metrics.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
last=$(tail -1 "$out/run/metrics.jsonl" | sed -E 's/.*"loss": ([0-9.e+-]+).*/\1/')
echo
echo "demo: loss $first at step 1 -> $last at the last step"
echo "demo: the adapter is in $out/run (adapter_model.safetensors + adapter_config.json, PEFT layout)"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || { echo "demo: the loss did not fall" >&2; exit 1; }
