"""Peer tests for the safetensors reader and the config.json reader, through `ftune inspect`.

What is compared, and with what tolerance:

* Tensors written by the Python `safetensors` library from torch (F32, F16, BF16, odd shapes, a
  scalar, a 0-size tensor, subnormals, +-inf, NaN) read back through `ftune inspect --tensor`:
  must equal torch's own `.float()` conversion bit for bit (tolerance 0: F16/BF16 -> F32 is
  exact, and ftune prints 9 significant digits, which round-trips every fp32 value).
  The tensor listing must equal safe_open's names, dtypes and shapes.
* A sharded checkpoint written by transformers' save_pretrained(max_shard_size=...) opens as
  one set: the names equal the model's state_dict keys, and values read back exactly.
* For each supported architecture (Llama, Mistral, Qwen2, Qwen3, Phi3) and the variants the
  brief lists (llama3 rope, linear rope in both the transformers-5 format and the legacy
  rope_theta + rope_scaling format, Qwen3 with head_dim != hidden/heads, Mistral with a sliding
  window, Qwen2 with use_sliding_window / max_window_layers and with explicit layer_types, Phi3
  with partial_rotary_factor 0.5, biases on): `ftune inspect --config` must give the same head
  dim, kv heads, biases, tie flag, q/k norm, fused projections and per-layer sliding windows as
  transformers' config and model objects, and the inv_freq that the model's rotary embedding
  module holds, to within 1 ulp of fp32 (torch's CPU pow is SLEEF's 1-ulp powf while C's powf
  is correctly rounded, so a handful of entries differ in the last bit; the test prints how
  many are bit-identical).
* Bad configs (unsupported rope type, missing field, unknown architecture) exit with status 2
  and name config.json and the field.
"""
import json
import os
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import AutoConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FTUNE = os.environ.get("FTUNE_BIN", os.path.join(REPO, "build", "ftune"))


def ftune(*args, ok=True):
    r = subprocess.run([FTUNE, *args], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, f"ftune {' '.join(args)} -> {r.returncode}\n{r.stderr}"
    return r


def read_tensor(path, name):
    out = ftune("inspect", "--model", path, "--tensor", name).stdout
    return np.array(json.loads(out), dtype=np.float32)


def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype=np.float32).ravel()
    b = np.ascontiguousarray(b, dtype=np.float32).ravel()
    if a.shape != b.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all(both_nan | (a.view(np.uint32) == b.view(np.uint32))))


# ------------------------------------------------------------------ safetensors


def test_dtypes_read_back_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-5, 3e38, float("inf"),
                            float("-inf"), float("nan")])
    tensors = {
        "f32.odd": torch.randn(3, 5, 7, generator=g),
        "f16.odd": (torch.randn(2, 9, generator=g) * 100).half(),
        "bf16.odd": (torch.randn(11, 3, generator=g) * 1e3).bfloat16(),
        "f16.special": special.half(),
        "bf16.special": special.bfloat16(),
        "f32.special": special.float(),
        "f32.scalar": torch.tensor(1.25),
        "f32.empty": torch.zeros(0, 4),
        "i64.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    path = str(tmp_path / "t.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "note": "peer"})

    listing = ftune("inspect", "--model", path).stdout.strip().splitlines()
    got = {}
    for line in listing:
        name, dtype, shape = line.split("\t")
        got[name] = (dtype, json.loads(shape))
    with safe_open(path, "pt") as f:
        want = {k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()}
    assert got == want

    for name, t in tensors.items():
        if t.dtype == torch.int64:
            r = ftune("inspect", "--model", path, "--tensor", name, ok=False)
            assert r.returncode == 2 and "I64" in r.stderr
            continue
        v = read_tensor(path, name)
        ref = t.float().numpy()
        assert v.size == ref.size, name
        assert same_bits(v, ref), f"{name}: {v} vs {ref}"


def test_sharded_checkpoint(tmp_path):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(cfg)
    d = str(tmp_path / "sharded")
    m.save_pretrained(d, max_shard_size="40KB")
    shards = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    assert len(shards) > 2 and os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    names = {line.split("\t")[0] for line in ftune("inspect", "--model", d).stdout.splitlines()}
    index = json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"]
    assert names == set(index)
    sd = m.state_dict()
    for name in ["model.embed_tokens.weight", "model.layers.2.mlp.down_proj.weight",
                 "model.norm.weight"]:
        assert same_bits(read_tensor(d, name), sd[name].numpy()), name
    # a missing shard is an input error naming the index and the file
    os.remove(os.path.join(d, sorted(shards)[-1]))
    r = ftune("inspect", "--model", d, ok=False)
    assert r.returncode == 2 and "index.json" in r.stderr and sorted(shards)[-1] in r.stderr


# ------------------------------------------------------------------ config.json

SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             vocab_size=128)

CASES = {
    "llama_smollm": ("LlamaForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                              rope_theta=10000.0)),
    "llama_bias": ("LlamaForCausalLM", dict(attention_bias=True, mlp_bias=True, rope_theta=5e5)),
    "llama_linear": ("LlamaForCausalLM", dict(rope_parameters={"rope_type": "linear",
                                                               "factor": 4.0,
                                                               "rope_theta": 1e4})),
    "llama_llama3": ("LlamaForCausalLM", dict(rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256, "rope_theta": 500000.0})),
    "mistral_window": ("MistralForCausalLM", dict(num_key_value_heads=2, sliding_window=16)),
    "mistral_nowindow": ("MistralForCausalLM", dict(num_key_value_heads=4, sliding_window=None)),
    "qwen2": ("Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                       rope_theta=1e6)),
    "qwen2_window": ("Qwen2ForCausalLM", dict(num_key_value_heads=2, use_sliding_window=True,
                                              sliding_window=8, max_window_layers=1)),
    "qwen2_layer_types": ("Qwen2ForCausalLM", dict(
        num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    "qwen3_head_dim": ("Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=32,
                                                rope_theta=1e6)),
    "qwen3_bias": ("Qwen3ForCausalLM", dict(num_key_value_heads=4, head_dim=16,
                                            attention_bias=True)),
    # Phi3Config's default pad_token_id (32000) is outside this tiny vocabulary
    "phi3": ("Phi3ForCausalLM", dict(num_key_value_heads=4, pad_token_id=0)),
    "phi3_partial": ("Phi3ForCausalLM", dict(num_key_value_heads=2, pad_token_id=0,
                                             rope_parameters={"rope_type": "default",
                                                              "rope_theta": 1e4,
                                                              "partial_rotary_factor": 0.5})),
    "phi3_window": ("Phi3ForCausalLM", dict(num_key_value_heads=2, sliding_window=12,
                                            pad_token_id=0)),
}


def build(arch, kw, d):
    cls = getattr(transformers, arch)
    cfg_cls = cls.config_class
    cfg = cfg_cls(**SMALL, **kw)
    torch.manual_seed(0)
    m = cls(cfg)
    m.save_pretrained(d)
    return m


def ulp_distance(a, b):
    """Distance in fp32 units in the last place (both positive here)."""
    ia = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    ib = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
    return np.abs(ia - ib)


def expected_from_model(m):
    c = m.config
    layers = m.model.layers
    attn = layers[0].self_attn
    fused = hasattr(attn, "qkv_proj")
    if fused:
        attn_bias = attn.qkv_proj.bias is not None
    else:
        attn_bias = attn.q_proj.bias is not None
        assert (attn.k_proj.bias is not None) == attn_bias == (attn.v_proj.bias is not None)
    mlp = layers[0].mlp
    mlp_bias = mlp.down_proj.bias is not None
    windows = []
    for layer in layers:
        if hasattr(layer.self_attn, "sliding_window"):  # Qwen2/Qwen3: per layer
            w = layer.self_attn.sliding_window
        else:  # Mistral, Phi3 read config.sliding_window in every layer; Llama has none
            w = getattr(c, "sliding_window", None)
        windows.append(int(w or 0))
    bos = c.bos_token_id[0] if isinstance(c.bos_token_id, list) else c.bos_token_id
    eos = c.eos_token_id[0] if isinstance(c.eos_token_id, list) else c.eos_token_id
    return {
        "C": c.hidden_size, "I": c.intermediate_size, "L": c.num_hidden_layers,
        "H": c.num_attention_heads, "Hkv": c.num_key_value_heads, "D": attn.head_dim,
        "V": c.vocab_size,
        "eps": float(np.float32(c.rms_norm_eps)),
        "tie_embeddings": int(m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()),
        "attn_bias": int(attn_bias), "o_bias": int(attn.o_proj.bias is not None),
        "mlp_bias": int(mlp_bias), "max_pos": c.max_position_embeddings,
        "window": windows,
        "bos_token_id": -1 if bos is None else bos, "eos_token_id": -1 if eos is None else eos,
        "qk_norm": int(hasattr(attn, "q_norm")), "fused_qkv": int(fused),
        "fused_gate_up": int(hasattr(mlp, "gate_up_proj")),
    }


def check_config(d, m, label):
    got = json.loads(ftune("inspect", "--model", d, "--config").stdout)
    want = expected_from_model(m)
    for k, v in want.items():
        have = got["arch"][k] if k in ("qk_norm", "fused_qkv", "fused_gate_up") else got[k]
        if k == "eps":  # printed with 9 digits: compare as the fp32 values they denote
            have = float(np.float32(have))
        assert have == v, f"{label}: {k}: ftune {have} vs transformers {v}"
    inv = m.model.rotary_emb.inv_freq.float().numpy()
    mine = np.array(got["inv_freq"], dtype=np.float32)
    assert mine.shape == inv.shape, f"{label}: {mine.shape} vs {inv.shape}"
    assert got["rot_dim"] == 2 * inv.size
    assert got["attn_scaling"] == m.model.rotary_emb.attention_scaling == 1.0
    ulps = ulp_distance(mine, inv)
    exact = int((ulps == 0).sum())
    print(f"{label}: inv_freq {exact}/{inv.size} bit-identical, max {ulps.max()} ulp, "
          f"max rel {np.max(np.abs(mine - inv) / inv):.3g}")
    assert ulps.max() <= 1, f"{label}: inv_freq differs by {ulps.max()} ulp"
    return got


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_transformers(case, tmp_path):
    arch, kw = CASES[case]
    d = str(tmp_path / case)
    m = build(arch, kw, d)
    got = check_config(d, m, case)
    assert got["arch"]["hf_class"] == arch


def test_legacy_rope_format(tmp_path):
    """rope_theta + rope_scaling {"type": ...} (files written before transformers 5): ftune
    must read them like transformers 5.23 does (AutoConfig of the very same file)."""
    variants = {
        "linear": {"type": "linear", "factor": 2.0},
        "llama3": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 512},
    }
    for name, scaling in variants.items():
        d = str(tmp_path / name)
        build("LlamaForCausalLM", {}, d)
        p = os.path.join(d, "config.json")
        j = json.load(open(p))
        del j["rope_parameters"]
        j["rope_theta"] = 250000.0
        j["rope_scaling"] = scaling
        j["torch_dtype"] = j.pop("dtype", "float32")
        json.dump(j, open(p, "w"), indent=2)
        cfg = AutoConfig.from_pretrained(d)
        torch.manual_seed(0)
        m = transformers.LlamaForCausalLM(cfg)
        assert m.config.rope_parameters["rope_type"] == name
        got = check_config(d, m, "legacy_" + name)
        assert got["torch_dtype"] == "float32"


def test_inv_freq_grid(tmp_path):
    """Default rope over many (theta, head_dim): how often ftune's fp32 inv_freq is bit-identical
    to transformers' (LlamaRotaryEmbedding), and never more than 1 ulp apart."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    total = exact = worst = 0
    for theta in [1e4, 5e5, 1e6, 1234.5]:
        for hd in [8, 16, 32, 64, 80, 96, 128, 256]:
            d = str(tmp_path / f"g{theta}_{hd}")
            cfg = transformers.LlamaConfig(hidden_size=hd * 2, intermediate_size=8,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           vocab_size=8, rope_theta=theta)
            cfg.architectures = ["LlamaForCausalLM"]
            cfg.save_pretrained(d)
            inv = LlamaRotaryEmbedding(cfg).inv_freq.numpy()
            mine = np.array(json.loads(ftune("inspect", "--model", d, "--config").stdout)
                            ["inv_freq"], dtype=np.float32)
            u = ulp_distance(mine, inv)
            total += inv.size
            exact += int((u == 0).sum())
            worst = max(worst, int(u.max()))
    print(f"inv_freq grid: {exact}/{total} bit-identical, worst {worst} ulp")
    assert worst <= 1


@pytest.mark.parametrize("edit,field", [
    (lambda j: j["rope_parameters"].update(rope_type="dynamic", factor=2.0), "rope_type"),
    (lambda j: j.update(rope_parameters=None, rope_scaling={"type": "yarn", "factor": 4.0}),
     "rope_scaling.type"),
    (lambda j: j.pop("hidden_size"), "hidden_size"),
    (lambda j: j.update(num_attention_heads="4"), "num_attention_heads"),
    (lambda j: j.update(architectures=["GPT2LMHeadModel"]), "architectures"),
    (lambda j: j.update(hidden_act="gelu"), "hidden_act"),
    (lambda j: j.update(num_key_value_heads=3), "num_key_value_heads"),
])
def test_bad_config(tmp_path, edit, field):
    d = str(tmp_path / "bad")
    build("LlamaForCausalLM", {}, d)
    p = os.path.join(d, "config.json")
    j = json.load(open(p))
    edit(j)
    json.dump(j, open(p, "w"))
    r = ftune("inspect", "--model", d, "--config", ok=False)
    assert r.returncode == 2, r.stderr
    assert "config.json" in r.stderr and field in r.stderr, r.stderr
