"""Data-parallel training under mpirun: N ranks against one process with the same global batch.

ftune compares with itself here (docs/distributed.md): `mpirun -np N ftune train --grad-accum A`
runs the global batch --batch-size x A x N, which one process runs as --grad-accum A x N. Each
rank accumulates its share of a step's micro-batches as one process does, then the ranks' sums
are added in rank order; one process adds the same micro-batches in one running sum, so the two
differ by fp32 rounding of the gradient sums only. Tolerances, and why:
- step 1's loss: bit-identical for every N (the same parameters, and the micro-batch losses are
  gathered and added in micro-batch order as one process adds them);
- N = 1 under mpirun: bit-identical losses and adapter bytes (the one-process code path);
- every later step's loss and gradient norm: 1e-6 relative (the issue's bound; the gradient sums
  differ in their last bits and AdamW carries that into the parameters);
- the adapter: 99% of the values within 1e-6 of their tensor's largest value, all within 2e-4 of
  it. AdamW divides each element's step by that element's own gradient RMS, so where a gradient
  is near 0 (lora_A's, while lora_B is still near its zero start) a last-bit difference of the sum
  becomes a visible fraction of that element's update: measured at lr 1e-2 (50x the usual 2e-4,
  so that differences show), 0.14-0.16% of the values differ by more than 1e-6 of their tensor's
  largest value, the worst by 7.9e-5 (1e-3 of one lr-sized update); the losses stay within 1e-6;
- the same N twice: bit-identical (ftune's fixed-order reduction, not MPI_Allreduce's).
Ranks talk over TCP on loopback, which exercises the code a multi-host run does. Tiny models from
`ftune init`; --threads 1 per rank.
"""
import json
import re
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))
MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(
    MPIRUN is None, reason="mpirun not found (tools/deps.sh installs openmpi-bin)")

MPI = ["--oversubscribe", "--bind-to", "none", "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
       "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_WAIT_POLICY="passive")
ADAPTER_TOL, ADAPTER_MOST = 2e-4, 0.99  # see the module docstring
G = 6  # micro-batches per optimizer step over all ranks: 6 = 6 x 1 = 3 x 2 = 2 x 3
BASE = ["--batch-size", "2", "--lora-targets", "all-linear", "--lora-dropout", "0.1",
        "--lr", "1e-2", "--schedule", "cosine", "--warmup-steps", "1", "--threads", "1",
        "--quiet"]
CONFIGS = {
    "lora": ["--steps", "5"],
    "nf4-pack": ["--steps", "4", "--quant", "nf4", "--pack", "--seq-len", "48"],
}


def ftune(*args, np_=None, mpmd=None, timeout=120):
    if np_ is None:
        cmd = [FTUNE, *map(str, args)]
    else:
        cmd = [MPIRUN, *MPI, "-np", str(np_), FTUNE, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstderr:\n{p.stderr[-4000:]}"
    return p


def test_version_says_mpi():
    """With mpirun installed (tools/deps.sh installs it with libopenmpi-dev) ftune is built with
    MPI, and says so."""
    out = subprocess.run([FTUNE, "--version"], capture_output=True, text=True).stdout
    assert "MPI: Open MPI" in out, f"{out!r}: rebuild after `make deps` (the Makefile finds mpicc)"


def test_fixed_order_sum():
    """tests/dist_test.c under 3 ranks: every element of the fp32 and fp64 sums is the rank-order
    sum, bit for bit, on vectors where another order gives other bits; agreement names the rank."""
    exe = Path(FTUNE).parent / "tests" / "dist_test"
    p = subprocess.run([MPIRUN, *MPI, "-np", "3", str(exe)], capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(" 0 failed") == 3, p.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    ok(ftune("init", "--arch", "llama", "--size", "tiny", "--vocab", "97", "--out", d / "model"))
    rng = random.Random(7)
    with open(d / "data.jsonl", "w") as f:
        for _ in range(26):  # 13 micro-batches an epoch: steps of 6, 6, then 1 (uneven split)
            n = rng.randint(5, 30)
            ids = [rng.randrange(97) for _ in range(n)]
            labels = [t if rng.random() > 0.2 else -100 for t in ids]
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    return d


def train(d, out, config, n=None, accum=None, extra=()):
    args = ["train", "--model", d / "model", "--data", d / "data.jsonl", "--out", out,
            "--grad-accum", accum or G, *BASE, *CONFIGS[config], *extra]
    return ok(ftune(*args, np_=n))


def losses(run, key="loss"):
    return [json.loads(l)[key] for l in open(run / "metrics.jsonl") if '"loss"' in l]


def assert_close(got, ref, what):
    ga, ra = losses(got), losses(ref)
    assert len(ga) == len(ra), f"{what}: {len(ga)} steps logged, {len(ra)} expected"
    assert ga[0] == ra[0], f"{what}: step 1 loss {ga[0]!r} vs {ra[0]!r} (must be bit-identical)"
    worst = max(abs(a - b) / abs(b) for a, b in zip(ga, ra))
    assert worst <= 1e-6, f"{what}: losses {ga} vs {ra}: {worst:.3g} relative"
    gn, rn = losses(got, "grad_norm"), losses(ref, "grad_norm")
    gworst = max(abs(a - b) / abs(b) for a, b in zip(gn, rn))
    assert gworst <= 1e-6, f"{what}: grad norms {gn} vs {rn}: {gworst:.3g} relative"
    A = load_file(got / "adapter_model.safetensors")
    B = load_file(ref / "adapter_model.safetensors")
    assert A.keys() == B.keys()
    aworst, n_far, n_all = 0.0, 0, 0
    for k in A:
        scale = max(float(np.abs(B[k]).max()), 1e-30)
        d = np.abs(A[k] - B[k]) / scale
        aworst = max(aworst, float(d.max()))
        n_far, n_all = n_far + int((d > 1e-6).sum()), n_all + d.size
        assert d.max() <= ADAPTER_TOL, f"{what}: {k} differs by {d.max():.3g} of its largest value"
    assert n_far <= (1 - ADAPTER_MOST) * n_all, f"{what}: {n_far} of {n_all} values beyond 1e-6"
    return max(worst, gworst), aworst, n_far / n_all


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_ranks_match_one_process(work, config):
    """N = 1, 2, 3 ranks against one process with the same global batch (batch 2 x 6)."""
    ref = work / f"{config}-ref"
    train(work, ref, config)
    one = work / f"{config}-np1"
    train(work, one, config, n=1)
    assert losses(one) == losses(ref)
    assert (one / "adapter_model.safetensors").read_bytes() == \
        (ref / "adapter_model.safetensors").read_bytes()
    for n in (2, 3):
        out = work / f"{config}-np{n}"
        train(work, out, config, n=n, accum=G // n)
        worst, aworst, far = assert_close(out, ref, f"{config}, {n} ranks")
        print(f"\n{config}: {n} ranks vs one process: losses and grad norms within {worst:.3g} "
              f"relative; adapter within {aworst:.3g} of each tensor's largest value, "
              f"{100 * far:.2f}% of values beyond 1e-6")
        cfg = json.load(open(out / "run_config.json"))
        assert cfg["options"]["grad_accum"] == G, "run_config.json keeps the global accumulation"
        assert not any(p.name.startswith("checkpoint-") and ".tmp" in p.name
                       for p in out.iterdir())


def test_same_ranks_bit_reproducible(work):
    """The fixed-order reduction: the same N gives the same bits, run after run."""
    a, b = work / "rep-a", work / "rep-b"
    train(work, a, "lora", n=3, accum=2)
    train(work, b, "lora", n=3, accum=2)
    assert [repr(x) for x in losses(a)] == [repr(x) for x in losses(b)]
    assert (a / "adapter_model.safetensors").read_bytes() == \
        (b / "adapter_model.safetensors").read_bytes()


def test_resume_with_other_ranks(work):
    """A 2-rank run's checkpoint resumed by 3 ranks, and by one process: the same continuation
    (same global batch, same example order): its first step bit-identical to the 2-rank run's,
    the rest within 1e-6 of it and of one process."""
    full = work / "res-full"
    train(work, full, "lora", n=2, accum=3, extra=["--save-every", "1", "--keep-checkpoints", "0"])
    ref = work / "lora-ref"
    if not ref.exists():
        train(work, ref, "lora")
    for n in (3, None):  # 3 ranks, then one process
        part = work / f"res-part-{n}"
        shutil.copytree(full, part)
        for s in (4, 5):  # as if stopped after step 3
            shutil.rmtree(part / f"checkpoint-{s}")
        (part / "adapter_model.safetensors").unlink()
        p = ok(ftune("train", "--resume", part, "--quiet", np_=n))
        got, want = losses(part), losses(full)
        assert len(got) == 5
        assert got[:4] == want[:4], "steps up to the checkpoint kept; step 4 bit-identical"
        assert max(abs(a - b) / abs(b) for a, b in zip(got, want)) <= 1e-6
        assert max(abs(a - b) / abs(b) for a, b in zip(got, losses(ref))) <= 1e-6
        assert "error" not in p.stderr


@pytest.mark.parametrize("what", ["lr", "seed", "model"])
def test_mismatched_ranks_exit_2(work, what):
    """Ranks started with different options, or with a model missing on one rank: every rank
    exits 2, and rank 0 prints the one message, naming the rank and what differs."""
    out = work / f"mismatch-{what}"

    def args(model, *other):
        return ["train", "--model", model, "--data", work / "data.jsonl", "--out", out,
                "--grad-accum", "3", *BASE, *CONFIGS["lora"], *other]
    rank1 = {"lr": args(work / "model", "--lr", "2e-2"), "seed": args(work / "model", "--seed", 5),
             "model": args(work / "no-such-model")}[what]
    cmd = [MPIRUN, *MPI, "-np", "1", FTUNE, *map(str, args(work / "model")), ":",
           "-np", "1", FTUNE, *map(str, rank1)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stderr[-3000:]}"
    assert p.stderr.count("ftune: error") == 1, p.stderr
    assert "rank 1" in p.stderr, p.stderr
    assert (what == "model" and "no-such-model" in p.stderr) or f"{what}=" in p.stderr, p.stderr
    assert not (out / "metrics.jsonl").exists()

def long_run(work, out, extra=(), mpi=()):
    """A 2-rank run that would take hours, started in the background."""
    args = ["train", "--model", work / "model", "--data", work / "data.jsonl", "--out", out,
            "--grad-accum", "2", *BASE, "--steps", "10000000", *extra]
    return subprocess.Popen([MPIRUN, *MPI, *mpi, "-np", "2", FTUNE, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def rank_pid(proc, rank, timeout=30):
    """The pid of mpirun's child that runs the given rank."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = (p / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != proc.pid:
                    continue
                env = (p / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(p.name)
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} of mpirun {proc.pid} not found")


def wait_for_checkpoint(out, n, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if sum(1 for p in out.glob("checkpoint-*") if ".tmp" not in p.name) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoints in {out}")


def newest_checkpoint(out):
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if ".tmp" not in p.name]
    return max(steps)


def assert_resumes(work, out):
    """The newest checkpoint is whole and a 3-rank resume goes on from it by one step."""
    last = newest_checkpoint(out)
    for f in ("adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"):
        assert (out / f"checkpoint-{last}" / f).exists()
    ok(ftune("train", "--resume", out, "--steps", last + 1, "--quiet", np_=3))
    assert newest_checkpoint(out) == last + 1
    return last


def test_rank_killed(work):
    """SIGKILL of rank 1: mpirun stops rank 0 within 60 s (measured: about 2 s) and names rank 1;
    the newest checkpoint is whole and resumes with another number of ranks."""
    out = work / "killed"
    proc = long_run(work, out, ["--save-every", "20"])
    wait_for_checkpoint(out, 2, proc)
    t0 = time.time()
    os.kill(rank_pid(proc, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    took = time.time() - t0
    print(f"\nrank 1 killed: mpirun exited {proc.returncode} after {took:.1f} s")
    assert proc.returncode != 0 and took < 60
    assert "rank 1" in err, err
    assert_resumes(work, out)


def test_sigterm_to_mpirun_checkpoints(work):
    """SIGTERM to mpirun: Open MPI sends SIGTERM to the ranks odls_base_sigkill_timeout seconds
    later (3 here) and SIGKILL as long after that; the ranks agree on the signal after their step
    and rank 0 saves a checkpoint of the last step done, which resumes."""
    out = work / "term"
    # Open MPI 4.1: SIGTERM to the ranks this many seconds after mpirun's, SIGKILL as long after
    proc = long_run(work, out, ["--save-every", "100000"],
                    mpi=["--mca", "odls_base_sigkill_timeout", "3"])
    t0 = time.time()
    while not (out / "metrics.jsonl").exists() and time.time() - t0 < 60:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    steps = [json.loads(l)["step"] for l in open(out / "metrics.jsonl")]
    assert newest_checkpoint(out) == steps[-1], "the checkpoint is of the last step logged"
    assert_resumes(work, out)


# ---- --shard-base: sharded frozen weights (docs/distributed.md, "Sharded base weights") ------

@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_shard_base_same_bits(work, config):
    """--shard-base with 2 and 3 ranks gives the same losses and adapter bytes as the same ranks
    without it (every layer's weights are all-gathered to the same bytes before they are used),
    so also the same numbers as one process within the bounds above. 13 micro-batches an epoch:
    the last step's single micro-batch leaves ranks with none, which walk the gathers."""
    ref = work / f"{config}-ref"
    if not ref.exists():
        train(work, ref, config)
    for n in (2, 3):
        plain = work / f"{config}-np{n}"
        if not plain.exists():
            train(work, plain, config, n=n, accum=G // n)
        out = work / f"{config}-np{n}-shard"
        train(work, out, config, n=n, accum=G // n, extra=["--shard-base"])
        assert [repr(x) for x in losses(out)] == [repr(x) for x in losses(plain)], config
        assert (out / "adapter_model.safetensors").read_bytes() == \
            (plain / "adapter_model.safetensors").read_bytes(), f"{config}, {n} ranks"
        assert_close(out, ref, f"{config}, {n} ranks, --shard-base")


def test_shard_base_double_quant_and_head(work):
    """The pieces of a double-quantized NF4 layer (codes, 8-bit absmax, nested absmax and code)
    and a bf16 LM head, sharded across 3 ranks and gathered, with gradient checkpointing (the
    recompute in backward uses the gathered layer): the same bits as without --shard-base. The
    vocabulary of 1000 makes the head 8 chunks of rows (128 rows, about one NF4 layer's bytes,
    the last 104), each gathered on its own, twice per micro-batch but the two last."""
    model = work / "model-v1000"
    if not model.exists():
        ok(ftune("init", "--arch", "llama", "--size", "tiny", "--vocab", "1000", "--out", model))
    extra = ["--quant", "nf4", "--double-quant", "--quant-lm-head", "bf16", "--steps", "2",
             "--grad-checkpoint"]
    runs = []
    for tag, sb in (("plain", []), ("shard", ["--shard-base"])):
        out = work / f"dq-{tag}"
        args = ["train", "--model", model, "--data", work / "data.jsonl", "--out", out,
                "--grad-accum", 2, *BASE, *extra, *sb]
        ok(ftune(*args, np_=3))
        runs.append(out)
    assert losses(runs[0]) == losses(runs[1])
    assert (runs[0] / "adapter_model.safetensors").read_bytes() == \
        (runs[1] / "adapter_model.safetensors").read_bytes()


PEAK = """import os, resource, subprocess, sys
p = subprocess.run(sys.argv[2:])
r = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
open(sys.argv[1] + "." + r, "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(p.returncode)
"""
# 134 MB of fp32 weights: they dominate; the head (32 MB) is larger than a layer (12 MB)
WIDE = dict(C=512, L=8, I=1536, H=8, KV=4, D=64, V=16384)


def wide_model(work):
    """A model whose fp32 weights dominate its training memory (B 1, T 32)."""
    d = work / "wide"
    if d.exists():
        return d
    d.mkdir()
    s = WIDE
    cfg = json.load(open(work / "model" / "config.json"))
    cfg.update(hidden_size=s["C"], intermediate_size=s["I"], num_hidden_layers=s["L"],
               num_attention_heads=s["H"], num_key_value_heads=s["KV"], head_dim=s["D"],
               vocab_size=s["V"])
    json.dump(cfg, open(d / "config.json", "w"), indent=1)
    rng = np.random.default_rng(0)
    w = lambda *shape: rng.standard_normal(shape, dtype=np.float32) * 0.02
    C, I, HD, KD = s["C"], s["I"], s["H"] * s["D"], s["KV"] * s["D"]
    t = {"model.embed_tokens.weight": w(s["V"], C), "lm_head.weight": w(s["V"], C),
         "model.norm.weight": np.ones(C, np.float32)}
    for l in range(s["L"]):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = np.ones(C, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(C, np.float32)
        for name, shape in (("self_attn.q_proj", (HD, C)), ("self_attn.k_proj", (KD, C)),
                            ("self_attn.v_proj", (KD, C)), ("self_attn.o_proj", (C, HD)),
                            ("mlp.gate_proj", (I, C)), ("mlp.up_proj", (I, C)),
                            ("mlp.down_proj", (C, I))):
            t[p + name + ".weight"] = w(*shape)
    from safetensors.numpy import save_file
    save_file(t, str(d / "model.safetensors"))
    return d


def test_shard_base_memory_and_plan(work):
    """Per-rank peak RSS with --shard-base at N = 2, on a model whose weights dominate: below the
    peak of a rank without it, minus the weights, plus half the weights, plus two layers (the
    gather buffers, also for the LM head, which is gathered in chunks of about a layer's size),
    plus 10%; and `ftune plan --ranks 2 --shard-base` within 10% of it. The
    reference is a 2-rank run without --shard-base rather than one process, since each rank
    also holds Open MPI (measured: 13.6 MB more than one process). The adapters match bit for
    bit."""
    model = wide_model(work)
    peak = work / "peak.py"
    peak.write_text(PEAK)
    import sys
    args = ["train", "--model", model, "--data", work / "data.jsonl", "--batch-size", "1",
            "--seq-len", "32", "--grad-accum", "2", "--steps", "2", "--threads", "1", "--quiet",
            "--lora-targets", "all-linear"]
    rss = {}
    for tag, extra in (("plain", []), ("shard", ["--shard-base"])):
        cmd = [MPIRUN, *MPI, "-np", "2", sys.executable, str(peak), str(work / f"rss-{tag}"),
               FTUNE, *map(str, args), "--out", str(work / f"wide-{tag}"), *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        rss[tag] = [int((work / f"rss-{tag}.{r}").read_text()) for r in (0, 1)]
    assert (work / "wide-plain" / "adapter_model.safetensors").read_bytes() == \
        (work / "wide-shard" / "adapter_model.safetensors").read_bytes()
    s = WIDE
    C, I, HD, KD = s["C"], s["I"], s["H"] * s["D"], s["KV"] * s["D"]
    layer = 4 * (2 * HD * C + 2 * KD * C + 3 * I * C)
    weights = s["L"] * layer + 4 * s["V"] * C + 4 * (2 * s["L"] + 1) * C  # + head + norms
    bound = (max(rss["plain"]) - weights + weights / 2 + 2 * layer) * 1.10
    MB = 1048576
    print(f"\npeak RSS per rank: without --shard-base {[r / MB for r in rss['plain']]} MB, with "
          f"{[r / MB for r in rss['shard']]} MB; bound {bound / MB:.1f} MB "
          f"(weights {weights / MB:.1f} MB, a layer {layer / MB:.1f} MB)")
    assert max(rss["shard"]) < bound, (rss, bound)
    # the gathers of a micro-batch after the first: the forward's layers 2 .. L-1, the head's
    # chunks of R rows (about a layer's bytes) 0 .. K-1 for the loss and K-3 .. 0 again for its
    # gradient (the last two stay), the backward's L-1 .. 0 (layers 0 and 1 stay for the next
    # forward); step 2 runs 2 micro-batches per rank
    head = 4 * s["V"] * C
    R = layer // (4 * C) // 64 * 64
    K = -(-s["V"] // R)
    assert K == 3
    again = 4 * C * R * (K - 2)
    rows = [json.loads(l) for l in open(work / "wide-shard" / "metrics.jsonl") if '"loss"' in l]
    assert rows[1]["gathered_bytes"] == 2 * ((2 * s["L"] - 2) * layer + head + again), rows[1]
    plan = subprocess.run([FTUNE, "plan", "--model", model, "--batch-size", "1", "--seq-len", "32",
                           "--lora-targets", "all-linear", "--ranks", "2", "--shard-base"],
                          capture_output=True, text=True, env=ENV)
    assert plan.returncode == 0, plan.stderr
    total = json.loads(plan.stdout.strip().splitlines()[-1])["total_bytes"]
    got = max(rss["shard"])
    print(f"plan --ranks 2 --shard-base: {total / MB:.1f} MB, measured {got / MB:.1f} MB "
          f"({100 * (total - got) / got:+.1f}%)")
    assert abs(total - got) <= 0.10 * got


def read_counts(stderr):
    got = {}
    for line in stderr.splitlines():
        m = re.match(r"ftune: rank (\d+) read (\d+) bytes of the checkpoint while loading", line)
        if m:
            got[int(m.group(1))] = int(m.group(2))
    return got


@pytest.mark.parametrize("checkpoint", ["f32", "nf4-bnb"])
def test_shard_base_reads_its_slice(work, checkpoint):
    """--shard-base: each rank reads only its slice of the layers and the LM head from the
    checkpoint (pread of its byte range), plus the norms (and a bitsandbytes weight's small
    parts); the embedding is read a row at a time as tokens look it up. FTUNE_DEBUG_READ=1 makes
    each rank print the bytes it read while loading: about 1/N of the sharded tensors' bytes at
    N = 2 and 3, for fp32 weights kept as stored and for a bitsandbytes NF4 checkpoint (ftune
    quantize --double-quant) with its fp32 head."""
    import sys
    from safetensors import safe_open
    model = wide_model(work)
    if checkpoint == "nf4-bnb":
        q = work / "wide-nf4"
        if not q.exists():
            ok(ftune("quantize", "--model", model, "--out", q, "--quant", "nf4",
                     "--double-quant"))
        model = q
    sharded = small = 0  # the bytes of the sliced tensors, and of what every rank reads whole
    with safe_open(str(model / "model.safetensors"), "np") as f:
        for k in f.keys():
            n = f.get_tensor(k).nbytes
            if "embed_tokens" in k:
                continue
            whole = k.endswith("norm.weight") or any(
                p in k for p in (".quant_map", ".nested_absmax", ".nested_quant_map", "quant_state"))
            if whole:
                small += n
            else:
                sharded += n
    for n in (2, 3):
        cmd = [MPIRUN, *MPI, "-np", str(n), FTUNE, "train", "--model", str(model), "--data",
               str(work / "data.jsonl"), "--out", str(work / f"read-{checkpoint}-{n}"),
               "--batch-size", "1", "--seq-len", "32", "--steps", "1", "--threads", "1",
               "--quiet", "--lora-targets", "all-linear", "--shard-base"]
        p = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(ENV, FTUNE_DEBUG_READ="1"), timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        got = read_counts(p.stderr)
        assert sorted(got) == list(range(n)), p.stderr[-3000:]
        print(f"\n{checkpoint}, {n} ranks: read {got} bytes; sliced tensors {sharded}, "
              f"read whole {small}")
        for r, b in got.items():
            # each unit's slice is whole 64-byte units: within 64 bytes a unit of 1/N
            # (a bitsandbytes weight's nested absmax is read whole, to check it, and a slice)
            assert sharded / n - 64 * 20 <= b <= sharded / n + 2 * small + 64 * 20, (r, b)
            assert b < 1.02 * sharded / n + small, (r, b)


def test_hung_rank_detected(work):
    """SIGSTOP of rank 1 (a hung rank, or a dropped network): with --dist-timeout 2 rank 0 asks
    after 2 s whether the others are alive, names rank 1 2 s later with the resume command, and
    the job stops; the newest checkpoint is whole and resumes with 3 ranks."""
    out = work / "hung"
    proc = long_run(work, out, ["--save-every", "20", "--dist-timeout", "2"])
    wait_for_checkpoint(out, 2, proc)
    pid = rank_pid(proc, 1)
    t0 = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    took = time.time() - t0
    print(f"\nrank 1 stopped: mpirun exited {proc.returncode} after {took:.1f} s")
    assert proc.returncode != 0 and took < 20, (proc.returncode, took)
    assert "rank 1 (" in err and "has not answered" in err, err
    assert f"ftune train --resume {out}" in err, err
    assert err.count("has not answered") == 1, err
    assert_resumes(work, out)


def test_overlapped_reduction_same_bits(work):
    """Each layer's gradient sum starts when its backward is done and moves while backward goes
    on below it; every element is still the rank-order sum, so the run's bits equal those of one
    reduction after the backward passes (FTUNE_DIST_OVERLAP=0). metrics.jsonl says how long the
    sum took and how much of it was waited for."""
    out, plain = work / "overlap-on", work / "overlap-off"
    train(work, out, "lora", n=3, accum=2)
    env = dict(ENV, FTUNE_DIST_OVERLAP="0")
    args = ["train", "--model", work / "model", "--data", work / "data.jsonl", "--out", plain,
            "--grad-accum", 2, *BASE, *CONFIGS["lora"]]
    p = subprocess.run([MPIRUN, *MPI, "-x", "FTUNE_DIST_OVERLAP", "-np", "3", FTUNE,
                        *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    ok(p)
    assert [repr(x) for x in losses(out)] == [repr(x) for x in losses(plain)]
    assert (out / "adapter_model.safetensors").read_bytes() == \
        (plain / "adapter_model.safetensors").read_bytes()
    rows = [json.loads(l) for l in open(out / "metrics.jsonl") if '"loss"' in l]
    assert all(0 <= r["comm_wait_s"] <= r["comm_s"] + 1e-3 for r in rows), rows
