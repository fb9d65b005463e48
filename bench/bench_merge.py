"""`make bench-merge`: ftune's merge commands beside PEFT and mergekit on a Qwen3-0.6B-shape model.

The model: Qwen3-0.6B's shape (hidden 1024, 28 layers, 16 / 8 heads, head_dim 128, MLP 3072,
vocabulary 151936, tied) with random weights in fp32 (tools/make_model.py, seed 0), built once
under ~/.cache/ftune/bench-models/. Two random r16 adapters on all seven linear modules of every
layer (alpha 32), written here as PEFT writes them. The runs, each in its own process (wall time
of the whole process as a user sees it, imports included, and its peak RSS from wait4):

  merge            ftune merge                  vs  PeftModel.merge_and_unload + save_pretrained
  models-linear    ftune merge-models linear    vs  mergekit run_merge (linear)
  models-ties      ftune merge-models ties      vs  mergekit run_merge (ties, density 0.5)

merge-models combines the two models `ftune merge` wrote from the two adapters (so every tensor
is combined, as with two full fine-tunes). The ratios are measured in one run; the machine is
shared, so seconds are noisy: compare ratios. Results: bench/results/merge-<UTC>.json.

  export-f32       ftune export --gguf f32      vs  llama.cpp's convert_hf_to_gguf.py --outtype f32
  export-q8_0      ftune export --gguf q8_0     vs  convert_hf_to_gguf.py --outtype q8_0
  export-q4_k_m    ftune export --gguf q4_k_m   vs  convert_hf_to_gguf.py --outtype f32 (the
                   converter has no Q4_K_M; llama_model_quantize on top would only add time)

  merge-8b-nf4     ftune merge (4-bit out)      vs  PeftModel.merge_and_unload + save_pretrained
                   on the Llama-3.1-8B-shape NF4 folder bench/qlora_8b.py makes (bitsandbytes
                   double quantization), one random r16 adapter on all seven modules: PEFT
                   dequantizes each weight, adds B A and quantizes again, as ftune does (its
                   bytes equal PEFT's: tests/peers/test_merge.py); when the folder is there
                   (--nf4-model, default ~/.cache/ftune/llama8b-nf4), or with --only merge-8b-nf4

The export rows read the model folder with Qwen3's tokenizer files beside it
(../shared/tokenizers/qwen3, symlinked with the weights into the work folder), so that both
sides write the whole file, tokenizer included.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

SHARED_TOK = os.path.join(os.path.dirname(REPO), "shared", "tokenizers", "qwen3")


def llama_cpp_scripts():
    """llama.cpp's converter scripts as tools/llama-wheel.sh unpacks them (tests/peers/conftest.py
    names the same folder)."""
    import re
    req = open(os.path.join(REPO, "tests", "peers", "requirements-extra.txt")).read()
    ver = re.search(r"^llama-cpp-python==(\S+)", req, re.M).group(1)
    cache = os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune"))
    return os.path.join(cache, "llama.cpp-" + ver)


def export_runs(a, model, work):
    """The export rows (name, ftune argv, peer argv, peer): ftune export --gguf beside
    convert_hf_to_gguf.py on the model folder with a tokenizer; [] without the converter or the
    tokenizer."""
    conv = os.path.join(llama_cpp_scripts(), "convert_hf_to_gguf.py")
    if not os.path.exists(conv) or not os.path.isdir(SHARED_TOK):
        print("export rows skipped: no convert_hf_to_gguf.py or ../shared/tokenizers/qwen3")
        return []
    d = os.path.join(work, "export-model")
    os.makedirs(d)
    for f in os.listdir(model):
        os.symlink(os.path.join(model, f), os.path.join(d, f))
    for f in os.listdir(SHARED_TOK):
        os.symlink(os.path.join(SHARED_TOK, f), os.path.join(d, f))
    rows = []
    for q, outtype in (("f32", "f32"), ("q8_0", "q8_0"), ("q4_k_m", "f32")):
        rows.append((f"export-{q}",
                     [a.ftune, "export", "--gguf", "{out}.gguf", "--model", d, "--quant", q,
                      "--quiet"],
                     [a.python, conv, d, "--outfile", "{out}.gguf", "--outtype", outtype],
                     f"convert_hf_to_gguf.py --outtype {outtype}"))
    return rows


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(argv, env=None):
    """Run argv under /usr/bin/time; (wall seconds, peak RSS MB of that process, returncode,
    tail of output). Through a small process: Linux keeps a process's maximum RSS across
    exec, so a child forked straight from this (large) Python would report this one's RSS."""
    rep = tempfile.mktemp(prefix="ftune-bench-time-")
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-o", rep, "-f", "%e %M"] + argv,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    try:
        with open(rep) as f:
            last = f.read().strip().splitlines()[-1].split()
        wall, rss = float(last[0]), int(last[1]) / 1024.0
    except (OSError, IndexError, ValueError):
        rss = float("nan")
    finally:
        if os.path.exists(rep):
            os.remove(rep)
    return wall, rss, p.returncode, p.stdout.decode(errors="replace")[-2000:]


def warm(*folders):
    """Read every file of the folders once, so that each side starts from the page cache (the
    first reader of a freshly written 2.4 GB model would otherwise pay the disk for both)."""
    for d in folders:
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def make_adapter(model_dir, out, seed):
    """A PEFT LoRA folder (r 16, alpha 32, all linear modules) with random A and B."""
    from safetensors.numpy import save_file
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    C, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    D = cfg.get("head_dim") or C // cfg["num_attention_heads"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dims = {"q_proj": (C, H * D), "k_proj": (C, Hkv * D), "v_proj": (C, Hkv * D),
            "o_proj": (H * D, C), "gate_proj": (C, I), "up_proj": (C, I), "down_proj": (I, C)}
    rng = np.random.default_rng(seed)
    r = 16
    t = {}
    for layer in range(L):
        for m in TARGETS:
            part = "self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            n = f"base_model.model.model.layers.{layer}.{part}.{m}"
            fin, fout = dims[m]
            t[n + ".lora_A.weight"] = (rng.standard_normal((r, fin)) / np.sqrt(fin)).astype(
                np.float32)
            t[n + ".lora_B.weight"] = (0.01 * rng.standard_normal((fout, r))).astype(np.float32)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32,
                   "lora_dropout": 0.0, "target_modules": TARGETS, "bias": "none",
                   "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
                   "base_model_name_or_path": model_dir, "inference_mode": True}, f, indent=2)
    return out


PEFT_MERGE = """
import sys, time, torch
torch.set_num_threads({threads})
from transformers import AutoModelForCausalLM
from peft import PeftModel
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
m = PeftModel.from_pretrained(m, sys.argv[2]).merge_and_unload()
m.save_pretrained(sys.argv[3])
"""

# the 4-bit folder: transformers reads its quantization_config and loads the layers as
# bitsandbytes Linear4bit on the CPU; PEFT's merge re-quantizes each merged weight. The merged
# model's state_dict (bitsandbytes' packed weights and quant states) is written with safetensors'
# save_file: transformers 5's save_pretrained raises NotImplementedError for a model loaded 4-bit
# from a pre-quantized folder (core_model_loading.revert_weight_conversion)
PEFT_MERGE_4BIT = """
import os, sys, torch
torch.set_num_threads({threads})
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import PeftModel
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], device_map="cpu")
m = PeftModel.from_pretrained(m, sys.argv[2]).merge_and_unload()
os.makedirs(sys.argv[3], exist_ok=True)
m.config.save_pretrained(sys.argv[3])
save_file({{k: v.contiguous() for k, v in m.state_dict().items()}},
          os.path.join(sys.argv[3], "model.safetensors"), metadata={{"format": "pt"}})
"""

MERGEKIT = """
import json, sys, torch
torch.set_num_threads({threads})
import mergekit.config, mergekit.merge
from mergekit.options import MergeOptions
cfg = mergekit.config.MergeConfiguration.model_validate(json.loads(sys.argv[1]))
mergekit.merge.run_merge(cfg, sys.argv[2], options=MergeOptions(device="cpu", quiet=True,
    copy_tokenizer=False, write_model_card=False, num_threads={threads}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ftune", default=os.path.join(REPO, "build", "ftune"))
    ap.add_argument("--python", default=sys.executable, help="the venv with torch/PEFT/mergekit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of rows (merge,models-linear,...)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--nf4-model", default=os.path.join(
        os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune")), "llama8b-nf4"),
        help="the 8B-shape NF4 folder of bench/qlora_8b.py (its row runs when it exists)")
    a = ap.parse_args()

    cache = os.path.join(os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune")),
                         "bench-models")
    model = os.path.join(cache, "qwen3-0.6b-f32")
    if not os.path.exists(os.path.join(model, "config.json")):
        from make_model import make_model
        print(f"model: qwen3-0.6b random weights at {model}", flush=True)
        make_model("qwen3-0.6b", model, "f32", 0)
    work = tempfile.mkdtemp(prefix="ftune-bench-merge-")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    try:
        ad1 = make_adapter(model, os.path.join(work, "ad1"), 1)
        ad2 = make_adapter(model, os.path.join(work, "ad2"), 2)
        # the two fine-tunes merge-models combines
        ft = []
        for i, ad in enumerate((ad1, ad2)):
            d = os.path.join(work, f"ft{i + 1}")
            wall, rss, rc, out = measure([a.ftune, "merge", "--model", model, "--adapter", ad,
                                          "--out", d, "--quiet"], env)
            assert rc == 0, out
            ft.append(d)

        def mk_cfg(method, extra):
            c = dict(merge_method=method, dtype="float32", out_dtype="float32",
                     models=[dict(model=f, parameters=dict(weight=0.5, **extra)) for f in ft])
            if method != "linear":
                c["base_model"] = model
            return json.dumps(c)

        rows = [
            ("merge",
             [a.ftune, "merge", "--model", model, "--adapter", ad1, "--out", "{out}", "--quiet"],
             [a.python, "-c", PEFT_MERGE.format(threads=a.threads), model, ad1, "{out}"],
             "PEFT merge_and_unload + save_pretrained"),
            ("models-linear",
             [a.ftune, "merge-models", "--method", "linear", "--model", ft[0] + ":0.5",
              "--model", ft[1] + ":0.5", "--out", "{out}", "--quiet"],
             [a.python, "-c", MERGEKIT.format(threads=a.threads), mk_cfg("linear", {}), "{out}"],
             "mergekit 0.1.5 run_merge"),
            ("models-ties",
             [a.ftune, "merge-models", "--method", "ties", "--base", model, "--density", "0.5",
              "--model", ft[0] + ":0.5", "--model", ft[1] + ":0.5", "--out", "{out}",
              "--quiet"],
             [a.python, "-c", MERGEKIT.format(threads=a.threads),
              mk_cfg("ties", {"density": 0.5}), "{out}"],
             "mergekit 0.1.5 run_merge"),
        ]
        only = set(filter(None, a.only.split(",")))
        if not only or any(x.startswith("export") for x in only):
            rows += export_runs(a, model, work)
        if (not only or "merge-8b-nf4" in only) and os.path.exists(
                os.path.join(a.nf4_model, "config.json")):
            ad8 = make_adapter(a.nf4_model, os.path.join(work, "ad8b"), 3)
            rows.append(("merge-8b-nf4",
                         [a.ftune, "merge", "--model", a.nf4_model, "--adapter", ad8, "--out",
                          "{out}", "--quiet"],
                         [a.python, "-c", PEFT_MERGE_4BIT.format(threads=a.threads),
                          a.nf4_model, ad8, "{out}"],
                         "PEFT merge_and_unload (bitsandbytes 4-bit) + state_dict to safetensors"))
        elif "merge-8b-nf4" in only:
            print(f"no {a.nf4_model}/config.json: make it with bench/qlora_8b.py")
        results = {"cpu": cpu_name(), "nproc": os.cpu_count(), "threads": a.threads,
                   "model": "qwen3-0.6b shape, fp32, random", "adapter": "r16 alpha 32, 7 modules",
                   "utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "rows": []}
        print(f"CPU: {results['cpu']}, {a.threads} threads; load {os.getloadavg()[0]:.1f}")
        print(f"{'run':<15} {'ftune s':>8} {'MB':>7} | {'peer s':>8} {'MB':>7} | "
              f"{'speed-up':>8} {'RSS ratio':>9}  peer")
        for name, ours, theirs, peer in rows:
            if only and name not in only:
                continue
            r = {"name": name, "peer": peer, "load_before": os.getloadavg()[0]}
            for who, argv in (("ftune", ours), ("peer", theirs)):
                warm(*[x.split(":")[0] for x in argv if os.path.isdir(x.split(":")[0])])
                out = os.path.join(work, f"{name}-{who}")
                wall, rss, rc, tail = measure([x.replace("{out}", out) for x in argv], env)
                if rc != 0:
                    print(f"{name} {who} failed ({rc}):\n{tail}", flush=True)
                r[who] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss, 1), "rc": rc}
                shutil.rmtree(out, ignore_errors=True)
                if os.path.exists(out + ".gguf"):
                    os.remove(out + ".gguf")
            f, p = r["ftune"], r["peer"]
            r["speedup"] = round(p["seconds"] / f["seconds"], 2)
            r["rss_ratio"] = round(p["peak_rss_mb"] / f["peak_rss_mb"], 2)
            r["load_after"] = os.getloadavg()[0]
            results["rows"].append(r)
            print(f"{name:<15} {f['seconds']:8.1f} {f['peak_rss_mb']:7.0f} | {p['seconds']:8.1f} "
                  f"{p['peak_rss_mb']:7.0f} | {r['speedup']:7.1f}x {r['rss_ratio']:8.1f}x  {peer}",
                  flush=True)
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, time.strftime("merge-%Y%m%dT%H%M%SZ.json", time.gmtime()))
        with open(path, "w") as fh:
            json.dump(results, fh, indent=1)
        print("saved", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
