"""`ftune merge-models` against mergekit 0.1.5, run in-process with the equivalent YAML
(MergeConfiguration.model_validate + run_merge, local paths, device cpu, dtype and out_dtype
float32), on the zoo's tiny random Llama and two "fine-tunes" of it (the base plus noise of std
0.05, with some tensors left unchanged so that their task vectors are exactly zero).

Tolerances, with their reasons:
- linear, task_arithmetic, ties (and ties with lambda, count of models 1-3, negative weights):
  bit-identical, every tensor: the same fp32 operations in the same order (the sums over models
  from +0 in model order; the top-k threshold exact).
- dare_linear, dare_ties: mergekit draws its masks with torch.bernoulli; the test replaces
  mergekit's bernoulli() by one that returns ftune's masks (--dump-masks) for the same task vector
  and applies mergekit's own rescaled_masked_tensor to them. The L1 norms of the rescale are
  torch's fp32 sums (a vectorized cascade) against ftune's double sums rounded once: within 1e-6.
- slerp: norms and dot products follow torch's reduction order in mergekit and a double sum in
  ftune: within 1e-6.
- an adapter standing in for a model: mergekit is given the folder PEFT's merge_and_unload()
  writes (B @ A is MKL's product there, OpenBLAS's in ftune: 1 ulp apart), within 1e-6.
"""
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

import models
from conftest import run_ftune, run_ok

pytestmark = pytest.mark.mergekit

UNCHANGED = ("model.norm.weight", "model.layers.1.input_layernorm.weight")



@pytest.fixture(scope="module")
def fam(zoo, tmp_path_factory):
    """The base and two fine-tunes: base + 0.05 * noise, UNCHANGED tensors kept."""
    pytest.importorskip("mergekit")
    root = tmp_path_factory.mktemp("mm")
    base = zoo.model("llama")
    out = {"base": base, "root": str(root)}
    for i, seed in ((1, 11), (2, 12)):
        m = models.load_model(base)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name not in UNCHANGED:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        d = str(root / f"ft{i}")
        m.save_pretrained(d)
        out[f"ft{i}"] = d
    return out


def mergekit_run(cfg, out, bernoulli=None):
    import mergekit.config
    import mergekit.merge
    import mergekit.sparsify
    from mergekit.options import MergeOptions
    cfg = dict(cfg, dtype="float32", out_dtype="float32")
    c = mergekit.config.MergeConfiguration.model_validate(cfg)
    saved = mergekit.sparsify.bernoulli
    if bernoulli is not None:
        mergekit.sparsify.bernoulli = bernoulli
    try:
        mergekit.merge.run_merge(c, out, options=MergeOptions(
            device="cpu", copy_tokenizer=False, write_model_card=False, quiet=True,
            random_seed=0))
    finally:
        mergekit.sparsify.bernoulli = saved
    return out


def ftune_merge(fam, name, args):
    out = os.path.join(fam["root"], "ftune-" + name)
    shutil.rmtree(out, ignore_errors=True)
    run_ok(["merge-models", "--out", out, "--quiet"] + args)
    return out


def compare(ours, theirs, tol=0.0):
    a, b = models.tensors_of(ours), models.tensors_of(theirs)
    common = sorted(set(a) & set(b))
    assert set(b) <= set(a), sorted(set(b) - set(a))
    worst = 0.0
    for k in common:
        assert a[k].dtype == b[k].dtype == torch.float32 and a[k].shape == b[k].shape, k
        if tol == 0:
            assert torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)), \
                f"{k}: max |diff| {(a[k] - b[k]).abs().max().item():.3g}"
        else:
            worst = max(worst, (a[k] - b[k]).abs().max().item())
    assert worst <= tol, worst
    return worst


def models_yaml(fam, spec, with_base=True):
    return [dict(model=fam[m], parameters=p) for m, p in spec]


CASES = [
    # name, method, [(model, weight)], ftune extra args, mergekit global parameters, per-model
    ("linear", "linear", [("ft1", 0.7), ("ft2", 0.5)], [], {}, {}),
    ("linear_nonorm", "linear", [("ft1", 0.7), ("ft2", -0.2)], ["--normalize", "false"],
     {"normalize": False}, {}),
    ("task_arithmetic", "task_arithmetic", [("ft1", 0.7), ("ft2", -0.4)],
     ["--lambda", "0.8"], {"lambda": 0.8}, {}),
    ("ties", "ties", [("ft1", 1.0), ("ft2", 0.6)], ["--density", "0.4"], {},
     {"density": 0.4}),
    ("ties_one", "ties", [("ft1", 0.8)], ["--density", "0.3", "--lambda", "1.5"],
     {"lambda": 1.5}, {"density": 0.3}),
    ("ties_nonorm", "ties", [("ft1", 1.0), ("ft2", -0.5)],
     ["--density", "0.6", "--normalize", "false"], {"normalize": False}, {"density": 0.6}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_exact_methods(fam, case):
    name, method, spec, extra, params, per = case
    args = ["--method", method]
    if method != "linear":
        args += ["--base", fam["base"]]
    for m, w in spec:
        args += ["--model", f"{fam[m]}:{w}"]
    ours = ftune_merge(fam, name, args + extra)
    cfg = dict(merge_method=method,
               models=[dict(model=fam[m], parameters=dict(weight=w, **per)) for m, w in spec])
    if method != "linear":
        cfg["base_model"] = fam["base"]
    if params:
        cfg["parameters"] = params
    theirs = mergekit_run(cfg, os.path.join(fam["root"], "mk-" + name))
    compare(ours, theirs)


def mask_bernoulli(fam, masks, ks):
    """mergekit's bernoulli() with ftune's masks: the task vector's bytes say which tensor and
    model it is (computed here as mergekit computes it, model - base in fp32)."""
    import mergekit.sparsify
    base = models.tensors_of(fam["base"])
    table = {}
    for k, m in enumerate(ks):
        ft = models.tensors_of(fam[m])
        for name, t in base.items():
            key = (ft[name].float() - t.float()).numpy().tobytes()
            if f"{name}.{k}" in masks:
                table[key] = masks[f"{name}.{k}"].float()
    used = []

    def bernoulli(tensor, density, rescale_norm=None):
        if density >= 1:
            return tensor
        mask = table[tensor.contiguous().numpy().tobytes()]
        used.append(1)
        return mergekit.sparsify.rescaled_masked_tensor(tensor, mask.reshape(tensor.shape),
                                                       rescale_norm)
    return bernoulli, used


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare(fam, method):
    spec = [("ft1", 0.9), ("ft2", 0.5)]
    dump = os.path.join(fam["root"], f"masks-{method}.safetensors")
    args = ["--method", method, "--base", fam["base"], "--density", "0.3", "--seed", "7"]
    for m, w in spec:
        args += ["--model", f"{fam[m]}:{w}"]
    ours = ftune_merge(fam, method, args + ["--dump-masks", dump])
    masks = load_file(dump)
    kept = sum(int(v.sum()) for v in masks.values()) / sum(v.numel() for v in masks.values())
    assert 0.28 < kept < 0.32, kept
    bern, used = mask_bernoulli(fam, masks, [m for m, _ in spec])
    cfg = dict(merge_method=method, base_model=fam["base"],
               models=[dict(model=fam[m], parameters=dict(weight=w, density=0.3))
                       for m, w in spec])
    theirs = mergekit_run(cfg, os.path.join(fam["root"], "mk-" + method), bernoulli=bern)
    assert len(used) == len(masks)
    compare(ours, theirs, tol=1e-6)
    # the same seed, the same bytes (without --dump-masks too)
    again = ftune_merge(fam, method + "-again", args)
    assert models.tensors_of(again).keys() == models.tensors_of(ours).keys()
    for k, v in models.tensors_of(again).items():
        assert torch.equal(v, models.tensors_of(ours)[k])


@pytest.mark.parametrize("t", [0.3, 0.75])
def test_slerp(fam, t):
    ours = ftune_merge(fam, f"slerp{t}", ["--method", "slerp", "--base", fam["base"],
                                          "--model", fam["ft1"], "--t", str(t)])
    cfg = dict(merge_method="slerp", base_model=fam["base"],
               models=[dict(model=fam["base"]), dict(model=fam["ft1"])], parameters=dict(t=t))
    theirs = mergekit_run(cfg, os.path.join(fam["root"], f"mk-slerp{t}"))
    worst = compare(ours, theirs, tol=1e-6)
    print(f"slerp t={t}: max |diff| {worst:.3g}")


def test_adapter_as_model(zoo, fam):
    """--model ADAPTER is the adapter merged into --base: mergekit gets PEFT's merged folder."""
    from peft import PeftModel
    adapter = zoo.adapter("llama")
    merged = os.path.join(fam["root"], "peft-merged")
    if not os.path.exists(merged):
        base = models.load_model(fam["base"])
        PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(merged)
    ours = ftune_merge(fam, "ta-adapter", ["--method", "task_arithmetic", "--base", fam["base"],
                                           "--model", f"{adapter}:0.6",
                                           "--model", f"{fam['ft1']}:0.4"])
    cfg = dict(merge_method="task_arithmetic", base_model=fam["base"],
               models=[dict(model=merged, parameters=dict(weight=0.6)),
                       dict(model=fam["ft1"], parameters=dict(weight=0.4))])
    theirs = mergekit_run(cfg, os.path.join(fam["root"], "mk-ta-adapter"))
    compare(ours, theirs, tol=1e-6)


def test_folder(fam):
    """The folder is what ftune merge writes: config and tokenizer files copied, and transformers
    loads it."""
    out = ftune_merge(fam, "folder", ["--method", "ties", "--base", fam["base"], "--model",
                                      fam["ft1"], "--model", fam["ft2"], "--density", "0.5",
                                      "--max-shard-size", "200KB"])
    files = sorted(os.listdir(out))
    assert "config.json" in files and "model.safetensors.index.json" in files
    models.load_model(out)


def test_bad_input(fam, zoo, tmp_path):
    out = str(tmp_path / "o")

    def bad(args, *needles):
        p = run_ftune(["merge-models", "--out", out, "--quiet"] + args)
        assert p.returncode == 2, p.stderr
        for n in needles:
            assert n in p.stderr, p.stderr
        assert not os.path.exists(out)
        assert not [f for f in os.listdir(tmp_path) if f.startswith("o.tmp")]

    base = fam["base"]
    # another architecture (and shapes)
    bad(["--method", "ties", "--base", base, "--model", zoo.model("qwen3")],
        "model_type")
    # a missing tensor
    cut = str(tmp_path / "cut")
    shutil.copytree(fam["ft1"], cut)
    t = load_file(os.path.join(cut, "model.safetensors"))
    del t["model.layers.1.mlp.up_proj.weight"]
    from safetensors.torch import save_file
    save_file(t, os.path.join(cut, "model.safetensors"), metadata={"format": "pt"})
    bad(["--method", "task_arithmetic", "--base", base, "--model", cut],
        "model.layers.1.mlp.up_proj.weight", "missing")
    # a weight that does not parse
    bad(["--method", "linear", "--model", f"{fam['ft1']}:abc"], "--model", "abc")
    bad(["--method", "slerp", "--base", base, "--model", fam["ft1"], "--model", fam["ft2"]],
        "slerp")
    bad(["--method", "ties", "--model", fam["ft1"]], "--base")
    bad(["--method", "ties", "--base", base, "--model", fam["ft1"], "--density", "1.5"],
        "--density")
