#!/usr/bin/env python3
"""QLoRA on a Llama-3.1-8B-shape model: peak RSS, seconds per step and tokens/s, ftune beside
PyTorch + PEFT + bitsandbytes.

    python bench/qlora_8b.py [--steps 1] [--seq 2048] [--torch-seq 256] [--layers 32]
                             [--skip-torch] [--skip-ftune] [--ftune build/ftune]
                             [--ftune-extra "--dtype bf16"] [--heads bf16,q8]

The model: tools/make_llama8b.py writes random BF16 weights of the 8B shape (32 layers, hidden
4096, MLP 14336, 8 KV heads, vocabulary 128,256, untied) one tensor at a time into
~/.cache/ftune/llama8b-bf16 (16 GB, not committed); `ftune quantize --quant nf4 --double-quant`
turns it into the checkpoint transformers saves for BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True): ~/.cache/ftune/llama8b-nf4. Both
sides train that same folder.

The run: LoRA r=16 (alpha 32) on all seven projections, batch 1, --seq tokens of random ids,
gradient checkpointing, AdamW, 2 threads. ftune runs twice: the LM head kept in BF16 (as
bitsandbytes keeps it) and with `--quant-lm-head q8`; the loss of each step is reported so the
effect of Q8_0 on the loss shows. PyTorch + PEFT + bitsandbytes (CPU) runs the same model at
--torch-seq tokens (bitsandbytes' CPU path is far slower; the sequence is stated in the output).

Each run is its own process under a wrapper that reads its peak RSS (ru_maxrss), as
bench/bench_train.py does. Results go to bench/results/qlora8b-<UTC timestamp>.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_train import measured  # noqa: E402  (the peak-RSS wrapper)

CACHE = os.path.expanduser("~/.cache/ftune")
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def ensure_models(a):
    suffix = "" if a.layers == 32 else f"-{a.layers}l"
    bf16 = os.path.join(CACHE, "llama8b-bf16" + suffix)
    nf4 = os.path.join(CACHE, "llama8b-nf4" + suffix)
    if not os.path.exists(os.path.join(bf16, "config.json")):
        subprocess.check_call([sys.executable, os.path.join(REPO, "tools", "make_llama8b.py"),
                               "--out", bf16, "--layers", str(a.layers)])
    if not os.path.exists(os.path.join(nf4, "config.json")):
        subprocess.check_call([a.ftune, "quantize", "--model", bf16, "--out", nf4,
                               "--quant", "nf4", "--double-quant"])
    return bf16, nf4


def write_data(path, seq, n, vocab=128256, seed=0):
    import random
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"input_ids": [r.randrange(vocab) for _ in range(seq)]}) + "\n")


def ftune_run(a, model, data, work, extra, name):
    out = os.path.join(work, name)
    cmd = [a.ftune, "train", "--model", model, "--data", data, "--out", out, "--overwrite",
           "--lora-r", "16", "--lora-alpha", "32", "--lora-targets", "all-linear",
           "--batch-size", "1", "--seq-len", str(a.seq), "--steps", str(a.steps),
           "--lr", "1e-4", "--schedule", "constant", "--threads", str(a.threads),
           "--grad-checkpoint", "--grad-checkpoint-dtype", "bf16", "--no-shuffle"] + extra \
        + a.ftune_extra.split()
    rep = measured(cmd, os.path.join(work, name + ".log"), a.timeout)
    steps = []
    mpath = os.path.join(out, "metrics.jsonl")
    if os.path.exists(mpath):
        steps = [json.loads(l) for l in open(mpath) if '"loss"' in l]
    rep["cmd"] = " ".join(cmd)
    rep["losses"] = [s["loss"] for s in steps]
    if len(steps) >= 2:
        dt = (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (len(steps) - 1)
    elif steps:
        dt = steps[0]["elapsed_s"]
    else:
        dt = None
    rep["s_per_step"] = dt
    rep["tokens_per_s"] = a.seq / dt if dt else None
    if rep.get("rc") != 0:
        rep["log_tail"] = open(os.path.join(work, name + ".log")).read()[-2000:]
    return rep


def torch_main(a):
    """Worker: PyTorch + PEFT + bitsandbytes QLoRA steps on the nf4 folder."""
    import torch
    import transformers
    import peft
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.time()
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, device_map="cpu",
                                                              dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    cfg = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=SEVEN,
                          task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    load_s = time.time() - t0
    g = torch.Generator().manual_seed(0)
    times, losses = [], []
    for _ in range(a.steps):
        ids = torch.randint(0, model.config.vocab_size, (1, a.torch_seq), generator=g)
        t = time.time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.time() - t)
        losses.append(loss.item())
    print(json.dumps(dict(load_s=load_s, step_s=times, losses=losses)))
    return 0


def torch_run(a, nf4, work):
    log = os.path.join(work, "torch.log")
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--model", nf4,
           "--steps", str(a.steps), "--torch-seq", str(a.torch_seq), "--threads", str(a.threads)]
    rep = measured(cmd, log, a.timeout)
    lines = [l for l in open(log).read().splitlines() if l.startswith("{")]
    if rep.get("rc") == 0 and lines:
        r = json.loads(lines[-1])
        dt = r["step_s"][-1]
        rep.update(losses=r["losses"], s_per_step=dt, tokens_per_s=a.torch_seq / dt,
                   load_s=r["load_s"])
    else:
        rep["log_tail"] = open(log).read()[-2000:]
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--torch-seq", type=int, default=256)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=4 * 3600)
    ap.add_argument("--ftune", default=os.path.join(REPO, "build", "ftune"))
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-ftune", action="store_true")
    ap.add_argument("--torch-worker", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--ftune-extra", default="", help="more ftune train options, e.g. \"--dtype bf16\"")
    ap.add_argument("--heads", default="bf16,q8", help="which LM-head runs: bf16, q8 or both")
    a = ap.parse_args()
    if a.torch_worker:
        return torch_main(a)
    bf16, nf4 = ensure_models(a)
    work = tempfile.mkdtemp(prefix="ftune-qlora8b-")
    data = os.path.join(work, "data.jsonl")
    write_data(data, a.seq, max(a.steps, 1))
    res = dict(machine=dict(cpu=platform.processor() or open("/proc/cpuinfo").read().split(
        "model name")[1].split("\n")[0].strip(": "), cores=os.cpu_count(),
        load_before=os.getloadavg()), seq=a.seq, torch_seq=a.torch_seq, steps=a.steps,
        layers=a.layers, model=nf4, ftune_extra=a.ftune_extra, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        commit=subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip(), runs={})
    if not a.skip_ftune:
        tag = (" " + a.ftune_extra.strip()) if a.ftune_extra.strip() else ""
        heads = a.heads.split(",")
        if "bf16" in heads:
            res["runs"]["ftune nf4, lm_head bf16" + tag] = ftune_run(a, nf4, data, work, [],
                                                                     "bf16head")
        if "q8" in heads:
            res["runs"]["ftune nf4, lm_head q8_0" + tag] = ftune_run(
                a, nf4, data, work, ["--quant-lm-head", "q8"], "q8head")
    if not a.skip_torch:
        res["runs"][f"PyTorch+PEFT+bnb nf4 (seq {a.torch_seq})"] = torch_run(a, nf4, work)
    res["machine"]["load_after"] = os.getloadavg()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", "qlora8b-" + time.strftime("%Y%m%dT%H%M%SZ",
                                                                    time.gmtime()) + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"{'run':40s} {'peak RSS GB':>12s} {'s/step':>9s} {'tok/s':>8s}  losses")
    for k, r in res["runs"].items():
        rss = r.get("peak_rss_mb")
        print(f"{k:40s} {rss / 1024 if rss else float('nan'):12.2f} "
              f"{r.get('s_per_step') or float('nan'):9.1f} {r.get('tokens_per_s') or float('nan'):8.2f}"
              f"  {r.get('losses')}  rc={r.get('rc')}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
