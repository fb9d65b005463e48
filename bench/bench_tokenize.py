"""bench_tokenize.py: encoding throughput of ftune and of Hugging Face `tokenizers`, side by side.

For each real tokenizer in <repo>/../shared/tokenizers (skipped with a message when absent;
then the two tokenizers that tests/peers/test_tokenizer.py trains are used instead) both
encode the same 10 MB of generated multilingual text (tests/peers/tok_corpus.py, seed 1234),
add_special_tokens=False:
  * single thread: tokenizers' Tokenizer.encode called per document in a Python loop (the call
    overhead is ~1 us per document of ~2 KB), against `ftune tokenize --jsonl F --threads 1
    --stats`, which times its encode calls alone;
  * batch, all threads: tokenizers' encode_batch (Rust rayon pool) against `--threads 0`.
MB/s is 10^6 bytes of UTF-8 input per second; each figure is the best of --repeat runs.
The table is printed and written as JSON to bench/results/tokenize-<UTC timestamp>.json.

    python bench/bench_tokenize.py [--mb 10] [--repeat 3] [--ftune build/ftune]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "peers"))
import tok_corpus  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def ftune_mbps(ftune, tok, jsonl, threads):
    r = subprocess.run([ftune, "tokenize", "--tokenizer", str(tok), "--jsonl", str(jsonl),
                        "--no-special", "--stats", "--threads", str(threads)],
                       capture_output=True, check=True)
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ftune", default=os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune")))
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args()

    docs = tok_corpus.corpus(int(a.mb * 1e6), seed=1234)
    nbytes = sum(len(d.encode()) for d in docs)
    shared = REPO.parent / "shared" / "tokenizers"
    work = Path(tempfile.mkdtemp(prefix="ftune-bench-"))
    toks = {}
    if shared.exists():
        for n in ["llama2", "llama3", "qwen3", "smollm-135m"]:
            toks[n] = shared / n / "tokenizer.json"
    else:
        print(f"{shared} is absent: benchmarking the tokenizers the tests train instead")
        import test_tokenizer as tt  # noqa: E402
        toks["trained-bytelevel"] = work / "bl.json"
        toks["trained-metaspace"] = work / "ms.json"
        tt.train_bytelevel(toks["trained-bytelevel"], docs[: len(docs) // 20])
        tt.train_metaspace(toks["trained-metaspace"], docs[: len(docs) // 20])
    jsonl = work / "corpus.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")

    rows = []
    for name, path in toks.items():
        t = Tokenizer.from_file(str(path))
        t.no_truncation()
        t.no_padding()
        hf1 = hfb = f1 = fb = 0.0
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for d in docs:
                t.encode(d, add_special_tokens=False)
            hf1 = max(hf1, nbytes / 1e6 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            t.encode_batch(docs, add_special_tokens=False)
            hfb = max(hfb, nbytes / 1e6 / (time.perf_counter() - t0))
            f1 = max(f1, ftune_mbps(a.ftune, path, jsonl, 1)["mb_per_s"])
            fb = max(fb, ftune_mbps(a.ftune, path, jsonl, 0)["mb_per_s"])
        rows.append({"tokenizer": name, "tokenizers_1t": hf1, "ftune_1t": f1,
                     "tokenizers_batch": hfb, "ftune_batch": fb})
        print(f"{name}: done", file=sys.stderr)

    import tokenizers
    print(f"\nencoding throughput, MB/s ({nbytes / 1e6:.1f} MB, {len(docs)} documents, "
          f"{os.cpu_count()} CPUs, best of {a.repeat})")
    print(f"{'tokenizer':<20}{'tokenizers 1t':>15}{'ftune 1t':>10}{'ratio':>7}"
          f"{'tokenizers all':>16}{'ftune all':>11}{'ratio':>7}")
    for r in rows:
        print(f"{r['tokenizer']:<20}{r['tokenizers_1t']:>15.2f}{r['ftune_1t']:>10.2f}"
              f"{r['ftune_1t'] / r['tokenizers_1t']:>7.2f}{r['tokenizers_batch']:>16.2f}"
              f"{r['ftune_batch']:>11.2f}{r['ftune_batch'] / r['tokenizers_batch']:>7.2f}")
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(a.out) / f"tokenize-{stamp}.json"
    out.write_text(json.dumps({
        "bytes": nbytes, "documents": len(docs), "cpus": os.cpu_count(), "repeat": a.repeat,
        "machine": platform.machine(), "processor": platform.processor(),
        "tokenizers_version": tokenizers.__version__, "rows": rows}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
