#!/usr/bin/env python3
"""Make a random-weight Hugging Face model folder of a named real shape, with transformers.

    python tools/make_model.py --shape smollm-135m --out DIR [--dtype f32|bf16] [--seed 0]
    python tools/make_model.py --list

The folder is what transformers' save_pretrained writes (config.json, model.safetensors,
generation_config.json), so ftune and PyTorch read the same files. Weights use transformers' own
initialisation (normal with std initializer_range) from a fixed seed: the numbers are meaningless,
the shapes and the cost of a step are those of the real model. Used by the benchmark (bench/), and
by anyone who wants a model of a real size without a download. The folder is written under a
temporary name and renamed when complete, so an interrupted run never leaves a half folder.

Shapes are taken from the published config.json of each model (hidden size, MLP size, layers,
heads, kv heads, head_dim, vocabulary, tied embeddings, rope theta, norm eps); the run needs the
test venv (`bash tools/venv.sh` prints its path) for torch and transformers.
"""

import argparse
import json
import os
import shutil
import sys

SHAPES = {
    # HuggingFaceTB/SmolLM-135M
    "smollm-135m": ("LlamaConfig", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)),
    # HuggingFaceTB/SmolLM-360M
    "smollm-360m": ("LlamaConfig", dict(
        hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
        num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)),
    # Qwen/Qwen2.5-0.5B
    "qwen2.5-0.5b": ("Qwen2Config", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0,
        rms_norm_eps=1e-6, max_position_embeddings=32768, use_sliding_window=False)),
    # Qwen/Qwen3-0.6B
    "qwen3-0.6b": ("Qwen3Config", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
        use_sliding_window=False)),
    # A few-MB Llama for smoke tests.
    "tiny-llama": ("LlamaConfig", dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)),
}


def make_model(shape, out, dtype="f32", seed=0):
    """Write the folder (unless a complete one is already there); return its path."""
    import torch
    import transformers
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    cfg_cls, kw = SHAPES[shape]
    config = getattr(transformers, cfg_cls)(**kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    with open(os.path.join(tmp, "ftune_make_model.json"), "w") as f:
        json.dump(dict(shape=shape, dtype=dtype, seed=seed,
                       params=sum(p.numel() for p in model.parameters())), f)
    os.replace(tmp, out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES))
    ap.add_argument("--out")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="list the shapes and exit")
    a = ap.parse_args()
    if a.list:
        for name, (cls, kw) in SHAPES.items():
            print(f"{name:14s} {cls[:-6]:6s} C={kw['hidden_size']} I={kw['intermediate_size']} "
                  f"L={kw['num_hidden_layers']} H={kw['num_attention_heads']} "
                  f"Hkv={kw['num_key_value_heads']} V={kw['vocab_size']}")
        return 0
    if not a.shape or not a.out:
        ap.error("--shape and --out are required (or --list)")
    print(make_model(a.shape, a.out, a.dtype, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
