"""`ftune merge` against PEFT's merge_and_unload() + transformers' save_pretrained(), and
`ftune merge-adapters` against PEFT's add_weighted_adapter().

merge: for the zoo's tiny random models (five architectures, rsLoRA, biases, tied embeddings,
Phi-3's fused projections) and PEFT adapters with random A and B, each tensor of ftune's folder is
compared with the tensor PEFT's merged model saves:
- fp32: within 1 ulp (B @ A is a BLAS product, MKL's in PyTorch and OpenBLAS's in ftune: with a
  rank of 4-8 the sums may round differently), every tensor the adapter does not touch
  bit-identical;
- bf16 / f16 (the checkpoint's dtype, or --out-dtype): PEFT adds the fp32 delta to W in W's dtype
  (W rounded to that dtype at load, the fp32 sum rounded once); --safe-merge rounds the delta to
  W's dtype first, as safe_merge=True does. Within 1 ulp of that dtype (a delta 1 fp32 ulp apart
  may round the other way), and the number of differing values is reported;
- the folder: the same files, model.safetensors.index.json byte for byte (total_parameters,
  total_size, weight_map), and the same shards with --max-shard-size; transformers loads it and
  its logits equal the unmerged PeftModel's within 1e-5 (fp32).
merge-adapters: see the second half of this file.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import models
from conftest import ftune_bin, peak_rss, run_ftune, run_ok

torch.manual_seed(0)


def peft_merge(model_dir, adapter_dir, out, dtype=torch.float32, max_shard_size=None,
               safe_merge=False):
    """What a PEFT user writes: load in dtype, merge_and_unload, save_pretrained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload(safe_merge=safe_merge)
    kw = {} if max_shard_size is None else dict(max_shard_size=max_shard_size)
    merged.save_pretrained(out, **kw)
    return out



def ordered(x):
    """Integers that order like the floats (sign-magnitude -> two's complement), so that the
    difference of two is their distance in ulps."""
    if x.dtype == torch.float32:
        i = x.view(torch.int32).long()
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)
    i = x.view(torch.int16).long()
    return torch.where(i < 0, -(i & 0x7FFF), i)


def compare(ours, theirs, touched):
    """Max ulps and count of differing values over the touched tensors; untouched ones must be
    bit-identical. Returns (max_ulps, differing, total)."""
    a, b = models.tensors_of(ours), models.tensors_of(theirs)
    assert sorted(a) == sorted(b)
    worst, diff, total = 0, 0, 0
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if k not in touched:
            assert torch.equal(ordered(a[k]), ordered(b[k])), f"{k} changed"
            continue
        d = (ordered(a[k]) - ordered(b[k])).abs()
        worst = max(worst, int(d.max()))
        diff += int((d != 0).sum())
        total += d.numel()
    return worst, diff, total


def touched_by(adapter_dir):
    names = load_file(os.path.join(adapter_dir, "adapter_model.safetensors")).keys()
    return {n.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
            for n in names if n.endswith(".lora_A.weight")}


def folder_files(d):
    return sorted(f for f in os.listdir(d))


@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_merge_f32_like_peft(zoo, tmp_path, arch):
    model, ad = zoo.model(arch, "f32"), zoo.adapter(arch)
    theirs = peft_merge(model, ad, tmp_path / "theirs")
    ours = tmp_path / "ours"
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", ours])
    worst, diff, total = compare(ours, theirs, touched_by(ad))
    print(f"{arch} f32: max {worst} ulp, {diff} of {total} values differ")
    assert worst <= 1
    assert folder_files(ours) == folder_files(theirs)
    assert json.load(open(ours / "config.json")) == json.load(open(os.path.join(model,
                                                                               "config.json")))


@pytest.mark.parametrize("arch,ckpt,out_dtype,safe", [
    ("llama", "bf16", None, False),        # bf16 checkpoint, kept bf16
    ("phi3", "bf16", None, False),
    ("qwen3", "bf16", None, True),         # safe_merge: delta rounded first
    ("llama_rope3", "f32", "bf16", False),  # rsLoRA; W rounded to bf16 at load
    ("mistral", "f32", "f16", False),
    ("qwen2", "bf16", "fp32", False),       # bf16 weights widened exactly
])
def test_merge_half_like_peft(zoo, tmp_path, arch, ckpt, out_dtype, safe):
    model, ad = zoo.model(arch, ckpt), zoo.adapter(arch)
    want = {"bf16": torch.bfloat16, "f16": torch.float16, "fp32": torch.float32,
            None: torch.bfloat16 if ckpt == "bf16" else torch.float32}[out_dtype]
    theirs = peft_merge(model, ad, tmp_path / "theirs", dtype=want, safe_merge=safe)
    ours = tmp_path / "ours"
    args = ["merge", "--model", model, "--adapter", ad, "--out", ours]
    args += ["--out-dtype", out_dtype] if out_dtype else []
    args += ["--safe-merge"] if safe else []
    run_ok(args)
    worst, diff, total = compare(ours, theirs, touched_by(ad))
    print(f"{arch} {ckpt}->{out_dtype}{' safe' if safe else ''}: max {worst} ulp, "
          f"{diff} of {total} values differ")
    assert worst <= 1
    cfg = json.load(open(ours / "config.json"))
    assert cfg["dtype"] == str(want).replace("torch.", "")


@pytest.mark.parametrize("arch,size", [("llama", "150KB"), ("phi3", "0.2MB"), ("qwen3", "90000")])
def test_shards_and_index_like_save_pretrained(zoo, tmp_path, arch, size):
    model, ad = zoo.model(arch, "f32"), zoo.adapter(arch)
    hf_size = size if not size.isdigit() else int(size)
    theirs = peft_merge(model, ad, tmp_path / "theirs", max_shard_size=hf_size)
    ours = tmp_path / "ours"
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", ours, "--max-shard-size", size])
    assert folder_files(ours) == folder_files(theirs)
    assert len([f for f in folder_files(ours) if f.startswith("model-")]) > 2
    idx = "model.safetensors.index.json"
    assert (ours / idx).read_text() == (theirs / idx).read_text()
    for f in folder_files(ours):
        if f.startswith("model-"):
            assert sorted(load_file(ours / f)) == sorted(load_file(theirs / f)), f
    worst, _, _ = compare(ours, theirs, touched_by(ad))
    assert worst <= 1


def test_merged_logits_equal_unmerged_peft(zoo, tmp_path):
    """Logits of ftune's merged folder against PEFT's unmerged model. Folding B @ A into W rounds
    differently from adding the LoRA branch, and how much that moves the logits depends on the
    GEMM paths torch takes on this CPU (1.2e-5 was seen on an AMX / AVX512-FP16 Xeon), so the
    bound is PEFT's own merge_and_unload() measured the same way (twice it, at least 1e-5)."""
    from transformers import AutoModelForCausalLM
    for arch in ("llama_bias", "phi3"):
        model, ad = zoo.model(arch, "f32"), zoo.adapter(arch)
        ours = tmp_path / arch
        run_ok(["merge", "--model", model, "--adapter", ad, "--out", ours, "--max-shard-size",
                "100KB"])
        theirs = peft_merge(model, ad, tmp_path / (arch + "-peft"))
        x = torch.randint(0, 1000, (2, 17), generator=torch.Generator().manual_seed(3))

        def logits(folder):
            return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                        attn_implementation="eager")(
                input_ids=x).logits
        with torch.no_grad():
            ref = models.load_peft(model, ad).eval()(input_ids=x).logits
            err = float((logits(ours) - ref).abs().max())
            peft_err = float((logits(theirs) - ref).abs().max())
        print(f"{arch}: merged vs unmerged logits max |diff| {err:.2e} "
              f"(PEFT's merge_and_unload: {peft_err:.2e})")
        assert err <= max(2 * peft_err, 1e-5)


def test_tokenizer_and_generation_config_copied(zoo, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(zoo.model("llama", "f32"), model)
    files = {"tokenizer.json": '{"version": "1.0"}', "tokenizer_config.json": "{}",
             "special_tokens_map.json": "{}", "chat_template.jinja": "{{ messages }}"}
    for k, v in files.items():
        (model / k).write_text(v)
    ours = tmp_path / "ours"
    run_ok(["merge", "--model", model, "--adapter", zoo.adapter("llama"), "--out", ours])
    for k, v in files.items():
        assert (ours / k).read_text() == v
    assert (ours / "generation_config.json").read_bytes() == \
        (model / "generation_config.json").read_bytes()
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_fan_in_fan_out_as_peft(zoo, tmp_path):
    """PEFT ignores fan_in_fan_out on nn.Linear (it warns and sets it False) and forces it on
    transformers' Conv1D (GPT-2): ftune decides the same way."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel
    # a Llama adapter whose config says fan_in_fan_out=True (PEFT rewrites the flag when it
    # creates the adapter on nn.Linear, so the file is edited afterwards)
    model = zoo.model("llama", "f32")
    ad = tmp_path / "fifo"
    shutil.copytree(zoo.adapter("llama"), ad)
    c = json.load(open(ad / "adapter_config.json"))
    c["fan_in_fan_out"] = True
    json.dump(c, open(ad / "adapter_config.json", "w"))
    theirs = peft_merge(model, ad, tmp_path / "theirs")
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", tmp_path / "ours"])
    assert compare(tmp_path / "ours", theirs, touched_by(ad))[0] <= 1
    # GPT-2: Conv1D weights are (in, out)
    torch.manual_seed(0)
    g = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=300,
                                   n_positions=64, bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.2)
    gdir = tmp_path / "gpt2"
    g.save_pretrained(gdir)
    torch.manual_seed(1)
    pm = get_peft_model(g, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj",
                                                                           "c_fc"],
                                      fan_in_fan_out=True, init_lora_weights=False))
    gad = tmp_path / "gpt2-ad"
    pm.save_pretrained(gad)
    theirs = peft_merge(gdir, gad, tmp_path / "g-theirs")
    run_ok(["merge", "--model", gdir, "--adapter", gad, "--out", tmp_path / "g-ours"])
    touched = touched_by(gad)
    assert len(touched) == 2 * 4
    assert compare(tmp_path / "g-ours", theirs, touched)[0] <= 1


def test_overwrite_replaces_model_files(zoo, tmp_path):
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama")
    out = tmp_path / "out"
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", out, "--max-shard-size", "100KB"])
    (out / "notes.txt").write_text("mine")
    r = run_ftune(["merge", "--model", model, "--adapter", ad, "--out", out])
    assert r.returncode == 2 and "--overwrite" in r.stderr
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", out, "--overwrite"])
    assert folder_files(out) == ["config.json", "generation_config.json", "model.safetensors",
                                 "notes.txt"]


def test_bad_input(zoo, tmp_path):
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama")

    def refused(args, *words, rc=2):
        r = run_ftune(["merge", *args])
        assert r.returncode == rc, r.stderr
        for w in words:
            assert w in r.stderr, (w, r.stderr)
        assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
        return r

    before = folder_files(model)
    refused(["--model", model, "--adapter", ad, "--out", model], "--model folder")
    refused(["--model", model, "--adapter", ad, "--out", os.path.join(model, "sub")], "inside")
    assert folder_files(model) == before
    # an adapter of another model: a module the base lacks, and a shape mismatch
    refused(["--model", model, "--adapter", zoo.adapter("phi3"), "--out", tmp_path / "x"],
            "gate_up_proj", "no tensor")
    refused(["--model", model, "--adapter", zoo.adapter("qwen3"), "--out", tmp_path / "x"],
            "shape", "lora_")
    refused(["--model", model, "--adapter", ad, "--out", tmp_path / "x", "--out-dtype", "int8"],
            "--out-dtype")
    refused(["--model", model, "--adapter", ad, "--out", tmp_path / "x", "--max-shard-size",
             "5XB"], "--max-shard-size")
    # a quantized model
    q = tmp_path / "q"
    shutil.copytree(model, q)
    cfg = json.load(open(q / "config.json"))
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    json.dump(cfg, open(q / "config.json", "w"))
    refused(["--model", q, "--adapter", ad, "--out", tmp_path / "x"], "quantization_config")
    # a DoRA adapter, and a corrupt adapter file
    for what in ("dora", "corrupt"):
        bad = tmp_path / f"ad-{what}"
        shutil.copytree(ad, bad)
        if what == "dora":
            c = json.load(open(bad / "adapter_config.json"))
            c["use_dora"] = True
            json.dump(c, open(bad / "adapter_config.json", "w"))
        else:
            with open(bad / "adapter_model.safetensors", "r+b") as f:
                f.truncate(1000)
        refused(["--model", model, "--adapter", bad, "--out", tmp_path / "x"],
                "use_dora" if what == "dora" else "adapter_model.safetensors")
    assert not os.path.exists(tmp_path / "x")


def unshare_ok():
    return shutil.which("unshare") and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not unshare_ok(), reason="needs unshare -rm (user and mount namespaces)")
def test_disk_full_leaves_nothing(zoo, tmp_path):
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama")
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / "merged"
    args = [ftune_bin(), "merge", "--model", model, "--adapter", ad, "--out", out]
    script = (f"mount -t tmpfs -o size=300k tmpfs {mnt} && "
              + " ".join(f"'{a}'" for a in map(str, args))
              + f"; rc=$?; ls -a {mnt}; exit $rc")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "No space left" in r.stderr, r.stderr
    assert r.stdout.split() == [".", ".."], r.stdout  # nothing partial left on the full disk
    # merge-adapters the same way (a 90 KB adapter on a 40 KB disk)
    a = adapter(zoo, "llama", "m0", seed=10)
    args = [ftune_bin(), "merge-adapters", "--adapter", a, "--adapter", ad, "--method", "cat",
            "--out", out]
    script = (f"mount -t tmpfs -o size=40k tmpfs {mnt} && "
              + " ".join(f"'{a}'" for a in map(str, args)) + f"; rc=$?; ls -a {mnt}; exit $rc")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 1 and "No space left" in r.stderr, r.stderr
    assert r.stdout.split() == [".", ".."], r.stdout


def test_peak_rss_is_small(tmp_path):
    """A 400 MB fp32 model (vocabulary 32000 x 1024, 6 layers) and a rank-16 adapter on every
    projection: the merge streams, so its peak RSS stays far below the model's size."""
    model, ad = tmp_path / "big", tmp_path / "ad"
    size = models.big_lora_llama(model, ad, L=6, V=32000)
    rss = peak_rss(["merge", "--model", model, "--adapter", ad, "--out", tmp_path / "merged",
                    "--max-shard-size", "100MB"])
    print(f"merge of a {size / 1e6:.0f} MB model: peak RSS {rss / 1e6:.1f} MB")
    assert rss < 80e6
    assert len([f for f in os.listdir(tmp_path / "merged") if f.startswith("model-")]) >= 4


# ---- merge-adapters ------------------------------------------------------------------------
#
# PEFT's add_weighted_adapter on a PeftModel holding the same adapters, its result read with
# get_peft_model_state_dict. linear, cat, ties, magnitude_prune and DARE (given ftune's masks)
# must be bit-identical (the same fp32 operations in the same order: products rounded before the
# sum over tasks, sums from +0 in task order, DARE's division by fp32(density)); the svd forms
# are compared through B @ A (an SVD's signs are free), within 1e-4 of the product's largest
# value (LAPACK's sgesdd in OpenBLAS against MKL's, on 32-128 x 64-128 matrices of rank <= 16).
# --svd-rank stays below the delta's rank: components past it have singular values at rounding
# level and vectors each LAPACK picks differently, which would move --svd-clamp's quantile.


def adapter(zoo, arch, name, seed, **over):
    d = os.path.join(zoo.root, f"{arch}-{name}")
    if not os.path.exists(os.path.join(d, "adapter_config.json")):
        models.make_adapter(zoo.model(arch, "f32"), arch, d, seed=seed, **over)
    return d


def given_masks(monkeypatch, pm, masks):
    """Make PEFT's DARE draw ftune's masks: torch.bernoulli returns, call by call, the mask
    ftune dumped for that module, adapter and matrix (PEFT prunes A then B, adapter by adapter,
    per module; the svd forms prune each adapter's delta)."""
    import peft.tuners.lora.model as lm
    names = {id(m): n for n, m in pm.named_modules()}
    queue = []

    def wrap(orig, svd):
        def f(self, combination_type, adapters, weights, *rest, **kw):
            target = rest[1] if svd else rest[0]
            name = names[id(target)]
            present = [i for i, a in enumerate(adapters) if a in target.lora_A]
            parts = ["delta"] if svd else ["lora_A", "lora_B"]
            queue[:] = [f"{name}.{p}.{i}" for p in parts for i in present]
            return orig(self, combination_type, adapters, weights, *rest, **kw)
        return f

    def bernoulli(p, *a, **k):
        m = torch.from_numpy(masks[queue.pop(0)].astype(np.float32))
        assert m.shape == p.shape
        return m

    g, s = "_generalized_task_arithmetic_weighted_adapter", \
        "_svd_generalized_task_arithmetic_weighted_adapter"
    monkeypatch.setattr(lm.LoraModel, g, wrap(getattr(lm.LoraModel, g), False))
    monkeypatch.setattr(lm.LoraModel, s, wrap(getattr(lm.LoraModel, s), True))
    monkeypatch.setattr(torch, "bernoulli", bernoulli)


def peft_combine(monkeypatch, model_dir, ads, weights, method, masks=None, **kw):
    from peft import PeftModel, get_peft_model_state_dict
    pm = PeftModel.from_pretrained(models.load_model(model_dir), ads[0], adapter_name="a0")
    for i, a in enumerate(ads[1:], 1):
        pm.load_adapter(a, adapter_name=f"a{i}")
    with monkeypatch.context() as mp:
        if masks is not None:
            given_masks(mp, pm, masks)
        pm.add_weighted_adapter([f"a{i}" for i in range(len(ads))], weights, "m",
                                combination_type=method, **kw)
    sd = get_peft_model_state_dict(pm, adapter_name="m")
    return {k: v.detach().clone() for k, v in sd.items()}, pm.peft_config["m"]


def ftune_combine(tmp_path, ads, weights, method, extra=(), name="ours"):
    out = tmp_path / name
    args = ["merge-adapters", "--method", method, "--out", out, *extra]
    for a, w in zip(ads, weights):
        args += ["--adapter", f"{a}:{w!r}"]
    run_ok(args)
    return load_file(out / "adapter_model.safetensors"), json.load(open(out /
                                                                        "adapter_config.json"))


def products(sd):
    out = {}
    for k in sd:
        if k.endswith(".lora_A.weight"):
            b = k.replace("lora_A", "lora_B")
            out[k[:-len(".lora_A.weight")]] = sd[b].double() @ sd[k].double()
    return out


CASES = [  # method, adapters (name, seed, rank), weights, options
    ("linear", 3, [0.5, 0.3, -0.2], {}),
    ("cat", 2, [0.7, -0.4], {}),
    ("ties", 3, [0.5, 0.3, -0.2], dict(density=0.5)),
    ("ties", 2, [1.0, 0.6], dict(density=0.3, majority_sign_method="frequency")),
    ("magnitude_prune", 2, [0.7, -0.4], dict(density=0.6)),
    ("dare_linear", 2, [0.7, -0.4], dict(density=0.5)),
    ("dare_ties", 3, [0.5, 0.3, -0.2], dict(density=0.4)),
    ("svd", 2, [0.7, -0.4], {}),
    ("svd", 2, [1.0, 1.0], dict(svd_rank=10, svd_clamp=0.95)),
    ("ties_svd", 2, [0.7, -0.4], dict(density=0.5)),
    ("dare_linear_svd", 2, [0.7, -0.4], dict(density=0.5)),
    ("dare_ties_svd", 2, [0.7, 0.4], dict(density=0.5, majority_sign_method="frequency")),
    ("magnitude_prune_svd", 2, [0.7, -0.4], dict(density=0.5)),
]


def ftune_options(kw):
    flags = {"density": "--density", "majority_sign_method": "--majority-sign-method",
             "svd_rank": "--svd-rank", "svd_clamp": "--svd-clamp"}
    out = []
    for k, v in kw.items():
        out += [flags[k], str(v)]
    return out


@pytest.mark.parametrize("method,n,weights,kw", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_merge_adapters_like_peft(zoo, tmp_path, monkeypatch, method, n, weights, kw):
    arch = "llama"
    # ranks differ where the method allows it (cat, svd): 8, 4, 8
    rank_ok = method == "cat" or "svd" in method
    ads = [adapter(zoo, arch, f"m{i}{'r' if rank_ok and i == 1 else ''}", seed=10 + i,
                   **({"r": 4} if rank_ok and i == 1 else {})) for i in range(n)]
    dare = method.startswith("dare")
    extra = ftune_options(kw) + (["--seed", "7", "--dump-masks", tmp_path / "masks.safetensors"]
                                 if dare else [])
    ours, ocfg = ftune_combine(tmp_path, ads, weights, method, extra)
    masks = None
    if dare:
        from safetensors.numpy import load_file as np_load
        masks = np_load(str(tmp_path / "masks.safetensors"))
        assert masks and all(set(np.unique(m)) <= {0, 1} for m in masks.values())
    theirs, tcfg = peft_combine(monkeypatch, zoo.model(arch, "f32"), ads, weights, method,
                                masks=masks, **kw)
    assert sorted(ours) == sorted(theirs)
    assert ocfg["r"] == tcfg.r and ocfg["lora_alpha"] == tcfg.lora_alpha
    assert set(ocfg["target_modules"]) == set(tcfg.target_modules)
    if "svd" not in method:
        for k in ours:
            assert ours[k].shape == theirs[k].shape, k
            assert torch.equal(ours[k].view(torch.int32), theirs[k].view(torch.int32)), \
                f"{k}: max |diff| {float((ours[k] - theirs[k]).abs().max()):.3g}"
        print(f"{method} {kw}: {len(ours)} tensors bit-identical")
    else:
        po, pt = products(ours), products(theirs)
        # with a clamp, only where MKL and reference LAPACK pick the same singular-vector
        # signs (svd.h): modules with out >= in
        keys = [k for k in po if "svd_clamp" not in kw or po[k].shape[0] >= po[k].shape[1]]
        worst = max(float((po[k] - pt[k]).abs().max() / pt[k].abs().max()) for k in keys)
        print(f"{method} {kw}: B @ A within {worst:.2e} of the largest value "
              f"({len(keys)} of {len(po)} modules)")
        assert worst <= 1e-4


def test_merge_adapters_seed_and_single(zoo, tmp_path, monkeypatch):
    ads = [adapter(zoo, "llama", f"m{i}", seed=10 + i) for i in range(2)]
    common = ["--density", "0.5"]
    a, _ = ftune_combine(tmp_path, ads, [1, 1], "dare_ties", common + ["--seed", "3"], "s3")
    b, _ = ftune_combine(tmp_path, ads, [1, 1], "dare_ties", common + ["--seed", "3"], "s3b")
    c, _ = ftune_combine(tmp_path, ads, [1, 1], "dare_ties", common + ["--seed", "4"], "s4")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # one adapter: linear whatever the method (as PEFT), its scaling folded in, negated
    ours, cfg = ftune_combine(tmp_path, ads[:1], [-1.0], "ties", [], "one")
    theirs, _ = peft_combine(monkeypatch, zoo.model("llama", "f32"), ads[:1], [-1.0], "ties")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert cfg["r"] == cfg["lora_alpha"] == 8 and cfg["use_rslora"] is False


def test_merge_adapters_bad_input(zoo, tmp_path):
    a = adapter(zoo, "llama", "m0", seed=10)
    b4 = adapter(zoo, "llama", "m1r", seed=11, r=4)

    def refused(args, *words):
        r = run_ftune(["merge-adapters", *args])
        assert r.returncode == 2, r.stderr
        for w in words:
            assert w in r.stderr, (w, r.stderr)
        assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]

    out = ["--out", tmp_path / "x"]
    refused(["--adapter", a, "--adapter", b4, "--method", "ties", "--density", "0.5", *out],
            "field \"r\"", "rank 4", "cat")
    refused(["--adapter", a, "--adapter", a, "--method", "ties", *out], "--density")
    refused(["--adapter", a, "--adapter", a, "--method", "average", *out], "unknown method")
    refused(["--adapter", a, "--adapter", a, "--method", "svd", "--svd-clamp", "2", *out],
            "--svd-clamp")
    q = zoo.adapter("qwen3")
    refused(["--adapter", a, "--adapter", q, "--method", "linear", *out],
            "base_model_name_or_path")
    refused(["--adapter", a, "--adapter", q, "--method", "linear", "--allow-different-bases",
             *out], "shape", "lora_", "different models")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    refused(["--adapter", a, "--adapter", a, "--method", "linear", *out], "--overwrite")
    refused(["--adapter", a, "--adapter", a, "--method", "linear", "--out", a], "--adapter folder")


def test_sharded_input_and_help(zoo, tmp_path):
    """A sharded model folder (index + shards) merges as its one-file twin does; --help works."""
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama")
    ad2 = adapter(zoo, "llama", "m0", seed=10)
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", tmp_path / "s1",
            "--max-shard-size", "100KB", "--quiet"])
    run_ok(["merge", "--model", model, "--adapter", ad, "--out", tmp_path / "u1", "--quiet"])
    for src in ("s1", "u1"):
        run_ok(["merge", "--model", tmp_path / src, "--adapter", ad2, "--out",
                tmp_path / (src + "-2"), "--quiet"])
    a, b = models.tensors_of(tmp_path / "s1-2"), models.tensors_of(tmp_path / "u1-2")
    assert sorted(a) == sorted(b) and all(torch.equal(ordered(a[k]), ordered(b[k])) for k in a)
    for cmd in ("merge", "merge-adapters"):
        h = run_ok([cmd, "--help"]).stdout
        assert h.startswith(f"usage: ftune {cmd}") and "examples:" in h


def test_patterns_and_partial_targets_like_peft(zoo, tmp_path, monkeypatch):
    """rank_pattern / alpha_pattern (per-module rank and alpha, matched as PEFT matches them)
    in a merge; and adapters on different modules combined (a module some adapters lack)."""
    model = zoo.model("llama", "f32")
    pat = adapter(zoo, "llama", "pat", seed=21, rank_pattern={"q_proj": 4},
                  alpha_pattern={"layers.1.self_attn.v_proj": 40, "down_proj": 3})
    cfg = json.load(open(os.path.join(pat, "adapter_config.json")))
    assert cfg["rank_pattern"] and cfg["alpha_pattern"]
    theirs = peft_merge(model, pat, tmp_path / "theirs")
    run_ok(["merge", "--model", model, "--adapter", pat, "--out", tmp_path / "ours"])
    assert compare(tmp_path / "ours", theirs, touched_by(pat))[0] == 0
    qv = adapter(zoo, "llama", "qv", seed=22, target_modules=["q_proj", "v_proj"])
    full = adapter(zoo, "llama", "m0", seed=10)
    for method in ("linear", "cat"):
        ours, _ = ftune_combine(tmp_path, [qv, full], [0.8, -0.5], method, [], method)
        theirs, _ = peft_combine(monkeypatch, model, [qv, full], [0.8, -0.5], method)
        assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 14
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), method


def test_merge_from_bnb_4bit_dequantized(zoo, tmp_path):
    """A bitsandbytes 4-bit folder (double quantization) with --out-dtype: each adapted weight is
    bitsandbytes' dequantize_4bit(W) + PEFT's delta, as PEFT's 4-bit merge computes it before
    re-quantizing; untouched 4-bit weights are dequantize_4bit(W); the folder is a plain float model."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama", name="qv",
                                                       target_modules=["q_proj", "v_proj"])
    q = tmp_path / "q"
    run_ok(["quantize", "--model", model, "--out", q, "--double-quant"])
    run_ok(["merge", "--model", q, "--adapter", ad, "--out", tmp_path / "ours", "--out-dtype",
            "fp32"])
    ours = models.tensors_of(tmp_path / "ours")
    assert "quantization_config" not in json.load(open(tmp_path / "ours" / "config.json"))
    assert sorted(ours) == sorted(models.tensors_of(model))
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(q, device_map="cpu"), ad)
    merged = plain = 0
    for name, mod in pm.named_modules():
        w = getattr(mod, "weight", None)
        if w is None or not hasattr(w, "quant_state") or hasattr(mod, "base_layer"):
            continue  # (a LoRA wrapper's .weight is its base layer's)
        key = name.replace("base_model.model.", "").replace(".base_layer", "") + ".weight"
        ref = bnbf.dequantize_4bit(w.data, w.quant_state)
        owner = pm.get_submodule(name.replace(".base_layer", ""))
        if hasattr(owner, "lora_A") and "default" in owner.lora_A:
            ref = ref + owner.get_delta_weight("default")
            merged += 1
        else:
            plain += 1
        assert torch.equal(ours[key], ref.float()), key
    assert merged == 4 and plain == 10


@pytest.mark.parametrize("arch", ["llama_rope3", "phi3"])
def test_merge_adapters_rslora_and_fused(zoo, tmp_path, monkeypatch, arch):
    """rsLoRA scalings (alpha / sqrt(r), a double in PEFT) and Phi-3's fused modules."""
    ads = [adapter(zoo, arch, f"c{i}", seed=30 + i) for i in range(2)]
    model = zoo.model(arch, "f32")
    for method, kw in (("ties", dict(density=0.5)), ("cat", {}), ("svd", {})):
        ours, ocfg = ftune_combine(tmp_path, ads, [0.9, -0.3], method, ftune_options(kw),
                                   f"{arch}-{method}")
        theirs, _ = peft_combine(monkeypatch, model, ads, [0.9, -0.3], method, **kw)
        assert sorted(ours) == sorted(theirs)
        if method != "svd":
            assert all(torch.equal(ours[k], theirs[k]) for k in ours), method
        else:
            po, pt = products(ours), products(theirs)
            assert max(float((po[k] - pt[k]).abs().max() / pt[k].abs().max()) for k in po) < 1e-4
        assert ocfg["use_rslora"] is False


def test_train_then_merge_then_transformers(zoo, tmp_path):
    """The README's flow: ftune train writes an adapter, ftune merge folds it in, transformers
    loads the merged folder alone and its logits equal transformers + PEFT on the adapter."""
    from transformers import AutoModelForCausalLM
    model = zoo.model("qwen2", "bf16")
    rng = np.random.default_rng(1)
    data = models.write_jsonl(tmp_path / "data.jsonl", [
        {"input_ids": [int(t) for t in rng.integers(0, 1000, 12)]} for _ in range(8)])
    run_ok(["train", "--model", model, "--data", data, "--out", tmp_path / "run", "--steps", "3",
            "--batch-size", "4", "--lora-targets", "all-linear", "--lr", "1e-2", "--quiet"])
    run_ok(["merge", "--model", model, "--adapter", tmp_path / "run", "--out", tmp_path / "m",
            "--out-dtype", "fp32", "--quiet"])
    x = torch.randint(0, 1000, (1, 15), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = models.load_peft(model, tmp_path / "run").eval()(input_ids=x).logits
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="eager")(
            input_ids=x).logits
    assert got.dtype == torch.float32
    err = float((got - ref).abs().max())
    print(f"train -> merge: logits within {err:.2e} of the unmerged PeftModel")
    assert err <= 1e-5


@pytest.mark.parametrize("dq,qtype", [(True, "nf4"), (False, "fp4")])
def test_merge_bnb_4bit_requantized(zoo, tmp_path, dq, qtype):
    """A bitsandbytes 4-bit folder without --out-dtype: PEFT's Linear4bit.merge re-quantizes
    dequantize_4bit(W) + delta with bitsandbytes (W's quant type, block size, double
    quantization). Every tensor of ftune's folder byte-identical to PEFT's merged model's
    state_dict (packed weights, absmax, nested_absmax, quant maps, the quant_state JSON);
    transformers 5.23 cannot save_pretrained a model loaded 4-bit (its weight conversion has no
    reverse: NotImplementedError), so the state_dict is what PEFT's merge gives."""
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model, ad = zoo.model("llama", "f32"), zoo.adapter("llama", name="qv",
                                                       target_modules=["q_proj", "v_proj"])
    q = tmp_path / "q"
    run_ok(["quantize", "--model", model, "--out", q, "--quant", qtype]
           + (["--double-quant"] if dq else []))
    run_ok(["merge", "--model", q, "--adapter", ad, "--out", tmp_path / "ours", "--quiet"])
    ours = models.tensors_of(tmp_path / "ours")
    qin = models.tensors_of(q)
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(q, device_map="cpu"), ad)
    theirs = {k: v.detach().contiguous() for k, v in pm.merge_and_unload().state_dict().items()}
    assert sorted(ours) == sorted(theirs)
    changed = 0
    for k in theirs:
        a, b = ours[k], theirs[k]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), k
        changed += int(k in qin and (qin[k].shape != a.shape or not torch.equal(qin[k], a)))
    assert changed >= 4 * (5 if dq else 3) - 4  # q/v of two layers: weight, absmax, state...
    assert json.load(open(tmp_path / "ours" / "config.json"))["quantization_config"]
