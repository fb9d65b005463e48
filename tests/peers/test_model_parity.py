"""Model parity: ftune's forward (logits, loss) and LoRA backward against transformers + PEFT.

For each architecture of issue 3 (tests/peers/models.py: Llama plain, Llama with llama3 rope
scaling, Llama with attention and MLP biases and tied embeddings, Mistral with a sliding window of 6
under sequences of up to 23 tokens, Qwen2, Qwen3 with head_dim 32 != hidden/heads, Phi-3 with fused
qkv_proj / gate_up_proj), a random-weight model built by transformers is saved in F32 and in BF16.
The reference loads the folder with dtype=torch.float32 and eager attention and runs each example
alone (no padding); ftune runs `ftune eval` over the same JSONL file in padded batches.

What is compared, and the tolerance:
- logits of `--dump-logits` ([N, T_max, V], zero past each example's end) against transformers:
  1e-4 absolute (issue 3). Logits here are O(1-10); fp32 sums in another order differ by ~1e-6.
- the loss and token count printed by `ftune eval` against the reference's sum of token
  cross-entropies / counted tokens: 1e-5 relative (a float32 reduction over ~70 tokens), count exact.
- with a PEFT adapter (init_lora_weights=False, dropout 0, r 4-8, one rsLoRA case, all seven
  projections or Phi-3's fused names): logits as above, and every tensor of `--dump-grads` against
  PEFT's autograd gradient of the same loss, max |diff| <= 1e-4 * max |reference| per tensor
  (issue 3); the dumped "loss" within 1e-5 relative; the set of tensor names equal to the names in
  adapter_model.safetensors.
- `--seq-len 10`: logits and loss equal the reference run on examples truncated to 10 tokens.
Before any comparison, guards check that the reference itself exercises the feature (the sliding
window and the llama3 rope scaling change transformers' logits, biases are non-zero), so the
parity tests cannot pass by a feature being inert.
"""

import json
import os

import numpy as np
import pytest
import torch

import models
from conftest import last_json_line, run_ok

ARCHS = list(models.ARCHS)
DTYPES = ["f32", "bf16"]
LENGTHS = [23, 7, 16, 3, 11]  # unequal; 23 > Mistral's window of 6; batch-size 2 pads each batch

LOGIT_ATOL = 1e-4
GRAD_RTOL = 1e-4
LOSS_RTOL = 1e-5


def examples_for(vocab):
    rng = np.random.default_rng(1234)
    ex = []
    for i, T in enumerate(LENGTHS):
        ids = [int(t) for t in rng.integers(0, vocab, size=T)]
        labels = list(ids)
        if i == 1:
            labels[:3] = [-100] * 3  # a masked prompt
        if i == 2:
            labels[8] = -100  # a hole in the middle
        ex.append(dict(input_ids=ids, labels=labels))
    return ex


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity-data")
    ex = examples_for(models._COMMON["vocab_size"])
    return ex, models.write_jsonl(os.path.join(d, "eval.jsonl"), ex)


def eval_ftune(tmp_path, model_dir, data_file, adapter=None, extra=()):
    args = ["eval", "--model", model_dir, "--data", data_file, "--batch-size", "2",
            "--dump-logits", tmp_path / "logits.safetensors"]
    if adapter:
        args += ["--adapter", adapter, "--dump-grads", tmp_path / "grads.safetensors"]
    p = run_ok(args + list(extra))
    res = last_json_line(p.stdout)
    logits = models.read_safetensors(str(tmp_path / "logits.safetensors"))["logits"]
    grads = models.read_safetensors(str(tmp_path / "grads.safetensors")) if adapter else None
    return res, logits, grads


def check_logits(got, ref):
    assert got.dtype == np.float32, got.dtype
    assert got.shape == ref.shape, (got.shape, ref.shape)
    diff = np.abs(got.astype(np.float64) - ref)
    i = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() <= LOGIT_ATOL, (
        f"logits differ by {diff.max():.3g} at [example, t, vocab]={tuple(map(int, i))}: "
        f"ftune {got[i]:.6f}, transformers {ref[i]:.6f} (tolerance {LOGIT_ATOL})")


def check_loss(res, ref):
    assert res["tokens"] == ref["tokens"], (res, ref["tokens"])
    assert abs(res["loss"] - ref["loss"]) <= LOSS_RTOL * abs(ref["loss"]), (res["loss"], ref["loss"])
    assert abs(res["perplexity"] - np.exp(ref["loss"])) <= 1e-4 * np.exp(ref["loss"])


# --- guards: the reference itself exercises each feature --------------------------------------

def test_reference_features_are_live(zoo, data):
    ex, _ = data
    x = torch.tensor([ex[0]["input_ids"]])  # 23 tokens
    # Mistral: the sliding window (6) changes transformers' logits for a 23-token sequence.
    m = models.load_model(zoo.model("mistral"))
    with torch.no_grad():
        a = m(input_ids=x).logits
        m.config.sliding_window = None
        b = m(input_ids=x).logits
    assert (a - b).abs().max() > 1e-2, "sliding window inert in the reference"
    # Llama 3 rope scaling changes the logits against plain rope with the same theta.
    m = models.load_model(zoo.model("llama_rope3"))
    import transformers
    cfg = models.build_config("llama_rope3")
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    plain = transformers.LlamaForCausalLM(cfg).eval()
    plain.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert (m(input_ids=x).logits - plain(input_ids=x).logits).abs().max() > 1e-2
    # Biases exist and are non-zero where the architecture has them.
    sd = models.load_model(zoo.model("llama_bias")).state_dict()
    for k in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]:
        assert sd[f"model.layers.0.{'self_attn' if k[0] in 'qkvo' else 'mlp'}.{k}.bias"].abs().max() > 0
    sd = models.load_model(zoo.model("qwen2")).state_dict()
    assert sd["model.layers.1.self_attn.k_proj.bias"].abs().max() > 0
    assert "model.layers.1.self_attn.o_proj.bias" not in sd
    sd = models.load_model(zoo.model("qwen3")).state_dict()
    assert tuple(sd["model.layers.0.self_attn.q_proj.weight"].shape) == (4 * 32, 64)
    assert tuple(sd["model.layers.0.self_attn.q_norm.weight"].shape) == (32,)


# --- logits and loss of the base model -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_and_loss(zoo, data, tmp_path, arch, dtype):
    ex, data_file = data
    model_dir = zoo.model(arch, dtype)
    ref = models.reference_eval(models.load_model(model_dir), ex)
    res, logits, _ = eval_ftune(tmp_path, model_dir, data_file)
    check_logits(logits, ref["logits"])
    check_loss(res, ref)


# --- LoRA: logits, loss and every gradient -----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_lora_grads(zoo, data, tmp_path, arch, dtype):
    ex, data_file = data
    model_dir = zoo.model(arch, dtype)
    adapter = zoo.adapter(arch)
    peft_model = models.load_peft(model_dir, adapter, trainable=True)
    ref = models.reference_eval(peft_model, ex, want_grads=True)
    res, logits, grads = eval_ftune(tmp_path, model_dir, data_file, adapter=adapter)
    check_logits(logits, ref["logits"])
    check_loss(res, ref)

    names = set(models.read_safetensors(os.path.join(adapter, "adapter_model.safetensors")))
    assert set(ref["grads"]) == names  # the reference's own naming agrees with PEFT's file
    assert set(grads) == names | {"loss"}, sorted(set(grads) ^ (names | {"loss"}))
    assert grads["loss"].shape == (1,)
    assert abs(float(grads["loss"][0]) - ref["loss"]) <= LOSS_RTOL * ref["loss"]
    worst = []
    for name in sorted(names):
        g, r = grads[name], ref["grads"][name]
        assert g.shape == r.shape, (name, g.shape, r.shape)
        scale = float(np.abs(r).max())
        assert scale > 0, f"reference gradient {name} is zero"
        err = float(np.abs(g.astype(np.float64) - r).max()) / scale
        worst.append((err, name))
    worst.sort(reverse=True)
    bad = [(e, n) for e, n in worst if not e <= GRAD_RTOL]
    assert not bad, (f"{len(bad)} of {len(worst)} gradients off (max|diff|/max|ref|, tolerance "
                     f"{GRAD_RTOL}): " + ", ".join(f"{n}: {e:.3g}" for e, n in bad[:8]))


# --- --seq-len truncation --------------------------------------------------------------------

def test_seq_len_truncates(zoo, data, tmp_path):
    ex, data_file = data
    model_dir = zoo.model("llama", "f32")
    cut = [dict(input_ids=e["input_ids"][:10], labels=e["labels"][:10]) for e in ex]
    ref = models.reference_eval(models.load_model(model_dir), cut)
    res, logits, _ = eval_ftune(tmp_path, model_dir, data_file, extra=["--seq-len", "10"])
    check_logits(logits, ref["logits"])
    check_loss(res, ref)


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_batch_size_does_not_change_loss(zoo, data, batch_size):
    """Padding never counts: the loss over the file is the same for any batch size."""
    ex, data_file = data
    model_dir = zoo.model("qwen3", "f32")
    ref = models.reference_eval(models.load_model(model_dir), ex)
    p = run_ok(["eval", "--model", model_dir, "--data", data_file, "--batch-size", batch_size])
    check_loss(last_json_line(p.stdout), ref)
