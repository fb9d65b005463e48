#!/usr/bin/env python3
"""Write a random-weight model of the Llama-3.1-8B shape, one tensor at a time.

    python tools/make_llama8b.py --out DIR [--layers 32] [--seed 0]

Writes DIR/config.json and DIR/model-0000K-of-0000N.safetensors shards (+ the index) in BF16,
as save_pretrained lays them out. Only one tensor is in memory at a time: the safetensors header
is computed from the shapes first, then each tensor is drawn (normal, std 0.02, as the Llama
initializer_range; norm weights 1), converted to BF16 and appended. Peak memory is about
1.5 GB (the largest tensor, embed_tokens, in fp32 and BF16), so the 16 GB model can be made on a
machine with little memory. Quantize it afterwards with
`ftune quantize --model DIR --out DIR-nf4 --quant nf4 --double-quant`, or let
`ftune train --quant nf4` quantize it while loading.

The shape is the published config.json of meta-llama/Llama-3.1-8B: hidden 4096, MLP 14336,
32 layers, 32 heads, 8 KV heads, vocabulary 128,256, untied embeddings, rope theta 500000 with
llama3 rope scaling. The numbers are meaningless; the sizes and the cost of a step are real.
Needs only numpy. The folder is written under a temporary name and renamed when complete.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "max_position_embeddings": 131072,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "initializer_range": 0.02,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}


def tensor_list(cfg):
    """(name, shape) of every tensor, in the order they are written."""
    C, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    D = cfg["head_dim"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (V, C))]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (C,)),
                (p + "self_attn.q_proj.weight", (H * D, C)),
                (p + "self_attn.k_proj.weight", (KV * D, C)),
                (p + "self_attn.v_proj.weight", (KV * D, C)),
                (p + "self_attn.o_proj.weight", (C, H * D)),
                (p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (I, C)),
                (p + "mlp.up_proj.weight", (I, C)),
                (p + "mlp.down_proj.weight", (C, I))]
    out += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    return out


def to_bf16(x):
    """fp32 -> bf16 bits, round to nearest even (as torch's .to(torch.bfloat16))."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def shards(tensors, max_bytes):
    groups, cur, size = [], [], 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        if cur and size + n > max_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    groups.append(cur)
    return groups


def write_shard(path, group, rng):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in group:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape in group:
            if name.endswith("norm.weight"):
                x = np.ones(shape, dtype=np.float32)
            else:
                x = rng.standard_normal(shape, dtype=np.float32)
                x *= np.float32(CONFIG["initializer_range"])
            f.write(to_bf16(x).tobytes())
            del x
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32, help="fewer layers for a quick check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    a = ap.parse_args()
    if os.path.exists(os.path.join(a.out, "config.json")):
        print(f"{a.out} already exists; leaving it")
        return 0
    cfg = dict(CONFIG, num_hidden_layers=a.layers)
    tmp = a.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rng = np.random.default_rng(a.seed)
    groups = shards(tensor_list(cfg), int(a.shard_gb * 1e9))
    index, total = {"metadata": {}, "weight_map": {}}, 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        total += write_shard(os.path.join(tmp, fname), group, rng)
        for name, _ in group:
            index["weight_map"][name] = fname
        print(f"wrote {fname} ({k + 1}/{len(groups)})", file=sys.stderr)
    index["metadata"]["total_size"] = total
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    os.rename(tmp, a.out)
    print(f"{a.out}: {total / 1e9:.2f} GB of BF16 weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
