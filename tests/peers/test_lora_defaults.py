"""`ftune train` without --lora-targets against PEFT's defaults (issue 16 follow-up).

PEFT chooses a LoraConfig's target_modules, when none are given, from
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type] (peft/utils/constants.py); the
test reads that table from the installed peft for every model_type of the zoo (llama, mistral,
qwen2, qwen3, phi3) and checks ftune against it and against get_peft_model itself:
- where PEFT has a default (q_proj, v_proj for the first four in peft 0.21.2): a 1-step `ftune
  train` without --lora-targets writes an adapter whose target_modules and lora tensors are the
  modules get_peft_model(model, LoraConfig(r=...)) wraps, and PeftModel.from_pretrained loads it
  with every tensor used (no missing or unexpected keys);
- where it has none (phi3: LoraConfig() raises "Please specify `target_modules`"): ftune exits 2,
  naming --lora-targets and the modules the model has (qkv_proj), and `--lora-targets qkv_proj`
  trains an adapter PEFT loads.
"""

import json
import os

import pytest

import models
from conftest import run_ftune, run_ok

peft = pytest.importorskip("peft")
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_MAP  # noqa: E402

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "phi3"]


def peft_default_modules(model_dir):
    """The module names (self_attn.q_proj, ...) PEFT wraps with LoraConfig's default targets, or
    None when it refuses."""
    model = models.load_model(model_dir)
    try:
        pm = peft.get_peft_model(model, peft.LoraConfig(r=2, task_type="CAUSAL_LM"))
    except ValueError as e:
        assert "target_modules" in str(e), e
        return None
    return {n.split(".")[-1] for n, m in pm.named_modules() if hasattr(m, "lora_A")
            and isinstance(m, peft.tuners.lora.LoraLayer)}


def data_file(tmp_path):
    import numpy as np
    rng = np.random.default_rng(3)
    ex = models.random_examples(rng, 4, models._COMMON["vocab_size"], 4, 12)
    return models.write_jsonl(str(tmp_path / "t.jsonl"), ex)


def train(zoo, arch, tmp_path, *extra):
    run = str(tmp_path / f"run-{arch}")
    args = ["train", "--model", zoo.model(arch, "f32"), "--data", data_file(tmp_path), "--out",
            run, "--steps", 1, "--batch-size", 2, "--lr", 1e-3, "--lora-r", 2, "--threads", 1,
            *extra]
    return run, args


def check_peft_loads(model_dir, run, want):
    with open(os.path.join(run, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert set(cfg["target_modules"]) == want, cfg["target_modules"]
    from safetensors import safe_open
    with safe_open(os.path.join(run, "adapter_model.safetensors"), "np") as f:
        names = {k.split(".")[-3] for k in f.keys()}
    assert names == want, names
    pm = peft.PeftModel.from_pretrained(models.load_model(model_dir), run)
    wrapped = {n.split(".")[-1] for n, m in pm.named_modules()
               if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert wrapped == want, wrapped


@pytest.mark.parametrize("arch", ARCHS)
def test_default_targets_are_peft_defaults(zoo, tmp_path, arch):
    model_dir = zoo.model(arch, "f32")
    with open(os.path.join(model_dir, "config.json")) as f:
        model_type = json.load(f)["model_type"]
    table = PEFT_MAP.get(model_type)
    peft_mods = peft_default_modules(model_dir)
    assert (peft_mods is None) == (table is None), (model_type, table, peft_mods)
    run, args = train(zoo, arch, tmp_path)
    if table is not None:
        assert peft_mods == set(table), (peft_mods, table)
        run_ok(args)
        check_peft_loads(model_dir, run, set(table))
        return
    p = run_ftune(args)
    assert p.returncode == 2, p.stderr
    assert "--lora-targets" in p.stderr and "qkv_proj" in p.stderr, p.stderr
    assert model_type in p.stderr and "PEFT" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(run, "adapter_config.json"))
    # the targets the message suggests train an adapter PEFT loads
    run_ok(args + ["--lora-targets", "qkv_proj"])
    check_peft_loads(model_dir, run, {"qkv_proj"})
