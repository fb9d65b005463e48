#!/usr/bin/env python3
"""Data-parallel training on this machine: tokens/s with 1 and 2 ranks, time in communication per
step, and per-rank peak RSS with --shard-base at 2 and 3 ranks beside `ftune plan --ranks N`.

    python bench/bench_dist.py [--ftune build/ftune] [--size smollm-135m] [--quant nf4]
                               [--seq 128] [--steps 4]

The model is a random one from `ftune init` (the issue asks for the 8B shape at T 512; a step of
it takes minutes per rank on this shared 2-core machine, so the default is SmolLM-135M's shape
with NF4 weights; the shape is in the results). Every rank runs one thread (--threads 1) and
talks over TCP on loopback, as tests/peers/test_dist.py does. The global batch is the same in
every run (2 x N... : --grad-accum 6 / N micro-batches of 1 x --seq tokens per rank).
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
    cmd = [sys.executable, peak, rss, args.ftune, "train", "--model", os.path.join(tmp, "model"),
           "--data", os.path.join(tmp, "data.jsonl"), "--out", out, "--batch-size", "1",
           "--seq-len", str(args.seq), "--grad-accum", str(G // n), "--steps", str(args.steps),
           "--threads", "1", "--quiet", "--lora-targets", "all-linear", *extra]
    if args.quant != "none":
        cmd += ["--quant", args.quant]
    if n > 1:
        cmd = ["mpirun", *MPI, "-np", str(n), *cmd]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if p.returncode:
        sys.exit(f"{tag}: exit {p.returncode}\n{p.stderr[-3000:]}")
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in l]
    later = rows[1:] or rows  # the first step includes the first gathers and page faults
    res = {"ranks": n, "extra": extra, "wall_s": round(time.time() - t0, 2),
           "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in later), 1),
           "peak_rss_mb": [round(int(open(f"{rss}.{r}").read()) / 1048576, 1) for r in range(n)],
           "losses": [r["loss"] for r in rows]}
    for k in ("comm_s", "comm_wait_s", "gather_wait_s"):
        if k in rows[-1]:
            res[k] = round(statistics.median(r[k] for r in later), 4)
    plan = subprocess.run([args.ftune, "plan", "--model", os.path.join(tmp, "model"),
                           "--batch-size", "1", "--seq-len", str(args.seq), "--lora-targets",
                           "all-linear", "--ranks", str(n), *extra] +
                          (["--quant", args.quant] if args.quant != "none" else []),
                          capture_output=True, text=True)
    if plan.returncode == 0:
        res["plan_mb"] = round(json.loads(plan.stdout.strip().splitlines()[-1])["total_bytes"] /
                               1048576, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ftune", default=os.path.join(REPO, "build", "ftune"))
    ap.add_argument("--size", default="smollm-135m")
    ap.add_argument("--quant", default="nf4")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found (make deps installs openmpi-bin)")
    tmp = tempfile.mkdtemp(prefix="bench-dist-")
    try:
        with open(os.path.join(tmp, "peak.py"), "w") as f:
            f.write(PEAK)
        subprocess.run([args.ftune, "init", "--size", args.size, "--vocab", "512", "--out",
                        os.path.join(tmp, "model")], check=True, capture_output=True)
        rng = random.Random(1)
        with open(os.path.join(tmp, "data.jsonl"), "w") as f:
            for _ in range(G * (args.steps + 1)):
                ids = [rng.randrange(512) for _ in range(args.seq)]
                f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
        runs = [run(args, tmp, "np1", 1, []), run(args, tmp, "np2", 2, []),
                run(args, tmp, "np2-shard", 2, ["--shard-base"]),
                run(args, tmp, "np3-shard", 3, ["--shard-base"])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = runs[1]["losses"] == runs[2]["losses"]
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": args.size,
              "quant": args.quant, "seq": args.seq, "global_batch": f"1 x {args.seq} x {G}",
              "threads_per_rank": 1, "note": "shared machine: noisy", "runs": runs,
              "shard_base_same_losses": same}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results",
                        time.strftime("dist-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['cpu']}, {result['cores']} cores; {args.size} {args.quant}, T {args.seq}, "
          f"global batch {G} x 1; 1 thread per rank (shared machine: noisy)")
    print(f"{'run':<18}{'tok/s':>8}{'comm s':>9}{'wait s':>9}{'gather wait':>13}"
          f"{'peak RSS/rank MB':>20}{'plan MB':>9}")
    for r in runs:
        name = f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''}" + \
            (" shard" if r["extra"] else "")
        print(f"{name:<18}{r['tokens_per_s']:>8}{r.get('comm_s', 0):>9}"
              f"{r.get('comm_wait_s', 0):>9}{r.get('gather_wait_s', 0):>13}"
              f"{max(r['peak_rss_mb']):>20}{r.get('plan_mb', 0):>9}")
    print(f"--shard-base same losses as without: {same}; results: {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
