"""Generation benchmark (`make bench-generate`): ftune generate against llama.cpp on the same GGUF files.

Models: the SmolLM-135M shape (llama: hidden 576, 30 layers, 9 / 3 heads, MLP 1536, vocab 49152,
tied) and the Qwen3-0.6B shape (qwen3: hidden 1024, 28 layers, 16 / 8 heads, head_dim 128, MLP
3072, vocab 151936, tied, q/k norm), random weights (normal, std 0.02; norms 1), written as F32
GGUF with gguf-py and quantized to Q8_0 and Q4_0 by llama.cpp's own quantizer
(llama_model_quantize, default parameters: so the Q4_0 file has llama.cpp's usual mix, e.g. a
Q6_K or Q8_0 embedding / tied head). Files are cached under ~/.cache/ftune/bench-models/ and reused.

Each run, in its own process, 2 threads:
- ftune: `ftune generate --prompt-ids (512 random ids) --max-new-tokens 128 --greedy --ignore-eos
  --threads 2`; prefill and decode tok/s from its statistics line; peak RSS from wait4().
- llama.cpp (llama-cpp-python, n_threads = n_threads_batch = 2, n_batch = n_ubatch = 512, mmap):
  the same 512 ids in one llama_decode (prefill), then 128 single-token steps each taking the
  argmax of the logits (decode), timed around the calls; its own perf counters are kept too; peak
  RSS of the process (Python and numpy included; the mapped file's pages it touched count).
Plus the machine's memory bandwidth (bench/membw.c, 2 threads) and the bandwidth decode achieved:
bytes of the weights read per token (every linear layer and the LM head, as stored) x tok/s.

Output: a table, and bench/results/generate-<UTC>.json with the CPU (model name, avx512 / avx2)
and the load average before and after each run (the machine is shared: compare within one run).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.expanduser("~/.cache/ftune/bench-models")

SHAPES = {
    "smollm-135m": dict(arch="llama", C=576, L=30, H=9, Hkv=3, D=64, I=1536, V=49152, qk_norm=False),
    "qwen3-0.6b": dict(arch="qwen3", C=1024, L=28, H=16, Hkv=8, D=128, I=3072, V=151936,
                       qk_norm=True),
}
FTYPES = {"q8_0": 7, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def byte_tokens():
    """GPT-2's byte-to-unicode map: the 256 single-byte tokens of a byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_f32(path, s, seed=0):
    import gguf
    rng = np.random.default_rng(seed)
    arch, C, L, H, Hkv, D, I, V = (s[k] for k in ("arch", "C", "L", "H", "Hkv", "D", "I", "V"))
    tmp = path + ".tmp"
    w = gguf.GGUFWriter(tmp, arch)
    w.add_context_length(2048)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(D)
    if D != C // H:
        w.add_key_length(D)
        w.add_value_length(D)
    w.add_file_type(0)
    toks = byte_tokens() + ["ab"]
    toks += [f"<t{i}>" for i in range(len(toks), V)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(toks)
    w.add_token_types([1] * V)
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(V, C))
    w.add_tensor("output_norm.weight", np.ones(C, np.float32))
    for l in range(L):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", np.ones(C, np.float32))
        w.add_tensor(b + "ffn_norm.weight", np.ones(C, np.float32))
        if s["qk_norm"]:
            w.add_tensor(b + "attn_q_norm.weight", np.ones(D, np.float32))
            w.add_tensor(b + "attn_k_norm.weight", np.ones(D, np.float32))
        w.add_tensor(b + "attn_q.weight", mat(H * D, C))
        w.add_tensor(b + "attn_k.weight", mat(Hkv * D, C))
        w.add_tensor(b + "attn_v.weight", mat(Hkv * D, C))
        w.add_tensor(b + "attn_output.weight", mat(C, H * D))
        w.add_tensor(b + "ffn_gate.weight", mat(I, C))
        w.add_tensor(b + "ffn_up.weight", mat(I, C))
        w.add_tensor(b + "ffn_down.weight", mat(C, I))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def quantize(src, dst, ftype):
    import ctypes
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {dst}: {rc}")
    os.replace(tmp, dst)


def model_file(shape, fmt, log):
    os.makedirs(CACHE, exist_ok=True)
    f32 = os.path.join(CACHE, f"{shape}-f32.gguf")
    if not os.path.exists(f32):
        log(f"writing {f32} (random weights; once)")
        write_f32(f32, SHAPES[shape])
    if fmt == "f32":
        return f32
    path = os.path.join(CACHE, f"{shape}-{fmt}.gguf")
    if not os.path.exists(path):
        log(f"quantizing {path} with llama.cpp (once)")
        quantize(f32, path, FTYPES[fmt])
    return path


def weight_info(path):
    """Bytes read per decoded token (linear layers and the LM head as stored: the embedding when
    tied; norms are a rounding error) and the types of the matrices."""
    import gguf
    r = gguf.GGUFReader(path)
    names = {t.name: t for t in r.tensors}
    tied = "output.weight" not in names
    total, types = 0, {}
    for t in r.tensors:
        if len(t.shape) != 2 and not t.name.endswith(".weight"):
            continue
        if t.name == "token_embd.weight" and not tied:
            continue
        if t.name.endswith("norm.weight"):
            continue
        total += int(t.n_bytes)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return total, types, int(os.path.getsize(path))


def cpu_label():
    name, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name == "?":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "portable"
    return dict(model_name=name, isa=isa, avx512f="avx512f" in flags, avx2="avx2" in flags,
                avx512_bf16="avx512_bf16" in flags, avx512_vnni="avx512_vnni" in flags,
                nproc=os.cpu_count())


def run_child(cmd, timeout):
    """Run cmd; (returncode, stdout, stderr, wall s)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, out, err, time.time() - t0


def run_measured(cmd, timeout):
    """The child's own peak RSS: run it under a fresh Python that reports its child's rusage."""
    wrapper = ("import resource,subprocess,sys,json;"
               "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
               "print('\\n@@RSS '+str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss));"
               "sys.exit(p.returncode)")
    rc, out, err, wall = run_child([sys.executable, "-c", wrapper] + cmd, timeout)
    m = re.search(r"@@RSS (\d+)", out)
    rss = int(m.group(1)) / 1024.0 if m else None
    return rc, out, err, rss, wall


LLAMA_CHILD = r"""
import json, sys, time, ctypes
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, n_prompt, n_gen, threads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ids = json.loads(sys.argv[6])
llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 16, n_threads=threads, n_threads_batch=threads,
            n_batch=n_prompt, n_ubatch=n_prompt, verbose=False, use_mmap=True, seed=seed)
V = llm.n_vocab()
def last_logits():
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(V,))
llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
t0 = time.perf_counter()
llm.eval(ids)
nxt = int(np.argmax(last_logits()))
t1 = time.perf_counter()
for i in range(n_gen):
    llm.eval([nxt])
    nxt = int(np.argmax(last_logits()))
t2 = time.perf_counter()
pc = llama_cpp.llama_perf_context(llm._ctx.ctx)
print(json.dumps(dict(prefill_s=t1 - t0, decode_s=t2 - t1, perf=dict(
    t_p_eval_ms=pc.t_p_eval_ms, n_p_eval=pc.n_p_eval, t_eval_ms=pc.t_eval_ms, n_eval=pc.n_eval))))
"""


def run_llama(path, ids, n_gen, threads, timeout):
    cmd = [sys.executable, "-c", LLAMA_CHILD, path, str(len(ids)), str(n_gen), str(threads), "0",
           json.dumps(ids)]
    rc, out, err, rss, wall = run_measured(cmd, timeout)
    res = dict(ok=rc == 0, peak_rss_mb=rss, wall_s=wall)
    if rc != 0:
        res["error"] = err[-2000:]
        return res
    d = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    res.update(prefill_tok_s=len(ids) / d["prefill_s"], decode_tok_s=n_gen / d["decode_s"],
               perf=d["perf"])
    return res


STATS = re.compile(r"prompt (\d+) tokens, prefill ([\d.]+) tok/s; generated (\d+) tokens, decode "
                   r"([\d.]+) tok/s.*?peak memory (\d+) MB")


def run_ftune(ftune, path, ids, n_gen, threads, timeout):
    cmd = [ftune, "generate", "--model", path, "--prompt-ids", ",".join(map(str, ids)),
           "--max-new-tokens", str(n_gen), "--greedy", "--ignore-eos", "--threads", str(threads),
           "--ctx", str(len(ids) + n_gen + 16)]
    env_isa = os.environ.get("FTUNE_ISA")
    rc, out, err, rss, wall = run_measured(cmd, timeout)
    res = dict(ok=rc == 0, peak_rss_mb=rss, wall_s=wall, isa_cap=env_isa)
    m = STATS.search(err)
    if rc != 0 or not m:
        res.update(ok=False, error=err[-2000:])
        return res
    res.update(prefill_tok_s=float(m.group(2)), decode_tok_s=float(m.group(4)),
               generated=int(m.group(3)), ftune_peak_memory_mb=float(m.group(5)),
               stats_line=[x for x in err.splitlines() if "prefill" in x][-1].strip())
    return res


def kv_bytes(s, ctx, elem):
    return 2 * s["L"] * s["Hkv"] * s["D"] * ctx * elem


def table(results):
    rows = []
    hdr = ("shape", "format", "weights MB", "prefill ftune", "llama.cpp", "ratio", "decode ftune",
           "llama.cpp", "ratio", "ftune GB/s", "llama GB/s", "RSS ftune", "llama.cpp", "bound MB")
    for r in results["runs"]:
        f, l = r["ftune"], r["llama_cpp"]
        wb = r["weight_bytes"]

        def g(d, k):
            return d.get(k) if d.get("ok") else None

        def fmt(x, p=1):
            return "-" if x is None else f"{x:.{p}f}"

        def ratio(a, b):
            return "-" if a is None or b is None else f"{a / b:.2f}"
        fp, lp, fd, ld = g(f, "prefill_tok_s"), g(l, "prefill_tok_s"), g(f, "decode_tok_s"), \
            g(l, "decode_tok_s")
        rows.append((r["shape"], r["format"], f"{wb / 1e6:.0f}", fmt(fp), fmt(lp), ratio(fp, lp),
                     fmt(fd), fmt(ld), ratio(fd, ld), fmt(fd and wb * fd / 1e9, 2),
                     fmt(ld and wb * ld / 1e9, 2), fmt(f.get("peak_rss_mb"), 0),
                     fmt(l.get("peak_rss_mb"), 0), f"{r['rss_bound_mb']:.0f}"))
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    lines = ["  ".join(str(x).rjust(n) for x, n in zip(hdr, w))]
    lines += ["  ".join(str(x).rjust(n) for x, n in zip(row, w)) for row in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ftune", default=os.path.join(HERE, "..", "build", "ftune"))
    ap.add_argument("--membw", default=os.path.join(HERE, "..", "build", "bench", "membw"))
    ap.add_argument("--shapes", default="smollm-135m,qwen3-0.6b")
    ap.add_argument("--formats", default="f32,q8_0,q4_0")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()

    def log(msg):
        print(f"[bench-generate] {msg}", file=sys.stderr, flush=True)

    machine = cpu_label()
    results = dict(kind="generate", date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                   machine=machine, threads=a.threads, prompt_tokens=a.prompt, gen_tokens=a.gen,
                   loadavg_start=os.getloadavg(), runs=[],
                   note="2 cores shared with other work: compare ratios within one run")
    bw = subprocess.run([a.membw, str(a.threads)], capture_output=True, text=True)
    results["membw"] = json.loads(bw.stdout) if bw.returncode == 0 else dict(error=bw.stderr)
    log(f"memory bandwidth ({a.threads} threads): {results['membw']}")
    for shape in a.shapes.split(","):
        s = SHAPES[shape]
        rng = np.random.default_rng(1)
        ids = [int(x) for x in rng.integers(300, s["V"], size=a.prompt)]
        for fmt in a.formats.split(","):
            path = model_file(shape, fmt, log)
            wb, types, fbytes = weight_info(path)
            ctx = a.prompt + a.gen + 16
            run = dict(shape=shape, format=fmt, file=path, file_bytes=fbytes, weight_bytes=wb,
                       weight_types=types, loadavg_before=os.getloadavg(),
                       kv_cache_mb_ftune=kv_bytes(s, ctx, 4) / 1e6,
                       kv_cache_mb_llama=kv_bytes(s, ctx, 2) / 1e6)
            # the bound: the mapped weights (the whole file) + the KV cache + 64 MB
            run["rss_bound_mb"] = (fbytes + kv_bytes(s, ctx, 4)) / 2**20 + 64
            log(f"{shape} {fmt}: ftune")
            run["ftune"] = run_ftune(a.ftune, path, ids, a.gen, a.threads, a.timeout)
            log(f"  {run['ftune'].get('stats_line') or run['ftune'].get('error')}")
            if not a.skip_llama:
                log(f"{shape} {fmt}: llama.cpp")
                run["llama_cpp"] = run_llama(path, ids, a.gen, a.threads, a.timeout)
                log(f"  {run['llama_cpp']}")
            else:
                run["llama_cpp"] = dict(ok=False, error="skipped")
            run["loadavg_after"] = os.getloadavg()
            results["runs"].append(run)
    results["loadavg_end"] = os.getloadavg()
    print(f"CPU: {machine['model_name']} ({machine['isa']}), {a.threads} threads; memory bandwidth "
          f"read {results['membw'].get('read_gbs')} GB/s, triad {results['membw'].get('triad_gbs')}"
          f" GB/s; load {results['loadavg_start'][0]:.1f} -> {results['loadavg_end'][0]:.1f}")
    print(table(results))
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = os.path.join(a.out, f"generate-{stamp}-{machine['isa']}.json")
    with open(out + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
