#!/usr/bin/env python3
"""Training benchmark: tokens/s and peak RSS of `ftune train` and of the same run in PyTorch + PEFT.

    python bench/bench_train.py [--steps 3] [--ftune build/ftune] [--skip-torch] [--skip-ftune]

The run (issue 3): SmolLM-135M shape (Llama, hidden 576, MLP 1536, 30 layers, 9 heads, 3 kv heads,
vocabulary 49152, tied embeddings) with random weights made by tools/make_model.py and cached under
~/.cache/ftune/bench-models/; LoRA r=16 (alpha 32, dropout 0) on all seven projections; batch 4 x
256 tokens of random ids; fp32; 2 threads (torch.set_num_threads(2), ftune --threads 2); AdamW,
clipping at 1.0, constant lr. Each side does one warm-up step and then --steps timed steps.

How it measures: each side runs in its own subprocess, started by a small wrapper process (this
script with --measure) that waits for it and reads resource.getrusage(RUSAGE_CHILDREN).ru_maxrss,
so the peak RSS is that run's alone (the PyTorch figure includes the Python interpreter and
torch's libraries, as a user would see it). tokens/s counts all B x T input tokens of the timed
steps over their time: for ftune the difference of elapsed_s in RUN/metrics.jsonl between the end
of the warm-up step and the end of the last step; for PyTorch the same interval timed around the
step loop (forward, backward, clip, AdamW step). An estimated GFLOP/s uses the usual LoRA step cost
(4 x (non-embedding parameters + V x C) + 4 x L x T x C FLOPs per token; docs in DESIGN.md).

It prints the machine (lscpu model name, cores, load average), the GEMM core OpenBLAS picks in this
environment (openblas_get_corename() of the library ftune links) and PyTorch's BLAS, then the two
runs side by side, and writes everything to bench/results/train-<UTC timestamp>.json. Beside
tokens/s it prints tokens per CPU-second of each whole run (load, warm-up and timed steps), which
moves less than wall-clock figures when other processes share the cores, and the load average
before and after.
"""

import argparse
import ctypes
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- the wrapper: run one command, report its peak RSS ----------------------------------------

def measure_main(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps(dict(rc=rc, peak_rss_mb=ru.ru_maxrss / 1024.0, wall_s=time.time() - t0,
                          user_s=ru.ru_utime, sys_s=ru.ru_stime)))
    return 0


def measured(cmd, log, timeout):
    """Run cmd under the wrapper; return its report (rc, peak_rss_mb, wall_s, ...)."""
    w = [sys.executable, os.path.abspath(__file__), "--measure", "--log", log, "--"] + cmd
    # Its own session, so that on a timeout the wrapper and the run go down together.
    p = subprocess.Popen(w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return dict(rc="timeout", peak_rss_mb=None, wall_s=timeout)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return dict(rc=f"wrapper failed: {err[-500:]}", peak_rss_mb=None, wall_s=None)


# --- the PyTorch + PEFT worker --------------------------------------------------------------

def torch_main(a):
    import torch
    torch.set_num_threads(a.threads)
    import transformers
    from peft import LoraConfig, get_peft_model
    model = transformers.AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, attn_implementation=a.attn)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=SEVEN, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    with open(a.data) as f:
        rows = [json.loads(line)["input_ids"] for line in f]
    B = a.batch
    marks, cpu = [], []
    for step in range(a.warmup + a.steps):
        x = torch.tensor(rows[step * B:(step + 1) * B])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        cpu.append(time.process_time())
        print(json.dumps(dict(step=step + 1, loss=float(loss.detach()))), flush=True)
    timed = marks[-1] - marks[a.warmup - 1]
    print("RESULT " + json.dumps(dict(tokens_per_s=a.steps * B * a.seq / timed, timed_s=timed,
                                      step_s=timed / a.steps,
                                      timed_cpu_s=cpu[-1] - cpu[a.warmup - 1])), flush=True)
    return 0


# --- machine and library facts ----------------------------------------------------------------

def machine():
    info = dict(model_name=platform.processor() or "?", cpus=os.cpu_count(),
                loadavg=os.getloadavg())
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["model_name"] = v.strip()
            if k.strip() == "Core(s) per socket":
                info["cores_per_socket"] = int(v)
            if k.strip() == "Socket(s)":
                info["sockets"] = int(v)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def openblas_core(binary):
    """The kernel core OpenBLAS selects in this environment, from the library the binary links."""
    lib = None
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "blas" in line and "=>" in line:
                lib = line.split("=>")[1].split("(")[0].strip()
                break
    except OSError:
        pass
    res = dict(library=lib, coretype_env=os.environ.get("OPENBLAS_CORETYPE"))
    try:
        so = ctypes.CDLL(lib or "libopenblas.so.0")
        so.openblas_get_corename.restype = ctypes.c_char_p
        so.openblas_get_config.restype = ctypes.c_char_p
        res["corename"] = so.openblas_get_corename().decode()
        res["config"] = so.openblas_get_config().decode()
    except (OSError, AttributeError) as e:
        res["corename"] = f"unknown ({e})"
    return res


def torch_blas(python):
    code = ("import torch,re;c=torch.__config__.show();"
            "m=re.search(r'BLAS_INFO=(\\w+)',c);print(torch.__version__, m.group(1) if m else '?',"
            "'mkldnn' if torch.backends.mkldnn.is_available() else '')")
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=120).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def flops_per_token(cfg, T):
    C, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], \
        cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // H
    per_layer = C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * I
    return 4 * (L * per_layer + V * C) + 4 * L * T * C


# --- the benchmark ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--shape", default="smollm-135m")
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation for PyTorch")
    ap.add_argument("--ftune", default=os.environ.get("FTUNE_BIN",
                                                      os.path.join(REPO, "build", "ftune")))
    ap.add_argument("--timeout", type=int, default=240, help="seconds per side")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-ftune", action="store_true")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    # internal modes
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        return measure_main(a.cmd, a.log)
    if a.worker == "torch":
        return torch_main(a)

    sys.path.insert(0, os.path.join(REPO, "tools"))
    from make_model import make_model
    cache = os.path.join(os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune")),
                         "bench-models", f"{a.shape}-f32")
    print(f"model: {a.shape} random weights at {cache}", flush=True)
    make_model(a.shape, cache, "f32", 0)
    with open(os.path.join(cache, "config.json")) as f:
        cfg = json.load(f)

    work = tempfile.mkdtemp(prefix="ftune-bench-")
    import random
    rng = random.Random(0)
    data = os.path.join(work, "train.jsonl")
    with open(data, "w") as f:
        for _ in range((a.warmup + a.steps) * a.batch):
            f.write(json.dumps({"input_ids": [rng.randrange(cfg["vocab_size"])
                                              for _ in range(a.seq)]}) + "\n")

    mach = machine()
    blas = openblas_core(a.ftune)
    tblas = torch_blas(sys.executable)
    fpt = flops_per_token(cfg, a.seq)
    print(f"machine: {mach['model_name']}, {mach['cpus']} cpus"
          f"{', %.0f GB' % mach['mem_total_gb'] if 'mem_total_gb' in mach else ''}, "
          f"load average {mach['loadavg'][0]:.2f} {mach['loadavg'][1]:.2f} {mach['loadavg'][2]:.2f}")
    print(f"openblas: core {blas.get('corename')} ({blas.get('library')}; "
          f"OPENBLAS_CORETYPE={blas.get('coretype_env') or 'unset'})")
    print(f"torch: {tblas}")
    print(f"run: B={a.batch} T={a.seq} LoRA r={a.rank} alpha={2 * a.rank} on {','.join(SEVEN)}, "
          f"fp32, {a.threads} threads, {a.warmup} warm-up + {a.steps} timed steps; "
          f"~{fpt / 1e6:.0f} MFLOP/token", flush=True)

    results = dict(time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=mach,
                   openblas=blas, torch=tblas, shape=a.shape, batch=a.batch, seq=a.seq,
                   rank=a.rank, threads=a.threads, warmup=a.warmup, steps=a.steps,
                   flops_per_token=fpt, runs={})

    if not a.skip_ftune:
        run = os.path.join(work, "run")
        cmd = [a.ftune, "train", "--model", cache, "--data", data, "--out", run,
               "--lora-r", str(a.rank), "--lora-alpha", str(2 * a.rank), "--lora-dropout", "0",
               "--lora-targets", ",".join(SEVEN), "--batch-size", str(a.batch),
               "--seq-len", str(a.seq), "--steps", str(a.warmup + a.steps),
               "--lr", "1e-4", "--schedule", "constant", "--max-grad-norm", "1.0",
               "--threads", str(a.threads), "--no-shuffle", "--overwrite"]
        log = os.path.join(work, "ftune.log")
        print("running ftune train ...", flush=True)
        r = measured(cmd, log, a.timeout)
        r["log_tail"] = open(log).read()[-1500:] if os.path.exists(log) else ""
        try:
            with open(os.path.join(run, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            rows = [x for x in rows if "eval_loss" not in x]
            timed = rows[-1]["elapsed_s"] - rows[a.warmup - 1]["elapsed_s"]
            r["tokens_per_s"] = a.steps * a.batch * a.seq / timed
            r["timed_s"] = timed
            r["reported_tokens_per_s"] = [x.get("tokens_per_s") for x in rows]
            r["losses"] = [x.get("loss") for x in rows]
        except (OSError, ValueError, IndexError, KeyError) as e:
            r["error"] = f"no usable metrics.jsonl: {e}"
        results["runs"]["ftune"] = r

    if not a.skip_torch:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "torch", "--model", cache,
               "--data", data, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--batch", str(a.batch), "--seq", str(a.seq), "--threads", str(a.threads),
               "--rank", str(a.rank), "--attn", a.attn]
        log = os.path.join(work, "torch.log")
        print(f"running PyTorch + PEFT (attn {a.attn}) ...", flush=True)
        r = measured(cmd, log, a.timeout)
        text = open(log).read() if os.path.exists(log) else ""
        for line in text.splitlines():
            if line.startswith("RESULT "):
                r.update(json.loads(line[7:]))
        if "tokens_per_s" not in r:
            r["error"] = "no result"
            r["log_tail"] = text[-1500:]
        results["runs"]["pytorch+peft"] = r

    results["loadavg_end"] = os.getloadavg()
    print(f"\nload average at the end {results['loadavg_end'][0]:.2f} (the machine has "
          f"{mach['cpus']} cpus; a load above that means the runs shared their cores)")
    # tokens per CPU-second of the whole run (load, warm-up and timed steps): less sensitive than
    # tokens/s to other processes sharing the cores, since waiting for a core costs no CPU time.
    n_all = (a.warmup + a.steps) * a.batch * a.seq
    print(f"{'':16s}{'tokens/s':>10s}{'GFLOP/s':>9s}{'peak RSS':>11s}{'wall':>8s}{'CPU':>8s}"
          f"{'tok/CPU-s':>11s}")
    for name, r in results["runs"].items():
        tps = r.get("tokens_per_s")
        rss = r.get("peak_rss_mb")
        wall = r.get("wall_s")
        cpu_s = (r.get("user_s") or 0) + (r.get("sys_s") or 0)
        r["tokens_per_cpu_s_whole_run"] = n_all / cpu_s if cpu_s and r.get("rc") == 0 else None
        tpc = r["tokens_per_cpu_s_whole_run"]
        print(f"{name:16s}{(f'{tps:.1f}' if tps else '-'):>10s}"
              f"{(f'{tps * fpt / 1e9:.1f}' if tps else '-'):>9s}"
              f"{(f'{rss:.0f} MB' if rss else '-'):>11s}"
              f"{(f'{wall:.0f} s' if isinstance(wall, (int, float)) else '-'):>8s}"
              f"{(f'{cpu_s:.0f} s' if cpu_s else '-'):>8s}"
              f"{(f'{tpc:.1f}' if tpc else '-'):>11s}"
              + ("" if r.get("rc") == 0 and tps else f"   (failed: rc {r.get('rc')}"
                 f"{'; ' + r['error'] if 'error' in r else ''})"))
        if r.get("rc") != 0 and r.get("log_tail"):
            print("    " + r["log_tail"].strip().replace("\n", "\n    ")[-800:])
    os.makedirs(a.results, exist_ok=True)
    out = os.path.join(a.results, time.strftime("train-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwritten: {os.path.relpath(out, REPO)}")
    ok = all(r.get("rc") == 0 and r.get("tokens_per_s") for r in results["runs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
