"""`ftune quantize` against bitsandbytes and transformers.

For tiny random models that transformers builds (Llama with GQA, Phi-3 with fused projections),
saved in F32 and BF16, `ftune quantize` must write exactly the tensors that transformers writes
after loading the same model with BitsAndBytesConfig(load_in_4bit=True) on the CPU: packed codes
and absmax bit for bit, the same quant_map, the same quant_state JSON; and transformers must load
ftune's folder and give the same logits as its own quantized model (exactly: same bytes, same
kernels). Also bitsandbytes.functional.quantize_4bit directly, on awkward values (zeros, ties at
code midpoints, tiny positives that choose FP4's second zero, a block of all zeros, odd sizes).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnbf  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig,  # noqa: E402
                          LlamaForCausalLM, Phi3Config, Phi3ForCausalLM)

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))


def tiny(kind, dtype, path):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=300)
        m = LlamaForCausalLM(cfg)
    else:
        cfg = Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                         pad_token_id=0)
        m = Phi3ForCausalLM(cfg)
    m.to(dtype).save_pretrained(path)
    return path


def load_bnb(path, quant, dtype):
    return AutoModelForCausalLM.from_pretrained(
        path, device_map="cpu", dtype=dtype,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant,
                                               bnb_4bit_compute_dtype=torch.float32))


@pytest.mark.parametrize("kind", ["llama", "phi3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quant", ["nf4", "fp4"])
def test_quantize_like_transformers(tmp_path, kind, dtype, quant):
    src = tiny(kind, dtype, tmp_path / "model")
    theirs = tmp_path / "theirs"
    load_bnb(src, quant, dtype).save_pretrained(theirs)
    ours = tmp_path / "ours"
    r = subprocess.run([FTUNE, "quantize", "--model", src, "--out", ours, "--quant", quant],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a = safe_open(str(ours / "model.safetensors"), "pt")
    b = safe_open(str(theirs / "model.safetensors"), "pt")
    qnames = [k for k in b.keys() if "quant_state" in k]
    assert qnames and set(a.keys()) >= {k for k in b.keys()}, set(b.keys()) - set(a.keys())
    for k in b.keys():
        x, y = a.get_tensor(k), b.get_tensor(k)
        if "quant_state" in k:
            assert json.loads(bytes(x.numpy())) == json.loads(bytes(y.numpy())), k
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert torch.equal(x.view(torch.uint8) if x.dtype != torch.uint8 else x,
                               y.view(torch.uint8) if y.dtype != torch.uint8 else y), k
    qc_ours = json.load(open(ours / "config.json"))["quantization_config"]
    qc_theirs = json.load(open(theirs / "config.json"))["quantization_config"]
    assert qc_ours["bnb_4bit_quant_type"] == qc_theirs["bnb_4bit_quant_type"]
    assert qc_ours["quant_method"] == "bitsandbytes" and qc_ours["load_in_4bit"]
    # transformers loads ftune's folder and computes what its own quantized model computes
    mine = AutoModelForCausalLM.from_pretrained(ours, device_map="cpu", dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(theirs, device_map="cpu", dtype=dtype)
    ids = torch.tensor([[1, 5, 9, 200, 33, 7, 2]])
    with torch.no_grad():
        assert torch.equal(mine(ids).logits, ref(ids).logits)


@pytest.mark.parametrize("quant", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128, 256])
def test_awkward_values_like_quantize_4bit(tmp_path, quant, blocksize):
    torch.manual_seed(1)
    code = bnbf.get_4bit_type(quant, device="cpu")
    srt = torch.sort(code).values
    mids = (srt[:-1] + srt[1:]) / 2
    rows, cols = 6, 3 * blocksize  # the last rows hold special values
    w = torch.randn(rows, cols)
    w[1, : len(mids)] = mids * 3.0               # exact midpoints after scaling by absmax 3
    w[1, len(mids)] = 3.0
    w[2, :blocksize] = 0.0                        # a block of zeros
    w[3, :40] = torch.linspace(-1e-3, 1e-3, 40)   # tiny values around both zeros of FP4
    w[3, 40] = 0.5
    w[4] = w[4] * 1e-30                           # subnormal-scale block maxima
    save_file({"model.layers.0.mlp.up_proj.weight": w.contiguous()}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    json.dump({"architectures": ["LlamaForCausalLM"]}, open(tmp_path / "config.json", "w"))
    out = tmp_path / "q"
    r = subprocess.run([FTUNE, "quantize", "--model", tmp_path, "--out", out, "--quant", quant,
                        "--blocksize", str(blocksize)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    f = safe_open(str(out / "model.safetensors"), "pt")
    q, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type=quant)
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(f.get_tensor(name), q)
    assert torch.equal(f.get_tensor(name + ".absmax").view(torch.int32), state.absmax.view(torch.int32))
    deq = bnbf.dequantize_4bit(q, state)
    assert torch.equal(deq, bnbf.dequantize_4bit(f.get_tensor(name), state))


def test_quantize_bad_input(tmp_path):
    r = subprocess.run([FTUNE, "quantize", "--model", tmp_path, "--out", tmp_path / "o"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "config.json" in r.stderr
    r = subprocess.run([FTUNE, "quantize", "--model", tmp_path, "--out", tmp_path / "o",
                        "--quant", "int3"], capture_output=True, text=True)
    assert r.returncode == 2 and "int3" in r.stderr
