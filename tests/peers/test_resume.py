"""Runs survive interruption: checkpoints, exact resume, atomic outputs, full disks.

These tests compare ftune with itself: a run that is interrupted (SIGINT, SIGKILL at random
moments, a full disk) and resumed must end with the same per-step losses, bit for bit, and the
same adapter bytes as the same run left alone (same thread count). No Python peer is involved:
the reference is the uninterrupted run. The model is a tiny random one that `ftune init` writes.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))

TRAIN = ["--steps", "16", "--save-every", "1", "--batch-size", "2", "--grad-accum", "3",
         "--lora-dropout", "0.1", "--lora-targets", "all-linear", "--threads", "2",
         "--lr", "1e-2", "--schedule", "cosine", "--warmup-steps", "2", "--keep-checkpoints", "2",
         "--quiet"]


def run(*args, **kw):
    return subprocess.run([FTUNE, *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    r = run("init", "--arch", "llama", "--size", "tiny", "--vocab", "97", "--out", d / "model")
    assert r.returncode == 0, r.stderr
    rng = random.Random(1)
    with open(d / "data.jsonl", "w") as f:
        for _ in range(40):  # 20 micro-batches per epoch, 7 steps per epoch: epochs roll over
            n = rng.randint(5, 30)
            ids = [rng.randrange(97) for _ in range(n)]
            labels = [t if rng.random() > 0.2 else -100 for t in ids]
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    ref = d / "ref"
    r = run("train", "--model", d / "model", "--data", d / "data.jsonl", "--out", ref, *TRAIN)
    assert r.returncode == 0, r.stderr
    return d


def losses(run_dir):
    """step -> the loss exactly as written (17 significant digits)."""
    out = {}
    for line in open(run_dir / "metrics.jsonl"):
        m = json.loads(line)
        out[m["step"]] = repr(m["loss"])
    return out


def train_args(d, out):
    return ["train", "--model", d / "model", "--data", d / "data.jsonl", "--out", out, *TRAIN]


def assert_same_as_reference(d, out):
    ref, got = losses(d / "ref"), losses(out)
    assert sorted(got) == list(range(1, 17)), f"steps logged: {sorted(got)}"
    assert got == ref
    assert (out / "adapter_model.safetensors").read_bytes() == \
        (d / "ref" / "adapter_model.safetensors").read_bytes()


def wait_for_lines(path, n, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and sum(1 for _ in open(path)) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("k", [1, 4, 9])
def test_sigint_then_resume_is_exact(work, k):
    out = work / f"sigint{k}"
    p = subprocess.Popen([FTUNE, *map(str, train_args(work, out))], stderr=subprocess.PIPE, text=True)
    assert wait_for_lines(out / "metrics.jsonl", k, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "resume" in err and str(out) in err
    # not an error (issue 15): "stopped", and the command that continues keeps --threads
    assert "ftune: stopped" in err and "error:" not in err, err
    assert f"ftune train --resume {out} --threads 2" in err, err
    r = run("train", "--resume", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(work, out)


def test_sigterm_exit_code(work):
    out = work / "sigterm"
    p = subprocess.Popen([FTUNE, *map(str, train_args(work, out))], stderr=subprocess.PIPE, text=True)
    assert wait_for_lines(out / "metrics.jsonl", 2, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "ftune: stopped" in err and "error:" not in err, err


def test_sigkill_at_random_moments(work):
    """20 SIGKILLs at random moments (during steps and during saves); every resume starts from a
    complete checkpoint, and the finished run equals the uninterrupted one. The run is long (60
    steps) and each kill waits for a random step to be logged plus a random few milliseconds, so
    the kills land inside the run however fast the machine is."""
    steps = ["--steps", "60"]
    args = lambda out: [*train_args(work, out)[:-len(TRAIN)], *TRAIN, *steps]  # noqa: E731
    ref = work / "sigkill-ref"
    r = run(*args(ref))
    assert r.returncode == 0, r.stderr
    out = work / "sigkill"
    rng = random.Random(7)
    kills, first = 0, True
    while True:
        cmd = args(out) if first else ["train", "--resume", out, "--quiet"]
        first = False
        p = subprocess.Popen([FTUNE, *map(str, cmd)], stderr=subprocess.PIPE, text=True)
        if kills < 20:
            done = sum(1 for _ in open(out / "metrics.jsonl")) if (out / "metrics.jsonl").exists() else 0
            target = min(59, done + rng.randint(0, 3))
            wait_for_lines(out / "metrics.jsonl", target, p)
            time.sleep(rng.uniform(0.0, 0.02))
            if p.poll() is None:
                p.kill()
                kills += 1
        _, err = p.communicate(timeout=120)
        for c in out.glob("checkpoint-*"):
            if ".tmp-" in c.name:
                continue
            names = {f.name for f in c.iterdir()}
            assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
                    "trainer_state.json"} <= names, f"{c} is incomplete: {names}"
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, err
    assert kills == 20, f"only {kills} kills landed before the run finished"
    assert losses(out) == losses(ref)
    assert (out / "adapter_model.safetensors").read_bytes() == \
        (ref / "adapter_model.safetensors").read_bytes()


def test_resume_refuses_changed_data(work, tmp_path):
    d = tmp_path
    shutil.copytree(work / "model", d / "model")
    shutil.copy(work / "data.jsonl", d / "data.jsonl")
    out = d / "run"
    r = run(*["train", "--model", d / "model", "--data", d / "data.jsonl", "--out", out,
              *[a if a != "16" else "4" for a in TRAIN]])
    assert r.returncode == 0, r.stderr
    with open(d / "data.jsonl", "a") as f:
        f.write(json.dumps({"input_ids": [1, 2, 3]}) + "\n")
    r = run("train", "--resume", out)
    assert r.returncode == 2
    assert "data changed" in r.stderr and "data.jsonl" in r.stderr


def test_resume_refuses_changed_settings(work):
    """Options that decide the numbers and may not change on resume are refused by name (exit 2),
    with every option given and with --resume alone."""
    out = work / "ref"
    r = run(*train_args(work, out)[:-1], "--batch-size", "3", "--resume", out)
    assert r.returncode == 2
    assert "batch_size=2 (now 3)" in r.stderr and "settings differ" in r.stderr, r.stderr
    r = run("train", "--resume", out, "--seed", "7", "--lora-r", "4")
    assert r.returncode == 2
    assert "seed=42 (now 7)" in r.stderr and "lora_r=8 (now 4)" in r.stderr, r.stderr


def test_refuses_non_empty_out(work):
    r = run(*train_args(work, work / "ref"))
    assert r.returncode == 2
    assert "not empty" in r.stderr and "--overwrite" in r.stderr


def unshare_ok():
    return shutil.which("unshare") and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not unshare_ok(), reason="needs unshare -rm (user and mount namespaces)")
def test_read_only_output_folder(work, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
           + " ".join(f"'{a}'" for a in [FTUNE, *map(str, train_args(work, ro / 'run'))]))
    r = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True)
    assert r.returncode in (1, 2), r.stderr
    assert str(ro / "run") in r.stderr and "Read-only" in r.stderr, r.stderr


@pytest.mark.skipif(not unshare_ok(), reason="needs unshare -rm (user and mount namespaces)")
def test_disk_full_during_save_keeps_previous_checkpoint(work, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / "run"
    args = [a for a in train_args(work, out)]
    args[args.index("--keep-checkpoints") + 1] = "0"  # keep all: the disk fills up
    script = (f"mount -t tmpfs -o size=1200k tmpfs {mnt} && "
              + " ".join(f"'{a}'" for a in [FTUNE, *map(str, args)])
              + f"; rc=$?; cp -r {out} {tmp_path}/copy 2>/dev/null; exit $rc")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "No space left" in r.stderr and "intact" in r.stderr, r.stderr
    ckpts = sorted((tmp_path / "copy").glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    assert ckpts and not any(".tmp-" in c.name for c in ckpts)
    last = ckpts[-1]
    step = int(last.name.split("-")[1])
    assert 0 < step < 16
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == step
    # the last complete checkpoint's adapter is a valid safetensors file with every tensor
    r = run("inspect", "--model", last / "adapter_model.safetensors")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("lora_A") == 2 * 7 and r.stdout.count("lora_B") == 2 * 7
