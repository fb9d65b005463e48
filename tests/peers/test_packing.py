"""Packing (--pack): several examples per row, positions restarting, no attention across them.

What is compared, for tiny random models of three families (Llama; Mistral with a sliding window
of 6, shorter than the examples; Qwen3 with GQA 4:1) and a PEFT adapter from tests/peers/models.py:
- `ftune eval --pack --seq-len 48 --dump-grads` against `ftune eval --batch-size 1` (the same
  examples one by one, no padding, no packing): loss within 1e-5 relative and every LoRA
  gradient tensor within max|diff| <= 1e-5 * max|g| (fp32; only the order of the sums differs).
  Attention across an example boundary, or positions that do not restart, would change the loss
  and gradients of every later example in a row by far more than this (random weights, logits
  with a spread of a few units).
- the packed run against the peer, PyTorch + PEFT running each example alone (what transformers'
  position_ids packing must equal): loss 1e-5 relative, gradients 1e-4 * max|ref| (the tolerance
  of test_model_parity.py for a different float32 implementation).
- a guard that the rows really hold several examples: `ftune train --pack --dump-data` of the
  same file gives fewer rows than examples, and each row's documents are the examples, intact.
"""
import json

import numpy as np
import pytest

import models
from conftest import last_json_line, run_ok

SEQ = 48


def ftune_eval(model_dir, adapter, data, out, *extra):
    p = run_ok(["eval", "--model", model_dir, "--adapter", adapter, "--data", data,
                "--dump-grads", out, "--threads", "2", *extra])
    return last_json_line(p.stdout), models.read_safetensors(str(out))


def rel_max(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen3"])
def test_packed_equals_one_by_one(arch, zoo, tmp_path):
    model_dir, adapter = zoo.model(arch), zoo.adapter(arch)
    rng = np.random.default_rng(7)
    ex = models.random_examples(rng, 12, 1031, 3, 22)
    data = models.write_jsonl(tmp_path / "data.jsonl", ex)

    # guard: the packed rows hold several intact examples
    dump = tmp_path / "rows.jsonl"
    run_ok(["train", "--model", model_dir, "--data", data, "--seq-len", SEQ, "--pack",
            "--dump-data", dump, "--quiet"])
    rows = [json.loads(l) for l in open(dump)]
    assert len(rows) < len(ex) and max(len(r["docs"]) for r in rows) >= 3
    docs = []
    for r in rows:
        assert len(r["input_ids"]) <= SEQ and sum(r["docs"]) == len(r["input_ids"])
        o = 0
        for n in r["docs"]:
            docs.append((r["input_ids"][o:o + n], r["labels"][o:o + n]))
            o += n
    assert sorted(docs) == sorted((e["input_ids"], e["labels"]) for e in ex)

    packed, gp = ftune_eval(model_dir, adapter, data, tmp_path / "gp.safetensors", "--pack",
                            "--seq-len", SEQ, "--batch-size", "2")
    single, gs = ftune_eval(model_dir, adapter, data, tmp_path / "gs.safetensors",
                            "--batch-size", "1")
    assert packed["tokens"] == single["tokens"]
    assert abs(packed["loss"] - single["loss"]) <= 1e-5 * abs(single["loss"])
    assert set(gp) == set(gs)
    for k in gs:
        assert rel_max(gp[k], gs[k]) <= 1e-5, (k, rel_max(gp[k], gs[k]))

    peft = models.load_peft(model_dir, adapter, trainable=True)
    ref = models.reference_eval(peft, ex, want_grads=True)
    assert packed["tokens"] == ref["tokens"]
    assert abs(packed["loss"] - ref["loss"]) <= 1e-5 * abs(ref["loss"])
    for k, g in ref["grads"].items():
        assert rel_max(gp[k], g) <= 1e-4, (k, rel_max(gp[k], g))


def test_packed_mixed_run_resumes_exactly(tmp_path):
    """A run with two weighted sources, --pack, --val-split and --eval-every, resumed from its
    step-2 checkpoint, ends with the same metrics lines (train and eval losses, bit for bit) and
    the same adapter bytes as the same run left alone: the resume position counts packed rows of
    the one fixed mixed list. The reference is ftune's own uninterrupted run (same threads)."""
    run_ok(["init", "--arch", "llama", "--size", "tiny", "--vocab", "97", "--out", tmp_path / "m"])
    rng = np.random.default_rng(3)
    a = models.write_jsonl(tmp_path / "a.jsonl", models.random_examples(rng, 30, 97, 3, 20))
    b = models.write_jsonl(tmp_path / "b.jsonl", models.random_examples(rng, 10, 97, 3, 20))
    common = ["--model", tmp_path / "m", "--data", f"{a}:0.7", "--data", f"{b}:0.3", "--pack",
              "--seq-len", 32, "--val-split", 0.1, "--eval-every", 2, "--steps", 6, "--batch-size",
              2, "--save-every", 2, "--keep-checkpoints", 0, "--lora-dropout", 0.1, "--threads", 1,
              "--quiet"]
    run_ok(["train", *common, "--out", tmp_path / "A"])
    run_ok(["train", *common, "--out", tmp_path / "B"])
    import shutil
    for s in (4, 6):
        shutil.rmtree(tmp_path / "B" / f"checkpoint-{s}")
    run_ok(["train", "--resume", tmp_path / "B", "--threads", 1, "--quiet"])

    def lines(run):
        out = []
        for l in open(tmp_path / run / "metrics.jsonl"):
            x = json.loads(l)
            out.append({k: v for k, v in x.items() if k not in ("tokens_per_s", "elapsed_s")})
        return out
    la, lb = lines("A"), lines("B")
    assert sum("eval_loss" in x for x in la) == 3
    assert la == lb
    assert (tmp_path / "A" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "B" / "adapter_model.safetensors").read_bytes()
