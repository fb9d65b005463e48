"""GGUF models in (issue 16): `--model FILE.gguf` for eval, train and tokenize, against transformers.

Files:
- stories260K (../shared/models/stories260K/stories260K.gguf, a real llama2.c model converted by
  llama.cpp; skipped with a message where ../shared is absent). transformers 5.23 cannot load the
  file as it is: its tokenizer.ggml.padding_token_id is 4294967295 (llama2.c's -1), which
  transformers indexes the token list with. The reference therefore loads a copy written with
  gguf-py without the padding and separator ids (nothing else changes; ftune reads the original).
- HF-converted files written here from the zoo's random-weight models (models.py) with
  gguf.GGUFWriter as llama.cpp's convert_hf_to_gguf.py writes them: GGUF tensor names, llama's Q
  and K rows permuted to adjacent-pair RoPE order (LlamaModel.permute), norms and biases F32, the
  matrices F32, F16, BF16, Q8_0 or Q4_0 (gguf.quants.quantize), and a byte-level BPE vocabulary (trained here
  with `tokenizers`, padded to the model's 1031 tokens).
- tokenizer-only GGUF files: the trained byte-level BPE as tokenizer.ggml.model "gpt2", with
  tokenizer.ggml.pre "qwen2" (a named split) and without one (ByteLevel's own regex).

What is compared, and the tolerance:
- logits of `ftune eval --dump-logits` against transformers' float32 eager forward, one example at
  a time: max |diff| <= 1e-4 * max(1, max |ref|) (fp32 sums in another order; logits are O(10));
  the mean loss within 1e-5 relative, the token count exact. References: transformers loading
  the GGUF itself (gguf_file=, stories260K and the HF-converted llama/qwen2/phi3 F32 files), and
  the HF model with the file's weights (F32 as saved; F16, BF16, Q8_0 and Q4_0 dequantized with
  gguf.quants.dequantize, which equals the row-wise quantization of the HF-order rows).
- Phi-3 (fused attn_qkv / ffn_up as Phi3MiniModel writes them, F32 and Q8_0): as above.
- every HF-converted file (each architecture and stored type): greedy `ftune generate` over the
  file (12 tokens) equals transformers' generate over the HF model with the file's weights,
  tokens identical and each step's logits within the tolerance above. A Phi-3
  rotating half of each head (partial_rotary_factor 0.5, rope.dimension_count 16 of 32): logits
  as transformers' over the HF model.
  llama.cpp (llama-cpp-python, marker llama_cpp) runs the same F32 file: its logits with an fp32
  KV cache equal ftune's within 1e-4 relative.
- `ftune tokenize --jsonl` ids equal transformers' AutoTokenizer(gguf_file=) ids (add_special_tokens
  true) on tok_corpus documents: exact.
- `ftune train` over stories260K: 30 steps of LoRA on real text, the loss falls by more than half;
  the adapter applied by PEFT to transformers' GGUF model gives ftune's own `eval --adapter` logits
  (so the adapter is in Hugging Face row order, Q/K un-permuted); over HF-converted Q8_0, F16 and
  BF16 files (kept in their type, as `ftune plan` shows): 25 steps, the loss falls below 0.7x.
- tokenizer.ggml.eos_token_id ends greedy generation at its first occurrence.
- bad input, each with build/ftune and, when it exists, the ASan/UBSan build (no sanitizer report):
  unknown architecture, a missing key, no tokenizer, a wrong tensor shape, a file cut inside its
  tensor data, an unknown tensor type, an adapter made for other shapes, a prompt longer than the
  file's context, invalid UTF-8 in a prompt file, Phi-3 longrope factors, text for a file without
  a vocabulary (whose --prompt-ids work): exit 2, a message naming the file and the key / tensor,
  and a hint.
"""

import copy
import json
import os

import numpy as np
import pytest
import torch

import models
import tok_corpus
from conftest import REPO, asan_bin, last_json_line, run_ftune, run_ok

STORIES = os.path.join(os.path.dirname(REPO), "shared", "models", "stories260K", "stories260K.gguf")
LOGIT_RTOL = 1e-4
LOSS_RTOL = 1e-5

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")


def need_stories():
    if not os.path.exists(STORIES):
        pytest.skip(f"{STORIES} is absent (../shared is beside the project only on its own machines)")


# --- writing GGUF files --------------------------------------------------------------------------

def copy_gguf(src, dst, drop=()):
    """src rewritten by gguf-py without the keys in drop (metadata and tensors otherwise equal)."""
    r = gguf.GGUFReader(src)
    arch = str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(dst, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in drop:
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            et = f.types[1]
            if et == gguf.GGUFValueType.STRING:
                val = [str(bytes(f.parts[i]), "utf-8") for i in f.data]
            else:
                val = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(k, val, vt, sub_type=et)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(k, str(bytes(f.parts[-1]), "utf-8"), vt)
        else:
            w.add_key_value(k, f.parts[-1][0].item(), vt)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def train_bpe(vocab_size):
    """A byte-level BPE trained by `tokenizers` on tok_corpus text: (tokens by id, merges)."""
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, trainers
    tok = Tokenizer(tm.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tok_corpus.corpus(total_bytes=200_000, seed=5), tr)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    return tokens, merges


def add_bpe_vocab(w, tokens, merges, pre=None, n=None):
    n = n or len(tokens)
    toks = list(tokens) + [f"[PAD{i}]" for i in range(n - len(tokens))]
    types = [3 if t.startswith("<|") else 1 for t in toks]
    w.add_tokenizer_model("gpt2")
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)


def permute(wt, n_head):
    """llama.cpp's LlamaModel.permute: HF (i, i + D/2) RoPE rows -> adjacent pairs."""
    return wt.reshape(n_head, 2, wt.shape[0] // n_head // 2, *wt.shape[1:]).swapaxes(1, 2).reshape(wt.shape)


GG_LIN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
          "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
          # Phi-3's fused layers (gguf-py tensor_mapping.py: qkv_proj -> ATTN_QKV, gate_up_proj ->
          # FFN_UP), written as they are: phi3 is a NeoX-rope architecture in llama.cpp
          "qkv_proj": "attn_qkv", "gate_up_proj": "ffn_up"}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    p = hf.split(".")  # model.layers.N.(self_attn|mlp|input_layernorm|...).X.weight
    l, rest = p[2], p[3:]
    if rest[0] == "input_layernorm":
        return f"blk.{l}.attn_norm.weight"
    if rest[0] == "post_attention_layernorm":
        return f"blk.{l}.ffn_norm.weight"
    if rest[1] in ("q_norm", "k_norm"):
        return f"blk.{l}.attn_{rest[1]}.weight"
    return f"blk.{l}.{GG_LIN[rest[1]]}.{rest[2]}"


def write_hf_gguf(model, arch, path, qtype, bpe):
    """model (a transformers causal LM) as llama.cpp's converter writes it; returns the HF state
    dict of the weights the file holds (dequantized), for the reference."""
    c = model.config
    H, Hkv = c.num_attention_heads, c.num_key_value_heads
    D = getattr(c, "head_dim", None) or c.hidden_size // H
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    if arch == "phi3":
        # Phi3MiniModel.set_gguf_parameters: rope dims int(partial * hidden) // heads, the
        # original context length and the sliding window (0 for none)
        rp = c.rope_parameters
        w.add_rope_dimension_count(int(rp.get("partial_rotary_factor", 1.0) * c.hidden_size) // H)
        w.add_rope_scaling_orig_ctx_len(rp.get("original_max_position_embeddings",
                                               c.original_max_position_embeddings))
        w.add_sliding_window(c.sliding_window or 0)
        # a padding id inside the vocabulary (real Phi-3 files carry one; without it transformers'
        # GGUF loader keeps Phi3Config's default 32000, past this vocabulary)
        w.add_pad_token_id(0)
    else:
        w.add_rope_dimension_count(D)
    if D != c.hidden_size // H:
        w.add_key_length(D)
        w.add_value_length(D)
    add_bpe_vocab(w, *bpe, pre="qwen2", n=c.vocab_size)
    ref = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        x = p.detach().float().numpy().copy()
        if x.ndim == 2:
            if qtype == "f16":
                xf, stored = x.astype(np.float16).astype(np.float32), x.astype(np.float16)
                raw = None
            elif qtype in ("q8_0", "q4_0", "bf16"):
                raw = gguf.GGMLQuantizationType[qtype.upper()]
                stored = gguf.quants.quantize(x, raw)
                xf = gguf.quants.dequantize(stored, raw).reshape(x.shape)
            else:
                xf, stored, raw = x, x, None
        else:
            xf, stored, raw = x, x, None
        ref[name] = torch.from_numpy(np.ascontiguousarray(xf))
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            nh = H if ".q_proj." in name else Hkv
            # quantization is per row (blocks along the input), so permuting the quantized rows
            # is quantizing the permuted rows
            stored = permute(stored, nh)
        if raw is not None:
            w.add_tensor(gguf_name(name), stored, raw_dtype=raw)
        else:
            w.add_tensor(gguf_name(name), np.ascontiguousarray(stored))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


# --- ftune and the references --------------------------------------------------------------------

def examples(vocab, lengths=(19, 7, 12)):
    rng = np.random.default_rng(99)
    out = []
    for i, T in enumerate(lengths):
        ids = [int(t) for t in rng.integers(0, vocab, size=T)]
        labels = list(ids)
        if i == 1:
            labels[:2] = [-100] * 2
        out.append(dict(input_ids=ids, labels=labels))
    return out


def eval_ftune(tmp_path, model, ex, extra=()):
    data = models.write_jsonl(str(tmp_path / "eval.jsonl"), ex)
    out = tmp_path / "logits.safetensors"
    p = run_ok(["eval", "--model", model, "--data", data, "--batch-size", "2", "--dump-logits", out]
               + list(extra))
    return last_json_line(p.stdout), models.read_safetensors(str(out))["logits"]


def check(res, logits, ref):
    assert res["tokens"] == ref["tokens"], (res, ref["tokens"])
    assert logits.shape == ref["logits"].shape, (logits.shape, ref["logits"].shape)
    diff = np.abs(logits.astype(np.float64) - ref["logits"])
    bound = LOGIT_RTOL * max(1.0, float(np.abs(ref["logits"]).max()))
    assert diff.max() <= bound, f"logits differ by {diff.max():.3g} (bound {bound:.3g})"
    assert abs(res["loss"] - ref["loss"]) <= LOSS_RTOL * abs(ref["loss"]), (res["loss"], ref["loss"])
    print(f"logits max |diff| {diff.max():.3g} (max |ref| {np.abs(ref['logits']).max():.3g}), "
          f"loss {res['loss']:.7g} vs {ref['loss']:.7g}")
    return float(diff.max())


def ids_of(stdout, n):
    """`ftune tokenize --jsonl` output: one line of space-separated ids per document."""
    lines = stdout.split("\n")
    assert len(lines) >= n and not any(x.strip() for x in lines[n:]), stdout[-500:]
    return [[int(t) for t in x.split()] for x in lines[:n]]


def hf_from_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
        attn_implementation="eager").eval()


def tok_from_gguf(path):
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                      gguf_file=os.path.basename(path))


@pytest.fixture(scope="module")
def stories_fixed(tmp_path_factory):
    need_stories()
    d = tmp_path_factory.mktemp("stories")
    return copy_gguf(STORIES, str(d / "stories260K.gguf"),
                     drop=("tokenizer.ggml.padding_token_id", "tokenizer.ggml.seperator_token_id"))


STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
         "park. One day, she saw a big red ball. \"Can I play with it?\" she asked her mom.")


# --- stories260K ---------------------------------------------------------------------------------

def test_stories_logits(tmp_path, stories_fixed):
    tok = tok_from_gguf(stories_fixed)
    ids = tok(STORY).input_ids
    ex = [dict(input_ids=ids, labels=list(ids)), dict(input_ids=ids[:9], labels=ids[:9])]
    ex += examples(512, (17,))
    ref = models.reference_eval(hf_from_gguf(stories_fixed), ex)
    res, logits = eval_ftune(tmp_path, STORIES, ex)
    check(res, logits, ref)
    # a real model on its own kind of text: the loss is low (random weights would give ~6.2)
    story = models.reference_eval(hf_from_gguf(stories_fixed), ex[:1])["loss"]
    assert story < 2.5, story


def test_stories_generate_greedy(stories_fixed):
    """`ftune generate` over the real GGUF file: the greedy story from "Once upon a time" is
    transformers' greedy generate over the same file, token for token (64 new tokens; a trained
    model has no near-ties), and it reads as a story."""
    p = run_ok(["generate", "--model", STORIES, "--prompt", "Once upon a time", "--greedy",
                "--max-new-tokens", 64, "--json"])
    out = last_json_line(p.stdout)
    m = hf_from_gguf(stories_fixed)
    prompt = torch.tensor([out["prompt_ids"]])
    assert out["prompt_ids"] == tok_from_gguf(stories_fixed)("Once upon a time").input_ids
    with torch.no_grad():
        ref = m.generate(prompt, do_sample=False, max_new_tokens=len(out["ids"]),
                         eos_token_id=2, pad_token_id=0)[0, prompt.shape[1]:].tolist()
    assert out["ids"] == ref, (out["ids"], ref)
    assert len(out["ids"]) >= 32 or out["stop"] == "eos", out
    assert "Lily" in out["text"] or "She" in out["text"] or "he" in out["text"], out["text"]


def test_stories_tokenize(tmp_path, stories_fixed):
    tok = tok_from_gguf(stories_fixed)
    docs = tok_corpus.corpus(total_bytes=60_000, seed=3, specials=["<s>", "</s>", "<unk>"])
    docs = [STORY, " leading space", "", "  two spaces", "trailing \n"] + docs
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    p = run_ok(["tokenize", "--model", STORIES, "--jsonl", path])
    got = ids_of(p.stdout, len(docs))
    for d, g in zip(docs, got):
        assert g == tok(d).input_ids, d[:80]


def test_stories_train_and_adapter(tmp_path, stories_fixed):
    lines = [STORY, "Tom had a big red ball. He liked to throw it high in the sky.",
             "The cat was sad because it could not find its toy. A bird came to help."]
    data = tmp_path / "train.jsonl"
    with open(data, "w") as f:
        for i in range(12):
            f.write(json.dumps({"text": lines[i % 3]}) + "\n")
    run = tmp_path / "run"
    run_ok(["train", "--model", STORIES, "--data", data, "--out", run, "--steps", "30",
            "--lr", "1e-2", "--batch-size", "4", "--lora-targets", "all-linear", "--seed", "1"])
    steps = [json.loads(x) for x in open(run / "metrics.jsonl") if '"step"' in x]
    first, last = steps[0]["loss"], steps[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    # the adapter, applied by PEFT to transformers' model of the file, gives ftune's logits
    from peft import PeftModel
    ex = examples(512, (15, 6))
    peft_model = PeftModel.from_pretrained(hf_from_gguf(stories_fixed), str(run)).eval()
    ref = models.reference_eval(peft_model, ex)
    res, logits = eval_ftune(tmp_path, STORIES, ex, ["--adapter", run])
    check(res, logits, ref)


# --- HF-converted files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bpe():
    return train_bpe(600)


# Every type here is kept as stored, Q4_0 included (its decode runs the fused Q4_0 kernels; gguf-py
# cannot write K-quants, and the zoo's rows of 64 and 128 are not whole 256-value K blocks anyway:
# tests/gguf_quant_kernels_test.c checks the Q4_K / Q6_K kernels against the same dequantization).
CASES = [("llama", "f32"), ("llama", "f16"), ("llama", "q8_0"), ("llama", "q4_0"), ("qwen2", "f32"),
         ("qwen2", "bf16"), ("qwen3", "f32"), ("qwen3", "q8_0"), ("phi3", "f32"), ("phi3", "q8_0")]


@pytest.mark.parametrize("arch,qtype", CASES)
def test_hf_converted(tmp_path, zoo, bpe, arch, qtype):
    model = zoo._f32(arch)
    path = str(tmp_path / f"{arch}-{qtype}.gguf")
    sd = write_hf_gguf(model, arch, path, qtype, bpe)
    ref_model = models.build_model(arch)
    ref_model.load_state_dict(sd, strict=not model.config.tie_word_embeddings)
    if model.config.tie_word_embeddings:
        ref_model.tie_weights()
    ex = examples(model.config.vocab_size)
    ref = models.reference_eval(ref_model.eval(), ex)
    res, logits = eval_ftune(tmp_path, path, ex)
    check(res, logits, ref)
    # greedy generation over the file (decode reads each weight in its stored type) equals
    # transformers' over the HF model with the file's weights (ref_model, built fresh: the zoo's
    # shared object may have been changed by other tests): tokens, and each step's logits
    prompt = [int(t) for t in np.random.default_rng(4).integers(0, 500, size=6)]
    dump = tmp_path / "gen.safetensors"
    p = run_ok(["generate", "--model", path, "--prompt-ids", ",".join(map(str, prompt)),
                "--greedy", "--max-new-tokens", 12, "--ignore-eos", "--json", "--dump-probs", dump])
    out = last_json_line(p.stdout)
    with torch.no_grad():
        g = ref_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                               min_new_tokens=12, pad_token_id=0, output_logits=True,
                               return_dict_in_generate=True)
    assert out["ids"] == g.sequences[0, len(prompt):].tolist(), out["ids"]
    want = torch.stack(g.logits, 1)[0].float().numpy()
    got = models.read_safetensors(str(dump))["logits"]
    assert np.abs(got - want).max() <= LOGIT_RTOL * max(1.0, float(np.abs(want).max()))
    if qtype == "f32" and arch == "phi3":
        # transformers' own GGUF loading of the file
        check(res, logits, models.reference_eval(hf_from_gguf(path), ex))
    elif qtype == "f32" and arch != "qwen3":
        # transformers' own GGUF loading of the same file. Not qwen3 here: transformers 5.23
        # reads no qwen3.attention.key_length, so this model's head_dim 32 becomes Qwen3Config's
        # default 128 and its q_norm does not load (real Qwen3 models have head_dim 128).
        check(res, logits, models.reference_eval(hf_from_gguf(path), ex))


def test_phi3_partial_rotary(tmp_path, bpe):
    """A Phi-3 that rotates half of each head (partial_rotary_factor 0.5: the converter writes
    rope.dimension_count 16 of head_dim 32): logits as transformers' over the HF model. (Not
    transformers' GGUF loader, which ignores phi3.rope.dimension_count.)"""
    kw = dict(models.ARCHS["phi3"][2], partial_rotary_factor=0.5)
    torch.manual_seed(3)
    model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**kw)).to(torch.float32)
    models.randomize_(model, 3)
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.5
    path = str(tmp_path / "phi3-partial.gguf")
    write_hf_gguf(model, "phi3", path, "f32", bpe)
    ex = examples(model.config.vocab_size)
    res, logits = eval_ftune(tmp_path, path, ex)
    check(res, logits, models.reference_eval(model.eval(), ex))
    # the rotation matters: the same weights with full rotation give other logits
    kw["partial_rotary_factor"] = 1.0
    full = transformers.Phi3ForCausalLM(transformers.Phi3Config(**kw)).to(torch.float32)
    full.load_state_dict(model.state_dict())
    other = models.reference_eval(full.eval(), ex)["logits"]
    assert np.abs(other - logits).max() > 1e-2


@pytest.mark.llama_cpp
def test_phi3_like_llama_cpp(tmp_path, zoo, bpe):
    """The Phi-3 file this test module writes is what llama.cpp itself runs as phi3: its logits
    (llama-cpp-python, fp32 KV cache, one thread) equal ftune's over the same ids within
    LOGIT_RTOL (so the fused attn_qkv / ffn_up layout, the rope and the window are read alike),
    and its 24 greedy tokens from 6 prompt ids are ftune's."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model = zoo._f32("phi3")
    path = str(tmp_path / "phi3.gguf")
    write_hf_gguf(model, "phi3", path, "f32", bpe)
    ids = [int(t) for t in np.random.default_rng(8).integers(0, 1000, size=24)]
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, verbose=False,
                          type_k=0, type_v=0)  # GGML_TYPE_F32 caches (the default is F16)
    try:
        llm.eval(ids)
        ref = np.array(llm.scores[:len(ids)], dtype=np.float64)
        # llama.cpp's greedy tokens (the argmax of its logits, one token evaluated after another)
        prompt, greedy = ids[:6], []
        llm.reset()
        llm.eval(prompt)
        for _ in range(24):
            greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([greedy[-1]])
    finally:
        llm.close()
    res, logits = eval_ftune(tmp_path, path, [dict(input_ids=ids, labels=ids)])
    diff = np.abs(logits[0].astype(np.float64) - ref).max()
    bound = LOGIT_RTOL * max(1.0, float(np.abs(ref).max()))
    assert diff <= bound, f"logits differ from llama.cpp's by {diff:.3g} (bound {bound:.3g})"
    print(f"phi3 vs llama.cpp: logits max |diff| {diff:.3g} (max |ref| {np.abs(ref).max():.3g})")
    out = last_json_line(run_ok(["generate", "--model", path, "--prompt-ids",
                                 ",".join(map(str, prompt)), "--greedy", "--max-new-tokens", 24,
                                 "--ignore-eos", "--json"]).stdout)
    assert out["ids"] == greedy, (out["ids"], greedy)


def test_eos_from_metadata(tmp_path, zoo, bpe):
    """tokenizer.ggml.eos_token_id ends greedy generation over a GGUF file at its first
    occurrence (not printed), as generation_config.json's does for a folder."""
    path = str(tmp_path / "llama.gguf")
    write_hf_gguf(zoo._f32("llama"), "llama", path, "f32", bpe)
    prompt = ["--prompt-ids", "5,77,300,12", "--greedy", "--max-new-tokens", 30, "--json"]
    ids = last_json_line(run_ok(["generate", "--model", path, "--ignore-eos", *prompt]).stdout)[
        "ids"]
    k = next(i for i in range(3, 30) if ids[i] not in ids[:i] and ids[i] != 1)
    raw = bytearray(open(path, "rb").read())
    key = b"tokenizer.ggml.eos_token_id"
    at = raw.index(key) + len(key)
    assert int.from_bytes(raw[at:at + 4], "little") == 4  # a u32 value follows
    assert int.from_bytes(raw[at + 4:at + 8], "little") == 1
    raw[at + 4:at + 8] = ids[k].to_bytes(4, "little")
    open(path, "wb").write(bytes(raw))
    out = last_json_line(run_ok(["generate", "--model", path, *prompt]).stdout)
    assert out["stop"] == "eos" and out["ids"] == ids[:k], (out, ids, k)


@pytest.mark.parametrize("qtype", ["q8_0", "f16", "bf16"])
def test_hf_converted_trains(tmp_path, zoo, bpe, qtype):
    """Training runs over Q8_0, F16 and BF16 weights as stored (no --quant): loss falls. (F32:
    test_stories_train_and_adapter.)"""
    model = zoo._f32("llama")
    path = str(tmp_path / f"llama-{qtype}.gguf")
    write_hf_gguf(model, "llama", path, qtype, bpe)
    plan = run_ok(["plan", "--model", path, "--seq-len", "16"]).stdout
    assert f"linear {qtype}; lm_head {qtype}" in plan, plan  # kept as stored, not dequantized
    rng = np.random.default_rng(1)
    seqs = [[int(t) for t in rng.integers(0, 50, size=16)] for _ in range(4)]
    data = models.write_jsonl(str(tmp_path / "t.jsonl"),
                              [dict(input_ids=s, labels=s) for s in seqs])
    run = tmp_path / "run"
    run_ok(["train", "--model", path, "--data", data, "--out", run, "--steps", "25", "--lr", "2e-2",
            "--batch-size", "4", "--lora-targets", "all-linear"])
    steps = [json.loads(x) for x in open(run / "metrics.jsonl") if '"step"' in x]
    assert steps[-1]["loss"] < 0.7 * steps[0]["loss"], (steps[0]["loss"], steps[-1]["loss"])


@pytest.mark.parametrize("qtype,quant", [("f32", "none"), ("q8_0", "q8")])
def test_gguf_training_equals_folder_training(tmp_path, zoo, bpe, qtype, quant):
    """Training over a GGUF file is training over the Hugging Face folder it was converted from
    (whose steps test_train_parity.py checks against PyTorch + PEFT): the same losses and grad
    norms at every step and the same adapter bytes, for F32 (Q/K rows un-permuted at load) and
    Q8_0 (the folder of the file's dequantized weights, quantized by --quant q8 at load, gives the
    blocks the file stores)."""
    model = zoo._f32("llama")
    path = str(tmp_path / f"llama-{qtype}.gguf")
    ref = write_hf_gguf(model, "llama", path, qtype, bpe)
    # the folder holds the file's weights dequantized (the Q8_0 embedding's values included);
    # Q8_0 of Q8_0-dequantized rows gives the same blocks back, so --quant q8 rebuilds the file's
    folder = str(tmp_path / "hf")
    m2 = copy.deepcopy(model)
    m2.load_state_dict(ref, strict=False)
    models.save_model(m2, folder, "f32")
    rng = np.random.default_rng(2)
    seqs = [[int(t) for t in rng.integers(0, 50, size=16)] for _ in range(4)]
    data = models.write_jsonl(str(tmp_path / "t.jsonl"), [dict(input_ids=s, labels=s) for s in seqs])
    common = ["--data", data, "--steps", "4", "--lr", "1e-2", "--batch-size", "2",
              "--lora-targets", "all-linear", "--seed", "3", "--quant", quant]
    if quant == "q8":
        common += ["--quant-lm-head", "q8"]
    runs = {}
    for name, m in (("gguf", path), ("folder", folder)):
        runs[name] = tmp_path / ("run-" + name)
        run_ok(["train", "--model", m, "--out", runs[name]] + common)
    metrics = {k: [json.loads(x) for x in open(r / "metrics.jsonl") if '"step"' in x]
               for k, r in runs.items()}
    assert len(metrics["gguf"]) == 4
    for a, b in zip(metrics["gguf"], metrics["folder"]):
        assert (a["loss"], a["grad_norm"]) == (b["loss"], b["grad_norm"]), (a, b)
    ga, fa = (models.read_safetensors(str(r / "adapter_model.safetensors")) for r in runs.values())
    assert sorted(ga) == sorted(fa)
    for k in ga:
        assert np.array_equal(ga[k], fa[k]), k


def test_hf_converted_q4_0_kept_and_train_refused(tmp_path, zoo, bpe):
    """Q4_0 weights are kept as stored (plan), and training over them is refused, exit 2 with a
    hint, until their backward is supported; --quant none trains over an fp32 copy."""
    model = zoo._f32("llama")
    path = str(tmp_path / "llama-q4.gguf")
    write_hf_gguf(model, "llama", path, "q4_0", bpe)
    plan = run_ok(["plan", "--model", path, "--seq-len", "16"]).stdout
    assert "linear q4_0; lm_head q4_0" in plan, plan
    seqs = [[int(t) for t in np.random.default_rng(1).integers(0, 50, size=16)] for _ in range(4)]
    data = models.write_jsonl(str(tmp_path / "t.jsonl"), [dict(input_ids=s, labels=s) for s in seqs])
    args = ["train", "--model", path, "--data", data, "--steps", "2", "--batch-size", "4"]
    p = run_ftune(args + ["--out", tmp_path / "run"])
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "training over a Q4_0/Q4_K/Q6_K base is not supported yet" in p.stderr, p.stderr
    assert path in p.stderr and "--quant none" in p.stderr, p.stderr
    run_ok(args + ["--out", tmp_path / "run2", "--quant", "none"])


# --- byte-level BPE vocabularies ---------------------------------------------------------------

@pytest.mark.parametrize("pre", ["qwen2", None])
def test_gpt2_vocab_tokenize(tmp_path, bpe, pre):
    path = str(tmp_path / "tok.gguf")
    w = gguf.GGUFWriter(path, "llama")
    add_bpe_vocab(w, *bpe, pre=pre)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = tok_from_gguf(path)
    docs = tok_corpus.corpus(total_bytes=40_000, seed=11, specials=["<|endoftext|>", "<|im_end|>"])
    docs = ["Hello world, it's 2026!", "   spaces  ", ""] + docs
    dp = tmp_path / "docs.jsonl"
    with open(dp, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    p = run_ok(["tokenize", "--model", path, "--jsonl", dp])
    got = ids_of(p.stdout, len(docs))
    for d, g in zip(docs, got):
        assert g == tok(d).input_ids, d[:80]


LLAMA2_TOK = os.path.join(os.path.dirname(REPO), "shared", "tokenizers", "llama2", "tokenizer.json")


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_sentencepiece_vocab_32k(tmp_path, arch):
    """A 32,000-token SentencePiece-style vocabulary (../shared's Llama-2-style tokenizer.json,
    tokens with scores -id, bytes typed 6 and specials 3, as llama.cpp writes them): the merges
    ftune recovers from the scores tokenize the corpus as transformers' GGUF tokenizer does. Under
    phi3 (Phi-3-mini's own vocabulary is this kind) transformers swaps Metaspace for a
    Prepend + Replace normalizer, which differs on text that starts with spaces."""
    if not os.path.exists(LLAMA2_TOK):
        pytest.skip(f"{LLAMA2_TOK} is absent (../shared is beside the project only on its own machines)")
    j = json.load(open(LLAMA2_TOK))
    toks = [None] * len(j["model"]["vocab"])
    for t, i in j["model"]["vocab"].items():
        toks[i] = t
    types = [6 if (t.startswith("<0x") and len(t) == 6) else 1 for t in toks]
    for a in j["added_tokens"]:
        types[a["id"]] = 3
    path = str(tmp_path / "l2.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([float(-i) for i in range(len(toks))])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = tok_from_gguf(path)
    docs = tok_corpus.corpus(total_bytes=60_000, seed=21, specials=["<s>", "</s>", "<unk>"])
    docs = [STORY, " x", "  y  ", "", "   three", " \n  lines\n "] + docs
    dp = tmp_path / "docs.jsonl"
    with open(dp, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    got = ids_of(run_ok(["tokenize", "--model", path, "--jsonl", dp]).stdout, len(docs))
    for d, g in zip(docs, got):
        assert g == tok(d).input_ids, d[:80]


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_chat_template_from_metadata(tmp_path, bpe):
    """tokenizer.chat_template: `ftune tokenize --chat` renders and encodes a conversation as
    transformers' apply_chat_template does with the GGUF tokenizer."""
    path = str(tmp_path / "chat.gguf")
    w = gguf.GGUFWriter(path, "qwen2")
    add_bpe_vocab(w, *bpe, pre="qwen2")
    w.add_chat_template(CHATML)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}]
    cp = tmp_path / "conv.json"
    cp.write_text(json.dumps(conv))
    tok = tok_from_gguf(path)
    want = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    out = run_ok(["tokenize", "--model", path, "--chat", cp, "--add-generation-prompt"]).stdout
    assert [int(x) for x in out.split()] == list(want), (out, want)


# --- bad input -------------------------------------------------------------------------------

def small_gguf(path, arch="llama", drop_key=None, bad_shape=False, tokenizer=True, bpe=None,
               longrope=False):
    w = gguf.GGUFWriter(path, arch)
    C, I, H = 32, 48, 4
    keys = dict(context_length=64, embedding_length=C, block_count=1, feed_forward_length=I,
                head_count=H)
    for k, v in keys.items():
        if k != drop_key:
            getattr(w, f"add_{k}")(v)
    w.add_layer_norm_rms_eps(1e-5)
    if tokenizer:
        add_bpe_vocab(w, *bpe, n=len(bpe[0]))
    V = len(bpe[0])
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", f(V, C))
    w.add_tensor("output_norm.weight", f(C))
    w.add_tensor("blk.0.attn_norm.weight", f(C))
    w.add_tensor("blk.0.ffn_norm.weight", f(C))
    if longrope:  # Phi3MiniModel.generate_extra_tensors: head_dim / 2 factors each
        w.add_tensor("rope_factors_long.weight", np.ones(C // H // 2, np.float32))
        w.add_tensor("rope_factors_short.weight", np.ones(C // H // 2, np.float32))
    w.add_tensor("blk.0.attn_q.weight", f(C, C + (8 if bad_shape else 0)))
    w.add_tensor("blk.0.attn_k.weight", f(C, C))
    w.add_tensor("blk.0.attn_v.weight", f(C, C))
    w.add_tensor("blk.0.attn_output.weight", f(C, C))
    w.add_tensor("blk.0.ffn_gate.weight", f(I, C))
    w.add_tensor("blk.0.ffn_up.weight", f(I, C))
    w.add_tensor("blk.0.ffn_down.weight", f(C, I))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("case,expect", [
    ("ok", None),
    ("arch", "general.architecture"),
    ("key", "llama.attention.head_count"),
    ("shape", "blk.0.attn_q.weight"),
    ("notok", "tokenizer.ggml.model"),
])
def test_bad_input(tmp_path, bpe, case, expect):
    path = str(tmp_path / "m.gguf")
    small_gguf(path, arch="gptx" if case == "arch" else "llama",
               drop_key="head_count" if case == "key" else None, bad_shape=case == "shape",
               tokenizer=case != "notok", bpe=bpe)
    data = tmp_path / "d.jsonl"
    with open(data, "w") as f:
        f.write(json.dumps({"text": "hello there"}) + "\n")
    if expect is None:
        assert run_ftune(["eval", "--model", path, "--data", data]).returncode == 0
        return
    exit_2(["eval", "--model", path, "--data", data], [path, expect])


def exit_2(args, words):
    """args exit 2 with every word of words and a hint in the message, under build/ftune and the
    ASan/UBSan build when present (which must report nothing)."""
    for b in [None] + ([asan_bin()] if asan_bin() else []):
        label = "asan build" if b else "ftune"
        p = run_ftune(args, binary=b, env={"ASAN_OPTIONS": "detect_leaks=1"} if b else None)
        assert p.returncode == 2, f"{label}: exit {p.returncode}\n{p.stderr[-3000:]}"
        for w in words:
            assert str(w) in p.stderr, f"{label}: {w!r} not in: {p.stderr[-3000:]}"
        assert "hint" in p.stderr, f"{label}: no hint: {p.stderr[-3000:]}"
        for s in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            assert s not in p.stderr, f"{label}: {p.stderr[-5000:]}"


def tensor_type_at(data, name):
    """The byte offset of tensor name's type in the tensor infos (name, n_dims, dims, type)."""
    i = data.index(name.encode()) + len(name)
    nd = int.from_bytes(data[i:i + 4], "little")
    return i + 4 + 8 * nd


@pytest.mark.parametrize("case", ["truncated", "unknown_type", "adapter_shapes", "long_prompt",
                                  "utf8_prompt", "phi3_longrope", "no_vocab"])
def test_bad_input_model(tmp_path, zoo, bpe, case):
    """Bad input with a GGUF model, for eval and generate, both binaries."""
    path = str(tmp_path / "m.gguf")
    small_gguf(path, arch="phi3" if case == "phi3_longrope" else "llama", bpe=bpe,
               longrope=case == "phi3_longrope", tokenizer=case != "no_vocab")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hello there"}) + "\n")
    ev = ["eval", "--model", path, "--data", data]
    raw = open(path, "rb").read()
    if case == "truncated":  # cut inside the last tensor's data
        open(path, "wb").write(raw[:len(raw) - 1000])
        exit_2(ev, [path, "blk.0.ffn_down.weight"])
        exit_2(["generate", "--model", path, "--prompt", "hi"], [path])
    elif case == "unknown_type":
        b = bytearray(raw)
        t = tensor_type_at(raw, "blk.0.attn_k.weight")
        b[t:t + 4] = (99).to_bytes(4, "little")
        open(path, "wb").write(bytes(b))
        exit_2(ev, [path, "blk.0.attn_k.weight", "99"])
    elif case == "adapter_shapes":  # the zoo's llama adapter (hidden 64) on this hidden-32 file
        exit_2(ev + ["--adapter", zoo.adapter("llama")], ["adapter_model.safetensors",
                                                          "expected shape"])
        exit_2(["generate", "--model", path, "--adapter", zoo.adapter("llama"), "--prompt", "hi"],
               ["adapter_model.safetensors"])
    elif case == "long_prompt":  # context_length 64
        exit_2(["generate", "--model", path, "--prompt-ids", ",".join(["5"] * 100), "--json"],
               ["100 tokens"])
    elif case == "utf8_prompt":
        f = tmp_path / "bad.txt"
        f.write_bytes(b"hello \xff world")
        exit_2(["generate", "--model", path, "--prompt-file", f], [f, "offset 6"])
    elif case == "phi3_longrope":
        exit_2(ev, [path, "rope_factors_long.weight"])
    elif case == "no_vocab":  # token ids work without a vocabulary; text does not
        out = last_json_line(run_ok(["generate", "--model", path, "--prompt-ids", "1,2,3",
                                     "--json", "--max-new-tokens", 3]).stdout)
        assert out["prompt_ids"] == [1, 2, 3] and len(out["ids"]) == 3, out
        exit_2(["generate", "--model", path, "--prompt", "hi"], [path, "tokenizer.ggml.model"])
