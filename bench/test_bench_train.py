"""Checks of bench_train.py's bookkeeping, on stored results and on small made-up runs (no
training runs here: `make bench-test`, a few seconds).

What is checked: the ratio rows cover every ftune configuration on every shape and equal the
quotients of the stored tokens/s and peak RSS; a stopped PyTorch run turns a ratio into a bound
of the right direction; merging files keeps the later run of a key and each run's own GEMM peak;
the time estimate gives back an earlier run's own wall time for the same run; and the measuring
wrapper still reports the peak RSS of a run it stops at the time limit.
"""

import copy
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_train as bt  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
from make_model import SHAPES  # noqa: E402

RESULTS = os.path.join(HERE, "results")
QUIET = os.path.join(RESULTS, "train-20261123T140014Z.json")  # SmolLM only, load 0-2
BUSY = os.path.join(RESULTS, "train-20261123T123935Z.json")   # both shapes, runs stopped


def load(path):
    with open(path) as f:
        return json.load(f)


def get(results, shape, B, T, config):
    for c in results["configs"]:
        if (c["shape"], c["batch"], c["seq"], c["config"]) == (shape, B, T, config):
            return c
    raise KeyError((shape, B, T, config))


def test_ratios_equal_the_stored_quotients():
    r = load(QUIET)
    rows = bt.ratio_rows(r)
    ftune = [c for c in r["configs"] if c["config"].startswith("ftune")]
    assert len(rows) == len(ftune) > 0
    for x in rows:
        f = get(r, x["shape"], x["batch"], x["seq"], x["config"])
        t = get(r, x["shape"], x["batch"], x["seq"], "torch-fp32")
        assert x["vs_torch_fp32"] == ("=", pytest.approx(f["tokens_per_s"] / t["tokens_per_s"]))
        assert x["rss_vs_torch_fp32"] == ("=", pytest.approx(f["peak_rss_mb"] / t["peak_rss_mb"]))
        assert x["best_torch"] == "torch-fp32"  # the only PyTorch run in this file
    text = bt.ratios(r)
    assert len(text.splitlines()) == len(rows)
    assert "RSS target <= 0.5x" in text


def with_ckpt_and_stopped_torch(r):
    """The quiet file plus an ftune-fp32-ckpt run on every shape (a copy of ftune-fp32 with half
    its RSS) and, on SmolLM 4x512, torch-fp32 stopped in its first timed step."""
    r = copy.deepcopy(r)
    extra = []
    for c in r["configs"]:
        if c["config"] == "ftune-fp32":
            extra.append(dict(c, config="ftune-fp32-ckpt", peak_rss_mb=c["peak_rss_mb"] / 2,
                              tokens_per_s=c["tokens_per_s"] * 0.8))
    r["configs"] += extra
    t = get(r, "smollm-135m", 4, 512, "torch-fp32")
    t["tokens_per_s_below"] = t.pop("tokens_per_s") * 1.1
    t["rc"] = "timeout"
    return r


def test_every_ftune_config_and_bounds():
    r = with_ckpt_and_stopped_torch(load(QUIET))
    rows = {(x["shape"], x["batch"], x["seq"], x["config"]): x for x in bt.ratio_rows(r)}
    keys = {(c["shape"], c["batch"], c["seq"], c["config"]) for c in r["configs"]
            if c["config"].startswith("ftune")}
    assert set(rows) == keys
    x = rows[("smollm-135m", 4, 512, "ftune-fp32-ckpt")]
    f = get(r, "smollm-135m", 4, 512, "ftune-fp32-ckpt")
    t = get(r, "smollm-135m", 4, 512, "torch-fp32")
    # PyTorch stopped: its speed is below the bound, so ftune's ratio is above this one; its
    # peak RSS could only have grown, so the RSS ratio is at most this one.
    assert x["vs_torch_fp32"] == (">", pytest.approx(f["tokens_per_s"] / t["tokens_per_s_below"]))
    assert x["rss_vs_torch_fp32"] == ("<", pytest.approx(f["peak_rss_mb"] / t["peak_rss_mb"]))
    assert "vs_best_torch" not in x and x["best_torch"] is None
    table = bt.table(r)
    assert ">=" + f"{t['peak_rss_mb']:.0f} MB" in table  # a stopped run's RSS: a lower bound
    assert "ftune-fp32-ckpt" in bt.ratios(r)


def test_best_torch_is_the_fastest():
    r = copy.deepcopy(load(QUIET))
    t = get(r, "smollm-135m", 4, 512, "torch-fp32")
    r["configs"].append(dict(t, config="torch-compile-fp32", tokens_per_s=t["tokens_per_s"] * 1.5,
                             peak_rss_mb=t["peak_rss_mb"] * 0.5))
    x = [x for x in bt.ratio_rows(r) if (x["seq"], x["config"]) == (512, "ftune-fp32")][0]
    f = get(r, "smollm-135m", 4, 512, "ftune-fp32")
    assert x["best_torch"] == "torch-compile-fp32"
    assert x["vs_best_torch"] == ("=", pytest.approx(f["tokens_per_s"] / (t["tokens_per_s"] * 1.5)))
    assert x["least_rss_torch"] == "torch-compile-fp32"
    assert x["rss_vs_least_torch"] == ("=", pytest.approx(f["peak_rss_mb"] /
                                                          (t["peak_rss_mb"] * 0.5)))


def test_merge_keeps_the_later_run_and_its_peak(tmp_path):
    busy, quiet = load(BUSY), load(QUIET)
    m = bt.merge([BUSY, QUIET])
    keys = {(c["shape"], c["batch"], c["seq"], c["config"]) for c in busy["configs"] +
            quiet["configs"]}
    assert {(c["shape"], c["batch"], c["seq"], c["config"]) for c in m["configs"]} == keys
    s = get(m, "smollm-135m", 4, 512, "ftune-fp32")
    assert s["tokens_per_s"] == get(quiet, "smollm-135m", 4, 512, "ftune-fp32")["tokens_per_s"]
    assert s["gemm_peak_gflops"] == quiet["gemm_peak_gflops"]
    q = get(m, "qwen3-0.6b", 4, 512, "ftune-fp32")
    assert q["gemm_peak_gflops"] == busy["gemm_peak_gflops"]
    assert [x["file"] for x in m["merged_from"]] == [os.path.basename(BUSY),
                                                     os.path.basename(QUIET)]
    assert "qwen3-0.6b" in bt.report(m)


def flops_of(shape):
    return lambda T: bt.flops_per_token(SHAPES[shape][1], T)


def test_estimate_gives_back_an_earlier_runs_time(tmp_path):
    # Only the quiet file as history (a later results file would otherwise be the newest).
    (tmp_path / os.path.basename(QUIET)).write_text(open(QUIET).read())
    hist = bt.history(str(tmp_path))
    q = load(QUIET)
    for c in q["configs"]:
        sec, where = bt.estimate_run(hist, c["shape"], c["batch"], c["seq"], c["config"],
                                     c["steps"], q["warmup"], flops_of(c["shape"]), 10**6)
        assert sec == pytest.approx(c["wall_s"], rel=1e-6), where
    # A relative's run, with its factor on the steps only.
    f = get(q, "smollm-135m", 4, 512, "ftune-fp32")
    sec, where = bt.estimate_run(hist, "smollm-135m", 4, 512, "ftune-fp32-ckpt", f["steps"],
                                 q["warmup"], flops_of("smollm-135m"), 10**6)
    assert f["wall_s"] < sec < f["wall_s"] * bt.RELATIVE["ftune-fp32-ckpt"][1]
    # Never past the run's limit.
    assert bt.estimate_run(hist, "smollm-135m", 4, 512, "ftune-fp32", 2, 1,
                           flops_of("smollm-135m"), 5)[0] == 5


def test_wrapper_reports_the_rss_of_a_stopped_run(tmp_path, capsys):
    size_mb = 200
    cmd = [sys.executable, "-c",
           f"b = bytearray({size_mb} << 20)\nimport time\nprint('held', flush=True)\n"
           "time.sleep(120)"]
    bt.measure_main(cmd, str(tmp_path / "log"), 3)
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["rc"] == "timeout"
    assert r["peak_rss_mb"] >= size_mb
    assert r["wall_s"] < 60
