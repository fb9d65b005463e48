"""QLoRA: ftune with quantized frozen weights against bitsandbytes, transformers, PEFT and gguf.

The model is the tiny random Llama of tests/peers/models.py (untied LM head, all seven
projections), saved in F32; the adapter is the PEFT one (init_lora_weights=False) that
test_train_parity.py starts from, and the data, lr, schedule, accumulation, clipping and decay are
test_train_parity.py's.

What is compared, and the tolerance:
- training with `--quant nf4` (and with --double-quant, and `--quant fp4`) against a plain PyTorch
  + PEFT loop over the model transformers loads with BitsAndBytesConfig(load_in_4bit=True,
  bnb_4bit_quant_type=..., bnb_4bit_compute_dtype=float32, bnb_4bit_use_double_quant=...) on the
  CPU (device_map="cpu"; bitsandbytes 0.50 runs 4-bit on the CPU with its torch kernels): loss and
  grad_norm of each of 20 steps within 1e-3 relative. The codes and absmax are bit-identical
  (test_quantize_bnb.py), so what differs is the order of fp32 sums, as in the fp32 parity test;
  a wrong code table, block size or double-quantized absmax moves the loss by far more (a guard
  checks that the nf4 run's losses differ from the fp32 reference's by more than the tolerance).
- a checkpoint that transformers saved from a bitsandbytes 4-bit model (save_pretrained, with and
  without double quantization): `ftune eval --dump-logits` against transformers loading that
  folder: max |diff| <= 1e-3 * max |logit|, the loss within 1e-5 relative.
- `--quant q8` / `--quant bf16`: logits against transformers running the F32 model whose linear
  weights were replaced by their dequantized values (Q8_0 by gguf.quants.quantize / dequantize,
  bf16 by torch's round-to-nearest-even cast): 1e-4 absolute, the model parity tolerance (the
  weights are then the same numbers, only sums are ordered differently).
"""

import json
import os

import numpy as np
import pytest
import torch

import models
from conftest import last_json_line, run_ftune, run_ok
from test_model_parity import examples_for
from test_train_parity import read_metrics, train_examples

pytest.importorskip("bitsandbytes")

ARCH = "llama"
STEPS = 20
BATCH, ACCUM, LR, WARMUP, WD, MAX_GRAD_NORM = 2, 3, 3e-3, 4, 0.01, 4.0
LOSS_RTOL = 1e-3
LOGIT_RTOL = 1e-3
LOGIT_ATOL = 1e-4


def load_bnb(model_dir, quant, double_quant, compute_dtype=torch.float32):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant,
                             bnb_4bit_compute_dtype=compute_dtype,
                             bnb_4bit_use_double_quant=double_quant)
    return AutoModelForCausalLM.from_pretrained(model_dir, device_map="cpu", dtype=torch.float32,
                                                attn_implementation="eager",
                                                quantization_config=cfg).eval()


def reference_qlora(model_dir, adapter_dir, quant, double_quant, examples, steps=STEPS,
                    compute_dtype=torch.float32):
    """test_train_parity's reference loop (models.reference_train) over the bitsandbytes 4-bit
    model (its 4-bit layers computing in compute_dtype)."""
    from peft import PeftModel
    model = PeftModel.from_pretrained(load_bnb(model_dir, quant, double_quant, compute_dtype),
                                      adapter_dir, is_trainable=True)
    recs, _ = models.reference_train(model, examples, steps, BATCH, ACCUM, LR, "cosine", WARMUP,
                                     WD, MAX_GRAD_NORM)
    return recs


@pytest.fixture(scope="module")
def setup(zoo, tmp_path_factory):
    d = tmp_path_factory.mktemp("qlora")
    ex = train_examples()
    return dict(dir=d, model=zoo.model(ARCH, "f32"), init=zoo.adapter(ARCH), examples=ex,
                data=models.write_jsonl(str(d / "train.jsonl"), ex))


def train_ftune(s, run, extra):
    run_ok(["train", "--model", s["model"], "--data", s["data"], "--out", run, "--adapter",
            s["init"], "--steps", STEPS, "--batch-size", BATCH, "--grad-accum", ACCUM, "--lr", LR,
            "--schedule", "cosine", "--warmup-steps", WARMUP, "--weight-decay", WD,
            "--max-grad-norm", MAX_GRAD_NORM, "--lora-dropout", 0, "--no-shuffle", "--seed", 0,
            "--threads", 1, "--quiet", *extra])
    return read_metrics(run)


@pytest.mark.parametrize("quant,double_quant", [("nf4", False), ("nf4", True), ("fp4", False)])
def test_qlora_training_matches_peft_bitsandbytes(setup, quant, double_quant):
    run = str(setup["dir"] / f"run-{quant}-{int(double_quant)}")
    got = train_ftune(setup, run, ["--quant", quant] + (["--double-quant"] if double_quant else []))
    ref = reference_qlora(setup["model"], setup["init"], quant, double_quant, setup["examples"])
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    bad = []
    for g, r in zip(got, ref):
        e_loss = abs(g["loss"] - r["loss"]) / abs(r["loss"])
        e_norm = abs(g["grad_norm"] - r["grad_norm"]) / r["grad_norm"]
        if e_loss > LOSS_RTOL or e_norm > LOSS_RTOL:
            bad.append((g["step"], g["loss"], r["loss"], g["grad_norm"], r["grad_norm"]))
    worst = max(abs(g["loss"] - r["loss"]) / abs(r["loss"]) for g, r in zip(got, ref))
    print(f"{quant} dq={double_quant}: worst loss rel err {worst:.2e}")
    assert not bad, f"steps off (step, loss, ref loss, norm, ref norm): {bad[:5]}"
    cfg = json.load(open(os.path.join(run, "run_config.json")))
    fw = cfg["resolved"]["frozen_weights"]
    assert fw["linear"] == quant and fw["double_quant"] == double_quant and fw["blocksize"] == 64
    assert cfg["options"]["quant"] == quant
    if quant == "nf4" and not double_quant:
        # the storage is part of the run's settings: resuming with other weights is refused
        p = run_ftune(["train", "--resume", run, "--model", setup["model"], "--data",
                       setup["data"], "--quant", "fp4"])
        assert p.returncode == 2 and "quant=nf4 (now fp4)" in p.stderr, p.stderr
        # guard: quantization shows in the numbers, so the comparison above is not with fp32
        fp32 = train_ftune(setup, str(setup["dir"] / "run-fp32"), [])
        assert max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(fp32, ref)) > 10 * LOSS_RTOL


def eval_logits(tmp_path, model_dir, data, extra=()):
    out = tmp_path / "logits.safetensors"
    p = run_ok(["eval", "--model", model_dir, "--data", data, "--batch-size", 2,
                "--dump-logits", out, *extra])
    return last_json_line(p.stdout), models.read_safetensors(str(out))["logits"]


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    ex = examples_for(models._COMMON["vocab_size"])
    return ex, models.write_jsonl(str(tmp_path_factory.mktemp("qeval") / "eval.jsonl"), ex)


@pytest.mark.parametrize("double_quant", [False, True])
def test_bnb_saved_checkpoint_logits(zoo, eval_data, tmp_path, double_quant):
    saved = tmp_path / "bnb"
    load_bnb(zoo.model(ARCH, "f32"), "nf4", double_quant).save_pretrained(saved)
    qc = json.load(open(saved / "config.json"))["quantization_config"]
    assert qc["load_in_4bit"] and qc["bnb_4bit_use_double_quant"] == double_quant
    ref_model = models.load_model(str(saved))  # transformers reads the 4-bit folder as saved
    assert "Linear4bit" in type(ref_model.model.layers[0].self_attn.q_proj).__name__
    ex, data = eval_data
    ref = models.reference_eval(ref_model, ex)
    res, logits = eval_logits(tmp_path, saved, data)
    assert logits.shape == ref["logits"].shape
    err = np.abs(logits - ref["logits"]).max()
    print(f"bnb checkpoint dq={double_quant}: max |dlogit| {err:.2e} of {np.abs(ref['logits']).max():.2f}")
    assert err <= LOGIT_RTOL * np.abs(ref["logits"]).max(), err
    assert res["tokens"] == ref["tokens"]
    assert abs(res["loss"] - ref["loss"]) <= 1e-5 * ref["loss"]
    # the planner counts the checkpoint's 4-bit weights
    p = run_ok(["plan", "--model", saved, "--batch-size", 1, "--seq-len", 16])
    assert "linear nf4" + (" double-quant" if double_quant else "") in p.stdout, p.stdout
    # --quant of another type cannot apply to weights that are already 4-bit
    p = run_ftune(["eval", "--model", saved, "--data", data, "--quant", "fp4"])
    assert p.returncode == 2 and "nf4" in p.stderr and "--quant" in p.stderr


def dequantized_model(model_dir, quant):
    """transformers' F32 model with every linear weight of the blocks replaced by its value
    after quantization (the LM head and embedding stay F32, as ftune keeps them by default)."""
    import gguf
    m = models.load_model(model_dir)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not (name.startswith("model.layers.") and name.endswith("_proj.weight")):
                continue
            w = p.detach().numpy()
            if quant == "bf16":
                v = p.to(torch.bfloat16).to(torch.float32)
            else:
                q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
                v = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
                                     .reshape(w.shape).astype(np.float32))
            assert not torch.equal(v, p)  # quantization changes the weights
            p.copy_(v)
    return m


@pytest.mark.parametrize("quant", ["q8", "bf16"])
def test_q8_bf16_logits_match_dequantized_weights(zoo, eval_data, tmp_path, quant):
    model_dir = zoo.model(ARCH, "f32")
    ex, data = eval_data
    ref = models.reference_eval(dequantized_model(model_dir, quant), ex)
    _, logits = eval_logits(tmp_path, model_dir, data, ["--quant", quant])
    err = np.abs(logits - ref["logits"]).max()
    print(f"{quant}: max |dlogit| {err:.2e}")
    assert err <= LOGIT_ATOL, err
    # guard: the fp32 logits differ from these by more than the tolerance
    _, full = eval_logits(tmp_path, model_dir, data)
    assert np.abs(full - ref["logits"]).max() > 10 * LOGIT_ATOL


def test_quant_bad_options(zoo, eval_data):
    _, data = eval_data
    model_dir = zoo.model(ARCH, "f32")
    for extra, words in [(["--quant", "int3"], ["int3", "nf4"]),
                         (["--quant", "q8", "--double-quant"], ["--double-quant"]),
                         (["--quant", "nf4", "--quant-blocksize", "48"], ["48"]),
                         (["--quant-lm-head", "nf4"], ["--quant-lm-head"])]:
        p = run_ftune(["eval", "--model", model_dir, "--data", data, *extra])
        assert p.returncode == 2, (extra, p.stderr)
        assert all(w in p.stderr for w in words), (extra, p.stderr)
