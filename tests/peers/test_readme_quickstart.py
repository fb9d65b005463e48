"""The README's quick start, run as written (issue 15.10): its shell block (less `make deps all`,
the build this test runs against, and `hf download`, since no test reaches a model hub) in an
empty folder, then its Python block (transformers + PEFT load the adapter and generate).

The download is stood in for by a random-weight folder of the same shape with a real tokenizer:
`ftune init --size smollm-135m --tokenizer DIR`, DIR the shared SmolLM tokenizer when
../shared/tokenizers is present, else one trained here, with a ChatML template (the one
SmolLM2-Instruct uses; the shared SmolLM-135M tokenizer has none). Checks: every command exits 0,
chat-template prints a header per line of chat.jsonl, the adapter PEFT loads is the one ftune
wrote, and the Python block runs.
"""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from conftest import ftune_bin, run_ok  # noqa: E402
from test_data_trl import sentence  # noqa: E402

SHARED = REPO.parent / "shared" / "tokenizers" / "smollm-135m"


def block(readme, lang):
    text = readme.split("## Quick start", 1)[1]
    return re.search(r"```" + lang + r"\n(.*?)```", text, re.S).group(1)


def test_quickstart_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    sh = block(readme, "sh")
    py = block(readme, "python")
    assert "hf download HuggingFaceTB/SmolLM2-135M-Instruct --local-dir SmolLM2-135M-Instruct" in sh
    steps = "\n".join(l for l in sh.splitlines()
                      if not l.startswith("make ") and not l.startswith("hf download"))
    # the stand-in for the download
    tok = SHARED
    if not (tok / "tokenizer.json").exists():
        from test_tokenizer import train_bytelevel
        tok = tmp_path / "tok"
        tok.mkdir()
        r = random.Random(3)
        train_bytelevel(tok / "tokenizer.json", [sentence(r, 5, 40) for _ in range(2000)])
        (tok / "tokenizer_config.json").write_text(json.dumps(
            {"bos_token": "<|bos|>", "eos_token": "<|eos|>"}))
    work = tmp_path / "work"
    work.mkdir()
    m = work / "SmolLM2-135M-Instruct"
    run_ok(["init", "--size", "smollm-135m", "--tokenizer", tok, "--out", m])
    (m / "chat_template.jinja").write_text((HERE / "templates" / "chatml.jinja").read_text())
    (work / "build").mkdir()
    os.symlink(ftune_bin(), work / "build" / "ftune")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", "-e", "-c", steps], cwd=work, capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    n = sum(1 for l in (work / "chat.jsonl").read_text().splitlines() if l.strip())
    assert p.stdout.count("==> chat.jsonl:") == n
    assert (work / "run" / "adapter_model.safetensors").exists()
    assert '"perplexity"' in p.stdout
    p = subprocess.run([sys.executable, "-c", py], cwd=work, capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
