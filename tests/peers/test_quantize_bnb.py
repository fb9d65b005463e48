"""`ftune quantize` and the bitsandbytes checkpoint reader (model/bnb.c) against bitsandbytes
and transformers.

For tiny random models that transformers builds (Llama with GQA, Phi-3 with fused projections),
saved in F32 and BF16, `ftune quantize` must write exactly the tensors that transformers writes
after loading the same model with BitsAndBytesConfig(load_in_4bit=True) on the CPU: packed codes
and absmax bit for bit, the same quant_map, the same quant_state JSON; and transformers must load
ftune's folder and give the same logits as its own quantized model (exactly: same bytes, same
kernels). Also bitsandbytes.functional.quantize_4bit directly, on awkward values (zeros, ties at
code midpoints, tiny positives that choose FP4's second zero, a block of all zeros, odd sizes).
Double quantization (--double-quant, bnb_4bit_use_double_quant=True / compress_statistics=True)
the same way: U8 absmax codes, nested_absmax and the offset (torch's fp32 mean, reproduced bit for
bit, for many lengths and thread counts) identical. The reader: `ftune inspect --bnb NAME` on
folders transformers saved must give dequantize_4bit's values bit for bit, and each corrupted
field must be a clear error (exit 2) naming the tensor and field.
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


def load_bnb(path, quant, dtype, double_quant=False):
    return AutoModelForCausalLM.from_pretrained(
        path, device_map="cpu", dtype=dtype,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant,
                                               bnb_4bit_use_double_quant=double_quant,
                                               bnb_4bit_compute_dtype=torch.float32))


def ftune(*args, threads=None):
    """Run ftune; threads sets OMP_NUM_THREADS so its torch-style sums split like torch's
    (conftest runs torch on torch.get_num_threads() threads)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or torch.get_num_threads()))
    return subprocess.run([FTUNE] + [str(a) for a in args], capture_output=True, text=True,
                          env=env)


@pytest.mark.parametrize("kind", ["llama", "phi3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quant", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_quantize_like_transformers(tmp_path, kind, dtype, quant, double_quant):
    src = tiny(kind, dtype, tmp_path / "model")
    theirs = tmp_path / "theirs"
    load_bnb(src, quant, dtype, double_quant).save_pretrained(theirs)
    ours = tmp_path / "ours"
    r = ftune("quantize", "--model", src, "--out", ours, "--quant", quant,
              *(["--double-quant"] if double_quant else []))
    assert r.returncode == 0, r.stderr
    a = safe_open(str(ours / "model.safetensors"), "pt")
    b = safe_open(str(theirs / "model.safetensors"), "pt")
    qnames = [k for k in b.keys() if "quant_state" in k]
    assert qnames and set(a.keys()) >= {k for k in b.keys()}, set(b.keys()) - set(a.keys())
    for k in b.keys():
        x, y = a.get_tensor(k), b.get_tensor(k)
        if "quant_state" in k:  # the same JSON text, nested_offset's digits included
            assert bytes(x.numpy()) == bytes(y.numpy()), k
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert torch.equal(x.view(torch.uint8) if x.dtype != torch.uint8 else x,
                               y.view(torch.uint8) if y.dtype != torch.uint8 else y), k
    qc_ours = json.load(open(ours / "config.json"))["quantization_config"]
    qc_theirs = json.load(open(theirs / "config.json"))["quantization_config"]
    assert qc_ours == qc_theirs
    # transformers loads ftune's folder and computes what its own quantized model computes
    mine = AutoModelForCausalLM.from_pretrained(ours, device_map="cpu", dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(theirs, device_map="cpu", dtype=dtype)
    ids = torch.tensor([[1, 5, 9, 200, 33, 7, 2]])
    with torch.no_grad():
        assert torch.equal(mine(ids).logits, ref(ids).logits)


def test_bnb_reference_path(tmp_path):
    """conftest switches off bitsandbytes' packed AVX512_BF16 inference path: an eval forward
    leaves the loaded weight bytes and quant_state as they were, and the logits are those of
    the dequantized weights (dequantize_4bit, then float32 matmuls) on every CPU."""
    src = tiny("llama", torch.float32, tmp_path / "model")
    m = load_bnb(src, "nf4", torch.float32).eval()
    lin = m.model.layers[0].mlp.down_proj  # in_features 96: not a multiple of the block size
    assert lin.support_avx512bf16_for_cpu is False
    before = lin.weight.data.clone()
    ids = torch.tensor([[1, 5, 9, 200, 33, 7, 2]])
    with torch.no_grad():
        logits = m(ids).logits
    assert not getattr(lin.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.equal(lin.weight.data, before)
    # the same model with every 4-bit layer replaced by its dequantized float weight
    plain = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, bnb.nn.Linear4bit):
                w = bnbf.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
                plain.get_submodule(name).weight.copy_(w)
        ref = plain(ids).logits
    assert torch.allclose(logits, ref, rtol=0, atol=1e-5 * ref.abs().max().item()), \
        (logits - ref).abs().max()
    # dequantize_4bit indexes blocks over the flattened weight, as quantize_4bit writes them
    for shape in [(32, 64), (64, 96), (64, 160), (3, 10)]:
        w = torch.randn(*shape)
        q, st = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
        flat = torch.nn.functional.pad(w.reshape(-1), (0, -w.numel() % 64)).view(-1, 64)
        bound = flat.abs().amax(1).repeat_interleave(64)[:w.numel()].view(shape)
        err = (bnbf.dequantize_4bit(q, st) - w).abs()
        assert (err <= 0.5 * bound * 1.0001).all(), (shape, (err / bound).max())


def awkward(blocksize, quant, seed=1):
    torch.manual_seed(seed)
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
    return w


def write_model(path, tensors):
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    json.dump({"architectures": ["LlamaForCausalLM"]}, open(path / "config.json", "w"))


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.view(torch.uint8) if a.dtype != torch.uint8 else a,
        b.view(torch.uint8) if b.dtype != torch.uint8 else b)


def check_against_quantize_4bit(f, name, w, blocksize, quant, double_quant):
    """ftune's tensors for weight `name` (safe_open f) are what quantize_4bit(w) gives."""
    q, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type=quant,
                                  compress_statistics=double_quant)
    assert torch.equal(f.get_tensor(name), q), name
    assert same_bits(f.get_tensor(name + ".absmax"), state.absmax), name
    qs = json.loads(bytes(f.get_tensor(f"{name}.quant_state.bitsandbytes__{quant}").numpy()))
    if double_quant:
        assert same_bits(f.get_tensor(name + ".nested_absmax"), state.state2.absmax), name
        assert same_bits(f.get_tensor(name + ".nested_quant_map"), state.state2.code), name
        # json holds the float32 offset as a double: exactly the same float
        assert torch.tensor(qs["nested_offset"], dtype=torch.float32).view(torch.int32) == \
            state.offset.view(torch.int32), (name, qs["nested_offset"], state.offset.item())
    else:
        assert "nested_offset" not in qs
    # the dequantized weights, through bitsandbytes' own reading of ftune's tensors
    mine = bnbf.QuantState.from_dict({k[len(name) + 1:]: f.get_tensor(k) for k in f.keys()
                                      if k.startswith(name + ".")}, device=torch.device("cpu"))
    assert same_bits(bnbf.dequantize_4bit(f.get_tensor(name), mine), bnbf.dequantize_4bit(q, state))


@pytest.mark.parametrize("quant", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("double_quant", [False, True])
def test_awkward_values_like_quantize_4bit(tmp_path, quant, blocksize, dtype, double_quant):
    # two weights: the awkward one, and one of 1200+ blocks so the nested absmax has 5 blocks
    w1 = awkward(blocksize, quant).to(dtype)
    w2 = (torch.randn(300, 256) * torch.rand(300, 1) * 0.1).to(dtype)
    names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"]
    write_model(tmp_path / "m", dict(zip(names, [w1, w2])))
    out = tmp_path / "q"
    r = ftune("quantize", "--model", tmp_path / "m", "--out", out, "--quant", quant,
              "--blocksize", blocksize, *(["--double-quant"] if double_quant else []))
    assert r.returncode == 0, r.stderr
    f = safe_open(str(out / "model.safetensors"), "pt")
    for name, w in zip(names, [w1, w2]):
        check_against_quantize_4bit(f, name, w, blocksize, quant, double_quant)


@pytest.mark.parametrize("threads", [1, 2])
def test_double_quant_offset_many_lengths(tmp_path, threads):
    """The offset is torch's fp32 mean of the absmax values: its cascade summation order
    depends on the length (levels, four interleaved accumulators, vector tail) and, from 32768
    values on, on the thread count; every bit must agree."""
    lengths = [1, 2, 7, 33, 64, 255, 256, 257, 1000, 4096, 32769, 100000]
    torch.manual_seed(3)
    ws = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(nb, 64) * torch.rand(nb, 1) * 3
          for i, nb in enumerate(lengths)}
    write_model(tmp_path / "m", ws)
    r = ftune("quantize", "--model", tmp_path / "m", "--out", tmp_path / "q", "--double-quant",
              threads=threads)
    assert r.returncode == 0, r.stderr
    f = safe_open(str(tmp_path / "q" / "model.safetensors"), "pt")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, w in ws.items():
            check_against_quantize_4bit(f, name, w, 64, "nf4", True)
    finally:
        torch.set_num_threads(old)


TORCH_MEAN_LENGTHS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 95, 96, 97, 255, 256, 257,
                      1000, 4095, 4096, 4097, 32767, 32768, 32769, 65535, 65536, 65537, 100000,
                      262145, 1000003, 4194305]

_TORCH_MEANS = """
import json, sys, torch
torch.manual_seed(11)
out = {"capability": torch.backends.cpu.get_cpu_capability(), "means": []}
for i, n in enumerate(json.loads(sys.argv[2])):
    x = torch.rand(n) * torch.rand(1) * 4  # positive, as absmax values are
    x.numpy().tofile(f"{sys.argv[1]}/{i}.f32")
    row = []
    for t in (1, 2, 3):
        torch.set_num_threads(t)
        row.append("%08x" % (x.mean().view(torch.int32).item() & 0xffffffff))
    out["means"].append(row)
print(json.dumps(out))
"""


@pytest.mark.parametrize("capability", [None, "avx2"])
def test_torch_mean_order(tmp_path, capability):
    """Double quantization's offset is torch's fp32 absmax.mean(): ftune's quant4_torch_mean must
    give its bits for lengths 1 to 4 million and 1-3 threads (torch splits sums of more than
    32768 values across its threads), whatever kernels torch picks on this CPU (its own choice,
    and ATEN_CPU_CAPABILITY=avx2, set before torch starts: a subprocess)."""
    tool = Path(FTUNE).parent / "tests" / "tools" / "torch_mean"
    assert tool.exists(), f"{tool} missing: build it with make"
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    import sys
    r = subprocess.run([sys.executable, "-c", _TORCH_MEANS, str(tmp_path),
                        json.dumps(TORCH_MEAN_LENGTHS)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)
    if capability:
        assert ref["capability"] == capability.upper(), ref["capability"]
    bad = []
    for i, n in enumerate(TORCH_MEAN_LENGTHS):
        mine = subprocess.run([str(tool), str(tmp_path / f"{i}.f32"), "1", "2", "3"],
                              capture_output=True, text=True, check=True).stdout.split()
        if mine != ref["means"][i]:
            bad.append((n, mine, ref["means"][i]))
    assert not bad, f"torch {ref['capability']}: {len(bad)} of {len(TORCH_MEAN_LENGTHS)} " \
                    f"lengths differ (length, ftune, torch for 1-3 threads): {bad[:5]}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny Llamas that transformers quantized and saved: {(quant, double_quant): folder}."""
    base = tmp_path_factory.mktemp("bnb")
    src = tiny("llama", torch.float32, base / "model")
    out = {}
    for quant in ("nf4", "fp4"):
        for dq in (False, True):
            out[quant, dq] = base / f"{quant}-{int(dq)}"
            load_bnb(src, quant, torch.float32, dq).save_pretrained(out[quant, dq])
    return out


LINEAR = "model.layers.1.self_attn.k_proj.weight"


@pytest.mark.parametrize("quant", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_reader_like_dequantize_4bit(saved, quant, double_quant):
    folder = saved[quant, double_quant]
    f = safe_open(str(folder / "model.safetensors"), "pt")
    names = [k for k in f.keys() if k.endswith("_proj.weight")]
    assert LINEAR in names
    for name in names:
        st = bnbf.QuantState.from_dict({k[len(name) + 1:]: f.get_tensor(k) for k in f.keys()
                                        if k.startswith(name + ".")}, device=torch.device("cpu"))
        ref = bnbf.dequantize_4bit(f.get_tensor(name), st)
        r = ftune("inspect", "--model", folder, "--bnb", name)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["format"], out["double_quant"], out["blocksize"]) == (quant, double_quant, 64)
        assert [out["rows"], out["cols"]] == list(ref.shape)
        assert same_bits(torch.tensor(out["values"], dtype=torch.float32).reshape(ref.shape), ref)
        if double_quant:
            assert out["nested_blocksize"] == 256
            assert torch.tensor(out["offset"], dtype=torch.float32) == st.offset


def corrupt(src, dst, edit):
    """Copy the saved folder with the tensors dict changed by edit(dict) (in place)."""
    import shutil
    shutil.copytree(src, dst)
    f = safe_open(str(src / "model.safetensors"), "pt")
    t = {k: f.get_tensor(k) for k in f.keys()}
    edit(t)
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def set_state(t, name, quant, text):
    del t[f"{name}.quant_state.bitsandbytes__{quant}"]
    t[f"{name}.quant_state.bitsandbytes__{quant}"] = torch.frombuffer(bytearray(text.encode()),
                                                                     dtype=torch.uint8)


def edit_state(t, name, quant, **changes):
    key = f"{name}.quant_state.bitsandbytes__{quant}"
    js = json.loads(bytes(t[key].numpy()))
    js.update(changes)
    set_state(t, name, quant, json.dumps(js))


BAD = {
    "missing absmax": (False, lambda t: t.pop(LINEAR + ".absmax"), ".absmax\"", "missing"),
    "absmax shape": (False, lambda t: t.__setitem__(LINEAR + ".absmax", t[LINEAR + ".absmax"][:-1].clone()),
                     ".absmax\"", "shape"),
    "packed shape": (False, lambda t: t.__setitem__(LINEAR, t[LINEAR][:-2].clone()), LINEAR + "\"", "shape"),
    "bad json": (False, lambda t: set_state(t, LINEAR, "nf4", '{"quant_type": "nf4", "blocksize": '),
                 "quant_state.bitsandbytes__nf4", "JSON"),
    "unknown quant_type": (False, lambda t: edit_state(t, LINEAR, "nf4", quant_type="int3"),
                           "quant_type", "int3"),
    "blocksize mismatch": (False, lambda t: edit_state(t, LINEAR, "nf4", blocksize=128),
                           ".absmax\"", "shape"),
    "blocksize invalid": (False, lambda t: edit_state(t, LINEAR, "nf4", blocksize=100),
                          "blocksize", "100"),
    "shape field": (False, lambda t: edit_state(t, LINEAR, "nf4", shape=[32]), "shape", "rows, cols"),
    "quant_map": (False, lambda t: t.__setitem__(LINEAR + ".quant_map", t[LINEAR + ".quant_map"] * 2),
                  "quant_map", "code"),
    "absmax dtype": (True, lambda t: t.__setitem__(LINEAR + ".absmax", t[LINEAR + ".absmax"].float()),
                     ".absmax\"", "dtype"),
    "missing nested_absmax": (True, lambda t: t.pop(LINEAR + ".nested_absmax"), "nested_absmax", "missing"),
    "nested_offset": (True, lambda t: edit_state(t, LINEAR, "nf4", nested_offset="x"),
                      "nested_offset", "number"),
    "nested_blocksize": (True, lambda t: edit_state(t, LINEAR, "nf4", nested_blocksize=3),
                         "nested_blocksize", "3"),
    "nested_dtype": (True, lambda t: edit_state(t, LINEAR, "nf4", nested_dtype="int8"),
                     "nested_dtype", "int8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_reader_bad_input(saved, tmp_path, case):
    dq, edit, where, what = BAD[case]
    bad = corrupt(saved["nf4", dq], tmp_path / "bad", edit)
    r = ftune("inspect", "--model", bad, "--bnb", LINEAR)
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr
    assert "error" in err and where in err and what.lower() in err.lower(), err
    assert "Traceback" not in err and "Sanitizer" not in err


def test_quantize_bad_input(tmp_path):
    r = ftune("quantize", "--model", tmp_path, "--out", tmp_path / "o")
    assert r.returncode == 2 and "config.json" in r.stderr
    r = ftune("quantize", "--model", tmp_path, "--out", tmp_path / "o", "--quant", "int3")
    assert r.returncode == 2 and "int3" in r.stderr
    r = ftune("quantize", "--model", tmp_path, "--out", tmp_path / "o", "--blocksize", "100")
    assert r.returncode == 2 and "100" in r.stderr


def peak_rss_mb(args, threads=None):
    """Run ftune with args in a fresh Python process that reports its children's peak RSS (the
    children maximum of this test process would keep earlier runs' peaks)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or torch.get_num_threads()))
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.stderr.write(r.stderr)\n")
    r = subprocess.run(["python3", "-c", code, FTUNE] + [str(a) for a in args],
                       capture_output=True, text=True, env=env)
    rc, kb = r.stdout.split()
    return int(rc), int(kb) / 1024.0, r.stderr


@pytest.mark.parametrize("double_quant", [False, True])
def test_quantize_streams(tmp_path, double_quant):
    """`ftune quantize` writes each tensor as it goes and gives back the source's pages, so its
    peak RSS on a ~380 MB model stays under the program's own RSS (`quantize --help`) plus the
    largest single source tensor (the embedding, copied a chunk at a time); holding the output
    and the mapped source, as it once did, takes more than the model's size. An odd-sized weight
    of more than one chunk (2^20 values), ending in a partial block, and a full-size one must
    still be what quantize_4bit gives."""
    torch.manual_seed(5)
    C, I, V, L = 1024, 2816, 16384, 6
    ws = {"model.embed_tokens.weight": torch.randn(V, C) * 0.02, "model.norm.weight": torch.ones(C)}
    for i in range(L):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            ws[p + f"self_attn.{n}_proj.weight"] = torch.randn(C, C) * 0.02
        ws[p + "mlp.gate_proj.weight"] = torch.randn(I, C) * 0.02
        ws[p + "mlp.up_proj.weight"] = torch.randn(I, C) * 0.02
        ws[p + "mlp.down_proj.weight"] = torch.randn(C, I) * 0.02
        ws[p + "input_layernorm.weight"] = torch.ones(C)
    odd = "model.layers.0.mlp.odd_proj.weight"
    ws[odd] = torch.randn(1031, 1021) * torch.rand(1031, 1) * 0.1
    assert ws[odd].numel() > 2**20 and ws[odd].numel() % 2 == 1 and ws[odd].numel() % 64
    write_model(tmp_path / "m", ws)
    model_mb = sum(w.numel() * w.element_size() for w in ws.values()) / 2**20
    largest_mb = max(w.numel() * w.element_size() for w in ws.values()) / 2**20
    rc, base_mb, err = peak_rss_mb(["quantize", "--help"])
    assert rc == 0, err
    dq = ["--double-quant"] if double_quant else []
    rc, peak_mb, err = peak_rss_mb(["quantize", "--model", tmp_path / "m", "--out",
                                    tmp_path / "q"] + dq)
    assert rc == 0, err
    assert peak_mb < base_mb + largest_mb, (peak_mb, base_mb, largest_mb, model_mb)
    assert peak_mb < model_mb / 3, (peak_mb, model_mb)
    f = safe_open(str(tmp_path / "q" / "model.safetensors"), "pt")
    for name in (odd, "model.layers.5.mlp.down_proj.weight"):
        check_against_quantize_4bit(f, name, ws[name], 64, "nf4", double_quant)
    assert torch.equal(f.get_tensor("model.embed_tokens.weight"), ws["model.embed_tokens.weight"])
    assert not list((tmp_path / "q").glob("*.tmp*"))  # written to a temp file, renamed
