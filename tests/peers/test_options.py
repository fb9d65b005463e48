"""The options table as a user meets it (issues 14 and 15): grouped help with examples, values
refused or warned about, a diverged run, resuming from another folder, extending a run, and
--overwrite.

No Python peer defines these behaviours except the schedule of an extended run, which follows
transformers' Trainer: when max_steps grows, the scheduler is built again over the new total, so
the learning rate of step s is lr * factor(s, warmup, new_total) (transformers' get_scheduler; the
linear factor is (total - s) / (total - warmup)). That one is checked against the formula to 1e-12
relative (both are double arithmetic of the same expression). The model is a tiny random one that
`ftune init` writes; the data are random token ids.
"""
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))


def run(*args, cwd=None):
    return subprocess.run([FTUNE, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("options")
    r = run("init", "--arch", "llama", "--size", "tiny", "--vocab", "97", "--out", d / "model")
    assert r.returncode == 0, r.stderr
    rng = random.Random(3)
    with open(d / "data.jsonl", "w") as f:
        for _ in range(32):
            ids = [rng.randrange(97) for _ in range(rng.randint(5, 20))]
            f.write(json.dumps({"input_ids": ids}) + "\n")
    return d


def base(work, out, *extra):
    return ["train", "--model", work / "model", "--data", work / "data.jsonl", "--out", out,
            "--batch-size", "4", "--threads", "1", *extra]


def metrics(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


GROUPS = ["model:", "data:", "LoRA:", "optimisation:", "memory and quantization:",
          "checkpoints:", "output:"]


def test_help_grouped_with_examples():
    a, b = run("help", "train"), run("train", "--help")
    assert a.returncode == 0 and b.returncode == 0
    assert a.stdout == b.stdout and a.stdout.startswith("usage: ftune train")
    text = a.stdout
    pos = [text.index("\n" + g + "\n") for g in GROUPS]
    assert pos == sorted(pos), "groups in order"
    # each option in its group: the section from its heading to the next
    sect = {g: text[p:q] for g, p, q in zip(GROUPS, pos, pos[1:] + [text.index("\nexamples:")])}
    for g, opt in [("model:", "--model DIR"), ("data:", "--val-split F"), ("LoRA:", "--lora-r R"),
                   ("optimisation:", "--lr LR"), ("memory and quantization:", "--quant FMT"),
                   ("checkpoints:", "--save-every N"), ("output:", "--overwrite")]:
        assert opt in sect[g], (g, opt)
    assert text.count("\n  ftune train") >= 2, "examples"
    for cmd in ("eval", "plan", "tokenize", "detokenize", "inspect", "generate", "chat"):
        h = run("help", cmd)
        assert h.returncode == 0 and h.stdout == run(cmd, "--help").stdout, cmd
        ex = h.stdout.split("\nexamples:\n")
        assert len(ex) == 2 and ex[1].count(f"ftune {cmd}") >= 2, cmd
    ev = run("eval", "--help").stdout
    assert "--template-arg K=V" in ev and "--quant-blocksize N" in ev and "\nLoRA:\n" in ev
    assert run("help", "no-such").returncode == 2


@pytest.mark.parametrize("args,words", [
    (["--batch-size", "4294967297"], ["--batch-size", "2147483647"]),
    (["--grad-accum", "0"], ["--grad-accum"]),
    (["--lr", "nan"], ["--lr", "finite"]),
    (["--lr", "-1"], ["--lr", "at least 0"]),
    (["--threads", "-1"], ["--threads"]),
    (["--seed", "-1"], ["--seed"]),
    (["--eval-every", "2"], ["--eval-every", "validation", "--val-split"]),
])
def test_refused_values(work, tmp_path, args, words):
    r = run(*base(work, tmp_path / "r", "--steps", "1", *args))
    assert r.returncode == 2, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_eval_and_plan_share_the_checks(work):
    r = run("eval", "--model", work / "model", "--data", work / "data.jsonl", "--batch-size",
            "4294967297")
    assert r.returncode == 2 and "2147483647" in r.stderr, r.stderr
    r = run("plan", "--model", work / "model", "--quant-blocksize", "99999")
    assert r.returncode == 2 and "--quant-blocksize" in r.stderr, r.stderr
    r = run("eval", "--model", work / "model", "--data", work / "data.jsonl", "--seq-len", "0",
            "--template-arg", "x=1")
    assert r.returncode == 0, r.stderr


def test_warned_values(work, tmp_path):
    r = run(*base(work, tmp_path / "a", "--steps", "1", "--lr", "0"))
    assert r.returncode == 0 and "warning: --lr is 0" in r.stderr, r.stderr
    r = run(*base(work, tmp_path / "b", "--steps", "1", "--seq-len", "4096", "--quiet"))
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "max_position_embeddings (2048)" in r.stderr, r.stderr


def test_diverged_run(work, tmp_path):
    """4 good steps (checkpoint-4), then a resume with an absurd --lr: AdamW's decoupled weight
    decay multiplies the weights by (1 - lr * wd), so step 5 blows them up and step 6's loss is
    NaN. metrics.jsonl stays valid JSON (null and "diverged"), exit 1 with a hint, and the run
    resumes from checkpoint-4 with a sane --lr to the end."""
    out = tmp_path / "run"
    r = run(*base(work, out, "--steps", "4", "--save-every", "4", "--lr", "1e-3",
                  "--weight-decay", "1"))
    assert r.returncode == 0, r.stderr
    r = run("train", "--resume", out, "--steps", "8", "--lr", "1e20")
    assert r.returncode == 1, r.stderr
    assert "diverged" in r.stderr and "--resume" in r.stderr and "--lr" in r.stderr, r.stderr
    assert "hint:" in r.stderr and "checkpoint-4" in r.stderr
    m = metrics(out)  # json.loads of every line: NaN would be refused here
    bad = [x for x in m if x.get("diverged")]
    assert len(bad) == 1 and bad[0]["loss"] is None and bad[0]["step"] == 6, m
    assert bad[0]["diverged"].startswith("loss is") or bad[0]["diverged"].startswith("gradient")
    r = run("train", "--resume", out, "--lr", "1e-3")
    assert r.returncode == 0, r.stderr
    m = metrics(out)
    assert [x["step"] for x in m] == list(range(1, 9))
    assert all(x["loss"] is not None and "diverged" not in x for x in m)


def test_resume_from_another_folder_and_extend(work, tmp_path):
    """Relative paths at the start, --resume from elsewhere; --steps extends the run with the
    schedule recomputed over the new total (as the Trainer does); resuming again says the run is
    finished."""
    a = tmp_path / "a"
    a.mkdir()
    shutil.copytree(work / "model", a / "model")
    shutil.copy(work / "data.jsonl", a / "data.jsonl")
    r = run("train", "--model", "model", "--data", "data.jsonl", "--out", "run", "--steps", "4",
            "--lr", "1e-2", "--batch-size", "4", "--threads", "1", cwd=a)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((a / "run" / "run_config.json").read_text())
    assert cfg["options"]["model"] == str(a / "model")
    assert cfg["options"]["data_sources"] == [str(a / "data.jsonl")]
    assert cfg["as_given"]["model"] == "model" and cfg["as_given"]["data_sources"] == ["data.jsonl"]
    adapter_cfg = json.loads((a / "run" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "model"
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    r = run("train", "--resume", a / "run", "--steps", "8", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "--steps 4 -> 8" in r.stderr and "recomputed over 8 steps" in r.stderr, r.stderr
    m = metrics(a / "run")
    assert [x["step"] for x in m] == list(range(1, 9))
    for x in m[4:]:
        want = 1e-2 * (8 - (x["step"] - 1)) / 8
        assert abs(x["lr"] - want) <= 1e-12 * want, (x["step"], x["lr"], want)
    assert json.loads((a / "run" / "run_config.json").read_text())["resolved"]["total_steps"] == 8
    before = (a / "run" / "metrics.jsonl").read_text()
    r = run("train", "--resume", a / "run", cwd=elsewhere)
    assert r.returncode == 0 and "finished" in r.stderr and "8 of its 8" in r.stderr, r.stderr
    assert (a / "run" / "metrics.jsonl").read_text() == before
    # --epochs cannot extend a run whose length is --steps: said, not silently ignored
    r = run("train", "--resume", a / "run", "--epochs", "9", cwd=elsewhere)
    assert r.returncode == 0 and "--epochs has no effect" in r.stderr, r.stderr
    assert (a / "run" / "metrics.jsonl").read_text() == before


def test_overwrite_clears_only_ftunes_files(work, tmp_path):
    out = tmp_path / "run"
    r = run(*base(work, out, "--steps", "4", "--save-every", "1", "--keep-checkpoints", "0"))
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("checkpoint-*"))) == 4
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    r = run(*base(work, out, "--steps", "2", "--seed", "7", "--save-every", "1", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert sorted(c.name for c in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine").is_dir()
    assert [x["step"] for x in metrics(out)] == [1, 2]
    # the checkpoints are the new run's: extending it works
    r = run("train", "--resume", out, "--steps", "3")
    assert r.returncode == 0, r.stderr
    assert [x["step"] for x in metrics(out)] == [1, 2, 3]
