"""Chat templates: `ftune chat-template` against transformers' apply_chat_template.

What is compared, and with what tolerance:
  * rendered text: byte-identical to transformers 5.23
    `tokenizer.apply_chat_template(conversation, tools=..., tokenize=False,
    add_generation_prompt=..., **template_args)` (tolerance: none; one missing newline would
    teach a model the wrong format). Run for the templates of ../shared/tokenizers (llama3, qwen3;
    skipped with a message when that folder is absent) and for the real templates this test
    carries in tests/peers/templates/ (sources in the README there), each over conversations with
    a system prompt, several turns, the assistant turn last and not last, add_generation_prompt
    true and false, tools / tool calls / tool results, reasoning_content and enable_thinking.
    When transformers raises for a case (e.g. Gemma's "System role not supported"), ftune must
    exit 2 with the same message.
  * the same comparison over every chat template that the pinned TRL package ships
    (trl/chat_templates/*.jinja: Llama 3.x, Qwen 2.5/3/3.5/3.6, Gemma 1-4, Phi-3/3.5, DeepSeek,
    Cohere, GLM-4, gpt-oss, LFM2, Nemotron, SmolVLM, ...; about 70 files), on a smaller set of
    conversations per template to keep the run short.
  * {% generation %} spans: ftune's byte spans, turned into character offsets, equal the
    generation indices transformers' render_jinja_template(..., return_assistant_tokens_mask=True)
    records, and (with the shared Llama 3 tokenizer) the token mask they induce equals
    apply_chat_template(..., return_assistant_tokens_mask=True)["assistant_masks"] exactly.
  * bad input: a template syntax error, a conversation missing "role", a conversation file that
    is not JSON, raise_exception in the template: exit code 2 and a message naming the file and
    position (template LINE:COL checked against where the error was planted and against jinja2's
    line number; message index; JSON line:col).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FTUNE = os.environ.get("FTUNE_BIN", str(ROOT / "build" / "ftune"))
TEMPLATES = Path(__file__).resolve().parent / "templates"
SHARED = ROOT.parent / "shared" / "tokenizers"

transformers = pytest.importorskip("transformers")
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

BOS, EOS = "<s>", "</s>"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CONVS = {
    "system_multi_user_last": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi there!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "What is 2 + 2?"},
    ],
    "system_assistant_last": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ],
    "no_system_multi": [
        {"role": "user", "content": "  Padded question with spaces  \n"},
        {"role": "assistant", "content": "\tAn answer with a tab and a trailing newline\n"},
        {"role": "user", "content": "Unicode: héllo 日本語 emoji 👩‍👩‍👧 \"quotes\" and {braces} {{ not jinja }}"},
        {"role": "assistant", "content": "Got it: 日本語."},
    ],
    "single_user": [{"role": "user", "content": "Just one question?"}],
}

# content given as a list of typed blocks (the multimodal message format)
BLOCKS_CONV = [
    {"role": "system", "content": [{"type": "text", "text": "Describe things."}]},
    {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "now?"}]},
]

TOOL_CONV = {
    "messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Zürich?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call12345",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}},
                }
            ],
        },
        {"role": "tool", "content": "{\"temp\": 21.5, \"sky\": \"sunny\"}", "tool_call_id": "call12345", "name": "get_weather"},
        {"role": "assistant", "content": "It is 21.5 °C and sunny in Zürich."},
        {"role": "user", "content": "Thanks!"},
    ],
    "tools": [WEATHER_TOOL],
}

REASONING_CONV = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "Is 91 prime?"},
    {"role": "assistant", "content": "No: 91 = 7 × 13.", "reasoning_content": "Try 7: 7 × 13 = 91."},
    {"role": "user", "content": "And 97?"},
    {"role": "assistant", "content": "<think>\nCheck primes up to 9.\n</think>\n\nYes, 97 is prime."},
]


def ftune(*args, input_bytes=None):
    return subprocess.run([FTUNE, *args], capture_output=True, input=input_bytes, timeout=60)


@pytest.fixture(scope="module")
def dummy_model(tmp_path_factory):
    """A model folder whose tokenizer_config.json holds bos/eos/unk/pad, saved by transformers."""
    from tokenizers import Tokenizer, models

    d = tmp_path_factory.mktemp("dummy_model")
    vocab = {"<unk>": 0, BOS: 1, EOS: 2, "<pad>": 3}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token=BOS, eos_token=EOS, unk_token="<unk>", pad_token="<pad>",
    )
    tok.save_pretrained(d)
    return d, transformers.AutoTokenizer.from_pretrained(d)


def expected(tok, conv, agp, template=None, tools=None, kwargs=None):
    try:
        return tok.apply_chat_template(conv, tools=tools, chat_template=template, tokenize=False,
                                       add_generation_prompt=agp, **(kwargs or {})), None
    except Exception as e:  # the template refused the conversation
        return None, str(e)


def check_case(tmp_path, model_dir, tok, conv, agp, template_file=None, tools=None, kwargs=None):
    template = template_file.read_text() if template_file else None
    want, err = expected(tok, conv, agp, template, tools, kwargs)
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps({"messages": conv, "tools": tools} if tools else conv, ensure_ascii=False))
    args = ["chat-template", "--model", str(model_dir), "--chat", str(chat)]
    if template_file:
        args += ["--chat-template", str(template_file)]
    if agp:
        args.append("--add-generation-prompt")
    for k, v in (kwargs or {}).items():
        args += ["--template-arg", f"{k}={json.dumps(v)}"]
    r = ftune(*args)
    if err is not None:
        assert r.returncode == 2, f"transformers raised {err!r} but ftune exited {r.returncode}"
        assert err in r.stderr.decode(), f"ftune's message {r.stderr.decode()!r} lacks {err!r}"
        return "raised"
    assert r.returncode == 0, r.stderr.decode()
    got = r.stdout.decode("utf-8")
    assert got == want, f"\n--- transformers\n{want!r}\n--- ftune\n{got!r}"
    return "ok"


CARRIED = sorted(p.name for p in TEMPLATES.glob("*.jinja"))


@pytest.mark.parametrize("template", CARRIED)
def test_carried_templates_match_transformers(template, dummy_model, tmp_path):
    model_dir, tok = dummy_model
    outcomes = []
    for name, conv in CONVS.items():
        for agp in (False, True):
            outcomes.append(check_case(tmp_path, model_dir, tok, conv, agp, TEMPLATES / template))
    for agp in (False, True):
        outcomes.append(check_case(tmp_path, model_dir, tok, TOOL_CONV["messages"], agp, TEMPLATES / template,
                                   tools=TOOL_CONV["tools"]))
        outcomes.append(check_case(tmp_path, model_dir, tok, REASONING_CONV, agp, TEMPLATES / template))
    assert "ok" in outcomes, "every case raised: the comparison would be vacuous"


def trl_templates():
    try:
        import trl
    except ImportError:
        return []
    return sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))


@pytest.mark.parametrize("template", trl_templates(), ids=lambda p: p.name)
def test_trl_templates_match_transformers(template, dummy_model, tmp_path):
    model_dir, tok = dummy_model
    cases = [
        (CONVS["system_multi_user_last"], False, None, None),
        (CONVS["system_multi_user_last"], True, None, None),
        (CONVS["no_system_multi"], False, None, None),
        (TOOL_CONV["messages"], True, TOOL_CONV["tools"], None),
        (REASONING_CONV, False, None, None),
        (REASONING_CONV[:-1], True, None, {"enable_thinking": False}),
        (BLOCKS_CONV, True, None, None),
    ]
    outcomes = [check_case(tmp_path, model_dir, tok, conv, agp, template, tools=tools, kwargs=kw)
                for conv, agp, tools, kw in cases]
    assert "ok" in outcomes


def shared_dir(name):
    d = SHARED / name
    if not d.is_dir():
        pytest.skip(f"{d} is absent (the shared real tokenizers live beside the project); skipping")
    return d


@pytest.mark.parametrize("model", ["llama3", "qwen3"])
def test_shared_templates_match_transformers(model, tmp_path):
    d = shared_dir(model)
    tok = transformers.AutoTokenizer.from_pretrained(d)
    n_ok = 0
    for conv in CONVS.values():
        for agp in (False, True):
            n_ok += check_case(tmp_path, d, tok, conv, agp) == "ok"
    for agp in (False, True):
        n_ok += check_case(tmp_path, d, tok, REASONING_CONV, agp) == "ok"
    if model == "qwen3":
        for agp in (False, True):
            n_ok += check_case(tmp_path, d, tok, TOOL_CONV["messages"], agp, tools=TOOL_CONV["tools"]) == "ok"
            for think in (False, True):
                n_ok += check_case(tmp_path, d, tok, CONVS["system_multi_user_last"], agp,
                                   kwargs={"enable_thinking": think}) == "ok"
                n_ok += check_case(tmp_path, d, tok, REASONING_CONV[:-1], agp, kwargs={"enable_thinking": think}) == "ok"
    assert n_ok >= 8


def test_smollm_has_no_template_and_says_so(tmp_path):
    d = shared_dir("smollm-135m")
    chat = tmp_path / "c.json"
    chat.write_text(json.dumps(CONVS["single_user"]))
    r = ftune("chat-template", "--model", str(d), "--chat", str(chat))
    tok = transformers.AutoTokenizer.from_pretrained(d)
    assert tok.chat_template is None  # transformers agrees there is none
    assert r.returncode == 2 and b"no chat template" in r.stderr


def ftune_spans(model_dir, template_file, conv, tmp_path):
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(conv, ensure_ascii=False))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(template_file), "--spans")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    text = out["text"]
    raw = text.encode("utf-8")
    # byte offsets -> character offsets (transformers counts characters)
    return text, [(len(raw[:b].decode("utf-8")), len(raw[:e].decode("utf-8"))) for b, e in out["spans"]]


@pytest.mark.parametrize("template", ["qwen3_training.jinja", "llama3_training.jinja"])
def test_generation_spans_match_transformers(template, dummy_model, tmp_path):
    model_dir, tok = dummy_model
    tpl = (TEMPLATES / template).read_text()
    n_spans = 0
    for conv in [CONVS["system_multi_user_last"], CONVS["no_system_multi"], REASONING_CONV]:
        text, spans = ftune_spans(model_dir, TEMPLATES / template, conv, tmp_path)
        rendered, indices = render_jinja_template(conversations=[conv], chat_template=tpl,
                                                  return_assistant_tokens_mask=True,
                                                  **tok.special_tokens_map)
        assert text == rendered[0]
        assert spans == [tuple(x) for x in indices[0]]
        n_spans += len(spans)
    assert n_spans >= 4


def test_generation_mask_matches_transformers_assistant_masks(tmp_path):
    d = shared_dir("llama3")
    tok = transformers.AutoTokenizer.from_pretrained(d)
    conv = CONVS["no_system_multi"]
    text, spans = ftune_spans(d, TEMPLATES / "llama3_training.jinja", conv, tmp_path)
    want = tok.apply_chat_template(conv, chat_template=(TEMPLATES / "llama3_training.jinja").read_text(),
                                   tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    enc = tok(text, add_special_tokens=False)
    assert enc["input_ids"] == want["input_ids"]
    mask = [0] * len(enc["input_ids"])
    for b, e in spans:  # the rule transformers applies to its character indices
        s, t = enc.char_to_token(b), enc.char_to_token(e - 1)
        for k in range(s, t + 1):
            mask[k] = 1
    assert mask == want["assistant_masks"]
    assert sum(mask) > 0


# ---- bad input ----

def test_template_syntax_error_names_line_and_column(dummy_model, tmp_path):
    import jinja2

    model_dir, _ = dummy_model
    bad = tmp_path / "bad.jinja"
    # line 3, column 12: an unclosed parenthesis inside the expression
    src = "{% for m in messages %}\n{{ m.content }}\n{{ (m.role + }}\n{% endfor %}"
    bad.write_text(src)
    with pytest.raises(jinja2.TemplateSyntaxError) as ei:
        transformers.utils.chat_template_utils._compile_jinja_template(src)
    assert ei.value.lineno == 3
    chat = tmp_path / "c.json"
    chat.write_text(json.dumps(CONVS["single_user"]))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(bad))
    msg = r.stderr.decode()
    assert r.returncode == 2, msg
    assert f"{bad}:3:" in msg and "syntax error" in msg, msg

    bad.write_text("{% if messages %}\nno end")
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(bad))
    assert r.returncode == 2 and f"{bad}:1:4" in r.stderr.decode() and "endif" in r.stderr.decode()

    bad.write_text("{{ messages | nosuchfilter }}")
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(bad))
    assert r.returncode == 2 and f"{bad}:1:15" in r.stderr.decode() and "nosuchfilter" in r.stderr.decode()


def test_conversation_missing_role(dummy_model, tmp_path):
    model_dir, _ = dummy_model
    chat = tmp_path / "c.json"
    chat.write_text(json.dumps([{"role": "user", "content": "a"}, {"content": "no role here"}]))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(TEMPLATES / "chatml.jinja"))
    msg = r.stderr.decode()
    assert r.returncode == 2, msg
    assert f"{chat}: message 1" in msg and '"role"' in msg, msg


def test_conversation_not_json(dummy_model, tmp_path):
    model_dir, _ = dummy_model
    chat = tmp_path / "c.json"
    chat.write_text('[{"role": "user",\n  "content": oops}]')
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(TEMPLATES / "chatml.jinja"))
    msg = r.stderr.decode()
    assert r.returncode == 2 and f"{chat}:2:" in msg, msg


def test_raise_exception_reaches_the_user(dummy_model, tmp_path):
    model_dir, tok = dummy_model
    conv = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    tpl = TEMPLATES / "mistral_v1.jinja"
    _, err = expected(tok, conv, False, tpl.read_text())
    assert err == "Conversation roles must alternate user/assistant/user/assistant/..."
    chat = tmp_path / "c.json"
    chat.write_text(json.dumps(conv))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(chat), "--chat-template", str(tpl))
    msg = r.stderr.decode()
    assert r.returncode == 2 and err in msg and f"{tpl}:1:" in msg, msg


# ---- issue 15.14: a JSONL file of conversations renders every line ----

def test_jsonl_renders_every_line(dummy_model, tmp_path):
    """`--chat FILE.jsonl` (a training file of messages rows, blank lines and tools included):
    every line is rendered, each after a line "==> FILE:LINE <==" and followed by a newline, and
    each rendering byte-identical to transformers' apply_chat_template of that line; with
    --spans, one JSON object per line with its line number. It once rendered line 1 alone and
    said nothing. A single conversation's output is unchanged (no header, nothing added)."""
    model_dir, tok = dummy_model
    template_file = TEMPLATES / "chatml.jinja"
    template = template_file.read_text()
    rows = [{"messages": CONVS["system_multi_user_last"]}, None, CONVS["no_system_multi"],
            {"messages": CONVS["single_user"], "tools": [WEATHER_TOOL]}]
    f = tmp_path / "train.jsonl"
    f.write_text("".join((json.dumps(r, ensure_ascii=False) if r is not None else "  ") + "\n"
                         for r in rows))
    want = ""
    for i, r in enumerate(rows):
        if r is None:
            continue
        conv, tools = (r["messages"], r.get("tools")) if isinstance(r, dict) else (r, None)
        text, err = expected(tok, conv, True, template, tools)
        assert err is None, err
        want += f"==> {f}:{i + 1} <==\n{text}\n"
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(f), "--chat-template",
              str(template_file), "--add-generation-prompt")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == want
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(f), "--chat-template",
              str(template_file), "--spans")
    got = [json.loads(l) for l in r.stdout.decode().splitlines()]
    assert [g["line"] for g in got] == [1, 3, 4]
    assert got[1]["text"] == expected(tok, CONVS["no_system_multi"], False, template)[0]
    # an error names the line
    f.write_text(json.dumps(CONVS["single_user"]) + "\n" + json.dumps({"msgs": []}) + "\n")
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(f), "--chat-template",
              str(template_file))
    assert r.returncode == 2 and f"{f}:2" in r.stderr.decode() and b"messages" in r.stderr


def test_tokenize_refuses_jsonl_chat(tmp_path):
    """`ftune tokenize --chat` takes one conversation: a JSONL file is refused (exit 2), not read
    to its first line."""
    model_dir = shared_dir("llama3")
    f = tmp_path / "two.jsonl"
    f.write_text(json.dumps(CONVS["single_user"]) + "\n" + json.dumps(CONVS["single_user"]) + "\n")
    r = ftune("tokenize", "--model", str(model_dir), "--chat", str(f), "--chat-template",
              str(TEMPLATES / "chatml.jinja"))
    assert r.returncode == 2 and b"more than one JSON value" in r.stderr, r.stderr


def test_sharegpt_rows_render_as_trained(dummy_model, tmp_path):
    """A ShareGPT training file (and messages rows with human/gpt roles) renders as training
    reads it: roles mapped as docs/data.md says, the system column in front; the same text as
    transformers' apply_chat_template of the mapped rows (test_data_trl.chatml_after_mapping)."""
    from test_data_trl import chatml_after_mapping
    model_dir, tok = dummy_model
    template_file = TEMPLATES / "chatml.jinja"
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}],
             "system": "Be brief."},
            {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                               {"from": "gpt", "value": ""}]}]
    f = tmp_path / "sg.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    want = "".join(f"==> {f}:{i + 1} <==\n" + expected(tok, chatml_after_mapping(r)["messages"],
                                                       False, template_file.read_text())[0] + "\n"
                   for i, r in enumerate(rows))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(f), "--chat-template",
              str(template_file))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == want
    g = tmp_path / "hg.json"
    g.write_text(json.dumps({"messages": [{"role": "human", "content": "Hi"},
                                          {"role": "gpt", "content": "Yo"}]}))
    r = ftune("chat-template", "--model", str(model_dir), "--chat", str(g), "--chat-template",
              str(template_file))
    assert r.stdout.decode() == expected(tok, [{"role": "user", "content": "Hi"},
                                               {"role": "assistant", "content": "Yo"}],
                                         False, template_file.read_text())[0]
