"""`ftune tokenize --chat` against transformers' apply_chat_template(tokenize=True).

The ids must be identical: the rendered conversation is encoded without adding special tokens
again, as transformers does. Uses the real Llama 3 and Qwen3 tokenizers and templates from
../shared/tokenizers (skipped with a message when that folder is absent).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))
SHARED = REPO.parent / "shared" / "tokenizers"

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Wie spät ist es in Tōkyō? 🕰️"},
    {"role": "assistant", "content": "Es ist 9 Uhr.\n\nAnything else?"},
    {"role": "user", "content": "No, thanks."},
]


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
@pytest.mark.parametrize("gen", [False, True])
def test_tokenize_chat_like_transformers(tmp_path, name, gen):
    folder = SHARED / name
    if not folder.exists():
        pytest.skip(f"{folder} is absent (real tokenizers live beside the project only)")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(folder))
    want = tok.apply_chat_template(CONV, tokenize=True, add_generation_prompt=gen)
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(CONV))
    args = [FTUNE, "tokenize", "--model", str(folder), "--chat", str(chat), "--json"]
    if gen:
        args.append("--add-generation-prompt")
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == list(want)


def test_tokenize_chat_bad_template_arg(tmp_path):
    folder = SHARED / "qwen3"
    if not folder.exists():
        pytest.skip(f"{folder} is absent")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(CONV))
    r = subprocess.run([FTUNE, "tokenize", "--model", str(folder), "--chat", str(chat),
                        "--template-arg", "novalue"], capture_output=True, text=True)
    assert r.returncode == 2 and "--template-arg" in r.stderr
