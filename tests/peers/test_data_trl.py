"""Data preparation against TRL: the token ids and labels ftune trains on, for the same JSONL file.
Formats: text, prompt/completion (strings, and lists of messages), messages, and Alpaca (against
TRL on the prompt/completion file docs/data.md says it becomes).

What is compared: `ftune train --dump-data OUT.jsonl` (the prepared examples, in file order, after
truncation to --seq-len and dropping) against TRL 1.16's SFTTrainer._prepare_dataset (the pinned
peer) with SFTConfig(max_length=SEQ), the default completion_only_loss for prompt/completion,
assistant_only_loss=True for messages, no packing and no shuffling. Ids and labels must be
identical, list for list (no tolerance: they are integers).

_prepare_dataset is called on an SFTTrainer made with __new__ and the three attributes that
__init__ would have set for these datasets (the tokenizer, completion_only_loss, and
chat_template=None since the templates carry {% generation %} markers); building a full trainer
would need a model of each tokenizer's vocabulary and adds nothing to the data path.

Tokenizers: two trained here with `tokenizers` (byte-level BPE and SentencePiece-style, the ones
of test_tokenizer.py), so the suite runs everywhere, and the real ones in ../shared/tokenizers
when present. Chat template: a ChatML-like one written here with {% generation %} around the
assistant content and its end-of-turn token, raising on turns that do not alternate, and a system
block with the tools (tojson) that a quarter of the conversations carry (as JSON strings, which
TRL json.loads). Messages are compared at --seq-len 64 (truncation, dropped examples) and 1024.

Templates without markers (the real Llama 3 and Qwen3 ones): ftune finds the assistant turns by
rendering prefixes (docs/data.md); the test checks turn by turn that the trained tokens, decoded
by transformers, are exactly each assistant turn's content and its end-of-turn token (Qwen3:
with the think block it renders for turns after the last user message, and with the reasoning
dropped from earlier turns, as its template does).
"""
import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import run_ok  # noqa: E402

SHARED = HERE.parents[2] / "shared" / "tokenizers"
SEQ = 64

TEMPLATE = (
    "{%- if tools -%}{{- '<|im_start|>system\\nTools: ' + (tools | tojson) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and loop.first -%}"
    "{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{%- set i = loop.index0 - (1 if messages[0]['role'] == 'system' else 0) -%}"
    "{%- if (message['role'] == 'user') != (i % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}{% generation %}{{- message['content'] + eos_token -}}"
    "{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")

WORDS = ("the cat sat on a warm mat while dogs ran through green fields , . ! ? über café naïve "
         "日本 語 42 3.14 x=1; print(x) tab\tnew").split(" ")


def sentence(r, lo=2, hi=14):
    s = " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi)))
    return s[0].upper() + s[1:] if s else s


def make_data(d, eos):
    r = random.Random(5)
    text = [{"text": sentence(r, 1, 40)} for _ in range(24)]
    text.append({"text": "ends with the eos already" + eos})
    text.append({"text": "line one\n\nline two  with  spaces "})
    pc = [{"prompt": sentence(r) + r.choice(["", " ", "\n", ": "]), "completion": sentence(r, 1, 30)}
          for _ in range(24)]
    pc.append({"prompt": "P: ", "completion": " answer" + eos})
    pc.append({"prompt": sentence(r, 40, 60), "completion": "truncated away"})  # prompt fills SEQ
    msgs = []
    for i in range(24):
        m = [{"role": "system", "content": sentence(r)}] if i % 3 == 0 else []
        for _ in range(r.randint(1, 3)):
            m.append({"role": "user", "content": sentence(r)})
            m.append({"role": "assistant", "content": sentence(r, 1, 12)})
        row = {"messages": m}
        if i % 4 == 0:  # (the first row too: Dataset.from_list takes its keys) a JSON string, as TRL recommends for Arrow datasets (json.loads'ed)
            row["tools"] = json.dumps([{"type": "function", "function": {
                "name": f"tool_{i}", "description": sentence(r),
                "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}])
        msgs.append(row)
    cpc = [{"prompt": m["messages"][:-1], "completion": m["messages"][-1:]} for m in msgs]
    assert any("tools" in m for m in msgs)
    files = {}
    for name, rows in (("text", text), ("pc", pc), ("messages", msgs), ("cpc", cpc)):
        p = d / f"{name}.jsonl"
        p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
        files[name] = p
    # Alpaca: ftune's own conversion, compared with TRL on the prompt/completion it documents
    al = [{"instruction": sentence(r), "input": r.choice(["", sentence(r)]), "output": sentence(r)}
          for _ in range(12)]
    p = d / "alpaca.jsonl"
    p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in al))
    files["alpaca"] = p
    return files, al


def alpaca_prompt(x):
    # Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca, PROMPT_DICT), as docs/data.md states
    if x["input"]:
        return ("Below is an instruction that describes a task, paired with an input that provides "
                "further context. Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{x['instruction']}\n\n### Input:\n{x['input']}\n\n### Response:\n")
    return ("Below is an instruction that describes a task. Write a response that appropriately "
            f"completes the request.\n\n### Instruction:\n{x['instruction']}\n\n### Response:\n")


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    run_ok(["init", "--arch", "llama", "--size", "tiny", "--vocab", "300", "--out", d / "m"])
    return json.loads((d / "m" / "config.json").read_text())


def model_folder(root, name, tok_json, tok_config, base_config):
    """A folder with the tokenizer and a config.json whose vocab covers it (--dump-data reads
    only the config, not the weights)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(tok_json, d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text(json.dumps(tok_config))
    from tokenizers import Tokenizer
    n = Tokenizer.from_file(str(tok_json)).get_vocab_size(with_added_tokens=True)
    cfg = dict(base_config, vocab_size=n + 8)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def tokenizers_dirs(tmp_path_factory, base_config):
    from test_tokenizer import train_bytelevel, train_metaspace
    root = tmp_path_factory.mktemp("toks")
    r = random.Random(3)
    texts = [sentence(r, 5, 40) for _ in range(3000)]
    out = {}
    train_bytelevel(root / "bl.json", texts)
    out["trained-bytelevel"] = model_folder(
        root, "trained-bytelevel", root / "bl.json",
        {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "chat_template": TEMPLATE}, base_config)
    train_metaspace(root / "ms.json", texts)
    out["trained-metaspace"] = model_folder(
        root, "trained-metaspace", root / "ms.json",
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}, base_config)
    for name in ("llama3", "qwen3", "smollm-135m", "llama2"):
        src = SHARED / name
        if (src / "tokenizer.json").exists():
            cfg = json.loads((src / "tokenizer_config.json").read_text())
            cfg["chat_template"] = TEMPLATE
            out[name] = model_folder(root, name, src / "tokenizer.json", cfg, base_config)
    return out


def trl_prepare(model_dir, path, assistant_only, seq=SEQ):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    ds = Dataset.from_list(rows)
    args = SFTConfig(output_dir=str(Path(path).parent / "trl-out"), max_length=seq,
                     assistant_only_loss=assistant_only, report_to=[], use_cpu=True, bf16=False,
                     shuffle_dataset=False)
    t = SFTTrainer.__new__(SFTTrainer)
    t._tokenizer = tok
    t.completion_only_loss = "prompt" in rows[0] and "completion" in rows[0]
    t.chat_template = None
    out = t._prepare_dataset(ds, tok, args, False, None, "train")
    return [(list(x["input_ids"]), list(x["labels"])) for x in out]


def ftune_prepare(model_dir, path, tmp, *extra, seq=SEQ):
    out = tmp / (Path(path).stem + "-ftune.jsonl")
    run_ok(["train", "--model", model_dir, "--data", path, "--seq-len", seq, "--dump-data", out,
            "--quiet", *extra])
    return [(x["input_ids"], x["labels"]) for x in map(json.loads, open(out))]


def compare(want, got, what):
    assert len(got) == len(want), f"{what}: {len(got)} examples, TRL has {len(want)}"
    for i, (w, g) in enumerate(zip(want, got)):
        assert g[0] == w[0], f"{what}: example {i} input_ids differ\n TRL   {w[0]}\n ftune {g[0]}"
        assert g[1] == w[1], f"{what}: example {i} labels differ\n TRL   {w[1]}\n ftune {g[1]}"


NAMES = ["trained-bytelevel", "trained-metaspace", "llama3", "qwen3", "smollm-135m", "llama2"]


@pytest.mark.parametrize("name", NAMES)
def test_formats_match_trl(name, tokenizers_dirs, tmp_path):
    if name not in tokenizers_dirs:
        pytest.skip(f"{SHARED / name} not present (the shared real tokenizers are optional)")
    mdir = tokenizers_dirs[name]
    eos = json.loads((mdir / "tokenizer_config.json").read_text())["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    files, alpaca = make_data(tmp_path, eos)
    for fmt, assistant_only in (("text", False), ("pc", False), ("messages", True), ("cpc", False)):
        want = trl_prepare(mdir, files[fmt], assistant_only)
        got = ftune_prepare(mdir, files[fmt], tmp_path)
        compare(want, got, f"{name} {fmt}")
        if fmt == "messages":
            assert all(any(l != -100 for l in lab) for _, lab in got)
            # long enough for every conversation, those with tools included
            want = trl_prepare(mdir, files[fmt], True, seq=1024)
            got = ftune_prepare(mdir, files[fmt], tmp_path, seq=1024)
            assert len(got) == 24
            compare(want, got, f"{name} {fmt} (seq 1024)")
    # Alpaca = prompt/completion with the documented prompt
    p = tmp_path / "alpaca-as-pc.jsonl"
    p.write_text("".join(json.dumps({"prompt": alpaca_prompt(x), "completion": x["output"]},
                                    ensure_ascii=False) + "\n" for x in alpaca))
    compare(trl_prepare(mdir, p, False, seq=256),
            ftune_prepare(mdir, files["alpaca"], tmp_path, seq=256), f"{name} alpaca")
    # --train-on-inputs: labels == input_ids for every format
    for fmt in ("pc", "messages"):
        for ids, labels in ftune_prepare(mdir, files[fmt], tmp_path, "--train-on-inputs"):
            assert labels == ids


# ---- templates without {% generation %}: turn by turn ----

def runs(labels):
    """Maximal runs of trained positions, as (start, end)."""
    out, s = [], None
    for i, l in enumerate(labels + [-100]):
        if l != -100 and s is None:
            s = i
        elif l == -100 and s is not None:
            out.append((s, i))
            s = None
    return out


def convs(r):
    out = []
    for i in range(10):
        m = [{"role": "system", "content": sentence(r)}] if i % 2 else []
        for _ in range(r.randint(1, 3)):
            m.append({"role": "user", "content": sentence(r)})
            m.append({"role": "assistant", "content": sentence(r, 1, 10)})
        out.append(m)
    return out


def check_turns(mdir, conversations, expected, tmp_path, extra=()):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(mdir))
    p = tmp_path / "conv.jsonl"
    p.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n"
                         for c in conversations))
    out = tmp_path / "dump.jsonl"
    run_ok(["train", "--model", mdir, "--data", p, "--seq-len", 4096, "--dump-data", out, "--quiet",
            *extra])
    got = [json.loads(l) for l in open(out)]
    assert len(got) == len(conversations)
    for c, g, want in zip(conversations, got, expected):
        # the ids are the template's rendering tokenized without special tokens (as TRL)
        text = tok.apply_chat_template(c, tokenize=False)
        assert g["input_ids"] == tok(text, add_special_tokens=False).input_ids
        turns = [tok.decode(g["input_ids"][a:b]) for a, b in runs(g["labels"])]
        assert turns == want, f"conversation {c}"


def real_folder(name, tmp_path, base_config):
    src = SHARED / name
    if not (src / "tokenizer.json").exists():
        pytest.skip(f"{src} not present (the shared real tokenizers are optional)")
    cfg = json.loads((src / "tokenizer_config.json").read_text())  # its own template, unmarked
    return model_folder(tmp_path, name, src / "tokenizer.json", cfg, base_config)


def test_llama3_turns_without_markers(tmp_path, base_config):
    src = real_folder("llama3", tmp_path, base_config)
    r = random.Random(11)
    cs = convs(r)
    # the Llama 3 template trims the content and ends each turn with <|eot_id|>
    want = [[m["content"].strip() + "<|eot_id|>" for m in c if m["role"] == "assistant"] for c in cs]
    check_turns(src, cs, want, tmp_path)


def test_qwen3_turns_without_markers(tmp_path, base_config):
    src = real_folder("qwen3", tmp_path, base_config)
    r = random.Random(12)
    cs = convs(r)
    # some assistant turns carry reasoning, which Qwen3 drops from turns before the last user
    for c in cs[::2]:
        for m in c:
            if m["role"] == "assistant":
                m["content"] = "<think>\n" + sentence(r) + "\n</think>\n\n" + m["content"]
    want = []
    for c in cs:
        last_user = max(i for i, m in enumerate(c) if m["role"] == "user")
        w = []
        for i, m in enumerate(c):
            if m["role"] != "assistant":
                continue
            content = m["content"]
            reasoning = ""
            if "</think>" in content:
                reasoning = content.split("</think>")[0].split("<think>")[-1].strip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            if i > last_user:  # rendered with its think block (empty when there is none)
                w.append("<think>\n" + reasoning + "\n</think>\n\n" + content + "<|im_end|>")
            else:
                w.append(content + "<|im_end|>")
        want.append(w)
    check_turns(src, cs, want, tmp_path)


@pytest.mark.parametrize("name", ["trained-bytelevel", "trained-metaspace", "llama3", "qwen3"])
def test_unmarked_template_matches_trl_marked(name, tokenizers_dirs, tmp_path):
    """ftune's turn finding without markers (docs/data.md) against TRL's assistant_only_loss on
    the same template with {% generation %} markers: the test template with its markers removed
    renders the same text, so the ids and the masks must be identical."""
    if name not in tokenizers_dirs:
        pytest.skip(f"{SHARED / name} not present (the shared real tokenizers are optional)")
    mdir = tokenizers_dirs[name]
    eos = json.loads((mdir / "tokenizer_config.json").read_text())["eos_token"]
    files, _ = make_data(tmp_path, eos["content"] if isinstance(eos, dict) else eos)
    plain = tmp_path / "unmarked.jinja"
    plain.write_text(TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    want = trl_prepare(mdir, files["messages"], True)
    got = ftune_prepare(mdir, files["messages"], tmp_path, "--chat-template", plain)
    compare(want, got, f"{name} messages, template without markers")


# ---- issue 15: an assistant message with empty content ----

def empty_content_convs(r):
    """Conversations where some assistant turns are "" (first, middle and last turns) or only
    whitespace."""
    out = []
    for i in range(8):
        m = [{"role": "system", "content": sentence(r)}] if i % 2 else []
        k = r.randint(1, 3)
        for j in range(k):
            m.append({"role": "user", "content": sentence(r)})
            empty = (i + j) % 2 == 0 or (i == 7 and j == k - 1)
            m.append({"role": "assistant", "content": ("" if i != 5 else "  ") if empty
                      else sentence(r, 1, 10)})
        out.append(m)
    return out


@pytest.mark.parametrize("name", ["trained-bytelevel", "trained-metaspace", "llama3", "qwen3"])
def test_empty_assistant_content_matches_trl(name, tokenizers_dirs, tmp_path):
    """An assistant message with content "" trains only its end-of-turn token: TRL's
    assistant_only_loss with the {% generation %} template (the content and eos_token marked)
    against ftune with the same template (its spans) and with the markers removed (ftune's own
    turn finding, masks.c, which once trained the user's end-of-turn token and the assistant
    header instead)."""
    if name not in tokenizers_dirs:
        pytest.skip(f"{SHARED / name} not present (the shared real tokenizers are optional)")
    mdir = tokenizers_dirs[name]
    p = tmp_path / "empty.jsonl"
    p.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n"
                         for c in empty_content_convs(random.Random(21))))
    want = trl_prepare(mdir, p, True, seq=1024)
    compare(want, ftune_prepare(mdir, p, tmp_path, seq=1024), f"{name} empty content")
    plain = tmp_path / "unmarked.jinja"
    plain.write_text(TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    compare(want, ftune_prepare(mdir, p, tmp_path, "--chat-template", plain, seq=1024),
            f"{name} empty content, template without markers")


def test_llama3_empty_assistant_content(tmp_path, base_config):
    """The real Llama 3 template (no markers, prints an assistant header after every
    conversation): an empty assistant turn trains <|eot_id|> alone, not the user's <|eot_id|>
    and the header before it."""
    src = real_folder("llama3", tmp_path, base_config)
    cs = empty_content_convs(random.Random(22))
    want = [[m["content"].strip() + "<|eot_id|>" for m in c if m["role"] == "assistant"] for c in cs]
    check_turns(src, cs, want, tmp_path)


def test_qwen3_empty_assistant_content(tmp_path, base_config):
    """The real Qwen3 template: an empty turn after the last user message is rendered with an
    empty think block, which the model writes, so it is trained with <|im_end|>; an earlier
    empty turn trains <|im_end|> alone."""
    src = real_folder("qwen3", tmp_path, base_config)
    cs = empty_content_convs(random.Random(23))
    want = []
    for c in cs:
        last_user = max(i for i, m in enumerate(c) if m["role"] == "user")
        want.append([("<think>\n\n</think>\n\n" if i > last_user else "") + m["content"].strip()
                     + "<|im_end|>" for i, m in enumerate(c) if m["role"] == "assistant"])
    check_turns(src, cs, want, tmp_path)


# ---- issue 15: ShareGPT rows, human/gpt roles, JSON array files ----

# docs/data.md: ShareGPT's roles as Axolotl's and LLaMA-Factory's readers map them
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "observation": "tool"}


def chatml_after_mapping(row):
    """What ftune must train on for a ShareGPT row: TRL's maybe_convert_to_chatml (which renames
    conversations/from/value to messages/role/content and keeps the roles), then the documented
    role mapping; a function_call turn becomes an assistant turn with tool_calls (and content
    "", which templates such as Qwen3's read), and the
    system column a leading system message."""
    from trl.data_utils import maybe_convert_to_chatml
    row = maybe_convert_to_chatml(json.loads(json.dumps(row)))
    msgs = []
    for m in row["messages"]:
        if m["role"] == "function_call":
            msgs.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": json.loads(m["content"])}]})
        else:
            msgs.append({"role": SHAREGPT_ROLES[m["role"]], "content": m["content"]})
    system = row.pop("system", None)
    if system and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system})
    row["messages"] = msgs
    return row


def to_sharegpt(row, r):
    back = {"user": "human", "assistant": "gpt", "system": "system"}
    out = {"conversations": [{"from": back[m["role"]], "value": m["content"]}
                             for m in row["messages"]]}
    if "tools" in row:
        out["tools"] = row["tools"]
    if out["conversations"][0]["from"] != "system" and r.random() < 0.5:
        out["system"] = sentence(r)  # LLaMA-Factory's system column
    return out


def write_rows(path, rows, array=False):
    if array:
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    return path


@pytest.mark.parametrize("name", ["trained-bytelevel", "trained-metaspace", "llama3"])
def test_sharegpt_matches_trl(name, tokenizers_dirs, tmp_path):
    """ShareGPT rows ({"conversations": [{"from": "human", "value": ...}, ...]}, with a system
    column in some), messages rows with human/gpt roles, and the same rows as one JSON array
    (a .json file) against TRL's assistant_only_loss on the rows after maybe_convert_to_chatml
    and the role mapping: ids and labels identical."""
    if name not in tokenizers_dirs:
        pytest.skip(f"{SHARED / name} not present (the shared real tokenizers are optional)")
    mdir = tokenizers_dirs[name]
    eos = json.loads((mdir / "tokenizer_config.json").read_text())["eos_token"]
    files, _ = make_data(tmp_path, eos["content"] if isinstance(eos, dict) else eos)
    msgs = [json.loads(l) for l in open(files["messages"], encoding="utf-8")]
    r = random.Random(31)
    sg = [to_sharegpt(m, r) for m in msgs]
    ref = write_rows(tmp_path / "mapped.jsonl", [chatml_after_mapping(x) for x in sg])
    want = trl_prepare(mdir, ref, True, seq=1024)
    assert any(x.get("system") for x in sg)
    compare(want, ftune_prepare(mdir, write_rows(tmp_path / "sg.jsonl", sg), tmp_path, seq=1024),
            f"{name} sharegpt")
    compare(want, ftune_prepare(mdir, write_rows(tmp_path / "sg.json", sg, True), tmp_path,
                                seq=1024), f"{name} sharegpt, JSON array")
    # messages rows with ShareGPT's role names
    hg = [{**m, "messages": [{**x, "role": {"user": "human", "assistant": "gpt"}.get(x["role"],
                                                                                   x["role"])}
                             for x in m["messages"]]} for m in msgs]
    compare(trl_prepare(mdir, files["messages"], True, seq=1024),
            ftune_prepare(mdir, write_rows(tmp_path / "hg.jsonl", hg), tmp_path, seq=1024),
            f"{name} messages with human/gpt roles")


def test_sharegpt_tool_turns_match_trl(tmp_path, base_config):
    """observation (a tool's result) and function_call (the assistant calling a tool) turns,
    LLaMA-Factory's, and tool: rendered by the real Qwen3 template (which renders tool calls and
    results), compared with TRL on the mapped rows, every token trained on both sides
    (--train-on-inputs, assistant_only_loss=False: the template has no markers)."""
    mdir = real_folder("qwen3", tmp_path, base_config)
    r = random.Random(32)
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    sg = []
    for i in range(6):
        conv = [{"from": "human", "value": sentence(r)},
                {"from": "function_call", "value": json.dumps(call)},
                {"from": "observation" if i % 2 else "tool", "value": json.dumps({"t": i})},
                {"from": "gpt", "value": sentence(r)}]
        sg.append({"conversations": conv, "system": sentence(r)})
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    for x in sg:
        x["tools"] = json.dumps(tools)
    ref = write_rows(tmp_path / "mapped.jsonl", [chatml_after_mapping(x) for x in sg])
    want = trl_prepare(mdir, ref, False, seq=2048)
    got = ftune_prepare(mdir, write_rows(tmp_path / "sg.jsonl", sg), tmp_path,
                        "--train-on-inputs", seq=2048)
    compare(want, got, "qwen3 sharegpt with tool turns")
    # and without --train-on-inputs the function_call turn is the assistant's
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(mdir))
    got = ftune_prepare(mdir, tmp_path / "sg.jsonl", tmp_path, seq=2048)
    turns = [tok.decode(got[0][0][a:b]) for a, b in runs(got[0][1])]
    assert len(turns) == 2 and "<tool_call>" in turns[0] and "get_weather" in turns[0], turns


def test_sharegpt_unknown_role_refused(tokenizers_dirs, tmp_path):
    from conftest import run_ftune
    mdir = tokenizers_dirs["trained-bytelevel"]
    f = write_rows(tmp_path / "bad.jsonl", [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]}])
    p = run_ftune(["train", "--model", mdir, "--data", f, "--dump-data", tmp_path / "o.jsonl"])
    assert p.returncode == 2, p.stderr
    assert f'{f}:2: field "conversations[1].from": unknown role "bot"' in p.stderr, p.stderr
    assert "human, user, gpt, assistant" in p.stderr
    f = write_rows(tmp_path / "bad2.jsonl", [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}])
    p = run_ftune(["train", "--model", mdir, "--data", f, "--dump-data", tmp_path / "o.jsonl"])
    assert p.returncode == 2, p.stderr
    assert f'{f}:1: field "conversations[1].value" is missing' in p.stderr, p.stderr
    g = write_rows(tmp_path / "bad.json", [{"text": "a"}, {"text": 3}], True)
    p = run_ftune(["train", "--model", mdir, "--data", g, "--dump-data", tmp_path / "o.jsonl"])
    assert p.returncode == 2 and f'{g}:5 (item 1): field "text"' in p.stderr, p.stderr
