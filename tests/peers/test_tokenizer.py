"""test_tokenizer.py: ftune's tokenizer against the `tokenizers` package (exact equality).

What is compared, for each tokenizer (the four real ones in <repo>/../shared/tokenizers when that
folder exists, and two that this file trains with `tokenizers` so the suite runs everywhere: a
byte-level BPE with an NFKC normalizer and added tokens with lstrip/rstrip/normalized options,
and a Metaspace BPE with byte_fallback and unk):
  * encode, add_special_tokens=False, over >= 10 MB of generated multilingual text
    (tests/peers/tok_corpus.py): every id of every document must be equal;
  * encode, add_special_tokens=True, over every 16th document (BOS/EOS as the post-processor
    adds them);
  * decode of `tokenizers`' own ids, skip_special_tokens False (every 4th document) and True
    (the every-16th subset): the strings must be equal;
  * a property test: 3000 random Unicode strings, encode and decode, equal.
Tolerance: none; token ids and text are exact. On a mismatch the first differing document, the
index of the first differing id and the text around it are printed.
ftune runs once per tokenizer and mode in batch mode (--jsonl). tokenizer.json's "truncation"
and "padding" are switched off on the peer side: ftune ignores them, as transformers does.
Bad input: an unknown component type and a broken regex must exit 2 naming the file and the
JSON path of the component.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import tok_corpus  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa
from tokenizers import AddedToken, Regex, trainers  # noqa

FTUNE = os.environ.get("FTUNE_BIN", str(REPO / "build" / "ftune"))
SHARED = REPO.parent / "shared" / "tokenizers"
SHARED_NAMES = ["llama2", "llama3", "qwen3", "smollm-135m"]
CORPUS_BYTES = int(os.environ.get("FTUNE_TOK_CORPUS_BYTES", 10_000_000))


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="ftune-tok-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def corpus():
    return tok_corpus.corpus(CORPUS_BYTES, seed=1234)


def train_bytelevel(path, texts):
    """Byte-level BPE (GPT-2 style) with NFKC, a BOS template and added tokens that use the
    lstrip / rstrip / normalized / single_word options."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<|bos|>", "<|eos|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(texts, tr)
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A <|eos|>", special_tokens=[("<|bos|>", 0), ("<|eos|>", 1)])
    tok.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("ﬁx", normalized=True),
                    AddedToken("word", single_word=True, normalized=False)])
    tok.add_special_tokens([AddedToken("<think>", normalized=False)])
    tok.save(str(path))


def train_metaspace(path, texts):
    """SentencePiece-style BPE: Metaspace (prepend_scheme first), byte_fallback with <0xXX>
    tokens in the vocabulary, unk with fuse_unk, individual digits, and a Llama-2-like decoder."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True)])
    tr = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"],
                             limit_alphabet=300, show_progress=False)
    tok.train_from_iterator(texts, tr)
    j = json.loads(tok.to_str())
    # put the 256 byte tokens into the model's vocabulary (as Llama 2 has them)
    old = j["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(old.items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    j["model"]["vocab"] = vocab
    for a in j["added_tokens"]:
        a["id"] = vocab[a["content"]]
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [2],
                                                       "tokens": ["</s>"]}}}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    Path(path).write_text(json.dumps(j, ensure_ascii=False))


def tokenizer_paths(workdir, corpus):
    out = []
    for n in SHARED_NAMES:
        out.append((n, SHARED / n / "tokenizer.json"))
    train = corpus[: max(1, len(corpus) // 20)]
    p = workdir / "trained-bytelevel.json"
    if not p.exists():
        train_bytelevel(p, train)
    out.append(("trained-bytelevel", p))
    p = workdir / "trained-metaspace.json"
    if not p.exists():
        train_metaspace(p, train)
    out.append(("trained-metaspace", p))
    return dict(out)


def run_ftune(args, **kw):
    return subprocess.run([FTUNE] + args, capture_output=True, **kw)


def ftune_encode_start(tok_path, texts, workdir, special, tag):
    """Start ftune on a batch file; returns a function that waits and gives the ids."""
    f = workdir / f"in-{tag}.jsonl"
    with open(f, "w", encoding="utf-8") as o:
        for t in texts:
            o.write(json.dumps(t, ensure_ascii=False) + "\n")
    args = ["tokenize", "--tokenizer", str(tok_path), "--jsonl", str(f), "--threads", "1"]
    if not special:
        args.append("--no-special")
    p = subprocess.Popen([FTUNE] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait():
        out, err = p.communicate()
        assert p.returncode == 0, err.decode(errors="replace")
        lines = out.decode().split("\n")[:-1]
        assert len(lines) == len(texts)
        return [[int(x) for x in ln.split()] for ln in lines]

    return wait


def ftune_encode(tok_path, texts, workdir, special):
    return ftune_encode_start(tok_path, texts, workdir, special, "one")()


def ftune_decode(tok_path, ids, workdir, skip):
    f = workdir / "ids.jsonl"
    with open(f, "w") as o:
        for v in ids:
            o.write(json.dumps(v) + "\n")
    args = ["detokenize", "--tokenizer", str(tok_path), "--jsonl", str(f)]
    if skip:
        args.append("--skip-special")
    r = run_ftune(args)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode("utf-8").split("\n")[:-1]
    return [json.loads(ln) for ln in lines]


def first_mismatch(texts, want, got, what):
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            k = next((j for j in range(min(len(w), len(g))) if w[j] != g[j]), min(len(w), len(g)))
            return (f"{what}: document {i} differs at position {k} "
                    f"(tokenizers {w[max(0, k - 3):k + 5]}, ftune {g[max(0, k - 3):k + 5]}); "
                    f"text: {texts[i][:300]!r}")
    if len(want) != len(got):
        return f"{what}: {len(want)} results from tokenizers, {len(got)} from ftune"
    return None


def peer(path):
    t = Tokenizer.from_file(str(path))
    t.no_truncation()
    t.no_padding()
    return t


def compare(name, path, texts, workdir, full=True):
    """ftune runs in the background while the peer works (the two cores are both used)."""
    t = peer(path)
    sub = texts[::16] if full else texts
    wait_all = ftune_encode_start(path, texts, workdir, False, "all")
    wait_sub = ftune_encode_start(path, sub, workdir, True, "sub")
    want = [e.ids for e in t.encode_batch(texts, add_special_tokens=False)]
    want_s = [e.ids for e in t.encode_batch(sub, add_special_tokens=True)]
    got, got_s = wait_all(), wait_sub()
    msg = first_mismatch(texts, want, got, f"{name} encode")
    assert msg is None, msg
    msg = first_mismatch(sub, want_s, got_s, f"{name} encode+special")
    assert msg is None, msg
    # decoding: every 4th document's ids (a quarter of the corpus, >= 2.5 MB of text)
    dsub = want[::4] if full else want
    dec_w = t.decode_batch(dsub, skip_special_tokens=False)
    dec_g = ftune_decode(path, dsub, workdir, skip=False)
    bad = next((i for i, (a, b) in enumerate(zip(dec_w, dec_g)) if a != b), None)
    assert bad is None, f"{name} decode: document {bad}: tokenizers {dec_w[bad][:200]!r} " \
                        f"ftune {dec_g[bad][:200]!r}"
    dec_w = t.decode_batch(want_s, skip_special_tokens=True)
    dec_g = ftune_decode(path, want_s, workdir, skip=True)
    bad = next((i for i, (a, b) in enumerate(zip(dec_w, dec_g)) if a != b), None)
    assert bad is None, f"{name} decode skip_special: document {bad}: tokenizers " \
                        f"{dec_w[bad][:200]!r} ftune {dec_g[bad][:200]!r}"
    return sum(len(x) for x in want)


NAMES = SHARED_NAMES + ["trained-bytelevel", "trained-metaspace"]


@pytest.fixture(scope="module")
def paths(workdir, corpus):
    return tokenizer_paths(workdir, corpus)


def need(name, paths):
    if not os.path.exists(FTUNE):
        pytest.skip(f"{FTUNE} is not built (run make)")
    if name in SHARED_NAMES and not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (the real tokenizers live beside the repo); the "
                    "trained tokenizers are still tested")


@pytest.mark.parametrize("name", NAMES)
def test_corpus_matches_tokenizers(name, paths, corpus, workdir):
    need(name, paths)
    texts = list(corpus)
    # the special-token strings of this tokenizer, inside the text
    specials = [a["content"] for a in json.loads(Path(paths[name]).read_text())["added_tokens"]]
    r = __import__("random").Random(99)
    for i in range(0, len(texts), 5):
        texts[i] = texts[i] + r.choice(specials) + " " + texts[i][: 200] + r.choice(specials)
    assert sum(len(x.encode()) for x in texts) >= CORPUS_BYTES
    ntok = compare(name, paths[name], texts, workdir)
    print(f"{name}: {len(texts)} documents, {ntok} tokens: identical")


@pytest.mark.parametrize("name", NAMES)
def test_random_unicode(name, paths, workdir):
    need(name, paths)
    compare(name, paths[name], tok_corpus.random_strings(3000, seed=7), workdir, full=False)


def test_invalid_utf8_is_rejected(paths, workdir):
    """ftune rejects bytes that are not UTF-8 (Python's strict decode raises the same way)."""
    if not os.path.exists(FTUNE):
        pytest.skip("ftune not built")
    f = workdir / "bad.txt"
    f.write_bytes(b"abc \xff def")
    with pytest.raises(UnicodeDecodeError):
        f.read_bytes().decode("utf-8")
    r = run_ftune(["tokenize", "--tokenizer", str(paths["trained-bytelevel"]), "--file", str(f)])
    assert r.returncode == 2
    assert b"invalid UTF-8 at byte offset 4" in r.stderr


def write_variant(workdir, base, mutate, name):
    j = json.loads(Path(base).read_text())
    mutate(j)
    p = workdir / name
    p.write_text(json.dumps(j, ensure_ascii=False))
    return p


def test_bad_component_and_regex(paths, workdir):
    if not os.path.exists(FTUNE):
        pytest.skip("ftune not built")
    base = paths["trained-bytelevel"]

    def unknown(j):
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, {"type": "UnicodeScripts"}]}

    p = write_variant(workdir, base, unknown, "unknown.json")
    r = run_ftune(["tokenize", "--tokenizer", str(p), "--text", "hi"])
    assert r.returncode == 2
    err = r.stderr.decode()
    assert str(p) in err and "pre_tokenizer.pretokenizers[1].type" in err and "UnicodeScripts" in err

    def broken(j):
        j["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(\\p{L}+"},
                              "behavior": "Isolated", "invert": False}

    p = write_variant(workdir, base, broken, "broken.json")
    r = run_ftune(["tokenize", "--tokenizer", str(p), "--text", "hi"])
    assert r.returncode == 2
    err = r.stderr.decode()
    assert str(p) in err and "pre_tokenizer.pattern" in err and "does not compile" in err

    def model(j):
        j["model"]["type"] = "WordPiece"

    p = write_variant(workdir, base, model, "wordpiece.json")
    r = run_ftune(["tokenize", "--tokenizer", str(p), "--text", "hi"])
    assert r.returncode == 2 and b"model.type" in r.stderr


def test_cli_single_text(paths):
    """The one-text forms of the CLI agree with the batch form and with tokenizers."""
    if not os.path.exists(FTUNE):
        pytest.skip("ftune not built")
    p = paths["trained-metaspace"]
    text = "Hello  world\n<s> 123 ☃"
    want = peer(p).encode(text).ids
    r = run_ftune(["tokenize", "--tokenizer", str(p), "--text", text])
    assert r.returncode == 0 and [int(x) for x in r.stdout.split()] == want
    r = run_ftune(["tokenize", "--tokenizer", str(p), "--json"], input=text.encode())
    assert r.returncode == 0 and json.loads(r.stdout) == want
    r = run_ftune(["detokenize", "--tokenizer", str(p), "--ids", " ".join(map(str, want))])
    assert r.returncode == 0 and r.stdout.decode() == peer(p).decode(want, skip_special_tokens=False)
