#!/usr/bin/env python3
"""Training benchmark: one LoRA training step in ftune and in PyTorch + PEFT, on real model shapes.

    python bench/bench_train.py [--configs ...] [--shapes ...] [--bt 4x512,1x2048] [--quick]
    python bench/bench_train.py --compare [A.json B.json]

The runs (issue 7): the SmolLM-135M and Qwen3-0.6B shapes with random weights (tools/make_model.py,
cached under ~/.cache/ftune/bench-models/), at B x T = 4 x 512 and 1 x 2048 random token ids per
step, LoRA r=16 (alpha 32, dropout 0) on all seven projections, 2 threads, AdamW, clipping at 1.0,
constant lr. Each configuration runs in its own process: ftune fp32 (and ftune bf16 when
`ftune train --help` lists --dtype), PyTorch + PEFT fp32 eager with sdpa attention, the same under
bf16 autocast, and the fp32 model under torch.compile (its compile, the warm-up step, is given
--compile-budget seconds; past that the run is reported as failed). Each does --warmup steps, then
--steps timed steps.

First it measures the machine's fp32 GEMM peak with every kernel family the CPU can run
(bench/gemm_peaks.py, build/bench/gemm_peak); each run's achieved GFLOP/s is reported as a fraction
of the best. GFLOP/s counts the work of the step, not what an implementation chooses to do
(bench/README.md has the formula): 4 x (non-embedding parameters + V x C) + 4 x L x T x H x D
FLOPs per token.

How it measures: each run is a subprocess of a small wrapper (this script with --measure) that
waits for it and reads getrusage(RUSAGE_CHILDREN).ru_maxrss, so the peak RSS is that run's alone
(for PyTorch it includes the interpreter and torch's libraries, as a user sees it). tokens/s is
B x T x timed steps over their wall time: ftune's elapsed_s in RUN/metrics.jsonl from the end of
the warm-up to the end of the last step; PyTorch's the same interval timed around its loop.
tokens per CPU-second of the whole process (load, warm-up, steps) moves less than tokens/s when
other work shares the cores; the load average before and after every run is stored with it.

Everything goes to bench/results/train-<UTC timestamp>.json (one file per benchmark run);
--compare prints the ratio of two such files configuration by configuration and flags a
tokens/s regression of more than 5%. BENCH_QUICK=1 (or --quick): only SmolLM-135M at 4 x 512.
"""

import argparse
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
sys.path.insert(0, HERE)
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_CONFIGS = ["ftune-fp32", "ftune-bf16", "torch-fp32", "torch-bf16-autocast",
               "torch-compile-fp32"]
REGRESSION = 0.05  # --compare flags tokens/s lower than the old run by more than this


# --- the wrapper: run one command, report its peak RSS ----------------------------------------

def measure_main(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps(dict(rc=rc, peak_rss_mb=ru.ru_maxrss / 1024.0, wall_s=time.time() - t0,
                          user_s=ru.ru_utime, sys_s=ru.ru_stime)))
    return 0


def measured(cmd, log, timeout, env=None):
    """Run cmd under the wrapper; return its report (rc, peak_rss_mb, wall_s, ...)."""
    w = [sys.executable, os.path.abspath(__file__), "--measure", "--log", log, "--"] + cmd
    # Its own session, so that on a timeout the wrapper and the run go down together.
    p = subprocess.Popen(w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return dict(rc="timeout", peak_rss_mb=None, wall_s=timeout,
                    error=f"killed after the {timeout} s time limit")
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return dict(rc=f"wrapper failed: {err[-500:]}", peak_rss_mb=None, wall_s=None)


# --- the PyTorch + PEFT worker --------------------------------------------------------------

class CompileBudget(Exception):
    pass


def torch_main(a):
    import torch
    torch.set_num_threads(a.threads)
    import transformers
    from peft import LoraConfig, get_peft_model
    model = transformers.AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=SEVEN, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    fwd = model
    if a.worker == "torch-compile-fp32":
        fwd = torch.compile(model)
    autocast = a.worker == "torch-bf16-autocast"
    with open(a.data) as f:
        rows = [json.loads(line)["input_ids"] for line in f]
    B = a.batch
    marks, cpu = [time.perf_counter()], [time.process_time()]
    # For the parent: if it has to stop this run, the time since here bounds the step time.
    print("LOADED " + json.dumps(dict(wall=time.time())), flush=True)

    over_budget = []

    def on_alarm(*_):
        over_budget.append(True)
        raise CompileBudget()

    for step in range(a.warmup + a.steps):
        if step == 0 and a.worker == "torch-compile-fp32":
            signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(a.compile_budget)
        try:
            x = torch.tensor(rows[step * B:(step + 1) * B])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = fwd(input_ids=x, labels=x).loss
            loss.backward()
        except Exception:  # noqa: BLE001 (Inductor wraps the alarm's exception in its own)
            if not over_budget:
                raise
            print("FAILED " + json.dumps(dict(
                error=f"torch.compile: the first (compiling) step took over the "
                      f"{a.compile_budget} s compile budget")), flush=True)
            return 1
        if step == 0:
            signal.alarm(0)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        cpu.append(time.process_time())
        print(json.dumps(dict(step=step + 1, loss=float(loss.detach()),
                              step_s=marks[-1] - marks[-2], wall=time.time())), flush=True)
        # Past the run budget, one timed step is enough: stop early rather than be killed.
        if step >= a.warmup and marks[-1] - marks[0] > a.run_budget:
            break
    steps = len(marks) - 1 - a.warmup
    # marks[0] is the start, marks[k] the end of step k: the timed steps follow the warm-up.
    timed = marks[-1] - marks[a.warmup]
    print("RESULT " + json.dumps(dict(tokens_per_s=steps * B * a.seq / timed, timed_s=timed,
                                      step_s=timed / steps, timed_steps=steps,
                                      timed_cpu_s=cpu[-1] - cpu[a.warmup])), flush=True)
    return 0


# --- machine and library facts ----------------------------------------------------------------

def machine():
    info = dict(model_name=platform.processor() or "?", cpus=os.cpu_count())
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                info["model_name"] = v.strip()
            if k.strip() == "CPU family":
                info["cpu_family"] = int(v)
            if k.strip() == "Model":
                info["cpu_model"] = v.strip()
            if k.strip() == "Core(s) per socket":
                info["cores_per_socket"] = int(v)
            if k.strip() == "Socket(s)":
                info["sockets"] = int(v)
            if k.strip() == "Hypervisor vendor":
                info["hypervisor"] = v.strip()
    except OSError:
        pass
    from gemm_peaks import cpu_flags
    flags = cpu_flags()
    info["flags"] = {f: f in flags for f in ["avx2", "fma", "avx512f", "avx512_bf16",
                                             "avx512_vnni", "amx_bf16"]}
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def openblas_of(binary):
    """The OpenBLAS library the binary links and the kernel core it picks in this environment."""
    import ctypes
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


def torch_info(python):
    code = ("import torch,re;c=torch.__config__.show();"
            "m=re.search(r'BLAS_INFO=(\\w+)',c);print(torch.__version__, m.group(1) if m else '?',"
            "'mkldnn' if torch.backends.mkldnn.is_available() else '', torch.backends.cpu"
            ".get_cpu_capability())")
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=120).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def git_commit():
    try:
        c = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src",
                                "include"], capture_output=True, text=True).stdout.strip()
        return c + ("+dirty(src)" if dirty else "")
    except OSError:
        return "?"


def flops_per_token(cfg, T):
    """The work of one LoRA training step per token (DESIGN.md, bench/README.md).

    Frozen linear weights cost 2 FLOPs per weight per token forward and 2 for the input gradient
    (they need no weight gradient); the tied LM head (V x C) likewise. Causal attention costs
    about 4 x T x (H x D) per layer per token forward and backward. LoRA's own products (rank 16)
    and the elementwise work are left out: they are the implementation's overhead, not the task.
    """
    C, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], \
        cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // H
    per_layer = C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * I
    return 4 * (L * per_layer + V * C) + 4 * L * T * H * D


def ftune_dtypes(binary):
    try:
        h = subprocess.run([binary, "train", "--help"], capture_output=True, text=True,
                           timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--dtype" in h


# --- one configuration --------------------------------------------------------------------------

def run_ftune(a, model, data, work, B, T, steps, dtype):
    run = os.path.join(work, "run")
    cmd = [a.ftune, "train", "--model", model, "--data", data, "--out", run,
           "--lora-r", str(a.rank), "--lora-alpha", str(2 * a.rank), "--lora-dropout", "0",
           "--lora-targets", ",".join(SEVEN), "--batch-size", str(B),
           "--seq-len", str(T), "--steps", str(a.warmup + steps),
           "--lr", "1e-4", "--schedule", "constant", "--max-grad-norm", "1.0",
           "--threads", str(a.threads), "--no-shuffle", "--overwrite"]
    if dtype != "fp32":
        cmd += ["--dtype", dtype]
    log = os.path.join(work, "ftune.log")
    r = measured(cmd, log, a.timeout)
    text = open(log).read() if os.path.exists(log) else ""
    rows = []
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [x for x in rows if "eval_loss" not in x]
        timed = rows[-1]["elapsed_s"] - rows[a.warmup - 1]["elapsed_s"]
        r["tokens_per_s"] = steps * B * T / timed
        r["timed_s"] = timed
        r["losses"] = [x.get("loss") for x in rows]
    except (OSError, ValueError, IndexError, KeyError, ZeroDivisionError) as e:
        r.setdefault("error", f"no usable metrics.jsonl: {e}")
        r["log_tail"] = text[-1500:]
        if rows:  # stopped after the warm-up: its speed is still worth knowing
            r["warmup_tokens_per_s"] = rows[0].get("tokens_per_s")
            r["error"] += f"; warm-up step {r['warmup_tokens_per_s']} tok/s"
    return r


def run_torch(a, config, model, data, work, B, T, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, "--model", model,
           "--data", data, "--steps", str(steps), "--warmup", str(a.warmup),
           "--batch", str(B), "--seq", str(T), "--threads", str(a.threads),
           "--rank", str(a.rank), "--compile-budget", str(a.compile_budget),
           "--run-budget", str(a.run_budget)]
    log = os.path.join(work, config + ".log")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(work, "inductor"))
    # The worker stops itself after run_budget seconds of steps (once it has a timed step); the
    # hard limit is for a run whose steps are so slow that it cannot get there.
    r = measured(cmd, log, a.timeout + (a.compile_budget if "compile" in config else 0), env)
    killed = time.time()
    text = open(log).read() if os.path.exists(log) else ""
    losses, step_s, last_wall = [], [], None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            r.update(json.loads(line[7:]))
        elif line.startswith("FAILED "):
            r.update(json.loads(line[7:]))
        elif line.startswith("LOADED "):
            last_wall = json.loads(line[7:])["wall"]
        elif line.startswith("{"):
            try:
                row = json.loads(line)
                losses.append(row["loss"])
                step_s.append(row["step_s"])
                last_wall = row["wall"]
            except (ValueError, KeyError):
                pass
    r["losses"], r["step_times_s"] = losses, step_s
    if r.get("rc") == "timeout" and step_s:
        r["warmup_tokens_per_s"] = B * T / step_s[0]
        r["error"] = (f"stopped at the {r['wall_s']} s limit during step {len(step_s) + 1}; "
                      f"warm-up step {step_s[0]:.0f} s = {r['warmup_tokens_per_s']:.1f} tok/s")
    if r.get("rc") == "timeout" and last_wall and not step_s:
        # The step under way when the run was stopped had taken killed - last_wall already.
        r["tokens_per_s_below"] = B * T / (killed - last_wall)
        r["error"] = (f"stopped at the {r['wall_s']} s limit during step {len(losses) + 1}: "
                      f"below {r['tokens_per_s_below']:.2f} tok/s"
                      + (f"; warm-up step {step_s[0]:.0f} s = {B * T / step_s[0]:.1f} tok/s"
                         if step_s else ""))
    if "tokens_per_s" not in r:
        r.setdefault("error", "no result")
        r["log_tail"] = text[-1500:]
    return r


# --- printing -------------------------------------------------------------------------------------

def fmt(x, f):
    return f.format(x) if isinstance(x, (int, float)) else "-"


def table(results):
    lines = [f"{'shape':13s}{'BxT':>8s}  {'config':21s}{'tokens/s':>9s}{'GFLOP/s':>9s}"
             f"{'% peak':>8s}{'peak RSS':>10s}{'tok/CPU-s':>10s}{'load':>11s}"]
    for c in results["configs"]:
        ok = isinstance(c.get("tokens_per_s"), (int, float))
        load = f"{c['loadavg_before'][0]:.1f}/{c['loadavg_after'][0]:.1f}" \
            if c.get("loadavg_after") else ""
        rss = c.get("peak_rss_mb")
        tps = fmt(c.get("tokens_per_s"), "{:.1f}")
        if not ok and c.get("tokens_per_s_below"):
            tps = f"<{c['tokens_per_s_below']:.2f}"
        elif not ok and c.get("warmup_tokens_per_s"):  # the warm-up step's speed, marked w
            tps = f"{c['warmup_tokens_per_s']:.1f}w"
        lines.append(f"{c['shape']:13s}{c['batch']:>4d}x{c['seq']:<4d} {c['config']:21s}"
                     f"{tps:>9s}"
                     f"{fmt(c.get('gflops'), '{:.1f}'):>9s}"
                     f"{fmt(c.get('peak_fraction') and 100 * c['peak_fraction'], '{:.0f}%'):>8s}"
                     f"{(f'{rss:.0f} MB' if rss and ok else '-'):>10s}"
                     f"{fmt(c.get('tokens_per_cpu_s'), '{:.1f}'):>10s}{load:>11s}"
                     + ("" if ok else f"  failed: {c.get('error') or c.get('rc')}"))
    return "\n".join(lines)


def ratios(results):
    """ftune's tokens/s and peak RSS against every PyTorch configuration, per shape."""
    by = {}
    for c in results["configs"]:
        by.setdefault((c["shape"], c["batch"], c["seq"]), {})[c["config"]] = c
    lines = []
    for (shape, B, T), cs in by.items():
        for f in ("ftune-fp32", "ftune-bf16"):
            fc = cs.get(f)
            if not fc or not fc.get("tokens_per_s"):
                continue
            parts = []
            for t, tc in cs.items():
                if t.startswith("torch") and tc.get("tokens_per_s"):
                    parts.append(f"{fc['tokens_per_s'] / tc['tokens_per_s']:.2f}x {t} "
                                 f"(RSS {fc['peak_rss_mb'] / tc['peak_rss_mb']:.2f})")
            if parts:
                lines.append(f"{shape} {B}x{T} {f}: " + ", ".join(parts))
    return "\n".join(lines)


# --- compare ----------------------------------------------------------------------------------

def load_configs(path):
    """A results file's runs keyed by (shape, B, T, config); old single-shape files included."""
    with open(path) as f:
        r = json.load(f)
    out = {}
    if "configs" in r:
        for c in r["configs"]:
            out[(c["shape"], c["batch"], c["seq"], c["config"])] = c
    else:  # the issue-3 layout: one shape, runs {"ftune", "pytorch+peft"}
        names = {"ftune": "ftune-fp32", "pytorch+peft": "torch-fp32"}
        for k, c in r.get("runs", {}).items():
            out[(r.get("shape"), r.get("batch"), r.get("seq"), names.get(k, k))] = c
    return r, out


def compare(a_path, b_path):
    ra, ca = load_configs(a_path)
    rb, cb = load_configs(b_path)
    for name, path, r in (("A", a_path, ra), ("B", b_path, rb)):
        load = r.get("loadavg_start") or r.get("machine", {}).get("loadavg") or ["?"]
        end = (r.get("loadavg_end") or ["?"])[0]
        print(f"{name}: {os.path.relpath(path, REPO)} ({r.get('time_utc')}, commit "
              f"{r.get('git_commit', '?')}, load average {load[0]} before, {end} after)")
    print(f"{'shape':13s}{'BxT':>9s}  {'config':21s}{'A tok/s':>9s}{'B tok/s':>9s}{'B/A':>7s}"
          f"{'A RSS':>8s}{'B RSS':>8s}")
    bad = 0
    for key in sorted(set(ca) | set(cb), key=str):
        a, b = ca.get(key, {}), cb.get(key, {})
        ta, tb = a.get("tokens_per_s"), b.get("tokens_per_s")
        ratio = tb / ta if ta and tb else None
        flag = ""
        if ratio is not None and ratio < 1 - REGRESSION:
            flag, bad = "  REGRESSION", bad + 1
        elif ta and key in cb and not tb:
            flag, bad = "  FAILED in B", bad + 1
        elif key not in ca or key not in cb:
            flag = "  (only in " + ("B)" if key not in ca else "A)")
        shape, B, T, cfg = key
        print(f"{str(shape):13s}{f'{B}x{T}':>9s}  {cfg:21s}{fmt(ta, '{:.1f}'):>9s}"
              f"{fmt(tb, '{:.1f}'):>9s}{fmt(ratio, '{:.2f}'):>7s}"
              f"{fmt(a.get('peak_rss_mb'), '{:.0f}'):>8s}{fmt(b.get('peak_rss_mb'), '{:.0f}'):>8s}"
              + flag)
    print(f"{bad} regression(s) of more than {REGRESSION:.0%} in tokens/s" if bad else
          f"no tokens/s regression of more than {REGRESSION:.0%}")
    print("(wall-clock figures move with the load average: compare runs taken at a similar load)")
    return 1 if bad else 0


def compare_main(paths):
    if len(paths) == 1 or len(paths) > 2:
        print("bench-compare: give two results files (A=old.json B=new.json) or none",
              file=sys.stderr)
        return 2
    if not paths:
        d = os.path.join(HERE, "results")
        files = sorted(f for f in os.listdir(d) if f.startswith("train-") and f.endswith(".json"))
        if len(files) < 2:
            print(f"bench-compare: fewer than two train-*.json files in {d}", file=sys.stderr)
            return 2
        paths = [os.path.join(d, f) for f in files[-2:]]
    for p in paths:
        if not os.path.exists(p):
            print(f"bench-compare: no such results file: {p}", file=sys.stderr)
            return 2
    return compare(*paths)


# --- the benchmark ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="smollm-135m,qwen3-0.6b")
    ap.add_argument("--bt", default="4x512,1x2048", help="B x T per step, comma-separated")
    ap.add_argument("--configs", default=",".join(ALL_CONFIGS))
    ap.add_argument("--steps", default="smollm-135m=2,qwen3-0.6b=1",
                    help="timed steps: N, or shape=N,... per shape")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--ftune", default=os.environ.get("FTUNE_BIN",
                                                      os.path.join(REPO, "build", "ftune")))
    ap.add_argument("--gemm-bin", default=os.path.join(REPO, "build", "bench", "gemm_peak"))
    ap.add_argument("--run-budget", type=int, default=120,
                    help="seconds of steps after which a PyTorch run stops once it has a timed step")
    ap.add_argument("--timeout", type=int, default=480,
                    help="hard limit per run in seconds (a PyTorch run then reports a bound)")
    ap.add_argument("--compile-budget", type=int, default=180,
                    help="seconds for torch.compile's first (compiling) step")
    ap.add_argument("--slow-configs-on", default="smollm-135m:4x512",
                    help="run torch-bf16-autocast and torch-compile-fp32 only on these "
                         "shape:BxT (comma list; 'all': everywhere), to save time")
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")),
                    help="only SmolLM-135M at 4x512 (also BENCH_QUICK=1)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--compare", action="store_true", help="compare two results files")
    # internal modes
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        return measure_main(a.cmd, a.log)
    if a.compare:
        return compare_main(a.cmd)
    if a.worker:
        a.steps = int(a.steps)
        return torch_main(a)

    shapes = a.shapes.split(",")
    bts = [tuple(int(x) for x in bt.split("x")) for bt in a.bt.split(",")]
    if a.quick:  # a check that everything runs, not the whole comparison
        shapes, bts = ["smollm-135m"], [(4, 512)]
        if a.configs == ",".join(ALL_CONFIGS):
            a.configs = "ftune-fp32,ftune-bf16,torch-fp32"
    steps_of = {}
    for part in a.steps.split(","):
        k, _, v = part.rpartition("=")
        steps_of[k or "*"] = int(v)
    configs = a.configs.split(",")
    if "ftune-bf16" in configs and not ftune_dtypes(a.ftune):
        print("ftune-bf16: skipped (`ftune train --help` lists no --dtype yet)")
        configs.remove("ftune-bf16")

    mach = machine()
    results = dict(time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=mach,
                   git_commit=git_commit(), loadavg_start=os.getloadavg(),
                   openblas=openblas_of(a.ftune), torch=torch_info(sys.executable),
                   threads=a.threads, rank=a.rank, warmup=a.warmup, quick=a.quick,
                   run_budget_s=a.run_budget, timeout_s=a.timeout,
                   compile_budget_s=a.compile_budget, slow_configs_on=a.slow_configs_on,
                   ftune_binary=a.ftune, configs=[])
    fl = mach["flags"]
    print(f"machine: {mach['model_name']} (family {mach.get('cpu_family')}), {mach['cpus']} cpus, "
          f"{mach.get('mem_total_gb', '?')} GB; avx2 {fl['avx2']}, avx512f {fl['avx512f']}, "
          f"avx512_bf16 {fl['avx512_bf16']}; load average "
          + " ".join(f"{x:.2f}" for x in results["loadavg_start"]))
    print(f"commit {results['git_commit']}; ftune's OpenBLAS: core {results['openblas']['corename']}"
          f" (OPENBLAS_CORETYPE={results['openblas']['coretype_env'] or 'unset'}); "
          f"torch {results['torch']}", flush=True)

    # The yardstick first: every kernel family at 2 threads (the runs' thread count).
    from gemm_peaks import measure_all, summary
    print(f"\nGEMM peak ({a.threads} threads, every kernel family this CPU runs) ...", flush=True)
    g = measure_all(a.gemm_bin, str(a.threads), 0.2, echo=False)
    print(summary(g, str(a.threads)), flush=True)
    results["gemm"] = g
    peak = g["best"]["peak_gflops"] if g["best"] else None
    results["gemm_peak_gflops"] = peak

    sys.path.insert(0, os.path.join(REPO, "tools"))
    from make_model import make_model
    cache_root = os.path.join(os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune")),
                              "bench-models")
    import random
    for shape in shapes:
        model = os.path.join(cache_root, f"{shape}-f32")
        print(f"\nmodel: {shape} random weights at {model}", flush=True)
        make_model(shape, model, "f32", 0)
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
        steps = steps_of.get(shape, steps_of.get("*", 2))
        for B, T in bts:
            work = tempfile.mkdtemp(prefix="ftune-bench-")
            rng = random.Random(0)
            data = os.path.join(work, "train.jsonl")
            with open(data, "w") as f:
                for _ in range((a.warmup + steps) * B):
                    f.write(json.dumps({"input_ids": [rng.randrange(cfg["vocab_size"])
                                                      for _ in range(T)]}) + "\n")
            fpt = flops_per_token(cfg, T)
            for config in configs:
                if config in ("torch-bf16-autocast", "torch-compile-fp32") and \
                        a.slow_configs_on != "all" and \
                        f"{shape}:{B}x{T}" not in a.slow_configs_on.split(","):
                    continue
                print(f"  {shape} {B}x{T} {config}: {a.warmup} warm-up + {steps} timed steps ...",
                      end="", flush=True)
                c = dict(shape=shape, batch=B, seq=T, config=config, steps=steps,
                         flops_per_token=fpt, loadavg_before=os.getloadavg())
                if config.startswith("ftune"):
                    r = run_ftune(a, model, data, work, B, T, steps, config.split("-")[1])
                else:
                    r = run_torch(a, config, model, data, work, B, T, steps)
                c.update(r)
                c["loadavg_after"] = os.getloadavg()
                tps = c.get("tokens_per_s")
                if tps:
                    c["gflops"] = tps * fpt / 1e9
                    c["peak_fraction"] = c["gflops"] / peak if peak else None
                cpu_s = (c.get("user_s") or 0) + (c.get("sys_s") or 0)
                if tps and cpu_s:
                    c["tokens_per_cpu_s"] = (a.warmup + steps) * B * T / cpu_s
                results["configs"].append(c)
                print(f" {tps:.1f} tok/s, {c['peak_rss_mb']:.0f} MB" if tps else
                      f" failed: {c.get('error') or c.get('rc')}", flush=True)
                if not tps and c.get("log_tail"):
                    print("    " + c["log_tail"].strip().replace("\n", "\n    ")[-600:])

    results["loadavg_end"] = os.getloadavg()
    print(f"\nGEMM peak {fmt(peak, '{:.1f}')} GFLOP/s fp32, {a.threads} threads "
          f"({g['best']['backend'] if g['best'] else '-'}); load average at the end "
          f"{results['loadavg_end'][0]:.2f} (above {mach['cpus']}: the runs shared their cores)")
    print(table(results))
    r = ratios(results)
    if r:
        print("\nftune tokens/s against each PyTorch configuration (peak RSS ratio):\n" + r)
    os.makedirs(a.results, exist_ok=True)
    out = os.path.join(a.results, time.strftime("train-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwritten: {os.path.relpath(out, REPO)}")
    ok = all(c.get("tokens_per_s") for c in results["configs"] if c["config"].startswith("ftune"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
