"""Bad data files: each must stop `ftune train` with exit code 2 and a message naming the file,
the line and the field (what was expected, and a hint), or, where training can sensibly go on,
print a counted warning and train (docs/data.md lists which).

No peer computes these; the expected text is what docs/data.md promises: "FILE:LINE" and the
field name in the message. The model is a tiny random one (`ftune init`) whose vocabulary covers
a byte-level BPE tokenizer trained here, with the ChatML-like {% generation %} template of
test_data_trl.py, which raises on conversations whose roles do not alternate.
"""
import json
import random
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import run_ftune, run_ok  # noqa: E402
from test_data_trl import TEMPLATE, sentence  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from test_tokenizer import train_bytelevel
    from tokenizers import Tokenizer
    d = tmp_path_factory.mktemp("bad")
    r = random.Random(3)
    train_bytelevel(d / "tok.json", [sentence(r, 5, 40) for _ in range(2000)])
    n = Tokenizer.from_file(str(d / "tok.json")).get_vocab_size(with_added_tokens=True)
    m = d / "model"
    run_ok(["init", "--arch", "llama", "--size", "tiny", "--vocab", n, "--out", m])
    (m / "tokenizer.json").write_bytes((d / "tok.json").read_bytes())
    (m / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "chat_template": TEMPLATE}))
    return m


def write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


GOOD_MSG = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}

CASES = {
    # name: (lines, line number in the message, words the message must hold)
    "not_json": ([{"text": "a"}, "{\"text\": \"b\"", {"text": "c"}], 2, ["not valid JSON"]),
    "not_object": ([{"text": "a"}, "[1, 2]"], 2, ["not one JSON object"]),
    "missing_key": ([{"text": "a"}, {"txt": "b"}], 2, ['field "text" is missing']),
    "wrong_type": ([{"text": "a"}, {"text": 5}], 2, ['field "text"', "expected a string", "number"]),
    "completion_type": ([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": [1]}],
                        2, ['field "completion"', "expected a string"]),
    "unknown_format": ([{"question": "a", "answer": "b"}], 1, ["cannot tell the format", "question"]),
    "messages_type": ([GOOD_MSG, {"messages": "hello"}], 2, ['field "messages"', "list of messages"]),
    "content_type": ([GOOD_MSG, {"messages": [{"role": "user", "content": 3}]}], 2,
                     ['field "messages[0].content"', "expected a string"]),
    "role_missing": ([GOOD_MSG, {"messages": [{"content": "x"}]}], 2, ['field "messages[0]"', "role"]),
    "not_alternating": ([GOOD_MSG, {"messages": [{"role": "user", "content": "a"},
                                                 {"role": "user", "content": "b"}]}], 2,
                        ['field "messages"', "Conversation roles must alternate"]),
    "ids_out_of_vocab": ([{"input_ids": [1, 2, 3]}, {"input_ids": [1, 10 ** 7]}], 2,
                         ['field "input_ids"', "outside the vocabulary"]),
    "labels_length": ([{"input_ids": [1, 2, 3], "labels": [1, 2]}], 1, ['field "labels"', "has 2 items"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_line(name, model, tmp_path):
    lines, line, words = CASES[name]
    f = write(tmp_path / "data.jsonl", lines)
    p = run_ftune(["train", "--model", model, "--data", f, "--out", tmp_path / "run", "--steps", 1])
    assert p.returncode == 2, p.stderr
    assert f"{f}:{line}" in p.stderr, p.stderr
    for w in words:
        assert w in p.stderr, (w, p.stderr)
    assert "hint:" in p.stderr


def test_empty_file_and_folder(model, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    p = run_ftune(["train", "--model", model, "--data", f, "--out", tmp_path / "run"])
    assert p.returncode == 2 and f"{f}: the file is empty" in p.stderr, p.stderr
    f.write_text("\n  \n")
    p = run_ftune(["train", "--model", model, "--data", f, "--out", tmp_path / "run"])
    assert p.returncode == 2 and "no examples" in p.stderr, p.stderr
    d = tmp_path / "folder"
    d.mkdir()
    p = run_ftune(["train", "--model", model, "--data", d, "--out", tmp_path / "run"])
    assert p.returncode == 2 and "no .jsonl or .txt files" in p.stderr, p.stderr


def test_bad_weights(model, tmp_path):
    a = write(tmp_path / "a.jsonl", [{"text": "a"}])
    b = write(tmp_path / "b.jsonl", [{"text": "b"}])
    p = run_ftune(["train", "--model", model, "--data", f"{a}:0", "--out", tmp_path / "run"])
    assert p.returncode == 2 and "not a positive number" in p.stderr, p.stderr
    p = run_ftune(["train", "--model", model, "--data", f"{a}:0.5", "--data", b, "--out",
                   tmp_path / "run"])
    assert p.returncode == 2 and "1 of 2 sources have a weight" in p.stderr, p.stderr


def test_drop_long_warns_and_trains(model, tmp_path):
    """--drop-long: over-long examples are dropped with a counted warning naming the first one;
    training goes on. If nothing is left, exit 2 naming the first dropped example."""
    long = {"text": " ".join(["word"] * 200)}
    f = write(tmp_path / "d.jsonl", [{"text": "short one"}, long, {"text": "another"}, long])
    p = run_ok(["train", "--model", model, "--data", f, "--out", tmp_path / "run", "--steps", 1,
                "--seq-len", 32, "--drop-long", "--threads", 1])
    assert f"warning: 2 examples longer than --seq-len 32 were dropped (--drop-long), the first at {f}:2" \
        in p.stderr, p.stderr
    cfg = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert cfg["resolved"]["examples"] == 2 and cfg["resolved"]["dropped_long_examples"] == 2
    # without --drop-long they are truncated (counted) and kept
    p = run_ok(["train", "--model", model, "--data", f, "--out", tmp_path / "run2", "--steps", 1,
                "--seq-len", 32, "--threads", 1])
    assert "2 truncated to 32" in p.stderr, p.stderr
    g = write(tmp_path / "all_long.jsonl", [long, long])
    p = run_ftune(["train", "--model", model, "--data", g, "--out", tmp_path / "run3",
                   "--seq-len", 32, "--drop-long"])
    assert p.returncode == 2 and "no examples left" in p.stderr and f"{g}:1" in p.stderr, p.stderr


@pytest.mark.parametrize("content", ["missing", None])
def test_message_without_content_is_refused(model, tmp_path, content):
    """issue 15: a message with no "content" (or null) is refused with the file, the line and the
    field (a template would render it as "" or "None" and train on that silently); a turn that
    calls tools (tool_calls) may leave it out."""
    bad = {"role": "assistant"} if content == "missing" else {"role": "assistant", "content": None}
    f = write(tmp_path / "c.jsonl", [GOOD_MSG, {"messages": [{"role": "user", "content": "a"}, bad]}])
    p = run_ftune(["train", "--model", model, "--data", f, "--out", tmp_path / "run"])
    assert p.returncode == 2, p.stderr
    assert f'{f}:2: field "messages[1].content" is {"missing" if content else "null"}' in p.stderr, \
        p.stderr
    assert "hint:" in p.stderr
