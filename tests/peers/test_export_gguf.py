"""`ftune export --gguf` / `--gguf-lora` (issue 17) against llama.cpp (llama-cpp-python 0.3.36 and
its convert_hf_to_gguf.py) and transformers / PEFT.

Models: the zoo's random-weight llama, llama_bias (q/k/v/o biases, tied embeddings) and qwen3
(models.py) with the vocabulary of a real tokenizer from ../shared/tokenizers (llama: SmolLM's
byte-level BPE, pre-tokenizer "smollm"; qwen3: Qwen3's, "qwen2"; llama_sp: Llama 2's
SentencePiece-style BPE with byte fallback, tokenizer.ggml.model "llama"), since llama.cpp's converter
names a pre-tokenizer only for tokenizers it knows; skipped with a message where ../shared is
absent. The converter needs the conversion/ package beside it (tools/llama-wheel.sh).

What is compared, and the tolerance:
- every tensor (type, shape and bytes) and every metadata key equal to convert_hf_to_gguf.py's
  file on the same folder for f32, f16, bf16 and q8_0, except general.name (ftune: the folder's
  name) and general.size_label (not written);
- the q4_0 and q4_k_m files' tensors (their types included) byte for byte equal to
  llama_cpp.llama_model_quantize(ftype Q4_0 / Q4_K_M) run on
  ftune's f32 export;
- llama.cpp running the f32 file (f32 KV cache): logits within 1e-4 * max(1, max |ref|) of
  transformers' fp32 forward (fp32 sums in another order; 4e-6 measured), the greedy tokens equal;
  the q8_0 / q4_0 files: logits within 5% of max |ref| of transformers run on the file's own
  weights dequantized by gguf-py (what is left is llama.cpp's Q8_0 rounding of the activations in
  its quantized dot products; 1.9% / 2.3% measured);
- llama.cpp's tokenizer (Llama(vocab_only=True).tokenize, special tokens parsed) gives the ids of
  `tokenizers` on tok_corpus strings: exact;
- with --adapter: the tensors equal those of ftune export run on `ftune merge`'s folder (which
  test_merge.py checks against PEFT), and llama.cpp's logits those of PEFT's merged model (1e-4);
- --gguf-lora applied by llama.cpp (lora_path) on the base f32 GGUF: logits within
  1e-4 * max(1, max |ref|) of PEFT's merged model (llama.cpp adds x A^T B^T unmerged: another
  rounding order; 1e-5 / 5e-5 measured), for an adapter with rsLoRA and a rank_pattern /
  alpha_pattern (folded into B);
- --model FILE.gguf: re-typed and merged, the same tensors and keys as the export from the folder;
- peak RSS exporting a 505 MB model with an adapter to Q8_0: under 100 MB (47 MB measured).
- bad input: exit 2 naming the adapter / tensor / field, a full disk exit 1, nothing left behind.
"""

import json
import os
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import torch

import models
from conftest import REPO, llama_cpp_scripts, peak_rss, run_ftune, run_ok

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

SHARED_TOK = os.path.join(os.path.dirname(REPO), "shared", "tokenizers")
# (zoo architecture, tokenizer folder, vocab_size: the tokenizer's ids)
SETUPS = {"llama": ("llama", "smollm-135m", 49153),
          "llama_bias": ("llama_bias", "smollm-135m", 49153),  # q/k biases, tied embeddings
          "qwen2": ("qwen2", "qwen3", 151669),
          "qwen3": ("qwen3", "qwen3", 151669),
          # Llama 2's SentencePiece-style tokenizer.json (byte fallback): tokenizer.ggml.model
          # "llama" with scores and BYTE / CONTROL types, as gguf-py's LlamaHfVocab writes it
          "llama_sp": ("llama", "llama2", 32000 + 2),  # and LLAMA_SP_ADDED past the vocabulary
          # rows of 256 and 512 values: Q4_K_M's Q4_K and Q6_K tensors without fallbacks
          "llama256": ("llama", "smollm-135m", 49153, {"hidden_size": 256, "intermediate_size": 512}),
          # Llama 3.1's RoPE scaling (rope_freqs: factors 1, smoothed and 8) and linear scaling
          "llama_rope3": ("llama_rope3", "smollm-135m", 49153),
          # Phi-3 with a GPT2Tokenizer (the converter's Phi-4 path; Phi-3's own needs
          # tokenizer.model): fused attn_qkv / ffn_up, rope.scaling.original_context_length
          # (named phi_3: llama.cpp gives a model whose general.name holds "phi3" or "phi-3"
          # Phi-3's special-token attributes, looking up "</s>", absent from this vocab)
          "phi_3": ("phi3", "smollm-135m", 49153),
          # Phi-3 as released: Llama 2's SentencePiece-style tokenizer.json, tokens added past
          # its 32000 (PHI3_ADDED), config vocab_size 32064 (the rest padding)
          "phi3_sp": ("phi3", "llama2", 32064),
          "llama_linear": ("llama", "smollm-135m", 49153,
                           {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0,
                                                "factor": 4.0}})}
IDS = [5, 100, 200, 7, 42, 999, 12, 300, 301, 4, 17, 88]
# llama_sp's added tokens past Llama 2's 32000 (content, special, rstrip): one of each type
LLAMA_SP_ADDED = [("<|im_start|>", True, False), ("<|word|>", False, False)]
# phi3_sp's added tokens (content, special, rstrip) as Phi-3-mini's tokenizer.json has them, and
# one not special to cover both types. rstrip as llama.cpp assumes for a model whose general.name
# holds "phi3" (it cannot read the attribute from a GGUF file): every added token but <unk>, <s>
# and <|endoftext|> eats the whitespace after it.
PHI3_ADDED = [("<|endoftext|>", True, False), ("<|assistant|>", True, True),
              ("<|placeholder1|>", True, True), ("<|end|>", True, True), ("<|user|>", True, True),
              ("<|word|>", False, True)]


def add_tokens(folder, added):
    """Append added tokens past the vocabulary to folder's tokenizer.json and to
    tokenizer_config.json's added_tokens_decoder, as save_pretrained writes both."""
    path = os.path.join(folder, "tokenizer.json")
    tj = json.load(open(path))
    tcp = os.path.join(folder, "tokenizer_config.json")
    tc = json.load(open(tcp))
    base = len(tj["model"]["vocab"])
    for i, (content, special, rstrip) in enumerate(added):
        entry = dict(content=content, single_word=False, lstrip=False, rstrip=rstrip,
                     normalized=False, special=special)
        tj["added_tokens"].append(dict(id=base + i, **entry))
        tc.setdefault("added_tokens_decoder", {})[str(base + i)] = entry
    json.dump(tj, open(path, "w"), ensure_ascii=False)
    json.dump(tc, open(tcp, "w"), ensure_ascii=False)


def need_shared():
    if not os.path.isdir(SHARED_TOK):
        pytest.skip(f"{SHARED_TOK} is absent (../shared is beside the project only on its own "
                    "machines)")


def converter():
    d = llama_cpp_scripts()
    script = os.path.join(d, "convert_hf_to_gguf.py")
    if not os.path.exists(script):
        pytest.skip(f"{script} is absent (make venv unpacks it)")
    if not os.path.isdir(os.path.join(d, "conversion")):
        pytest.skip(f"{d} lacks the conversion/ package convert_hf_to_gguf.py imports: an unpack "
                    "older than tools/llama-wheel.sh's listing of it; `make venv` redoes it")
    return script


def build(arch, tok, vocab, out, dtype="f32", seed=0, over=None):
    cfg_cls, model_cls, kw, *_ = models.ARCHS[arch]
    cfg = getattr(transformers, cfg_cls)(**dict(kw, vocab_size=vocab, **(over or {})))
    torch.manual_seed(seed)
    m = getattr(transformers, model_cls)(cfg).to(torch.float32)
    models.randomize_(m, seed)
    models.save_model(m.eval(), str(out), dtype)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = os.path.join(SHARED_TOK, tok, f)
        if os.path.exists(src):
            shutil.copy(src, out)
    return str(out)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    need_shared()
    root = tmp_path_factory.mktemp("export")
    cache = {}

    def get(name):
        if name not in cache:
            arch, tok, vocab, *over = SETUPS[name]
            cache[name] = build(arch, tok, vocab, root / name, over=over[0] if over else None)
            if name in ("phi3_sp", "llama_sp"):
                add_tokens(cache[name], PHI3_ADDED if name == "phi3_sp" else LLAMA_SP_ADDED)
        return cache[name]
    get.root = root
    return get


def export(model, out, *extra):
    run_ok(["export", "--gguf", out, "--model", model, "--quiet", *extra])
    return str(out)


# convert_hf_to_gguf.py run once per model folder for all the types a test session asks for
# (its imports take seconds): a driver calling its main() with each command line in turn
DRIVER = """
import os, runpy, sys
script, model, *jobs = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
for job in jobs:
    out, outtype = job.split("=")
    sys.argv = [script, model, "--outfile", out, "--outtype", outtype]
    runpy.run_path(script, run_name="__main__")
"""


def convert(model, jobs):
    script = converter()
    p = subprocess.run([sys.executable, "-c", DRIVER, script, model] +
                       [f"{out}={t}" for out, t in jobs], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]


CONVERTED = {"llama": ["f32", "f16", "bf16", "q8_0"], "llama_bias": ["f32"], "qwen3": ["q8_0"],
             "llama_sp": ["f32"], "llama_rope3": ["f32"], "llama_linear": ["f32"], "phi_3": ["f32"]}


@pytest.fixture(scope="module")
def converted(folders):
    done = {}

    def get(name, outtype):
        if name not in done:
            jobs = [(str(folders.root / f"{name}.{t}.ref.gguf"), t) for t in CONVERTED[name]]
            convert(folders(name), jobs)
            done[name] = True
        return str(folders.root / f"{name}.{outtype}.ref.gguf")
    return get


def kvs(r):
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def tensors(r):
    return {t.name: (t.tensor_type, list(t.shape), bytes(t.data)) for t in r.tensors}


def llama(path, n_ctx=64, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(path, n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2,
                           type_k=0, type_v=0, **kw)  # f32 KV cache (ggml type 0)


def llama_logits(path, ids, **kw):
    m = llama(path, **kw)
    try:
        m.eval(ids)
        return np.array(m.scores[:len(ids)])
    finally:
        m.close()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def greedy(logits_fn, ids, steps):
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(logits_fn(ids)[-1].argmax()))
    return ids[-steps:]


# --- the file against llama.cpp's converter ------------------------------------------------------

@pytest.mark.llama_cpp
@pytest.mark.parametrize("name,outtype", [(n, t) for n, ts in CONVERTED.items() for t in ts])
def test_equals_convert_hf_to_gguf(folders, converted, name, outtype):
    d = folders(name)
    ours = gguf.GGUFReader(export(d, folders.root / f"{name}.{outtype}.gguf", "--quant", outtype))
    ref = gguf.GGUFReader(converted(name, outtype))
    ka, kb = kvs(ours), kvs(ref)
    for k in ("general.name", "general.size_label"):  # documented differences
        ka.pop(k, None), kb.pop(k, None)
    if name == "llama_sp":  # the merges' ranks, where the converter writes -1000 (docs/merge.md)
        assert set(kb.pop("tokenizer.ggml.scores")) == {-1000.0}
        ka.pop("tokenizer.ggml.scores")
    assert sorted(ka) == sorted(kb)
    for k in ka:
        assert ka[k] == kb[k], k
    ta, tb = tensors(ours), tensors(ref)
    assert sorted(ta) == sorted(tb)
    for n in ta:
        assert ta[n][:2] == tb[n][:2], n
        assert ta[n][2] == tb[n][2], n


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name,quant,kind", [
    ("llama_bias", "q4_0", "Q4_0"),  # tied: token_embd takes output's Q8_0
    ("llama256", "q4_0", "Q4_0"),  # output.weight Q6_K
    ("llama256", "q4_k_m", "Q4_K"),  # Q4_K, and Q6_K for output, attn_v / ffn_down of some layers
    ("llama_bias", "q4_k_m", "Q5_0"),  # rows of 64: Q4_K falls back to Q5_0, Q6_K to Q8_0
    ("phi_3", "q4_0", "Q4_0"),  # fused attn_qkv / ffn_up
    ("phi_3", "q4_k_m", "Q5_0")])  # rows of 576: attn_qkv counted as attn_v
def test_quantized_equals_llama_model_quantize(folders, name, quant, kind):
    import llama_cpp
    d = folders(name)
    f32 = str(folders.root / f"{name}.q4src.gguf")
    if not os.path.exists(f32):
        export(d, f32)
    ours = export(d, folders.root / f"{name}.{quant}.gguf", "--quant", quant)
    ref = str(folders.root / f"{name}.{quant}.ref.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
                    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[quant]
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(f32.encode(), ref.encode(), params) == 0
    ta, tb = tensors(gguf.GGUFReader(ours)), tensors(gguf.GGUFReader(ref))
    assert sorted(ta) == sorted(tb)
    kinds = set()
    for n in ta:
        assert ta[n][:2] == tb[n][:2], n
        assert ta[n][2] == tb[n][2], n
        kinds.add(ta[n][0].name)
    assert kind in kinds
    if name == "llama256":
        assert "Q6_K" in kinds


# --- llama.cpp running the files -----------------------------------------------------------------

def dequantized_model(d, path, permuted):
    """transformers' model of folder d with every weight replaced by the GGUF file's own values
    (dequantized by gguf-py; llama's Q/K rows un-permuted)."""
    model = models.load_model(d)
    cfg = model.config
    r = gguf.GGUFReader(path)
    byname = {t.name: t for t in r.tensors}
    sd = model.state_dict()
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    names = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm"}
    blk = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
           "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
           "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}
    for n, t in byname.items():
        parts = n.split(".")
        if parts[0] == "blk":
            hf = f"model.layers.{parts[1]}.{blk[parts[2]]}.{parts[3]}"
        else:
            hf = f"{names[parts[0]]}.{parts[1]}"
        x = gguf.quants.dequantize(t.data, t.tensor_type).reshape(sd[hf].shape).astype(np.float32)
        if permuted and parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            heads = x.shape[0] // hd  # undo: row h*D + 2i + j <- h*D + j*D/2 + i
            x = x.reshape(heads, hd // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
        sd[hf] = torch.from_numpy(np.ascontiguousarray(x))
    model.load_state_dict(sd)
    return model


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", ["llama_bias", "qwen3", "phi3_sp"])
def test_llama_cpp_runs_f32_as_transformers(folders, name):
    d = folders(name)
    path = export(d, folders.root / f"{name}.run.gguf")
    ref_model = models.load_model(d)
    ref = hf_logits(ref_model, IDS)
    got = llama_logits(path, IDS)
    err = np.abs(got - ref).max()
    print(f"{name} f32: max |llama.cpp - transformers| = {err:.3g} (max |ref| {np.abs(ref).max():.3g})")
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())
    m = llama(path)
    try:
        def lc(ids):
            m.reset()
            m.eval(ids)
            return np.array(m.scores[:len(ids)])
        assert greedy(lc, IDS[:4], 8) == greedy(lambda i: hf_logits(ref_model, i), IDS[:4], 8)
    finally:
        m.close()


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", ["llama_rope3", "llama_linear"])
def test_llama_cpp_runs_rope_scaling_as_transformers(folders, name):
    # 96 positions, beyond original_max_position_embeddings 64: positions where the scaled
    # frequencies differ from the default ones by far more than the tolerance
    d = folders(name)
    path = export(d, folders.root / f"{name}.run.gguf")
    ids = [(7 * i * i + 3 * i + 5) % 49000 + 10 for i in range(96)]
    ref = hf_logits(models.load_model(d), ids)
    got = llama_logits(path, ids, n_ctx=128)
    err = np.abs(got - ref).max()
    print(f"{name} f32: max |llama.cpp - transformers| = {err:.3g} (max |ref| {np.abs(ref).max():.3g})")
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())
    # ftune reads the file back (generate, chat, eval, train over a GGUF): the same logits
    data = models.write_jsonl(str(folders.root / f"{name}.rope.jsonl"),
                              [dict(input_ids=ids, labels=ids)])
    dump = folders.root / f"{name}.rope.logits.safetensors"
    run_ok(["eval", "--model", path, "--data", data, "--dump-logits", dump])
    mine = models.read_safetensors(str(dump))["logits"][0]
    err = np.abs(mine - ref).max()
    print(f"{name} f32: max |ftune on the file - transformers| = {err:.3g}")
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())
    if name == "llama_rope3":  # the factors are not all 1 or all 8: the test sees the smoothing
        f = {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}["rope_freqs.weight"]
        assert f[0] == 1.0 and f[-1] == 8.0 and any(1.0 < v < 8.0 for v in f), f


@pytest.mark.llama_cpp
def test_phi3_runs_as_transformers(folders):
    # llama.cpp and ftune itself (eval --dump-logits) on ftune's phi3 file, against transformers
    d = folders("phi_3")
    path = export(d, folders.root / "phi3.run.gguf")
    ref = hf_logits(models.load_model(d), IDS)
    tol = 1e-4 * max(1.0, np.abs(ref).max())
    err = np.abs(llama_logits(path, IDS) - ref).max()
    print(f"phi3 f32: max |llama.cpp - transformers| = {err:.3g} (max |ref| {np.abs(ref).max():.3g})")
    assert err <= tol
    data = models.write_jsonl(str(folders.root / "phi3.jsonl"), [dict(input_ids=IDS, labels=IDS)])
    dump = folders.root / "phi3.logits.safetensors"
    run_ok(["eval", "--model", path, "--data", data, "--dump-logits", dump])
    err = np.abs(models.read_safetensors(str(dump))["logits"][0] - ref).max()
    print(f"phi3 f32: max |ftune on the file - transformers| = {err:.3g}")
    assert err <= tol


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name,quant,tol", [("llama", "q8_0", 0.05), ("llama", "q4_0", 0.05)])
def test_llama_cpp_runs_quantized(folders, name, quant, tol):
    d = folders(name)
    path = export(d, folders.root / f"{name}.run.{quant}.gguf", "--quant", quant)
    ref = hf_logits(dequantized_model(d, path, name.startswith("llama")), IDS)
    got = llama_logits(path, IDS)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"{name} {quant}: max |llama.cpp - transformers(dequantized)| / max |ref| = {err:.3g}")
    assert err <= tol


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", ["llama", "qwen3", "llama_sp", "phi3_sp"])
def test_tokenizer_ids_equal_tokenizers(folders, name):
    from tokenizers import Tokenizer

    import tok_corpus
    d = folders(name)
    path = export(d, folders.root / f"{name}.vocab.gguf")
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tk.no_padding()  # SmolLM's tokenizer.json pads to 192
    tk.no_truncation()
    # natural text of many scripts (tok_corpus.random_strings' rare code points are left out:
    # llama.cpp's own Unicode tables class some of them otherwise than `tokenizers` does, with
    # the converter's file as with ftune's)
    texts = [
        "Hello world! I've been 'told' he's there, 3333 33.3", "<|im_start|>user\nhi<|im_end|>",
        "  leading spaces\n\n\ttabs", "日本語のテキスト、中文。", "emoji 🦙🚀 ✅",
        "<|user|>\nhi there<|end|>\n<|assistant|> a <|word|> b<|endoftext|>"]
    texts += tok_corpus.corpus(total_bytes=30000, seed=5)
    # llama.cpp does not apply tokenizer.json's NFC normalizer (Qwen's): no GGUF key says it,
    # in ftune's file or the converter's; text already in NFC is what both tokenize alike
    nfc = (json.load(open(os.path.join(d, "tokenizer.json"))).get("normalizer") or {}).get(
        "type") == "NFC"
    m = llama(path, vocab_only=True)
    try:
        bad = []
        for t in texts:
            want = tk.encode(t, add_special_tokens=False).ids
            lt = unicodedata.normalize("NFC", t) if nfc else t
            got = m.tokenize(lt.encode("utf-8"), add_bos=False, special=True)
            if got != want:
                bad.append((t, got[:20], want[:20]))
        assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]}"
    finally:
        m.close()
    r = gguf.GGUFReader(path)
    tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
    if tc.get("chat_template"):
        assert r.fields["tokenizer.chat_template"].contents() == tc["chat_template"]


def test_phi3_sentencepiece_vocab(folders):
    """A Phi-3 folder with Llama 2's SentencePiece-style tokenizer.json: the vocabulary the
    converter's Phi3MiniModel.set_vocab writes from tokenizer.model (which ftune does not read):
    model "llama", pre "default"; added tokens typed by their "special" flag (CONTROL, else
    USER_DEFINED) with score -1000; the rows up to vocab_size "[PAD<i>]", UNUSED, -10000; byte
    tokens BYTE. (Scores of the model's own tokens come from the merges: docs/merge.md.)"""
    d = folders("phi3_sp")
    r = gguf.GGUFReader(export(d, folders.root / "phi3_sp.sp.gguf"))
    f = r.fields
    assert f["tokenizer.ggml.model"].contents() == "llama"
    assert f["tokenizer.ggml.pre"].contents() == "default"
    toks, types = f["tokenizer.ggml.tokens"].contents(), f["tokenizer.ggml.token_type"].contents()
    scores = f["tokenizer.ggml.scores"].contents()
    assert len(toks) == len(types) == len(scores) == 32064
    CONTROL, USER, UNUSED, BYTE = 3, 4, 5, 6
    assert toks[:3] == ["<unk>", "<s>", "</s>"] and types[:3] == [CONTROL] * 3
    assert toks[13] == "<0x0A>" and types[13] == BYTE
    for i, (content, special, _) in enumerate(PHI3_ADDED):
        assert (toks[32000 + i], types[32000 + i], scores[32000 + i]) == \
            (content, CONTROL if special else USER, -1000.0)
    for i in range(32000 + len(PHI3_ADDED), 32064):
        assert (toks[i], types[i], scores[i]) == (f"[PAD{i}]", UNUSED, -10000.0)


# --- adapters ------------------------------------------------------------------------------------

def peft_merged(d, adapter):
    return models.load_peft(d, adapter).merge_and_unload().eval()


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name,arch", [("llama", "llama"), ("phi_3", "phi3")])  # phi3: fused
def test_export_with_adapter_equals_merged_folder(folders, name, arch):
    d = folders(name)
    ad = models.make_adapter(d, arch, str(folders.root / f"ad_{name}"), use_rslora=True)
    merged = folders.root / f"merged_{name}"
    run_ok(["merge", "--model", d, "--adapter", ad, "--out", merged, "--quiet"])
    ours = export(d, folders.root / f"{name}.ad.gguf", "--adapter", ad)
    ref = export(str(merged), folders.root / f"{name}.merged.gguf")
    ta, tb = tensors(gguf.GGUFReader(ours)), tensors(gguf.GGUFReader(ref))
    assert ta == tb
    ref_logits = hf_logits(peft_merged(d, ad), IDS)
    got = llama_logits(ours, IDS)
    assert np.abs(got - ref_logits).max() <= 1e-4 * max(1.0, np.abs(ref_logits).max())


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", ["llama", "qwen3", "phi_3"])  # phi3: fused qkv and gate_up
def test_gguf_lora_applied_by_llama_cpp(folders, name):
    d = folders(name)
    arch = SETUPS[name][0]
    # rsLoRA plus per-module rank and alpha: llama.cpp knows only alpha / r, so B carries the rest
    fused = arch == "phi3"
    ad = models.make_adapter(d, arch, str(folders.root / f"ad_{name}_pat"), use_rslora=True,
                             rank_pattern={"qkv_proj" if fused else "q_proj": 4, "down_proj": 2},
                             alpha_pattern={"o_proj" if fused else "k_proj": 5,
                                            "gate_up_proj" if fused else "up_proj": 3})
    base = export(d, folders.root / f"{name}.base.gguf")
    lora = str(folders.root / f"{name}.lora.gguf")
    run_ok(["export", "--gguf-lora", lora, "--model", d, "--adapter", ad, "--quiet"])
    r = gguf.GGUFReader(lora)
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["general.architecture"].contents() == \
        gguf.GGUFReader(base).fields["general.architecture"].contents()
    first = "blk.0.attn_qkv.weight.lora_a" if fused else "blk.0.attn_q.weight.lora_a"
    assert any(t.name == first for t in r.tensors)
    ref = hf_logits(peft_merged(d, ad), IDS)
    got = llama_logits(base, IDS, lora_path=lora)
    err = np.abs(got - ref).max()
    print(f"{name} gguf-lora: max |llama.cpp(base + lora) - PEFT merged| = {err:.3g}")
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


# --- bad input -----------------------------------------------------------------------------------

def test_bad_input(folders, tmp_path):
    d = folders("llama")
    out = tmp_path / "x.gguf"
    # an adapter of another model: qwen3's o_proj is [64, 128], llama's [64, 64]
    ad = models.make_adapter(folders("qwen3"), "qwen3", str(tmp_path / "ad_q3"))
    p = run_ftune(["export", "--gguf", out, "--model", d, "--adapter", ad])
    assert p.returncode == 2, p.stderr
    assert "adapter_model.safetensors" in p.stderr and "o_proj" in p.stderr, p.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith("x.gguf")]
    # an existing output: refused unless --overwrite
    out.write_bytes(b"old")
    p = run_ftune(["export", "--gguf", out, "--model", d])
    assert p.returncode == 2 and "--overwrite" in p.stderr and out.read_bytes() == b"old"
    # unsupported architecture
    other = tmp_path / "other"
    shutil.copytree(d, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(cfg, model_type="gemma2")))
    p = run_ftune(["export", "--gguf", tmp_path / "p.gguf", "--model", other])
    assert p.returncode == 2 and "model_type" in p.stderr and "gemma2" in p.stderr
    # phi3: longrope (rope_scaling with long/short factors), and a LlamaTokenizer whose
    # tokenizer.json is byte-level BPE (neither the GPT-2 path nor the SentencePiece one that
    # ftune reads from tokenizer.json, where the converter reads tokenizer.model), are refused
    phi = tmp_path / "phi"
    shutil.copytree(folders("phi_3"), phi)
    pcfg = json.loads((phi / "config.json").read_text())
    (phi / "config.json").write_text(json.dumps(dict(pcfg, rope_scaling={
        "rope_type": "longrope", "long_factor": [1.0] * 16, "short_factor": [1.0] * 16})))
    p = run_ftune(["export", "--gguf", tmp_path / "p.gguf", "--model", phi])
    assert p.returncode == 2 and "rope_scaling" in p.stderr, p.stderr
    (phi / "config.json").write_text(json.dumps(pcfg))
    tc = json.loads((phi / "tokenizer_config.json").read_text())
    (phi / "tokenizer_config.json").write_text(json.dumps(dict(tc, tokenizer_class="LlamaTokenizer")))
    p = run_ftune(["export", "--gguf", tmp_path / "p.gguf", "--model", phi])
    assert p.returncode == 2 and "tokenizer_class" in p.stderr and "tokenizer.model" in p.stderr
    assert not (tmp_path / "p.gguf").exists()
    # a RoPE type not exported (yarn: ftune's model does not read it either): the field named
    yarn = tmp_path / "yarn"
    shutil.copytree(d, yarn)
    cfg = json.loads((yarn / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                              "original_max_position_embeddings": 128}
    (yarn / "config.json").write_text(json.dumps(cfg))
    p = run_ftune(["export", "--gguf", tmp_path / "y.gguf", "--model", yarn])
    assert p.returncode == 2 and "rope_parameters.rope_type" in p.stderr and "yarn" in p.stderr
    assert not (tmp_path / "y.gguf").exists()
    # DoRA has no GGUF adapter form
    dora = models.make_adapter(d, "llama", str(tmp_path / "dora"), use_dora=True)
    p = run_ftune(["export", "--gguf-lora", tmp_path / "l.gguf", "--model", d, "--adapter", dora])
    assert p.returncode == 2 and "use_dora" in p.stderr and "--gguf" in p.stderr
    # an unknown type
    for q in ("q3",):
        p = run_ftune(["export", "--gguf", tmp_path / "q.gguf", "--model", d, "--quant", q])
        assert p.returncode == 2 and "--quant" in p.stderr
    assert not (tmp_path / "q.gguf").exists() and not (tmp_path / "l.gguf").exists()
    # a full disk (a 1 MB file size limit, SIGXFSZ ignored so the write fails with EFBIG): exit 1,
    # nothing left
    import resource
    import signal
    from conftest import ftune_bin

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    full = tmp_path / "full"
    full.mkdir()
    p = subprocess.run([ftune_bin(), "export", "--gguf", full / "f.gguf", "--model", d, "--quiet"],
                       capture_output=True, text=True, preexec_fn=limit)
    assert p.returncode == 1 and "f.gguf" in p.stderr, p.stderr
    assert os.listdir(full) == []
    p = run_ftune(["export", "--help"])
    assert p.returncode == 0 and "--gguf-lora" in p.stdout


def test_peak_rss_is_small(tmp_path):
    """A 450 MB fp32 Llama (SmolLM's vocabulary x 1024, 2 layers) with a rank-16 adapter on every
    projection, exported merged to Q8_0: the export streams, so its peak RSS stays far below the
    model's size (the tokenizer's 49k strings and the adapter are all it holds)."""
    need_shared()
    model, ad = tmp_path / "big", tmp_path / "ad"
    size = models.big_lora_llama(model, ad, L=2, V=49153)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(SHARED_TOK, "smollm-135m", f), model)
    rss = peak_rss(["export", "--gguf", tmp_path / "big.gguf", "--model", model, "--adapter", ad,
                    "--quant", "q8_0", "--quiet"])
    print(f"export of a {size / 1e6:.0f} MB model: peak RSS {rss / 1e6:.1f} MB")
    assert rss < 100e6


@pytest.mark.parametrize("name,arch", [("llama", "llama"), ("phi_3", "phi3")])
def test_gguf_model_in(folders, name, arch):
    """--model FILE.gguf (read with ftune's GGUF reader): re-typed, and with an adapter merged (the
    delta's Q/K rows permuted as the file's are; phi3's fused rows as they are), it equals the
    export from the folder."""
    d = folders(name)
    f32 = export(d, folders.root / f"in_{name}.f32.gguf")
    ad = models.make_adapter(d, arch, str(folders.root / f"ad_in_{name}"), use_rslora=True)
    for quant, extra in (("q8_0", []), ("f32", ["--adapter", ad]), ("q4_0", ["--adapter", ad]),
                         ("q4_k_m", [])):
        a = export(f32, folders.root / f"in_{name}.{quant}.a.gguf", "--quant", quant, *extra)
        b = export(d, folders.root / f"in_{name}.{quant}.b.gguf", "--quant", quant, *extra)
        ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
        assert tensors(ra) == tensors(rb), quant
        assert kvs(ra) == kvs(rb), quant
    lora = str(folders.root / f"in_{name}.lora.gguf")
    run_ok(["export", "--gguf-lora", lora, "--model", f32, "--adapter", ad, "--quiet"])
    lora2 = str(folders.root / f"in_{name}.lora2.gguf")
    run_ok(["export", "--gguf-lora", lora2, "--model", d, "--adapter", ad, "--quiet"])
    assert tensors(gguf.GGUFReader(lora)) == tensors(gguf.GGUFReader(lora2))
