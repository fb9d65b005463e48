"""The model folders `ftune init` and `ftune quantize` write, against transformers (issue 15,
items 7, 8, 9 and 11):

- init --tokenizer DIR: config.json's vocab_size is the tokenizer's full vocabulary (added tokens
  included: len(AutoTokenizer)) and bos/eos/pad_token_id are the ids transformers' tokenizer
  gives for its bos/eos/pad tokens; the tokenizer files are copied, so AutoTokenizer loads the
  new folder and encodes and renders chat templates exactly as the source does, and
  AutoModelForCausalLM loads it.
- quantize copies the tokenizer files and generation_config.json: AutoTokenizer on the output
  folder tokenizes like the source, GenerationConfig reads back the same.
- init and quantize refuse a non-empty --out unless --overwrite; quantize refuses an --out that
  is the --model folder (by path, by a path through "..", by a symlink) even with --overwrite,
  and leaves the input's bytes as they were.
- a tokenizer copied by hand into init's default vocabulary (512) gets a hint naming --tokenizer
  and --vocab.
- --help of init, quantize and chat-template ends with examples; quantize's help shows only
  --quant-blocksize.

Tokenizers: one trained here (tests/peers/test_tokenizer.py's byte-level BPE, so the file runs
everywhere) and the real ones in ../shared/tokenizers when present (skipped with a message when
not). transformers loads local folders only.
"""
import hashlib
import json
import os
import random
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import run_ftune, run_ok  # noqa: E402
from test_data_trl import TEMPLATE, sentence  # noqa: E402

SHARED = HERE.parents[2] / "shared" / "tokenizers"
TEXTS = ["Hello world!", "  leading spaces and\ttabs\n", "über café naïve 日本語 42 3.14",
         "<|eos|> special in text", "x=1; print(x)"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with a trained byte-level tokenizer, its config (bos, eos, pad, chat template)
    and nothing else."""
    from test_tokenizer import train_bytelevel
    d = tmp_path_factory.mktemp("trained")
    r = random.Random(3)
    train_bytelevel(d / "tokenizer.json", [sentence(r, 5, 40) for _ in range(2000)])
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|eos|>",
         "chat_template": TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return d


def tokenizer_dirs(trained):
    out = {"trained": trained}
    for name in ("llama3", "qwen3", "smollm-135m", "llama2"):
        if (SHARED / name / "tokenizer.json").exists():
            out[name] = SHARED / name
    return out


NAMES = ["trained", "llama3", "qwen3", "smollm-135m", "llama2"]


def source(name, trained):
    d = tokenizer_dirs(trained).get(name)
    if d is None:
        pytest.skip(f"{SHARED / name} not present (the shared real tokenizers are optional)")
    return d


def same_tokenizer(a, b):
    """transformers' tokenizers of folders a and b encode, decode and render chats alike."""
    from transformers import AutoTokenizer
    ta, tb = AutoTokenizer.from_pretrained(str(a)), AutoTokenizer.from_pretrained(str(b))
    assert len(ta) == len(tb)
    for t in TEXTS:
        assert ta(t).input_ids == tb(t).input_ids, t
        assert ta.decode(ta(t).input_ids) == tb.decode(tb(t).input_ids)
    assert (ta.bos_token, ta.eos_token, ta.pad_token) == (tb.bos_token, tb.eos_token, tb.pad_token)
    if ta.chat_template:
        assert ta.apply_chat_template(CHAT, tokenize=False) == \
            tb.apply_chat_template(CHAT, tokenize=False)
    return ta


@pytest.mark.parametrize("name", NAMES)
def test_init_tokenizer_sizes_vocab_and_special_ids(name, trained, tmp_path):
    from transformers import AutoModelForCausalLM
    src = source(name, trained)
    out = tmp_path / "m"
    run_ok(["init", "--tokenizer", src, "--out", out])
    tok = same_tokenizer(src, out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == len(tok), (cfg["vocab_size"], len(tok))
    assert cfg["bos_token_id"] == tok.bos_token_id
    assert cfg["eos_token_id"] == tok.eos_token_id
    assert cfg["pad_token_id"] == tok.pad_token_id
    m = AutoModelForCausalLM.from_pretrained(str(out))
    assert m.get_input_embeddings().weight.shape[0] == len(tok)
    # and it trains on chat data without a vocabulary error
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CHAT[:3]}) + "\n")
    if tok.chat_template:
        run_ok(["train", "--model", out, "--data", data, "--dump-data", tmp_path / "d.jsonl"])


def test_init_tokenizer_with_vocab(trained, tmp_path):
    """--vocab with --tokenizer pads the vocabulary (as real models do) but may not cut it."""
    from tokenizers import Tokenizer
    n = Tokenizer.from_file(str(trained / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    run_ok(["init", "--tokenizer", trained, "--vocab", n + 64, "--out", tmp_path / "a"])
    assert json.loads((tmp_path / "a" / "config.json").read_text())["vocab_size"] == n + 64
    p = run_ftune(["init", "--tokenizer", trained, "--vocab", n - 1, "--out", tmp_path / "b"])
    assert p.returncode == 2 and "option --vocab" in p.stderr and str(n) in p.stderr, p.stderr
    p = run_ftune(["init", "--tokenizer", tmp_path / "nowhere", "--out", tmp_path / "c"])
    assert p.returncode == 2 and "tokenizer" in p.stderr, p.stderr


def test_default_vocab_error_names_tokenizer_and_vocab(trained, tmp_path):
    """A tokenizer copied by hand into a folder of init's default vocabulary (512): the
    vocabulary error says how to make the folder right."""
    big = source("llama3", trained)
    m = tmp_path / "m"
    run_ok(["init", "--out", m])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (m / f).write_bytes((big / f).read_bytes())
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"text": "Hello world"}) + "\n")
    p = run_ftune(["train", "--model", m, "--data", data, "--out", tmp_path / "run"])
    assert p.returncode == 2, p.stderr
    assert "outside the model's vocabulary [0, 512)" in p.stderr
    assert "--tokenizer" in p.stderr and "--vocab 128256" in p.stderr, p.stderr


def digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())
            if f.is_file()}


def test_init_refuses_non_empty_out(tmp_path):
    out = tmp_path / "m"
    run_ok(["init", "--out", out])
    before = digest(out)
    p = run_ftune(["init", "--out", out, "--seed", 5])
    assert p.returncode == 2, p.stderr
    assert "exists and is not empty" in p.stderr and "--overwrite" in p.stderr, p.stderr
    assert digest(out) == before
    run_ok(["init", "--out", out, "--seed", 5, "--overwrite"])
    assert digest(out)["model.safetensors"] != before["model.safetensors"]
    (tmp_path / "file").write_text("x")
    p = run_ftune(["init", "--out", tmp_path / "file"])
    assert p.returncode == 2 and "not a folder" in p.stderr, p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    run_ok(["init", "--out", empty])  # an empty folder is fine


def test_quantize_refuses_non_empty_out_and_its_input(trained, tmp_path):
    m = tmp_path / "m"
    run_ok(["init", "--tokenizer", trained, "--out", m])
    before = digest(m)
    run_ok(["quantize", "--model", m, "--out", tmp_path / "q"])
    p = run_ftune(["quantize", "--model", m, "--out", tmp_path / "q"])
    assert p.returncode == 2 and "exists and is not empty" in p.stderr and "--overwrite" in p.stderr
    run_ok(["quantize", "--model", m, "--out", tmp_path / "q", "--overwrite"])
    os.symlink(m, tmp_path / "link")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        for model, out in ((m, m), (m, tmp_path / "x" / ".." / "m"), ("m", str(m)),
                           (tmp_path / "link", m), (m, tmp_path / "link")):
            p = run_ftune(["quantize", "--model", model, "--out", out, "--overwrite"])
            assert p.returncode == 2, (model, out, p.stderr)
            assert "is the --model folder" in p.stderr, p.stderr
    finally:
        os.chdir(cwd)
    assert digest(m) == before


@pytest.mark.parametrize("name", ["trained", "llama3", "smollm-135m"])
def test_quantize_output_has_the_tokenizer(name, trained, tmp_path):
    """What save_pretrained of the tokenizer (and the generation config) would put beside the
    weights: AutoTokenizer loads the quantized folder and tokenizes like the source."""
    from transformers import AutoConfig, GenerationConfig
    src = source(name, trained)
    m = tmp_path / "m"
    run_ok(["init", "--tokenizer", src, "--out", m])
    GenerationConfig(bos_token_id=1, eos_token_id=[2, 3], do_sample=True, temperature=0.6,
                     top_p=0.9).save_pretrained(str(m))
    (m / "chat_template.jinja").write_text(TEMPLATE)
    q = tmp_path / "q"
    run_ok(["quantize", "--model", m, "--out", q, "--double-quant"])
    for f in m.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            assert (q / f.name).read_bytes() == f.read_bytes(), f.name
    same_tokenizer(m, q)
    g = GenerationConfig.from_pretrained(str(q))
    assert (g.eos_token_id, g.temperature, g.top_p) == ([2, 3], 0.6, 0.9)
    assert AutoConfig.from_pretrained(str(q)).quantization_config["bnb_4bit_use_double_quant"]
    # and ftune trains on it as it is (the chat template travels)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CHAT[1:3]}) + "\n")
    run_ok(["train", "--model", q, "--data", data, "--dump-data", tmp_path / "d.jsonl"])


def test_help_examples():
    for cmd in ("init", "quantize", "chat-template"):
        h = run_ok([cmd, "--help"]).stdout
        ex = h.split("\nexamples:\n", 1)
        assert len(ex) == 2, f"{cmd} --help has no examples"
        assert sum(l.strip().startswith("ftune ") for l in ex[1].splitlines()) >= 2, h
    h = run_ok(["quantize", "--help"]).stdout
    assert "--quant-blocksize" in h and "--blocksize " not in h and "nf4" in h and "q8" in h
    assert "--overwrite" in h and "--tokenizer" in run_ok(["init", "--help"]).stdout


def test_model_path_hints(tmp_path):
    """issue 15.10: what --model was given instead of a model folder is named, where the folder is
    opened (model_dir_check), for every command that opens one: a Hub id gets the download
    command, a Hugging Face cache root the snapshot folder to pass, a .gguf file (or a folder of
    them) is recognised as GGUF (read by train and plan since issue 16)."""
    cache = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    (cache / "snapshots" / "0123abcd").mkdir(parents=True)
    (tmp_path / "model.Q8_0.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp_path / "ggufs").mkdir()
    (tmp_path / "ggufs" / "m.gguf").write_bytes(b"GGUF")
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "hi"}\n')
    cases = {
        "HuggingFaceTB/SmolLM2-135M-Instruct": ["looks like a Hugging Face Hub id",
                                                "hf download HuggingFaceTB/SmolLM2-135M-Instruct "
                                                "--local-dir SmolLM2-135M-Instruct"],
        str(cache): ["Hugging Face cache folder", str(cache / "snapshots" / "0123abcd")],
        # issue 16: train and plan read the file (this one is truncated: the reader says so),
        # quantize says it takes a folder; a folder of GGUF files names the file to pass
        str(tmp_path / "model.Q8_0.gguf"): ["GGUF", "model.Q8_0.gguf"],
        str(tmp_path / "ggufs"): ["holds a GGUF file", "m.gguf"],
    }
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # the Hub id is not a local path here
        for model, words in cases.items():
            for args in (["train", "--model", model, "--data", data, "--out", tmp_path / "run"],
                         ["plan", "--model", model],
                         ["quantize", "--model", model, "--out", tmp_path / "q"]):
                p = run_ftune(args)
                assert p.returncode == 2, (args, p.stderr)
                for w in words:
                    assert w in p.stderr, (args, p.stderr)
                assert "hint:" in p.stderr
    finally:
        os.chdir(cwd)
