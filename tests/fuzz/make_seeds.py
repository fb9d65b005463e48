#!/usr/bin/env python3
"""make_seeds.py: write the seed inputs of the fuzz corpora under tests/corpus/<harness>/.

    $(bash tools/venv.sh)/bin/python tests/fuzz/make_seeds.py

Seeds are real inputs of each kind, written by the reference libraries themselves, so that the
fuzzers start from files a user would really feed ftune:
  safetensors    files saved by the `safetensors` package (every dtype, scalars, empty tensors,
                 metadata) and by PEFT (an adapter);
  config         config.json of the five architectures as transformers' config classes write
                 them (small sizes), with rope scaling variants, sliding windows, layer types,
                 and the real SmolLM-135M config.json when ../shared is present;
  dataset        JSONL lines of token ids with and without labels;
  peft           adapter_config.json and adapter_model.safetensors written by PEFT for the tiny
                 Llama that fuzz_peft.c builds (llama/tiny/vocab 64);
  tokenizer      the real tokenizer.json files of ../shared/tokenizers (Llama 2, Llama 3, Qwen3,
                 SmolLM) with the vocabulary cut to its first few hundred ids and the merges
                 among them (the pipeline stays as it is), plus small ones trained here with the
                 `tokenizers` package (Metaspace, WordLevel: kinds ftune must refuse cleanly);
  chat_template  the chat templates of ../shared/tokenizers and tests/peers/templates;
  tok_text       short texts (the first byte picks the tokenizer, see fuzz_tok_text.c).
Files are named seed-*; inputs that libFuzzer adds are named by their SHA-1. Re-running
rewrites the seeds only. Without ../shared, the tokenizer seeds are trained instead.
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "corpus")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if not os.path.isdir(SHARED):
    SHARED = "/work/shared"


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def safetensors_seeds():
    from safetensors.numpy import save
    import torch
    from safetensors.torch import save as tsave
    r = np.random.default_rng(0)
    put("safetensors", "f32.safetensors",
        save({"w": r.standard_normal((2, 3)).astype(np.float32)}, metadata={"format": "pt"}))
    put("safetensors", "f16-bf16.safetensors",
        tsave({"a": torch.randn(3, 2, dtype=torch.float16),
               "b": torch.randn(4, dtype=torch.bfloat16),
               "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4)}))
    put("safetensors", "all-dtypes.safetensors", save({
        "f64": np.arange(3, dtype=np.float64), "i64": np.arange(2, dtype=np.int64),
        "i32": np.arange(2, dtype=np.int32), "i16": np.arange(2, dtype=np.int16),
        "i8": np.arange(3, dtype=np.int8), "u8": np.arange(3, dtype=np.uint8),
        "bool": np.array([True, False]), "f32": np.ones((1, 1, 2), dtype=np.float32)}))
    put("safetensors", "scalar-empty.safetensors",
        save({"s": np.array(1.5, dtype=np.float32), "e": np.zeros((0, 4), dtype=np.float32),
              "z": np.zeros((2, 0, 3), dtype=np.float16)}, metadata={"k": "v", "format": "pt"}))
    put("safetensors", "8dims.safetensors",
        save({"x": np.ones((1, 2, 1, 2, 1, 2, 1, 2), dtype=np.float32)}))
    put("safetensors", "empty.safetensors", save({}))


ARCH = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}


def config_json(arch, **kw):
    import transformers
    cls, hf = ARCH[arch]
    base = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=64, max_position_embeddings=128)
    base.update(kw)
    c = getattr(transformers, cls)(**base)
    c.architectures = [hf]
    return c.to_json_string(use_diff=True)


def config_seeds():
    for arch in ARCH:
        put("config", arch + ".json", config_json(arch))
    put("config", "llama-rope-llama3.json", config_json("llama", rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}))
    put("config", "llama-rope-linear-bias.json", config_json(
        "llama", rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        attention_bias=True, mlp_bias=True, head_dim=32))
    put("config", "qwen2-sliding.json", config_json(
        "qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=1))
    put("config", "qwen3-layer-types.json", config_json(
        "qwen3", use_sliding_window=True, sliding_window=8,
        layer_types=["full_attention", "sliding_attention"]))
    put("config", "mistral-window.json", config_json("mistral", sliding_window=32))
    put("config", "phi3-partial.json", config_json("phi3", partial_rotary_factor=0.5))
    # the older layout (transformers 4): top-level rope_theta and rope_scaling with "type"
    put("config", "llama-v4-layout.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": None, "vocab_size": 64, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0},
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1,
        "eos_token_id": [2, 3], "hidden_act": "silu"}, indent=2))
    p = os.path.join(SHARED, "tokenizers", "smollm-135m", "config.json")
    if os.path.exists(p):
        put("config", "smollm-135m.json", open(p, "rb").read())


def dataset_seeds():
    put("dataset", "ids.jsonl", '{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5, 6, 7, 8]}\n')
    put("dataset", "labels.jsonl",
        '{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}\n'
        '{"input_ids": [9, 8], "labels": null}\r\n\n   \n'
        '{"labels": [5, -100, 999], "input_ids": [5, 6, 999], "extra": {"x": [1.5, "s"]}}')
    put("dataset", "long.jsonl", json.dumps({"input_ids": list(range(100)),
                                             "labels": [-100] * 50 + list(range(50, 100))}) + "\n")
    put("dataset", "one.jsonl", '{"input_ids":[0]}')


def tiny_llama():
    import transformers
    c = transformers.LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(c)


def peft_seeds():
    import tempfile
    import torch
    import peft
    torch.manual_seed(0)
    variants = {
        "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        "all-linear-rslora": dict(r=2, lora_alpha=16, target_modules="all-linear", use_rslora=True),
        "regex": dict(r=4, lora_alpha=8, target_modules=r".*\.layers\.1\.self_attn\.(q|k)_proj"),
        "mlp": dict(r=1, lora_alpha=1, lora_dropout=0.1, target_modules=["gate_proj", "up_proj", "down_proj"]),
    }
    for name, kw in variants.items():
        m = peft.get_peft_model(tiny_llama(), peft.LoraConfig(task_type="CAUSAL_LM", **kw))
        with tempfile.TemporaryDirectory() as d:
            m.save_pretrained(d)
            put("peft", name + "-adapter_config.json", open(os.path.join(d, "adapter_config.json"), "rb").read())
            if name in ("qv", "mlp"):
                put("peft", name + "-adapter_model.safetensors",
                    open(os.path.join(d, "adapter_model.safetensors"), "rb").read())
                if name == "qv":  # also a real adapter for the plain safetensors fuzzer
                    put("safetensors", "peft-adapter.safetensors",
                        open(os.path.join(d, "adapter_model.safetensors"), "rb").read())


def cut_tokenizer(path, n_vocab, n_added=12):
    """The real pipeline with the vocabulary cut to ids < n_vocab and the merges among them."""
    j = json.load(open(path, encoding="utf-8"))
    j["added_tokens"] = j["added_tokens"][:n_added]
    m = j["model"]
    m["vocab"] = {k: v for k, v in m["vocab"].items() if v < n_vocab}
    keep = []
    for mg in m.get("merges", []):
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in m["vocab"] and b in m["vocab"] and a + b in m["vocab"]:
            keep.append(mg)
    m["merges"] = keep
    return json.dumps(j, ensure_ascii=False, indent=1)


def tokenizer_seeds():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers
    sys.path.insert(0, os.path.join(ROOT, "tests", "peers"))
    texts = ["Hello world, this is a small text for a small tokenizer. " * 3,
             "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600 12345 x=1; y = [2, 3]\n\tz"] * 20
    for name, n in (("llama2", 700), ("llama3", 600), ("qwen3", 600), ("smollm-135m", 600)):
        p = os.path.join(SHARED, "tokenizers", name, "tokenizer.json")
        if os.path.exists(p):
            s = cut_tokenizer(p, n)
        else:  # a small byte-level BPE of the same kind, trained here
            t = Tokenizer(models.BPE())
            t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            t.decoder = decoders.ByteLevel()
            t.train_from_iterator(texts, trainers.BpeTrainer(
                vocab_size=400, special_tokens=["<s>", "</s>"], show_progress=False,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
            s = t.to_str()
        Tokenizer.from_str(s)  # must stay loadable by the reference
        put("tokenizer", name + ".json", s)
    t = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.Metaspace()
    t.decoder = decoders.Metaspace()
    t.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>"],
                                                     show_progress=False))
    put("tokenizer", "metaspace-nfkc.json", t.to_str())
    t = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]"], show_progress=False))
    put("tokenizer", "wordlevel.json", t.to_str())


def chat_template_seeds():
    for name in ("llama3", "qwen3", "llama2", "smollm-135m"):
        p = os.path.join(SHARED, "tokenizers", name, "tokenizer_config.json")
        if os.path.exists(p):
            ct = json.load(open(p, encoding="utf-8")).get("chat_template")
            if isinstance(ct, str):
                put("chat_template", name + ".jinja", ct)
    tdir = os.path.join(ROOT, "tests", "peers", "templates")
    if os.path.isdir(tdir):
        for f in sorted(os.listdir(tdir)):
            if f.endswith(".jinja"):
                put("chat_template", f, open(os.path.join(tdir, f), "rb").read())
    put("chat_template", "features.jinja",
        "{%- set ns = namespace(n=0) -%}{% macro m(x, y=2) %}[{{ x ~ y }}]{% endmacro %}"
        "{%- for msg in messages if msg.role != 'tool' %}{% set ns.n = ns.n + 1 %}"
        "{{ loop.index }}:{{ msg['role'] | upper }}|{{ msg.content | trim | replace('a', 'b') }}"
        "{% if loop.last %}{{ m(ns.n) }}{% elif loop.first %}{{ bos_token }}{% else %}-{% endif %}"
        "{% if msg.tool_calls is defined %}{{ msg.tool_calls | tojson }}{% endif %}\n"
        "{%- endfor %}{% if tools %}{{ tools | length }} {{ tools[0].function.name }}{% endif %}"
        "{% generation %}{{ 'x' * 3 }}{{ [1, 2, 3] | join(',') }}{% endgeneration %}"
        "{{ (messages | selectattr('role', 'equalto', 'user') | list)[-1].content[:5] }}"
        "{{ '%s-%d' % ('a', 1) if true else raise_exception('no') }}"
        "{{ {'k': 1}.items() | list }}{{ 'A b'.split(' ') }}{{ none is none }}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}{{ eos_token }}")


def tok_text_seeds():
    # first byte: tokenizer (bits 0-1), add special tokens (bit 2), skip special (bit 3)
    texts = ["Hello, world! It's a test.", "caf\u00e9 \u65e5\u672c\u8a9e \U0001F468\u200D\U0001F469\u200D\U0001F467",
             "  \t\n\r\n  x  <s></s><|endoftext|><|im_start|>user\n12345 67",
             "don't I'M we've \u0130stanbul \ufb01 \u212b"]
    for i, t in enumerate(texts):
        for k in range(4):
            put("tok_text", "%d-%d" % (i, k), bytes([k | (4 * (i & 1)) | (8 * (i >> 1 & 1))]) + t.encode())
    put("tok_text", "bad-utf8", b"\x01ab\xff\xc3(\xe2\x82\xf0\x9f\x98")


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    dataset_seeds()
    peft_seeds()
    tokenizer_seeds()
    chat_template_seeds()
    tok_text_seeds()
    for h in sorted(os.listdir(CORPUS)):
        fs = os.listdir(os.path.join(CORPUS, h))
        size = sum(os.path.getsize(os.path.join(CORPUS, h, f)) for f in fs)
        print("%-16s %3d files %8d bytes" % (h, len(fs), size))
