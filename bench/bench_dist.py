#!/usr/bin/env python3
"""Data-parallel training on this machine: tokens/s with 1 and 2 ranks, time in communication per
step, and per-rank peak RSS with --shard-base at 2 and 3 ranks beside `ftune plan --ranks N`.

    python bench/bench_dist.py [--ftune build/ftune] [--size smollm-135m] [--quant nf4]
                               [--seq 128] [--steps 4]
    python bench/bench_dist.py --8b        (make bench-dist BENCH_DIST_ARGS=--8b)

The model is a random one from `ftune init` (the issue asks for the 8B shape at T 512; a step of
it takes minutes per rank on this shared 2-core machine, so the default is SmolLM-135M's shape
with NF4 weights; the shape is in the results). Every rank runs one thread (--threads 1) and
talks over TCP on loopback, as tests/peers/test_dist.py does. The global batch is the same in
every run (2 x N... : --grad-accum 6 / N micro-batches of 1 x --seq tokens per rank).
`--8b` runs the issue's memory check on the Llama-3.1-8B shape instead: the NF4 (double quant)
checkpoint bench/qlora_8b.py makes (~/.cache/ftune/llama8b-nf4, from tools/make_llama8b.py's
random BF16 weights), T 512, gradient checkpointing in every run (left to the memory check
before loading it would differ between runs), one step of one sequence per rank (--grad-accum 1, so the global
batch is N sequences: the memory per rank does not depend on it), one process at --threads 2
then --shard-base at 2 and 3 ranks of one thread; each shard run's peak is checked against
(one process's peak - weights) + weights / N + two layers + 10%, and `ftune plan --ranks N
--shard-base` against the peak. One step takes many minutes per rank on two shared cores.
Each rank runs under a wrapper that reads its peak RSS (ru_maxrss). Results go to
bench/results/dist-<UTC timestamp>.json, labelled with the CPU; numbers on a machine others use
at the same time are noisy (the ratios within one run are the useful part).
"""

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MPI = ["--oversubscribe", "--bind-to", "none", "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
       "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_WAIT_POLICY="passive")
PEAK = """import os, resource, subprocess, sys
p = subprocess.run(sys.argv[2:])
r = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
open(sys.argv[1] + "." + r, "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(p.returncode)
"""
G = 6  # micro-batches per optimizer step over all ranks


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args, tmp, tag, n, extra):
    out = os.path.join(tmp, tag)
    peak = os.path.join(tmp, "peak.py")
    rss = os.path.join(tmp, "rss-" + tag)
    accum = args.accum_per_rank or G // n
    threads = args.threads_single if n == 1 else 1
    cmd = [sys.executable, peak, rss, args.ftune, "train", "--model", args.model_dir,
           "--data", os.path.join(tmp, "data.jsonl"), "--out", out, "--batch-size", "1",
           "--seq-len", str(args.seq), "--grad-accum", str(accum), "--steps", str(args.steps),
           "--threads", str(threads), "--quiet", "--lora-targets", "all-linear", *args.ckpt,
           *extra]
    if args.quant != "none" and not args.prequantized:
        cmd += ["--quant", args.quant]
    if n > 1:
        cmd = ["mpirun", *MPI, "-np", str(n), *cmd]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if p.returncode:
        sys.exit(f"{tag}: exit {p.returncode}\n{p.stderr[-3000:]}")
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in l]
    later = rows[1:] or rows  # the first step includes the first gathers and page faults
    res = {"ranks": n, "extra": extra, "threads": threads, "grad_accum": accum,
           "wall_s": round(time.time() - t0, 2),
           "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in later), 1),
           "peak_rss_mb": [round(int(open(f"{rss}.{r}").read()) / 1048576, 1) for r in range(n)],
           "losses": [r["loss"] for r in rows]}
    for k in ("comm_s", "comm_wait_s", "gather_wait_s"):
        if k in rows[-1]:
            res[k] = round(statistics.median(r[k] for r in later), 4)
    plan = subprocess.run([args.ftune, "plan", "--model", args.model_dir,
                           "--batch-size", "1", "--seq-len", str(args.seq), "--lora-targets",
                           "all-linear", "--ranks", str(n), *args.ckpt, *extra] +
                          (["--quant", args.quant]
                           if args.quant != "none" and not args.prequantized else []),
                          capture_output=True, text=True)
    if plan.returncode == 0:
        j = json.loads(plan.stdout.strip().splitlines()[-1])
        res["plan_mb"] = round(j["total_bytes"] / 1048576, 1)
        res["plan_weights_mb"] = round(j["weights"] / 1048576, 1)
    return res


def layer_mb(model_dir):
    """The stored bytes of layer 0's linear weights (every piece: codes, absmax, state)."""
    import struct
    total = 0
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        for k, v in header.items():
            if k.startswith("model.layers.0.") and "norm" not in k and "data_offsets" in v:
                total += v["data_offsets"][1] - v["data_offsets"][0]
    return total / 1048576


def check_bound(runs, model_dir):
    """Each --shard-base run against (one process's peak - weights) + weights / N + two layers,
    plus 10%, and its plan against its peak (the issue's memory check)."""
    one = next((r for r in runs if r["ranks"] == 1), None)
    if not one or "plan_weights_mb" not in one:
        return
    w, layer = one["plan_weights_mb"], layer_mb(model_dir)
    for r in runs:
        if not r["extra"]:
            continue
        n, peak = r["ranks"], max(r["peak_rss_mb"])
        r["bound_mb"] = round((max(one["peak_rss_mb"]) - w + w / n + 2 * layer) * 1.10, 1)
        r["within_bound"] = peak <= r["bound_mb"]
        if "plan_mb" in r:
            r["plan_vs_peak"] = round((r["plan_mb"] - peak) / peak, 4)
    return {"weights_mb": w, "layer_mb": round(layer, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ftune", default=os.path.join(REPO, "build", "ftune"))
    ap.add_argument("--size", default="smollm-135m")
    ap.add_argument("--quant", default="nf4")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--model", help="an existing model folder instead of `ftune init --size`")
    ap.add_argument("--accum-per-rank", type=int, default=0,
                    help="--grad-accum of every run (default: 6 micro-batches per step over all)")
    ap.add_argument("--threads-single", type=int, default=1, help="threads of the 1-process run")
    ap.add_argument("--runs", default="np1,np2,np2-shard,np3-shard")
    ap.add_argument("--8b", dest="eight_b", action="store_true",
                    help="the Llama-3.1-8B-shape NF4 memory check (see above)")
    args = ap.parse_args()
    args.prequantized, args.ckpt = False, []
    if args.eight_b:
        args.ckpt = ["--grad-checkpoint"]  # in every run (else memory decides it per run)
        sys.path.insert(0, HERE)
        import qlora_8b
        args.model = os.path.join(qlora_8b.CACHE, "llama8b-nf4")
        if not os.path.exists(os.path.join(args.model, "config.json")):  # make it (and the bf16)
            a8 = argparse.Namespace(layers=32, ftune=args.ftune)
            args.model = qlora_8b.ensure_models(a8)[1]
        args.size, args.seq, args.steps = "llama-3.1-8b shape", 512, 1
        args.accum_per_rank, args.threads_single = 1, 2
        args.runs = "np1,np2-shard,np3-shard"
    if args.model:
        args.prequantized = os.path.exists(os.path.join(args.model, "config.json")) and \
            "quantization_config" in open(os.path.join(args.model, "config.json")).read()
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found (make deps installs openmpi-bin)")
    tmp = tempfile.mkdtemp(prefix="bench-dist-")
    try:
        with open(os.path.join(tmp, "peak.py"), "w") as f:
            f.write(PEAK)
        if not args.model:
            args.model_dir = os.path.join(tmp, "model")
            subprocess.run([args.ftune, "init", "--size", args.size, "--vocab", "512", "--out",
                            args.model_dir], check=True, capture_output=True)
        else:
            args.model_dir = args.model
        vocab = json.load(open(os.path.join(args.model_dir, "config.json")))["vocab_size"]
        rng = random.Random(1)
        with open(os.path.join(tmp, "data.jsonl"), "w") as f:
            for _ in range(G * (args.steps + 1)):
                ids = [rng.randrange(vocab) for _ in range(args.seq)]
                f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
        runs = []
        for tag in args.runs.split(","):
            n = int(tag[2])
            runs.append(run(args, tmp, tag, n, ["--shard-base"] if tag.endswith("shard") else []))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by = {f"np{r['ranks']}" + ("-shard" if r["extra"] else ""): r for r in runs}
    same = by["np2"]["losses"] == by["np2-shard"]["losses"] if "np2" in by and "np2-shard" in by \
        else None
    sizes = check_bound(runs, args.model_dir)
    global_batch = f"1 x {args.seq} x {G}" if not args.accum_per_rank else \
        f"1 x {args.seq} x {args.accum_per_rank} per rank"
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": args.size,
              "quant": args.quant + (" (double quant, bitsandbytes checkpoint)"
                                     if args.prequantized else ""),
              "seq": args.seq, "global_batch": global_batch,
              "threads_per_rank": 1, "threads_single": args.threads_single,
              "note": "shared machine: noisy", "runs": runs, "shard_base_same_losses": same,
              "sizes": sizes, "grad_checkpoint": bool(args.ckpt)}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results",
                        time.strftime("dist-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['cpu']}, {result['cores']} cores; {args.size} {args.quant}, T {args.seq}, "
          f"global batch {global_batch}; 1 thread per rank (shared machine: noisy)")
    print(f"{'run':<18}{'tok/s':>8}{'comm s':>9}{'wait s':>9}{'gather wait':>13}"
          f"{'peak RSS/rank MB':>20}{'plan MB':>9}{'bound MB':>10}")
    for r in runs:
        name = f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''}" + \
            (" shard" if r["extra"] else "")
        print(f"{name:<18}{r['tokens_per_s']:>8}{r.get('comm_s', 0):>9}"
              f"{r.get('comm_wait_s', 0):>9}{r.get('gather_wait_s', 0):>13}"
              f"{max(r['peak_rss_mb']):>20}{r.get('plan_mb', 0):>9}{r.get('bound_mb', ''):>10}")
    print(f"--shard-base same losses as without: {same}; results: {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
