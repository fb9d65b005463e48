"""Data preparation throughput: ftune vs TRL on the same generated messages file.

Generates N (default 100,000) conversations of 1-3 user/assistant exchanges with a system prompt on
a third of them, writes them as messages JSONL, and times:
- ftune: `ftune train --dump-data` (read, render through the chat template, tokenize, assistant
  masks, truncation to --seq-len, write the JSONL of ids and labels), wall clock of the process;
- TRL 1.16: SFTTrainer._prepare_dataset (render, tokenize, assistant masks, labels, truncation,
  on a datasets.Dataset built from the same file; dataset_num_proc as given, default 1), wall
  clock of the call (the Dataset.from_list before it is not counted).
Both use the same tokenizer (../shared/tokenizers/smollm-135m when present, else a byte-level BPE
trained here) and the ChatML-like {% generation %} template of tests/peers/test_data_trl.py, with
assistant-only loss. Reports examples/s and tokens/s (tokens = total prepared input ids) and checks
that both produced the same number of tokens.

usage: python bench/bench_data.py [--n 100000] [--threads T] [--skip-trl] [--out results.json]
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "peers"))
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))
SHARED = REPO.parent / "shared" / "tokenizers" / "smollm-135m"
SEQ = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1, help="TRL dataset_num_proc")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from test_data_trl import TEMPLATE, model_folder, sentence  # noqa: E402

    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    subprocess.run([FTUNE, "init", "--arch", "llama", "--size", "tiny", "--vocab", "300", "--out",
                    str(tmp / "base")], check=True, capture_output=True)
    base = json.loads((tmp / "base" / "config.json").read_text())
    if (SHARED / "tokenizer.json").exists():
        cfg = json.loads((SHARED / "tokenizer_config.json").read_text())
        cfg["chat_template"] = TEMPLATE
        mdir = model_folder(tmp, "model", SHARED / "tokenizer.json", cfg, base)
        tok_name = "smollm-135m"
    else:
        from test_tokenizer import train_bytelevel
        r = random.Random(3)
        train_bytelevel(tmp / "bl.json", [sentence(r, 5, 40) for _ in range(3000)])
        mdir = model_folder(tmp, "model", tmp / "bl.json",
                            {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "chat_template": TEMPLATE},
                            base)
        tok_name = "trained byte-level BPE"

    r = random.Random(1)
    data = tmp / "messages.jsonl"
    with open(data, "w") as f:
        for i in range(a.n):
            m = [{"role": "system", "content": sentence(r)}] if i % 3 == 0 else []
            for _ in range(r.randint(1, 3)):
                m.append({"role": "user", "content": sentence(r, 5, 30)})
                m.append({"role": "assistant", "content": sentence(r, 5, 60)})
            f.write(json.dumps({"messages": m}, ensure_ascii=False) + "\n")

    out = tmp / "ftune.jsonl"
    t0 = time.perf_counter()
    subprocess.run([FTUNE, "train", "--model", str(mdir), "--data", str(data), "--seq-len", str(SEQ),
                    "--dump-data", str(out), "--quiet"], check=True)
    t_ftune = time.perf_counter() - t0
    n_ex, n_tok = 0, 0
    for line in open(out):
        n_ex += 1
        n_tok += len(json.loads(line)["input_ids"])
    res = {"examples": a.n, "tokenizer": tok_name, "seq_len": SEQ, "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(),
           "ftune": {"seconds": t_ftune, "examples_per_s": n_ex / t_ftune, "tokens_per_s": n_tok / t_ftune,
                     "tokens": n_tok}}
    print(f"ftune: {n_ex} examples, {n_tok} tokens in {t_ftune:.2f}s: "
          f"{n_ex / t_ftune:,.0f} examples/s, {n_tok / t_ftune:,.0f} tokens/s")

    if not a.skip_trl:
        import datasets
        datasets.disable_progress_bars()
        from datasets import Dataset
        from transformers import AutoTokenizer
        from trl import SFTConfig, SFTTrainer
        tok = AutoTokenizer.from_pretrained(str(mdir))
        ds = Dataset.from_list([json.loads(l) for l in open(data)])
        args = SFTConfig(output_dir=str(tmp / "trl"), max_length=SEQ, assistant_only_loss=True,
                         report_to=[], use_cpu=True, bf16=False, dataset_num_proc=a.threads)
        t = SFTTrainer.__new__(SFTTrainer)
        t._tokenizer, t.completion_only_loss, t.chat_template = tok, False, None
        t0 = time.perf_counter()
        prepared = t._prepare_dataset(ds, tok, args, False, None, "train")
        t_trl = time.perf_counter() - t0
        trl_tok = sum(len(x) for x in prepared["input_ids"])
        res["trl"] = {"seconds": t_trl, "examples_per_s": len(prepared) / t_trl,
                      "tokens_per_s": trl_tok / t_trl, "tokens": trl_tok, "num_proc": a.threads}
        print(f"TRL:   {len(prepared)} examples, {trl_tok} tokens in {t_trl:.2f}s: "
              f"{len(prepared) / t_trl:,.0f} examples/s, {trl_tok / t_trl:,.0f} tokens/s "
              f"(dataset_num_proc={a.threads})")
        print(f"same token count: {trl_tok == n_tok}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
