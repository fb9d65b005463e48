"""Tiny random-weight models and PEFT adapters for the peer tests, built by the peers themselves.

Every model here is made by transformers from a small config of a real architecture family
(GQA, 2-4 layers, vocabulary >= 1,000, hidden 64-96) and saved with save_pretrained, in F32 and in
BF16 (model.to(torch.bfloat16).save_pretrained), so ftune reads exactly the files a user would
have. Weights are re-drawn after construction so that every feature shows in the logits:
transformers' default init (std 0.02, unit norms, zero biases) gives almost uniform logits and zero
biases, which would let a wrong attention or a skipped bias pass a 1e-4 test. Linear weights get
std 1/sqrt(fan_in) (unit-variance outputs), norms 1 +- 0.2, biases std 0.1, embeddings std 0.25,
so logits have a spread of a few units and the softmax is far from uniform.

The reference computations (logits, token losses, LoRA gradients, the training loop
reference_train) are PyTorch + transformers + PEFT in float32 (or under bf16 autocast where a
test says so) with eager attention, one example at a time (no padding, so no masking convention
can differ from what ftune's padded batches must reproduce). Loss = sum of token cross-entropies
over all examples / number of counted tokens, labels unshifted as in transformers (position t
predicts label t+1), -100 not counted.
"""

import copy
import json
import os

import numpy as np
import torch

# The architectures of issue 3. Each entry: (transformers config class name, model class name,
# config kwargs, LoRA target modules, LoRA r, lora_alpha, use_rslora).
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI3_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]

_COMMON = dict(vocab_size=1031, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=None)

ARCHS = {
    # Plain Llama (SmolLM is this), untied LM head.
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(_COMMON, tie_word_embeddings=False, rope_theta=10000.0), SEVEN, 8, 16, False),
    # Llama 3.1-style rope scaling: original_max_position_embeddings 64 with head_dim 16 puts the
    # 8 frequencies into all three regions (kept, smoothed, divided by factor). rsLoRA here.
    "llama_rope3": ("LlamaConfig", "LlamaForCausalLM",
                    dict(_COMMON, num_hidden_layers=3, tie_word_embeddings=False,
                         rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                              low_freq_factor=1.0, high_freq_factor=4.0,
                                              original_max_position_embeddings=64)),
                    SEVEN, 8, 8, True),
    # Llama with every bias (attention_bias, mlp_bias) and tied embeddings.
    "llama_bias": ("LlamaConfig", "LlamaForCausalLM",
                   dict(_COMMON, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
                   SEVEN, 4, 8, False),
    # Mistral with a sliding window (6) shorter than the test sequences (up to 23 tokens).
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(_COMMON, sliding_window=6, head_dim=16, tie_word_embeddings=False),
                SEVEN, 6, 12, False),
    # Qwen2: q/k/v biases always on, tied embeddings as the small Qwen2.5 models.
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(_COMMON, tie_word_embeddings=True, use_sliding_window=False), SEVEN, 8, 16, False),
    # Qwen3: head_dim 32 != hidden/heads = 16, per-head q/k RMSNorm; 4 heads, 1 kv head (GQA 4:1).
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(_COMMON, head_dim=32, num_key_value_heads=1, tie_word_embeddings=True,
                   use_sliding_window=False), SEVEN, 4, 16, False),
    # Phi-3: fused qkv_proj and gate_up_proj; hidden 96 with 3 heads of 32, 1 kv head.
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(_COMMON, hidden_size=96, num_attention_heads=3, num_key_value_heads=1,
                  intermediate_size=160, sliding_window=None, tie_word_embeddings=False,
                  original_max_position_embeddings=512),
             PHI3_TARGETS, 8, 16, False),
}


def build_config(arch):
    import transformers
    cfg_cls, _, kw, *_ = ARCHS[arch]
    return getattr(transformers, cfg_cls)(**kw)


def randomize_(model, seed):
    """Re-draw every weight so logits are spread and every bias and norm weight matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.4 * (torch.rand(p.shape, generator=g) - 0.5))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p.shape[1]))
            else:
                raise AssertionError(f"unexpected parameter {name}")
    return model


def build_model(arch, seed=0):
    """A random-weight float32 transformers model of ARCHS[arch]."""
    import transformers
    _, model_cls, *_ = ARCHS[arch]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(build_config(arch)).to(torch.float32)
    randomize_(model, seed)
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.eval()


def save_model(model, out_dir, dtype):
    """save_pretrained in "f32" or "bf16" (the bf16 copy as issue 3 says: model.to(bf16))."""
    # a copy is rounded: model.to() works in place, and the zoo's cached f32 model must keep
    # its f32 weights for the next test that uses it
    m = model if dtype == "f32" else copy.deepcopy(model).to(torch.bfloat16)
    m.save_pretrained(out_dir)
    return out_dir


def load_model(model_dir):
    """The reference: transformers loading the folder in float32 with eager attention."""
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()


def lora_config(arch, **over):
    from peft import LoraConfig
    _, _, _, targets, r, alpha, rslora = ARCHS[arch]
    kw = dict(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
              use_rslora=rslora, init_lora_weights=False, task_type="CAUSAL_LM")
    kw.update(over)
    return LoraConfig(**kw)


def make_adapter(model_dir, arch, out_dir, seed=1, **over):
    """A PEFT adapter with init_lora_weights=False (A and B both random, so no gradient is
    trivially zero), saved with save_pretrained to out_dir."""
    from peft import get_peft_model
    base = load_model(model_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, lora_config(arch, **over))
    peft_model.save_pretrained(out_dir)
    return out_dir


def load_peft(model_dir, adapter_dir, trainable=False):
    from peft import PeftModel
    return PeftModel.from_pretrained(load_model(model_dir), adapter_dir, is_trainable=trainable)


def lora_params(peft_model):
    """{name as in adapter_model.safetensors: parameter} for the trainable LoRA tensors."""
    out = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            out[name.replace(".default", "")] = p
    return out


def token_losses_sum(model, ids, labels):
    """(sum of token cross-entropies, counted tokens, logits [T, V]) of one unpadded example."""
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0].float()
    y = torch.tensor(labels[1:])
    ce = torch.nn.functional.cross_entropy(logits[:-1], y, ignore_index=-100, reduction="sum")
    return ce, int((y != -100).sum()), logits


def reference_eval(model, examples, want_grads=False):
    """Loss over the whole list (sum of token losses / counted tokens), padded logits
    [N, T_max, V] (zeros past each example's end) and, with want_grads, the LoRA gradients."""
    n_tok = sum(int((np.asarray(e["labels"][1:]) != -100).sum()) for e in examples)
    t_max = max(len(e["input_ids"]) for e in examples)
    V = model.config.vocab_size if hasattr(model, "config") else None
    logits_all = None
    total = 0.0
    if want_grads:
        model.zero_grad(set_to_none=True)
    for i, e in enumerate(examples):
        with torch.set_grad_enabled(want_grads):
            ce, _, logits = token_losses_sum(model, e["input_ids"], e["labels"])
            if want_grads:
                (ce / n_tok).backward()
        if logits_all is None:
            V = logits.shape[-1]
            logits_all = np.zeros((len(examples), t_max, V), dtype=np.float32)
        logits_all[i, :logits.shape[0]] = logits.detach().numpy()
        total += float(ce.detach())
    out = dict(loss=total / n_tok, tokens=n_tok, logits=logits_all)
    if want_grads:
        out["grads"] = {k: p.grad.detach().clone().numpy() for k, p in lora_params(model).items()}
    return out


def counted(e):
    """Tokens of example e whose labels count in the loss (labels shifted, -100 not counted)."""
    return int((np.asarray(e["labels"][1:]) != -100).sum())


def reference_train(model, examples, steps, batch, accum, lr, schedule, warmup, wd,
                    max_grad_norm, autocast=False):
    """The reference training loop of issue 3 over a trainable PEFT model (plain, or over a
    bitsandbytes 4-bit base), written with the peers' own pieces: torch.optim.AdamW (betas
    0.9/0.999, eps 1e-8), transformers.get_scheduler, torch.nn.utils.clip_grad_norm_ (its
    return value, the norm before clipping, is what gets logged), and per optimizer step loss =
    sum over its `accum` micro-batches of summed token cross-entropy / counted tokens in them
    (transformers >= 4.46 num_items_in_batch). Micro-batches are consecutive runs of `batch`
    examples, cycled; each example runs alone (no padding).

    autocast: run each forward under torch.autocast("cpu", dtype=torch.bfloat16), as a PyTorch
    user trains in bf16 (the LoRA parameters and AdamW state stay fp32; backward runs outside
    the autocast region, as PyTorch's docs recommend).

    Returns the per-step records (step, loss, lr, grad_norm, tokens) and the model in eval mode.
    """
    import contextlib
    from transformers import get_scheduler
    model.train()  # dropout is 0 in the tests: train mode changes nothing but is what a trainer uses
    params = list(lora_params(model).values())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    sched = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=steps)
    micro = [examples[i:i + batch] for i in range(0, len(examples), batch)]
    assert len(micro) % accum == 0  # whole optimizer steps per epoch: no end-of-epoch question
    region = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else \
        contextlib.nullcontext
    recs = []
    k = 0
    for step in range(1, steps + 1):
        group = [micro[(k + j) % len(micro)] for j in range(accum)]
        k += accum
        n_tok = sum(counted(e) for mb in group for e in mb)
        total = 0.0
        for mb in group:
            for e in mb:
                with region():
                    ce, _, _ = token_losses_sum(model, e["input_ids"], e["labels"])
                (ce / n_tok).backward()
                total += float(ce.detach())
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        lr_now = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recs.append(dict(step=step, loss=total / n_tok, lr=lr_now, grad_norm=norm, tokens=n_tok))
    return recs, model.eval()


def random_examples(rng, n, vocab, lo, hi, mask_prefix=True):
    """n examples of lengths in [lo, hi] (all distinct where possible); labels equal input_ids
    except, with mask_prefix, a random prompt prefix set to -100 on some examples."""
    out = []
    for i in range(n):
        T = int(rng.integers(lo, hi + 1))
        ids = [int(t) for t in rng.integers(0, vocab, size=T)]
        labels = list(ids)
        if mask_prefix and i % 2 == 1:
            k = int(rng.integers(1, T - 1))
            labels[:k] = [-100] * k
        if mask_prefix and i % 3 == 2:
            labels[T // 2] = -100
        out.append(dict(input_ids=ids, labels=labels))
    return out


def write_jsonl(path, examples):
    with open(path, "w") as f:
        for e in examples:
            f.write(json.dumps(e) + "\n")
    return path


def tensors_of(folder):
    """{name: tensor} (torch) over model.safetensors or every shard of a model folder."""
    from safetensors.torch import load_file
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, f)))
    return out


def read_safetensors(path):
    from safetensors.numpy import load_file
    return load_file(path)


def exists(path):
    return os.path.exists(path)


def big_lora_llama(model_dir, adapter_dir, C=1024, I=2816, L=2, V=32000, R=16):
    """A random fp32 Llama of C x V embeddings and L layers (no tokenizer) in model_dir, and a
    rank-R PEFT adapter on every projection in adapter_dir, written with safetensors directly
    (a few hundred MB, for the peak-RSS tests of the streaming writers). Returns the model's
    size in bytes."""
    from peft import LoraConfig
    from safetensors.numpy import save_file
    from transformers import LlamaConfig
    cfg = LlamaConfig(hidden_size=C, intermediate_size=I, num_hidden_layers=L, vocab_size=V,
                      num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    os.makedirs(model_dir, exist_ok=True)
    cfg.save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.standard_normal((V, C), dtype=np.float32),
         "lm_head.weight": rng.standard_normal((V, C), dtype=np.float32),
         "model.norm.weight": np.ones(C, np.float32)}
    ad_t = {}
    shapes = {"self_attn.q_proj": (C, C), "self_attn.k_proj": (C, C), "self_attn.v_proj": (C, C),
              "self_attn.o_proj": (C, C), "mlp.gate_proj": (I, C), "mlp.up_proj": (I, C),
              "mlp.down_proj": (C, I)}
    for layer in range(L):
        for k, (o, i) in shapes.items():
            name = f"model.layers.{layer}.{k}"
            t[name + ".weight"] = rng.standard_normal((o, i), dtype=np.float32) * 0.03
            ad_t[f"base_model.model.{name}.lora_A.weight"] = rng.standard_normal(
                (R, i), dtype=np.float32) * 0.01
            ad_t[f"base_model.model.{name}.lora_B.weight"] = rng.standard_normal(
                (o, R), dtype=np.float32) * 0.01
        for k in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{layer}.{k}.weight"] = np.ones(C, np.float32)
    save_file(t, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    size = sum(v.nbytes for v in t.values())
    del t
    os.makedirs(adapter_dir, exist_ok=True)
    LoraConfig(r=R, lora_alpha=32, target_modules=sorted({k.split(".")[1] for k in shapes})
               ).save_pretrained(adapter_dir)
    save_file(ad_t, os.path.join(adapter_dir, "adapter_model.safetensors"),
              metadata={"format": "pt"})
    return size
