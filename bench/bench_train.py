#!/usr/bin/env python3
"""Training benchmark: one LoRA training step in ftune and in PyTorch + PEFT, on real model shapes.

    python bench/bench_train.py [--configs ...] [--shapes ...] [--bt 4x512,1x2048] [--quick]
    python bench/bench_train.py --estimate [--shapes ...]     how long, from earlier results
    python bench/bench_train.py --merge A.json B.json ...     one file from several (later wins)
    python bench/bench_train.py --show A.json [B.json ...]    the table and ratios of stored runs
    python bench/bench_train.py --compare [A.json B.json]

The runs (issue 7): the SmolLM-135M and Qwen3-0.6B shapes with random weights (tools/make_model.py,
cached under ~/.cache/ftune/bench-models/), at B x T = 4 x 512 and 1 x 2048 random token ids per
step, LoRA r=16 (alpha 32, dropout 0) on all seven projections, 2 threads, AdamW, clipping at 1.0,
constant lr. Each configuration runs in its own process: ftune fp32, ftune fp32 with gradient
checkpointing in bf16 (ftune-fp32-ckpt, the memory configuration), ftune bf16 (when
`ftune train --help` lists --dtype), PyTorch + PEFT fp32 eager with sdpa attention, the same under
bf16 autocast, and the fp32 model under torch.compile (its compile, the warm-up step, is given
--compile-budget seconds; past that the run is reported as failed). Each does --warmup steps, then
--steps timed steps.

First it says how long the whole run should take (each run's time in the newest earlier results
file that has it, or a relative's), then measures the machine's fp32 GEMM peak with every kernel
family the CPU can run (bench/gemm_peaks.py, build/bench/gemm_peak); each run's achieved GFLOP/s
is reported as a fraction of the best. GFLOP/s counts the work of the step, not what an
implementation chooses to do (bench/README.md has the formula): 4 x (non-embedding parameters +
V x C) + 4 x L x T x H x D FLOPs per token.

How it measures: each run is a subprocess of a small wrapper (this script with --measure) that
waits for it, stops it at the --timeout limit, and reads getrusage(RUSAGE_CHILDREN).ru_maxrss, so
the peak RSS is that run's alone, stopped or not (for PyTorch it includes the interpreter and
torch's libraries, as a user sees it). tokens/s is B x T x timed steps over their wall time:
ftune's elapsed_s in RUN/metrics.jsonl from the end of the warm-up to the end of the last step;
PyTorch's the same interval timed around its loop (a run stopped at the limit counts the timed
steps it finished). tokens per CPU-second of the whole process (load, warm-up, steps) moves less
than tokens/s when other work shares the cores; the load average before and after every run is
stored with it. For every ftune configuration the ratios to PyTorch fp32, to the fastest PyTorch
configuration, and of peak RSS (the issue's target: at most half) are printed per shape.

Everything goes to bench/results/train-<UTC timestamp>.json (one file per benchmark run; on a
busy machine run one shape at a time with --shapes and --merge the files); --compare prints the
ratio of two such files configuration by configuration and flags a tokens/s regression of more
than 5%. BENCH_QUICK=1 (or --quick): only SmolLM-135M at 4 x 512, ftune and PyTorch fp32.
"""

import argparse
import json
import os
import platform
import re
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
# ftune's configurations: the `ftune train` options that make each. ftune-fp32-ckpt keeps only
# each layer's input, in bf16, and recomputes the layer in backward: the memory configuration
# (Qwen3-0.6B's activations are 6.2 GB without it, 0.5 GB with it); it does more work per step
# than the FLOP count credits, so its GFLOP/s is lower for the same kernels.
FTUNE_CONFIGS = {
    "ftune-fp32": [],
    "ftune-bf16": ["--dtype", "bf16"],
    "ftune-fp32-ckpt": ["--grad-checkpoint-dtype", "bf16"],
}
ALL_CONFIGS = list(FTUNE_CONFIGS) + ["torch-fp32", "torch-bf16-autocast", "torch-compile-fp32"]
REGRESSION = 0.05  # --compare flags tokens/s lower than the old run by more than this


# --- the wrapper: run one command, report its peak RSS ----------------------------------------

def measure_main(cmd, log, limit):
    """Run cmd, stop it (its whole process group) after limit seconds, report its peak RSS.

    The limit is enforced here, not by the parent, so that a stopped run is still waited for and
    getrusage(RUSAGE_CHILDREN) still has its peak RSS (a PyTorch Qwen3 run reaches its peak in the
    first step, long before the limit; killing the wrapper with it lost that number).
    """
    t0 = time.time()
    rc = None
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = "timeout"
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = dict(rc=rc, peak_rss_mb=ru.ru_maxrss / 1024.0, wall_s=time.time() - t0,
             user_s=ru.ru_utime, sys_s=ru.ru_stime)
    if rc == "timeout":
        r["error"] = f"killed after the {limit} s time limit"
    print(json.dumps(r))
    return 0


def measured(cmd, log, timeout, env=None):
    """Run cmd under the wrapper with a limit of timeout s; return its report (rc, peak_rss_mb,
    wall_s, ...). A run stopped at the limit has rc "timeout" and the peak RSS it had reached."""
    w = [sys.executable, os.path.abspath(__file__), "--measure", "--log", log,
         "--limit", str(timeout), "--"] + cmd
    # Its own session, so that if the wrapper itself hangs, it and the run go down together.
    p = subprocess.Popen(w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=env)
    backstop = timeout + 60
    try:
        out, err = p.communicate(timeout=backstop)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return dict(rc="timeout", peak_rss_mb=None, wall_s=backstop,
                    error=f"the wrapper did not return within {backstop} s; killed")
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
    """Whether `ftune train` has --dtype (not to be confused with --grad-checkpoint-dtype)."""
    try:
        h = subprocess.run([binary, "train", "--help"], capture_output=True, text=True,
                           timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(r"(^|\s)--dtype\b", h) is not None


def ftune_plan_mb(a, model, B, T, extra):
    """`ftune plan`'s predicted peak for the run in MB, beside the measured one; None where plan
    fails (e.g. it does not take one of the configuration's options)."""
    cmd = [a.ftune, "plan", "--model", model, "--batch-size", str(B), "--seq-len", str(T),
           "--lora-r", str(a.rank), "--lora-targets", ",".join(SEVEN)] + extra
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout.strip().splitlines()[-1])["total_bytes"] / 2**20
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, KeyError):
        return None


# --- one configuration --------------------------------------------------------------------------

def run_ftune(a, config, model, data, work, B, T, steps):
    run = os.path.join(work, "run")
    cmd = [a.ftune, "train", "--model", model, "--data", data, "--out", run,
           "--lora-r", str(a.rank), "--lora-alpha", str(2 * a.rank), "--lora-dropout", "0",
           "--lora-targets", ",".join(SEVEN), "--batch-size", str(B),
           "--seq-len", str(T), "--steps", str(a.warmup + steps),
           "--lr", "1e-4", "--schedule", "constant", "--max-grad-norm", "1.0",
           "--threads", str(a.threads), "--no-shuffle", "--overwrite"]
    cmd += FTUNE_CONFIGS[config]
    log = os.path.join(work, config + ".log")
    r = measured(cmd, log, a.timeout)
    r["options"] = FTUNE_CONFIGS[config]
    r["planned_peak_mb"] = ftune_plan_mb(a, model, B, T, FTUNE_CONFIGS[config])
    text = open(log).read() if os.path.exists(log) else ""
    rows = []
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [x for x in rows if "eval_loss" not in x]
        # The steps it finished (all of them, unless it was stopped at the limit).
        n = len(rows) - a.warmup
        if n <= 0:
            raise ValueError(f"{len(rows)} step(s) done, {a.warmup} of them warm-up")
        timed = rows[-1]["elapsed_s"] - (rows[a.warmup - 1]["elapsed_s"] if a.warmup else 0.0)
        r["tokens_per_s"] = n * B * T / timed
        r["timed_s"], r["timed_steps"] = timed, n
        if r.get("rc") == "timeout":
            r["note"] = f"stopped at the {r['wall_s']:.0f} s limit after {n} timed step(s)"
            r.pop("error", None)
        r["losses"] = [x.get("loss") for x in rows]
        r["steps_done"] = len(rows)
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
    r["losses"], r["step_times_s"], r["steps_done"] = losses, step_s, len(step_s)
    if r.get("rc") == "timeout" and len(step_s) > a.warmup:
        # Stopped at the limit with timed steps done: their speed is the run's (the peak RSS
        # is reached in the first step), the stop is noted, not an error.
        timed = step_s[a.warmup:]
        r.update(tokens_per_s=B * T * len(timed) / sum(timed), timed_s=sum(timed),
                 timed_steps=len(timed), note=f"stopped at the {r['wall_s']:.0f} s limit "
                 f"after {len(timed)} timed step(s)")
        r.pop("error", None)
    elif r.get("rc") == "timeout" and last_wall:
        # The step under way when the run was stopped had taken killed - last_wall already.
        r["tokens_per_s_below"] = B * T / (killed - last_wall)
        r["error"] = (f"stopped at the {r['wall_s']:.0f} s limit during step {len(step_s) + 1}: "
                      f"below {r['tokens_per_s_below']:.2f} tok/s")
        if step_s:
            r["warmup_tokens_per_s"] = B * T / step_s[0]
            r["error"] += (f"; warm-up step {step_s[0]:.0f} s = "
                           f"{r['warmup_tokens_per_s']:.1f} tok/s")
    if "tokens_per_s" not in r:
        r.setdefault("error", "no result")
        r["log_tail"] = text[-1500:]
    return r


# --- printing -------------------------------------------------------------------------------------

def fmt(x, f):
    return f.format(x) if isinstance(x, (int, float)) else "-"


def finished(c):
    return isinstance(c.get("tokens_per_s"), (int, float))


def table(results):
    lines = [f"{'shape':13s}{'BxT':>8s}  {'config':21s}{'tokens/s':>9s}{'GFLOP/s':>9s}"
             f"{'% peak':>8s}{'peak RSS':>11s}{'tok/CPU-s':>10s}{'load':>11s}"]
    for c in results["configs"]:
        ok = finished(c)
        load = f"{c['loadavg_before'][0]:.1f}/{c['loadavg_after'][0]:.1f}" \
            if c.get("loadavg_after") else ""
        rss = c.get("peak_rss_mb")
        tps = fmt(c.get("tokens_per_s"), "{:.1f}")
        if not ok and c.get("tokens_per_s_below"):
            tps = f"<{c['tokens_per_s_below']:.2f}"
        elif not ok and c.get("warmup_tokens_per_s"):  # the warm-up step's speed, marked w
            tps = f"{c['warmup_tokens_per_s']:.1f}w"
        # A stopped run's peak so far: a lower bound of its peak, marked >=.
        rss_s = "-" if not rss else f"{'' if ok else '>='}{rss:.0f} MB"
        lines.append(f"{c['shape']:13s}{c['batch']:>4d}x{c['seq']:<4d} {c['config']:21s}"
                     f"{tps:>9s}"
                     f"{fmt(c.get('gflops'), '{:.1f}'):>9s}"
                     f"{fmt(c.get('peak_fraction') and 100 * c['peak_fraction'], '{:.0f}%'):>8s}"
                     f"{rss_s:>11s}"
                     f"{fmt(c.get('tokens_per_cpu_s'), '{:.1f}'):>10s}{load:>11s}"
                     + (f"  failed: {c.get('error') or c.get('rc')}" if not ok else
                        f"  ({c['note']})" if c.get("note") else ""))
    return "\n".join(lines)


def by_shape(results):
    by = {}
    for c in results["configs"]:
        by.setdefault((c["shape"], c["batch"], c["seq"]), {})[c["config"]] = c
    return by


def ratio_rows(results):
    """For every ftune configuration on every shape: its speed against PyTorch fp32 and against
    the fastest PyTorch configuration, and its peak RSS against PyTorch fp32's and against the
    smallest of the PyTorch runs. Each ratio comes with how exact it is: "=" both runs finished;
    ">" or "<" a bound, where a run stopped early ("<" for the RSS of a ftune run over a stopped
    PyTorch run: PyTorch's peak would only have grown); "~" PyTorch only has its warm-up step."""
    rows = []
    for (shape, B, T), cs in by_shape(results).items():
        torch = {t: c for t, c in cs.items() if t.startswith("torch")}
        timed = {t: c["tokens_per_s"] for t, c in torch.items() if finished(c)}
        best = max(timed, key=timed.get) if timed else None
        # The smallest peak among PyTorch runs that finished (a stopped run's is only a bound).
        rss_fin = {t: c["peak_rss_mb"] for t, c in torch.items()
                   if finished(c) and c.get("peak_rss_mb")}
        least = min(rss_fin, key=rss_fin.get) if rss_fin else None
        for f, fc in cs.items():
            if not f.startswith("ftune"):
                continue
            row = dict(shape=shape, batch=B, seq=T, config=f, tokens_per_s=fc.get("tokens_per_s"),
                       peak_rss_mb=fc.get("peak_rss_mb"), best_torch=best, least_rss_torch=least)
            fp32 = torch.get("torch-fp32")
            if finished(fc) and fp32:
                if finished(fp32):
                    row["vs_torch_fp32"] = ("=", fc["tokens_per_s"] / fp32["tokens_per_s"])
                elif fp32.get("tokens_per_s_below"):
                    row["vs_torch_fp32"] = (">", fc["tokens_per_s"] / fp32["tokens_per_s_below"])
                elif fp32.get("warmup_tokens_per_s"):
                    row["vs_torch_fp32"] = ("~", fc["tokens_per_s"] / fp32["warmup_tokens_per_s"])
            if finished(fc) and best:
                row["vs_best_torch"] = ("=", fc["tokens_per_s"] / timed[best])
            if fc.get("peak_rss_mb") and fp32 and fp32.get("peak_rss_mb"):
                x = fc["peak_rss_mb"] / fp32["peak_rss_mb"]
                exact = finished(fc), finished(fp32)
                row["rss_vs_torch_fp32"] = ({(True, True): "=", (True, False): "<",
                                             (False, True): ">"}.get(exact, "~"), x)
            if fc.get("peak_rss_mb") and least:
                row["rss_vs_least_torch"] = ("=" if finished(fc) else ">",
                                             fc["peak_rss_mb"] / rss_fin[least])
            rows.append(row)
    return rows


def ratios(results):
    """The ratio rows as text, one line per ftune configuration and shape."""
    def r(v, what):
        if not v:
            return f"- {what}"
        return f"{'' if v[0] == '=' else v[0]}{v[1]:.2f}x {what}"
    lines = []
    for x in ratio_rows(results):
        speed = [r(x.get("vs_torch_fp32"), "torch-fp32")]
        if x["best_torch"] and x["best_torch"] != "torch-fp32":
            speed.append(r(x.get("vs_best_torch"), f"the fastest PyTorch ({x['best_torch']})"))
        elif x["best_torch"]:
            speed.append("torch-fp32 is the fastest PyTorch")
        else:
            speed.append("no PyTorch run finished a timed step")
        rss = [r(x.get("rss_vs_torch_fp32"), "torch-fp32's")]
        if x["least_rss_torch"] and x["least_rss_torch"] != "torch-fp32":
            rss.append(r(x.get("rss_vs_least_torch"), f"{x['least_rss_torch']}'s"))
        v = x.get("rss_vs_torch_fp32")
        if x.get("rss_vs_least_torch"):  # the target: at most half of every PyTorch run's
            v = max((v or ("=", 0)), x["rss_vs_least_torch"], key=lambda y: y[1])
        target = "" if not v else \
            " (RSS target <= 0.5x: " + ("met" if v[1] <= 0.5 and v[0] in "=<" else
                                         "missed" if v[1] > 0.5 and v[0] in "=>" else "?") + ")"
        lines.append(f"{x['shape']} {x['batch']}x{x['seq']} {x['config']}: "
                     + ", ".join(speed) + "; peak RSS " + ", ".join(rss) + target)
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


# --- merging runs, and how long a run will take ----------------------------------------------

def merge(paths):
    """One results dict from several files (e.g. one shape per run): their runs, a later file's
    run replacing an earlier one of the same shape, B x T and configuration. Each run keeps the
    GEMM peak its own file measured (its % peak was computed against that)."""
    runs, sources = {}, []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        sources.append(dict(file=os.path.basename(p), time_utc=r.get("time_utc"),
                            git_commit=r.get("git_commit"), gemm_peak_gflops=r.get(
                                "gemm_peak_gflops"), loadavg_start=r.get("loadavg_start")))
        for c in r.get("configs", []):
            c = dict(c, source=os.path.basename(p))
            c.setdefault("gemm_peak_gflops", r.get("gemm_peak_gflops"))
            runs[(c["shape"], c["batch"], c["seq"], c["config"])] = c
    with open(paths[-1]) as f:
        last = json.load(f)
    out = {k: v for k, v in last.items() if k not in ("configs", "gemm")}
    out.update(time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), merged_from=sources,
               configs=list(runs.values()))
    return out


def history(results_dir):
    """Finished and stopped runs of earlier results files, newest file first."""
    files = sorted((f for f in os.listdir(results_dir) if f.startswith("train-")
                    and f.endswith(".json")), reverse=True) if os.path.isdir(results_dir) else []
    out = []
    for f in files:
        try:
            with open(os.path.join(results_dir, f)) as fh:
                r = json.load(fh)
        except (OSError, ValueError):
            continue
        for c in r.get("configs", []):
            if c.get("wall_s"):
                out.append(dict(c, source=f, warmup=r.get("warmup", 1)))
    return out


# A configuration with no history of its own is estimated from a relative's, times this factor
# (checkpointing recomputes the forward: about 1/3 more work).
RELATIVE = {"ftune-bf16": ("ftune-fp32", 1.0), "ftune-fp32-ckpt": ("ftune-fp32", 1.35),
            "torch-bf16-autocast": ("torch-fp32", 1.0), "torch-compile-fp32": ("torch-fp32", 1.0)}


def estimate_run(hist, shape, B, T, config, steps, warmup, flops, limit):
    """Seconds one run will take, from the newest earlier run that says most about it: the same
    run (its load time plus its step time x steps), else a relative configuration on the same
    shape, else the same configuration on another shape scaled by the work per step. Returns
    (seconds, where from); at most the run's limit."""
    def model(c):  # (load and other fixed seconds, seconds per step) of an earlier run
        tps = c.get("tokens_per_s") or c.get("warmup_tokens_per_s")
        if not tps:  # stopped during its first step: the whole wall time, a lower bound
            return c["wall_s"], 0.0
        step = c["batch"] * c["seq"] / tps
        n = c.get("timed_steps") or c.get("steps") or 1
        fixed = max(0.0, c["wall_s"] - (c.get("warmup", 1) + n) * step)
        return fixed, step
    same = [c for c in hist if (c["shape"], c["batch"], c["seq"]) == (shape, B, T)]
    rel, rel_factor = RELATIVE.get(config, (None, 1.0))
    tiers = [[(c, 1.0) for c in same if c["config"] == config],
             [(c, rel_factor) for c in same if c["config"] == rel],
             [(c, flops(T) * B * T / (c["flops_per_token"] * c["batch"] * c["seq"])
               * (1.0 if c["config"] == config else rel_factor))
              for c in hist if c["config"] in (config, rel) and c.get("flops_per_token")]]
    # The nearest tier's newest finished run; a stopped run of this very configuration took at
    # least its wall time, a floor under that.
    found = [x for t in tiers for x in t if finished(x[0])]
    floor = max([c["wall_s"] for c, _ in tiers[0] if not finished(c)] or [0.0])
    if not found and not floor:
        return limit, "no earlier run: its limit"
    est, where = floor, "a stopped earlier run of it"
    if found:
        c, factor = found[0]
        fixed, step = model(c)
        if fixed + (warmup + steps) * step * factor >= floor:
            est = fixed + (warmup + steps) * step * factor
            where = f"{c['source']} {c['shape']} {c['batch']}x{c['seq']} {c['config']}" + \
                ("" if abs(factor - 1) < 1e-9 else f" x{factor:.2f}")
    return min(est, limit), where


# --- the benchmark ----------------------------------------------------------------------------

def report(results):
    """The table and the ratio lines of a results dict."""
    peaks = sorted({c.get("gemm_peak_gflops") or results.get("gemm_peak_gflops")
                    for c in results["configs"]} - {None})
    out = (f"GEMM peak (% peak is against it): "
           + ", ".join(f"{p:.1f}" for p in peaks) + " GFLOP/s fp32\n" if peaks else "")
    out += table(results)
    r = ratios(results)
    if r:
        out += "\n\nftune against PyTorch, tokens/s and peak RSS (<, >: a bound, a run stopped):\n" + r
    return out


def plan_runs(a, shapes, bts, configs, steps_of):
    """The runs to make, in order: (shape, B, T, config, timed steps)."""
    runs = []
    for shape in shapes:
        steps = steps_of.get(shape, steps_of.get("*", 2))
        for B, T in bts:
            for config in configs:
                if config in ("torch-bf16-autocast", "torch-compile-fp32") and \
                        a.slow_configs_on != "all" and \
                        f"{shape}:{B}x{T}" not in a.slow_configs_on.split(","):
                    continue
                runs.append((shape, B, T, config, steps))
    return runs


def limit_of(a, config):
    return a.timeout + (a.compile_budget if "compile" in config else 0)


def write_results(a, results, name=None):
    os.makedirs(a.results, exist_ok=True)
    out = os.path.join(a.results, name or time.strftime("train-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="smollm-135m,qwen3-0.6b",
                    help="comma list; one at a time, then --merge the files, on a busy machine")
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
    ap.add_argument("--estimate", action="store_true",
                    help="print how long the chosen runs will take, from earlier results; run nothing")
    ap.add_argument("--compare", action="store_true", help="compare two results files")
    ap.add_argument("--merge", action="store_true",
                    help="merge the results files given (later ones win) into a new one")
    ap.add_argument("--show", action="store_true",
                    help="print the table and ratios of the results files given (merged)")
    # internal modes
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        return measure_main(a.cmd, a.log, a.limit)
    if a.compare:
        return compare_main(a.cmd)
    if a.merge or a.show:
        if not a.cmd:
            print("bench_train.py: --merge/--show take results files", file=sys.stderr)
            return 2
        merged = merge(a.cmd)
        print(report(merged))
        if a.merge:
            print(f"\nwritten: {os.path.relpath(write_results(a, merged), REPO)}")
        return 0
    if a.worker:
        a.steps = int(a.steps)
        return torch_main(a)

    shapes = a.shapes.split(",")
    bts = [tuple(int(x) for x in bt.split("x")) for bt in a.bt.split(",")]
    if a.quick:  # a check that everything runs, not the whole comparison
        shapes, bts = ["smollm-135m"], [(4, 512)]
        if a.configs == ",".join(ALL_CONFIGS):
            a.configs = "ftune-fp32,ftune-bf16,ftune-fp32-ckpt,torch-fp32"
    steps_of = {}
    for part in a.steps.split(","):
        k, _, v = part.rpartition("=")
        steps_of[k or "*"] = int(v)
    configs = a.configs.split(",")
    unknown = [c for c in configs if c not in ALL_CONFIGS]
    if unknown:
        print(f"bench_train.py: unknown configuration(s) {', '.join(unknown)}; "
              f"known: {', '.join(ALL_CONFIGS)}", file=sys.stderr)
        return 2
    if "ftune-bf16" in configs and not ftune_dtypes(a.ftune):
        print("ftune-bf16: skipped (`ftune train --help` lists no --dtype yet)")
        configs.remove("ftune-bf16")
    runs = plan_runs(a, shapes, bts, configs, steps_of)

    # How long this will take, from earlier results files (the machine is shared: say it first).
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from make_model import SHAPES
    hist = history(a.results)
    est = {}
    for shape, B, T, config, steps in runs:
        est[(shape, B, T, config)] = estimate_run(
            hist, shape, B, T, config, steps, a.warmup,
            lambda t, sh=shape: flops_per_token(SHAPES[sh][1], t), limit_of(a, config))
    GEMM_S = 60  # the GEMM peak measurement and model loading, roughly
    total = GEMM_S + sum(e[0] for e in est.values())
    print(f"{len(runs)} runs, estimated {total / 60:.0f} min from earlier results in "
          f"{os.path.relpath(a.results, REPO)} (at their load; at most "
          f"{(GEMM_S + sum(limit_of(a, r[3]) for r in runs)) / 60:.0f} min at the time limits)")
    if a.estimate:
        for (shape, B, T, config), (sec, src) in est.items():
            print(f"  {shape} {B}x{T} {config}: {sec:.0f} s ({src})")
        return 0

    mach = machine()
    results = dict(time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=mach,
                   git_commit=git_commit(), loadavg_start=os.getloadavg(),
                   openblas=openblas_of(a.ftune), torch=torch_info(sys.executable),
                   threads=a.threads, rank=a.rank, warmup=a.warmup, quick=a.quick,
                   run_budget_s=a.run_budget, timeout_s=a.timeout,
                   compile_budget_s=a.compile_budget, slow_configs_on=a.slow_configs_on,
                   ftune_binary=a.ftune, estimated_s=total, configs=[])
    t_start = time.time()
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
    t0 = time.time()
    g = measure_all(a.gemm_bin, str(a.threads), 0.2, echo=False)
    print(summary(g, str(a.threads)), flush=True)
    results["gemm"] = g
    results["gemm_s"] = time.time() - t0
    peak = g["best"]["peak_gflops"] if g["best"] else None
    results["gemm_peak_gflops"] = peak

    from make_model import make_model
    cache_root = os.path.join(os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune")),
                              "bench-models")
    import random
    work_of = {}
    for shape, B, T, config, steps in runs:
        model = os.path.join(cache_root, f"{shape}-f32")
        if not os.path.exists(os.path.join(model, "config.json")):
            print(f"\nmodel: {shape} random weights at {model}", flush=True)
            make_model(shape, model, "f32", 0)
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
        if (shape, B, T) not in work_of:  # the same random tokens for every configuration
            work = work_of[(shape, B, T)] = tempfile.mkdtemp(prefix="ftune-bench-")
            rng = random.Random(0)
            with open(os.path.join(work, "train.jsonl"), "w") as f:
                for _ in range((a.warmup + steps) * B):
                    f.write(json.dumps({"input_ids": [rng.randrange(cfg["vocab_size"])
                                                      for _ in range(T)]}) + "\n")
        work = work_of[(shape, B, T)]
        data = os.path.join(work, "train.jsonl")
        fpt = flops_per_token(cfg, T)
        print(f"  {shape} {B}x{T} {config}: {a.warmup} warm-up + {steps} timed steps "
              f"(~{est[(shape, B, T, config)][0]:.0f} s) ...", end="", flush=True)
        c = dict(shape=shape, batch=B, seq=T, config=config, steps=steps,
                 flops_per_token=fpt, gemm_peak_gflops=peak, loadavg_before=os.getloadavg())
        if config.startswith("ftune"):
            r = run_ftune(a, config, model, data, work, B, T, steps)
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
            c["tokens_per_cpu_s"] = c.get("steps_done", a.warmup + steps) * B * T / cpu_s
        results["configs"].append(c)
        rss = c.get("peak_rss_mb")
        print((f" {tps:.1f} tok/s" if tps else f" failed: {c.get('error') or c.get('rc')}")
              + (f", {'' if tps else 'peak so far '}{rss:.0f} MB" if rss else "")
              + (f" (plan {c['planned_peak_mb']:.0f} MB)" if c.get("planned_peak_mb") else ""),
              flush=True)
        if not tps and c.get("log_tail"):
            print("    " + c["log_tail"].strip().replace("\n", "\n    ")[-600:])

    results["loadavg_end"] = os.getloadavg()
    results["wall_s"] = time.time() - t_start
    print(f"\n{len(runs)} runs in {results['wall_s'] / 60:.0f} min (estimated {total / 60:.0f}); "
          f"GEMM peak {fmt(peak, '{:.1f}')} GFLOP/s fp32, {a.threads} threads "
          f"({g['best']['backend'] if g['best'] else '-'}); load average at the end "
          f"{results['loadavg_end'][0]:.2f} (above {mach['cpus']}: the runs shared their cores)")
    print(report(results))
    out = write_results(a, results)
    print(f"\nwritten: {os.path.relpath(out, REPO)}")
    ok = all(c.get("tokens_per_s") for c in results["configs"] if c["config"].startswith("ftune"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
