#!/usr/bin/env python3
"""The fp32 GEMM peak of this machine, over every GEMM kernel family its CPU can run.

    python3 bench/gemm_peaks.py [--bin build/bench/gemm_peak] [--threads 1,2] [--seconds 0.3]

OpenBLAS chooses its kernels once, when the library loads, from the CPU it detects or from the
OPENBLAS_CORETYPE variable, so each kernel family needs its own process: this runs
build/bench/gemm_peak (bench/gemm_peak.c) once with the variable unset (what ftune gets by
default), once per core type that this CPU can execute (from the instruction sets in
/proc/cpuinfo: a core type whose kernels use AVX-512 would die of an illegal instruction on a
CPU without it), and once with oneDNN's dnnl_sgemm when the program was built with it. It prints
each one's figures, then the fastest ("GEMM peak"), which bench_train.py uses as the yardstick.
Stdlib only, so `make bench-gemm` needs no venv.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# OpenBLAS 0.3.21 DYNAMIC_ARCH x86-64 core types (driver/others/dynamic.c's corename list) and the
# instruction sets their sgemm kernels need.
CORETYPES = [("Cooperlake", {"avx512f", "avx512_bf16"}), ("SkylakeX", {"avx512f"}),
             ("Zen", {"avx2", "fma"}), ("Haswell", {"avx2", "fma"}), ("SandyBridge", {"avx"})]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def runnable_coretypes(flags=None):
    flags = cpu_flags() if flags is None else flags
    return [name for name, need in CORETYPES if need <= flags]


def has_dnnl(binary):
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        return "libdnnl" in out
    except OSError:
        return False


def run_one(binary, coretype, backend, threads, seconds, echo=True):
    """One gemm_peak process; its JSON report (or a dict with 'error')."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as t:
        path = t.name
    cmd = [binary, "--backend", backend, "--threads", threads, "--seconds", str(seconds),
           "--json", path]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if echo:
            print(p.stdout.rstrip(), flush=True)
        if p.returncode != 0:
            return dict(backend=backend, coretype_env=coretype,
                        error=f"rc {p.returncode}: {p.stderr.strip()[-300:]}")
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return dict(backend=backend, coretype_env=coretype, error=str(e))
    finally:
        os.unlink(path)


def measure_all(binary, threads="1,2", seconds=0.3, echo=True):
    """Every kernel family: dict(variants=[reports], best=report, flags=...)."""
    flags = cpu_flags()
    variants = [run_one(binary, None, "openblas", threads, seconds, echo)]
    for ct in runnable_coretypes(flags):
        if echo:
            print(flush=True)
        variants.append(run_one(binary, ct, "openblas", threads, seconds, echo))
    if has_dnnl(binary):
        if echo:
            print(flush=True)
        variants.append(run_one(binary, None, "dnnl", threads, seconds, echo))
    ok = [v for v in variants if "peak_gflops" in v]
    best = max(ok, key=lambda v: v["peak_gflops"]) if ok else None
    return dict(variants=variants, best=best,
                isa=sorted(f for f in flags if f.startswith(("avx", "fma", "amx"))),
                skipped_coretypes=[n for n, _ in CORETYPES if n not in runnable_coretypes(flags)])


def summary(res, threads):
    lines = ["", f"{'kernel family':58s}" + "".join(f"{'best ' + t + ' thr':>12s}"
                                                     for t in threads.split(","))]
    for v in res["variants"]:
        if "error" in v:
            lines.append(f"  {v.get('backend')} OPENBLAS_CORETYPE={v.get('coretype_env')}: "
                         f"failed ({v['error']})")
            continue
        row = f"{v['backend'][:58]:58s}"
        for t in threads.split(","):
            g = [r["gflops"] for r in v["results"] if r["threads"] == int(t)]
            row += f"{max(g):12.1f}" if g else f"{'-':>12s}"
        lines.append(row)
    if res["skipped_coretypes"]:
        lines.append(f"not run (this CPU lacks their instructions): "
                     f"{', '.join(res['skipped_coretypes'])}; CPU has {' '.join(res['isa'])}")
    b = res["best"]
    if b:
        lines.append(f"GEMM peak: {b['peak_gflops']:.1f} GFLOP/s ({b['backend']}, "
                     f"{b['peak_shape']}, {b['peak_threads']} threads)")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "bench", "gemm_peak"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--json", help="also write the reports here")
    a = ap.parse_args()
    res = measure_all(a.bin, a.threads, a.seconds)
    print(summary(res, a.threads))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["best"] else 1


if __name__ == "__main__":
    sys.exit(main())
