"""`ftune plan` predicts the peak memory of `ftune train` within 10%.

The reference is the measured peak RSS (ru_maxrss) of the real training process with the same
model and options; 10% is the bound the QLoRA issue sets for the planner. The model is a random
one that `ftune init` writes, large enough (about 150 MB) that the fixed cost of the program is
a small part of it.
"""
import json
import os
import random
import resource
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    r = subprocess.run([FTUNE, "init", "--arch", "qwen3", "--size", "small", "--vocab", "16000",
                        "--out", str(d / "model")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rng = random.Random(0)
    with open(d / "data.jsonl", "w") as f:
        for _ in range(8):
            f.write(json.dumps({"input_ids": [rng.randrange(16000) for _ in range(256)]}) + "\n")
    return d


def peak_rss_of(args):
    """Run ftune in a child that reports its own peak RSS (ru_maxrss of its only child)."""
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "assert r.returncode == 0, r.stderr\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")
    out = subprocess.run(["python3", "-c", code, FTUNE, *map(str, args)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.parametrize("targets,ckpt", [("q_proj,v_proj", False), ("all-linear", False),
                                          ("all-linear", True)])
def test_plan_within_ten_percent(model, targets, ckpt):
    opts = ["--batch-size", "4", "--seq-len", "256", "--lora-r", "16", "--lora-targets", targets]
    if ckpt:
        opts.append("--grad-checkpoint")
    r = subprocess.run([FTUNE, "plan", "--model", model / "model", *opts], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    planned = json.loads(r.stdout.strip().splitlines()[-1])["total_bytes"]
    measured = peak_rss_of(["train", "--model", model / "model", "--data", model / "data.jsonl",
                            "--out", model / f"run-{targets}-{ckpt}", "--overwrite", "--steps", "2",
                            "--threads", "2", "--quiet", *opts])
    assert abs(planned - measured) <= 0.10 * measured, \
        f"planned {planned / 2**20:.1f} MB, measured {measured / 2**20:.1f} MB"


def test_plan_bad_model(tmp_path):
    r = subprocess.run([FTUNE, "plan", "--model", tmp_path], capture_output=True, text=True)
    assert r.returncode == 2 and "config.json" in r.stderr
