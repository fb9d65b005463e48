"""`ftune generate` and `ftune chat` against transformers' generate(), its logits processors,
PEFT (one adapter, and several with weights) and apply_chat_template.

Models: the zoo's random-weight models of every architecture (tests/peers/models.py; their
logits are spread, so near-ties are rare), F32 and BF16 checkpoints, read by transformers in
float32 with eager attention. They have no tokenizer, so most runs give ftune the prompt as ids
(--prompt-ids) and read its ids back (--json). The text paths (tokenizer, chat template, streamed
text, stop strings) use a byte-level BPE tokenizer trained here with a vocabulary that fits the
zoo's 1,031 ids, put beside the Llama model's weights, with ChatML as its template.

What is compared, and the tolerance:
- greedy: 64 new tokens (EOS ignored on both sides, so every run is 64 long) identical to
  transformers' generate(do_sample=False), prompts of 1 to 300 tokens; the logits of every step
  (ftune's --dump-probs against generate's output_logits) within 1e-4, as the forward parity test.
  If a token differs, the test passes only when the step's two best logits in transformers are
  within 1e-4 of each other (a tie fp32 rounding may flip) and reports it; none did when written.
- sampling: ftune's distribution at every step (--dump-probs "probs", after repetition penalty,
  temperature, top-k, top-p and min-p) against transformers' own processor list
  (GenerationMixin._get_logits_processor with the generation config generate() would build) run
  on the same logits and the same sequence so far, softmaxed: 1e-5 absolute. The tokens ftune
  drew must have non-zero probability there, and the same seed must give the same ids.
- adapters: a PEFT adapter per architecture (unmerged; F32 checkpoints, and BF16 for three), and two adapters with weights 0.7 and 0.3
  against PEFT's add_weighted_adapter(combination_type="cat") (whose output is the sum of the
  adapters' outputs, each scaled by its weight): greedy tokens and logits as above.
- the KV cache and stored weight formats: the logits of every generation step under --quant nf4,
  q8, bf16 equal `ftune eval --dump-logits` (the training forward over the same stored weights)
  at the same positions within 1e-4; --kv-cache bf16 / q8 within 5e-2 / 1e-1 of fp32's.
- chat: a 3-turn JSON script; each turn's prompt ids equal apply_chat_template(conversation so far,
  add_generation_prompt=True), and turns 2 and 3 reuse the cached prefix.
- NF4 (with and without double quantization) against transformers + bitsandbytes with fp32
  compute on its reference path (conftest.py pins it): 32 tokens identical, logits within 1e-4.
- chat on a terminal (a pseudo-terminal): turns, the statistics line, /reset, /exit; Ctrl-C
  while an answer streams ends the answer (stop: interrupted), and the session goes on.
- --chat-template FILE and --template-arg for generate and chat: apply_chat_template's ids.
- end-of-sequence ids: a list in generation_config.json (or config.json without it) ends at the
  first of them.
- `ftune eval --stride`: the perplexity of the transformers guide's loop (with and without
  overlapping windows, with an adapter) within 1e-5 relative, the token count exact.
- `ftune eval --compare-adapter`: the base row is transformers' loss and each adapter row
  PeftModel's (JSONL eval and --stride; 1e-5 relative, tokens exact); the base row equals a plain
  `ftune eval` and each adapter row `ftune eval --adapter` alone, to the printed digit.
- real templates (Llama 3, Qwen3 from ../shared/tokenizers, skipped where absent): the prompt ids
  of --apply-chat-template equal apply_chat_template's, and <|eot_id|> / <|im_end|> end a turn.
- the README's three commands from `ftune train` to `ftune chat --adapter RUN`, run as written.
- bad input: a prompt longer than the context, invalid UTF-8 in a prompt file, an adapter whose
  shapes do not match the model: exit 2, naming the file or tensor, with a hint.
"""

import json
import os
import random
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

import models
from conftest import ftune_bin, run_ftune, run_ok

NEW = 64
LOGIT_ATOL = 1e-4
PROB_ATOL = 1e-5
V = models._COMMON["vocab_size"]

# prompt length per (architecture, dtype): 1 to 300 tokens over the runs (300 > Mistral's window)
LENGTHS = {("llama", "f32"): 1, ("llama", "bf16"): 300, ("llama_rope3", "f32"): 37,
           ("llama_rope3", "bf16"): 5, ("llama_bias", "f32"): 120, ("llama_bias", "bf16"): 2,
           ("mistral", "f32"): 300, ("mistral", "bf16"): 19, ("qwen2", "f32"): 64,
           ("qwen2", "bf16"): 9, ("qwen3", "f32"): 211, ("qwen3", "bf16"): 3,
           ("phi3", "f32"): 150, ("phi3", "bf16"): 1}


def prompt_for(n, seed=0):
    rng = np.random.default_rng(1000 + n + seed)
    return [int(t) for t in rng.integers(3, V, size=n)]


def ftune_generate(tmp_path, model_dir, prompt, extra=(), name="run"):
    dump = tmp_path / f"{name}.safetensors"
    p = run_ok(["generate", "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)),
                "--json", "--dump-probs", dump, "--threads", "1"] + list(extra))
    out = json.loads(p.stdout.strip().splitlines()[-1])
    d = models.read_safetensors(str(dump))
    assert list(d["prompt_ids"]) == prompt
    return out, d


def hf_greedy(model, prompt, n=NEW):
    model.generation_config.eos_token_id = None  # as --ignore-eos: always n tokens
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        g = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                           dtype=torch.long), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, output_logits=True, return_dict_in_generate=True)
    ids = g.sequences[0, len(prompt):].tolist()
    logits = torch.stack(g.logits, 1)[0].float().numpy()
    return ids, logits


def check_greedy(got_ids, got_logits, ref_ids, ref_logits, what):
    """Tokens identical; logits of the steps before any divergence within LOGIT_ATOL."""
    n = len(ref_ids)
    first = next((i for i in range(n) if got_ids[i] != ref_ids[i]), n)
    diff = np.abs(got_logits[:min(first + 1, n)] - ref_logits[:min(first + 1, n)]).max()
    assert diff <= LOGIT_ATOL, f"{what}: logits differ by {diff:.3g} (tolerance {LOGIT_ATOL})"
    if first < n:
        top2 = np.sort(ref_logits[first])[-2:]
        gap = top2[1] - top2[0]
        assert gap <= LOGIT_ATOL, (
            f"{what}: token {first} differs (ftune {got_ids[first]}, transformers "
            f"{ref_ids[first]}) and transformers' two best logits are {gap:.3g} apart")
        print(f"{what}: a near-tie (gap {gap:.2g}) flipped token {first}; logits agree")
    print(f"{what}: {first} of {n} tokens identical, logits max diff {diff:.2g}")
    return diff


# --- greedy, all architectures, F32 and BF16 checkpoints ---------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_greedy_like_transformers(zoo, tmp_path, arch, dtype):
    d = zoo.model(arch, dtype)
    prompt = prompt_for(LENGTHS[(arch, dtype)])
    out, dump = ftune_generate(tmp_path, d, prompt, ["--greedy", "--ignore-eos",
                                                     "--max-new-tokens", NEW])
    assert len(out["ids"]) == NEW and out["stop"] == "length"
    ref_ids, ref_logits = hf_greedy(models.load_model(d), prompt)
    check_greedy(out["ids"], dump["logits"], ref_ids, ref_logits, f"{arch}/{dtype}")
    assert list(dump["ids"]) == out["ids"]


@pytest.mark.parametrize("arch,dtype", [(a, "f32") for a in models.ARCHS] +
                         [(a, "bf16") for a in ("llama_bias", "qwen3", "phi3")])
def test_greedy_with_adapter_like_peft(zoo, tmp_path, arch, dtype):
    d, ad = zoo.model(arch, dtype), zoo.adapter(arch)
    prompt = prompt_for(LENGTHS[(arch, "bf16")] + 20, seed=1)
    out, dump = ftune_generate(tmp_path, d, prompt, ["--adapter", ad, "--greedy",
                                                     "--ignore-eos", "--max-new-tokens", NEW])
    _, base_logits = hf_greedy(models.load_model(d), prompt, 1)
    ref_ids, ref_logits = hf_greedy(models.load_peft(d, ad), prompt)
    check_greedy(out["ids"], dump["logits"], ref_ids, ref_logits, f"{arch}/{dtype}+adapter")
    # the adapter is live: PEFT's logits are not the base model's
    assert np.abs(ref_logits[0] - base_logits[0]).max() > 1e-2


def test_two_adapters_with_weights_like_peft(zoo, tmp_path):
    from peft import PeftModel
    d = zoo.model("llama", "f32")
    a = zoo.adapter("llama", "wa")
    b = os.path.join(zoo.root, "llama-wb")
    if not os.path.exists(os.path.join(b, "adapter_config.json")):
        models.make_adapter(d, "llama", b, seed=7, r=4, lora_alpha=12,
                            target_modules=["q_proj", "v_proj", "down_proj"])
    prompt = prompt_for(40, seed=2)
    out, dump = ftune_generate(tmp_path, d, prompt, ["--adapter", f"{a}:0.7", "--adapter",
                                                     f"{b}:0.3", "--greedy", "--ignore-eos",
                                                     "--max-new-tokens", NEW])
    m = PeftModel.from_pretrained(models.load_model(d), a, adapter_name="a")
    m.load_adapter(b, adapter_name="b")
    m.add_weighted_adapter(["a", "b"], [0.7, 0.3], adapter_name="ab", combination_type="cat")
    m.set_adapter("ab")
    ref_ids, ref_logits = hf_greedy(m.eval(), prompt)
    check_greedy(out["ids"], dump["logits"], ref_ids, ref_logits, "llama+0.7a+0.3b")


# --- sampling: the filtered distribution of every step -----------------------------------------

def hf_processors(model, prompt_len, **gen_kwargs):
    """transformers' own processor list for generate(**gen_kwargs) on this model."""
    gc, _ = model._prepare_generation_config(None, **gen_kwargs)
    return model._get_logits_processor(generation_config=gc, input_ids_seq_length=prompt_len,
                                       encoder_input_ids=None, prefix_allowed_tokens_fn=None,
                                       logits_processor=None, device="cpu",
                                       model_kwargs={"attention_mask": torch.ones(1, prompt_len)})


def check_distribution(model, prompt, dump, out, gen_kwargs, what):
    procs = hf_processors(model, len(prompt), **gen_kwargs)
    seq = list(prompt)
    worst = 0.0
    for s, tok in enumerate(out["ids"] + ([int(dump["ids"][-1])] if out["stop"] == "eos" else [])):
        scores = procs(torch.tensor([seq]), torch.tensor(dump["logits"][s:s + 1]).clone())
        ref = torch.softmax(scores, -1)[0].numpy()
        worst = max(worst, float(np.abs(dump["probs"][s] - ref).max()))
        assert ref[tok] > 0, f"{what}: step {s} drew {tok}, which transformers filters out"
        seq.append(tok)
    assert worst <= PROB_ATOL, f"{what}: distributions differ by {worst:.3g}"
    print(f"{what}: {len(out['ids'])} steps, probabilities max diff {worst:.2g}")
    # ftune's logits at those steps are the model's: one transformers forward over the sequence
    with torch.no_grad():
        full = model(torch.tensor([seq])).logits[0].numpy()
    n = len(dump["logits"])
    diff = np.abs(dump["logits"] - full[len(prompt) - 1:len(prompt) - 1 + n]).max()
    assert diff <= LOGIT_ATOL, f"{what}: logits differ by {diff:.3g}"
    return worst


SAMPLING = [
    (["--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.05",
      "--repetition-penalty", "1.3", "--seed", "3"],
     dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, min_p=0.05,
          repetition_penalty=1.3)),
    (["--temperature", "1.5", "--top-k", "0", "--top-p", "0.5", "--seed", "11"],
     dict(do_sample=True, temperature=1.5, top_k=0, top_p=0.5)),
    (["--sample", "--min-p", "0.2", "--seed", "5"], dict(do_sample=True, min_p=0.2)),
    (["--greedy", "--repetition-penalty", "0.8"], dict(do_sample=False, repetition_penalty=0.8)),
]


@pytest.mark.parametrize("case", range(len(SAMPLING)))
def test_sampling_distribution_like_transformers(zoo, tmp_path, case):
    args, kw = SAMPLING[case]
    d = zoo.model("qwen2", "f32")
    prompt = prompt_for(12, seed=case)
    out, dump = ftune_generate(tmp_path, d, prompt, args + ["--max-new-tokens", "24"])
    check_distribution(models.load_model(d), prompt, dump, out, kw, " ".join(args))
    again, _ = ftune_generate(tmp_path, d, prompt, args + ["--max-new-tokens", "24"], "again")
    assert again["ids"] == out["ids"], "the same seed gave other tokens"


def test_generation_config_defaults(zoo, tmp_path):
    """generation_config.json's do_sample / temperature / top_p as transformers reads them,
    top_k at transformers' default of 50 (the file does not set it)."""
    src = zoo.model("llama", "f32")
    d = tmp_path / "model"
    shutil.copytree(src, d)
    gc = json.loads((d / "generation_config.json").read_text())
    gc.update(do_sample=True, temperature=0.6, top_p=0.9)
    (d / "generation_config.json").write_text(json.dumps(gc))
    prompt = prompt_for(10, seed=9)
    out, dump = ftune_generate(tmp_path, d, prompt, ["--max-new-tokens", "16", "--seed", "1"])
    model = models.load_model(str(d))
    check_distribution(model, prompt, dump, out, {}, "generation_config.json defaults")
    # and the filter is on: top-k 50 keeps at most 50 tokens
    assert ((dump["probs"] > 0).sum(1) <= 50).all()
    # --temperature 0 (and --greedy) override the file's sampling: greedy decoding, as
    # transformers' generate(do_sample=False)
    ref, _ = hf_greedy(model, prompt, 16)
    for opt in (["--temperature", "0"], ["--greedy"]):
        g, _ = ftune_generate(tmp_path, d, prompt, opt + ["--max-new-tokens", "16",
                                                          "--ignore-eos"], "greedy")
        assert g["ids"] == ref, opt


# --- stored weight formats and the KV cache ----------------------------------------------------

@pytest.mark.parametrize("quant", ["nf4", "q8", "bf16"])
def test_decode_equals_training_forward(zoo, tmp_path, quant):
    """Each decode step (matrix-vector products in the stored format, attention over the cache)
    gives the logits the batched training forward gives at that position."""
    d = zoo.model("llama_bias", "f32")
    prompt = prompt_for(30, seed=4)
    out, dump = ftune_generate(tmp_path, d, prompt, ["--quant", quant, "--greedy",
                                                     "--ignore-eos", "--max-new-tokens", "20"])
    seq = prompt + out["ids"]
    data = models.write_jsonl(str(tmp_path / "seq.jsonl"), [dict(input_ids=seq, labels=seq)])
    run_ok(["eval", "--model", d, "--data", data, "--quant", quant, "--dump-logits",
            tmp_path / "ev.safetensors"])
    ev = models.read_safetensors(str(tmp_path / "ev.safetensors"))["logits"][0]
    diff = np.abs(dump["logits"] - ev[len(prompt) - 1:len(prompt) - 1 + len(out["ids"])]).max()
    assert diff <= LOGIT_ATOL, f"--quant {quant}: logits differ by {diff:.3g}"
    print(f"--quant {quant}: decode vs training forward, logits max diff {diff:.2g}")


@pytest.mark.parametrize("kv,tol", [("bf16", 5e-2), ("q8", 1e-1)])
def test_kv_cache_formats(zoo, tmp_path, kv, tol):
    d = zoo.model("qwen3", "f32")
    prompt = prompt_for(50, seed=5)
    base, bd = ftune_generate(tmp_path, d, prompt, ["--greedy", "--ignore-eos",
                                                    "--max-new-tokens", "16"], "fp32")
    out, dump = ftune_generate(tmp_path, d, prompt, ["--greedy", "--ignore-eos",
                                                     "--max-new-tokens", "16", "--kv-cache", kv])
    first = next((i for i in range(16) if out["ids"][i] != base["ids"][i]), 16)
    diff = np.abs(dump["logits"][:first + 1 if first < 16 else 16] -
                  bd["logits"][:first + 1 if first < 16 else 16]).max()
    assert diff <= tol, f"--kv-cache {kv}: logits differ from fp32's by {diff:.3g}"
    print(f"--kv-cache {kv}: {first} of 16 tokens as fp32's, logits max diff {diff:.2g}")


# --- text: tokenizer, chat template, streaming, stop strings, chat -----------------------------

WORDS = ("the a cat dog sat on mat and ran far away quickly slowly über café naïve 東京 日本語 "
         "🙂 hello world story time once upon there was little girl who lived in house").split()


@pytest.fixture(scope="module")
def text_model(zoo, tmp_path_factory):
    """The zoo's Llama weights with a byte-level BPE tokenizer of < 1,031 ids and ChatML."""
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    root = tmp_path_factory.mktemp("textmodel")
    tokdir, mdir = root / "tok", root / "model"
    tokdir.mkdir()
    r = random.Random(4)
    texts = [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 20))) for _ in range(3000)]
    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                              "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(texts, tr)
    assert tok.get_vocab_size() <= V
    tok.save(str(tokdir / "tokenizer.json"))
    here = os.path.dirname(os.path.abspath(__file__))
    tpl = open(os.path.join(here, "templates", "chatml.jinja")).read()
    (tokdir / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "bos_token": None, "pad_token": "<|endoftext|>",
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    (tokdir / "chat_template.jinja").write_text(tpl)
    shutil.copytree(zoo.model("llama", "f32"), mdir)
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(tokdir / f, mdir / f)
    return mdir, tokdir


def hf_tokenizer(tokdir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tokdir))


def test_text_prompt_streamed(text_model, tmp_path):
    mdir, tokdir = text_model
    tok = hf_tokenizer(tokdir)
    prompt = "once upon a time there was a little cat in 東京 🙂"
    args = ["generate", "--model", mdir, "--prompt", prompt, "--greedy", "--ignore-eos",
            "--max-new-tokens", "48", "--threads", "1"]
    j = json.loads(run_ok(args + ["--json"]).stdout)
    want = tok(prompt)["input_ids"]
    assert j["prompt_ids"] == want
    ref_ids, _ = hf_greedy(models.load_model(str(mdir)), want, 48)
    assert j["ids"] == ref_ids
    assert j["text"] == tok.decode(ref_ids, skip_special_tokens=True)
    pf = tmp_path / "prompt.txt"  # --prompt-file: the file's bytes are the prompt
    pf.write_text(prompt, encoding="utf-8")
    fargs = [a if a != prompt else str(pf) for a in args]
    fargs[fargs.index("--prompt")] = "--prompt-file"
    assert json.loads(run_ok(fargs + ["--json"]).stdout)["prompt_ids"] == want
    p = run_ok(args)  # streamed: the same text, then a newline; the statistics on stderr
    assert p.stdout == j["text"] + ("" if j["text"].endswith("\n") else "\n")
    assert "prefill" in p.stderr and "decode" in p.stderr and "peak memory" in p.stderr
    # a stop string from the middle of the text: printed up to it, not including it
    text = j["text"]
    cut = text[len(text) // 2:len(text) // 2 + 3]
    if cut.strip():
        q = run_ok(args + ["--stop", cut, "--json"])
        assert json.loads(q.stdout)["text"] == text[:text.index(cut)]
        assert json.loads(q.stdout)["stop"] == "stop_string"


def test_chat_template_prompt(text_model):
    mdir, tokdir = text_model
    tok = hf_tokenizer(tokdir)
    p = run_ok(["generate", "--model", mdir, "--prompt", "hello cat", "--system", "be brief",
                "--apply-chat-template", "--greedy", "--max-new-tokens", "40", "--json"])
    j = json.loads(p.stdout)
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello cat"}]
    want = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    assert j["prompt_ids"] == list(want)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end not in j["ids"]  # generation ends at the end of turn, which is not printed
    if j["stop"] == "eos":
        assert len(j["ids"]) < 40


def test_chat_three_turns(text_model):
    mdir, tokdir = text_model
    tok = hf_tokenizer(tokdir)
    turns = ["hello there", "the cat sat on the mat 🙂", "and then?"]
    script = "".join(json.dumps({"content": t}) + "\n" for t in turns)
    p = subprocess.run([ftune_bin(), "chat", "--model", str(mdir), "--system", "you are a cat",
                        "--greedy", "--max-new-tokens", "12", "--echo-ids", "--threads", "1"],
                       input=script, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    answers = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    assert len(answers) == 3
    conv = [{"role": "system", "content": "you are a cat"}]
    for i, (t, a) in enumerate(zip(turns, answers)):
        conv.append({"role": "user", "content": t})
        want = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
        if isinstance(want, dict) or hasattr(want, "input_ids"):
            want = want["input_ids"]
        assert a["prompt_ids"] == list(want), f"turn {i + 1}"
        assert a["prompt_tokens"] == len(want)
        if i:  # the history's positions come from the cache
            assert a["reused_tokens"] >= len(prev_ids) - 1, (a["reused_tokens"], len(prev_ids))
        prev_ids = want
        conv.append({"role": "assistant", "content": a["content"]})


def test_chat_template_file_and_args(text_model, tmp_path):
    """--chat-template FILE and --template-arg for generate and chat, as train has them: the
    prompt ids equal apply_chat_template(chat_template=FILE's text, **args)."""
    mdir, tokdir = text_model
    tok = hf_tokenizer(tokdir)
    tpl = ("{% for m in messages %}<|im_start|>{{ m['role'] | upper }}{% if tag %} [{{ tag }}]"
           "{% endif %}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>ASSISTANT\n{% endif %}")
    f = tmp_path / "t.jinja"
    f.write_text(tpl)
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello cat"}]
    want = tok.apply_chat_template(conv, chat_template=tpl, add_generation_prompt=True,
                                   tokenize=True, tag="x1")
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    j = json.loads(run_ok(["generate", "--model", mdir, "--prompt", "hello cat", "--system",
                           "be brief", "--apply-chat-template", "--chat-template", f,
                           "--template-arg", 'tag="x1"', "--greedy", "--max-new-tokens", "2",
                           "--json", "--threads", "1"]).stdout)
    assert j["prompt_ids"] == list(want)
    p = subprocess.run([ftune_bin(), "chat", "--model", str(mdir), "--system", "be brief",
                        "--chat-template", str(f), "--template-arg", 'tag="x1"', "--greedy",
                        "--max-new-tokens", "2", "--echo-ids", "--threads", "1"],
                       input=json.dumps({"content": "hello cat"}) + "\n", capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["prompt_ids"] == list(want)


# --- bad input ---------------------------------------------------------------------------------

def test_bad_input(zoo, text_model, tmp_path):
    """Each case under build/ftune and, when it exists, the ASan/UBSan build (no report)."""
    from conftest import asan_bin
    d = zoo.model("llama", "f32")
    mdir, _ = text_model
    f = tmp_path / "bad.txt"
    f.write_bytes(b"hello \xff world")
    good = tmp_path / "good.txt"
    good.write_text("the cat sat on the mat and ran far away")
    cases = [
        # a prompt longer than the context (max_position_embeddings 512)
        (["generate", "--model", d, "--prompt-ids", ",".join(["5"] * 600), "--json"],
         ["600 tokens", "hint:"]),
        # invalid UTF-8 in a prompt file: the file and the byte offset
        (["generate", "--model", mdir, "--prompt-file", f], [str(f), "offset 6"]),
        # an adapter of another model: the tensor and the shapes
        (["generate", "--model", d, "--adapter", zoo.adapter("qwen3"), "--prompt-ids", "1,2,3",
          "--json"], ["adapter_model.safetensors", "expected shape", "hint:"]),
        # an adapter weight that is not a number
        (["generate", "--model", d, "--adapter", zoo.adapter("llama") + ":x", "--prompt-ids", "1",
          "--json"], ["--adapter"]),
        # the same adapter of another model under eval --compare-adapter
        (["eval", "--model", mdir, "--data", good, "--stride", 4, "--adapter",
          zoo.adapter("qwen3"), "--compare-adapter"], ["adapter_model.safetensors",
                                                       "expected shape"]),
    ]
    for b in [None] + ([asan_bin()] if asan_bin() else []):
        for args, words in cases:
            p = run_ftune(args, binary=b, env={"ASAN_OPTIONS": "detect_leaks=1"} if b else None)
            what = f"{' '.join(map(str, args[:3]))} ({'asan' if b else 'ftune'})"
            assert p.returncode == 2, f"{what}: exit {p.returncode}\n{p.stderr[-3000:]}"
            for w in words:
                assert w in p.stderr, f"{what}: {w!r} not in {p.stderr[-3000:]}"
            for s in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
                assert s not in p.stderr, f"{what}: {p.stderr[-5000:]}"


def test_readme_train_to_chat(text_model, tmp_path):
    """The README's three commands from `ftune train` to `ftune chat --adapter RUN`, as written,
    on the stand-in model (the chat reads one JSON turn from stdin, as a script would)."""
    mdir, _ = text_model
    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                               "README.md")).read()
    sec = readme.split("## From training to chat", 1)[1]
    cmds = sec.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(cmds) == 3 and "chat" in cmds[2] and "--adapter run" in cmds[2]
    work = tmp_path / "work"
    (work / "build").mkdir(parents=True)
    os.symlink(ftune_bin(), work / "build" / "ftune")
    os.symlink(mdir, work / "SmolLM2-135M-Instruct")
    (work / "chat.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"},
                                 {"role": "assistant", "content": "Paris."}]}) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for i, c in enumerate(cmds):
        p = subprocess.run(["bash", "-e", "-c", c], cwd=work, capture_output=True, text=True,
                           timeout=300, env=env, input='{"content": "Hello!"}\n')
        assert p.returncode == 0, f"{c}\n{p.stderr[-2000:]}"
    assert json.loads(p.stdout.splitlines()[-1])["role"] == "assistant"


# --- ftune eval --stride: the transformers perplexity guide ------------------------------------

def guide_perplexity(model, ids, max_length, stride):
    """The loop of transformers' "Perplexity of fixed-length models" guide, as written there."""
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids != -100).sum().item() - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens)), n_tokens


@pytest.mark.parametrize("seq_len,stride,adapter", [(64, 32, False), (64, 64, False),
                                                    (48, 20, True)])
def test_eval_stride_like_perplexity_guide(zoo, text_model, tmp_path, seq_len, stride, adapter):
    """Perplexity within 1e-5 relative (a float32 loss per window), the token count exact."""
    from conftest import last_json_line
    mdir, tokdir = text_model
    tok = hf_tokenizer(tokdir)
    r = random.Random(8)
    text = " ".join(r.choice(WORDS) for _ in range(150))
    f = tmp_path / "text.txt"
    f.write_text(text)
    ids = tok(text)["input_ids"]
    assert len(ids) > 2 * seq_len
    args = ["eval", "--model", mdir, "--data", f, "--seq-len", seq_len, "--stride", stride]
    model = models.load_model(str(mdir))
    if adapter:
        ad = zoo.adapter("llama")
        args += ["--adapter", ad]
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, ad).eval()
    res = last_json_line(run_ok(args).stdout)
    ppl, n = guide_perplexity(model, ids, seq_len, stride)
    assert res["tokens"] == n
    assert abs(res["perplexity"] - ppl) <= 1e-5 * ppl, (res, ppl)
    print(f"--seq-len {seq_len} --stride {stride}{' + adapter' if adapter else ''}: "
          f"perplexity {res['perplexity']:.6f} vs the guide's {ppl:.6f}")


# --- ftune eval --compare-adapter: base and adapters side by side ------------------------------

def second_adapter(zoo, d):
    b = os.path.join(zoo.root, "llama-wb")
    if not os.path.exists(os.path.join(b, "adapter_config.json")):
        models.make_adapter(d, "llama", b, seed=7, r=4, lora_alpha=12,
                            target_modules=["q_proj", "v_proj", "down_proj"])
    return b


def close(got, want, rtol=1e-5):
    return abs(got - want) <= rtol * abs(want)


def test_eval_compare_adapter_like_peft(zoo, tmp_path):
    """JSONL eval: the base row is transformers' loss (1e-5 relative, tokens exact) and equals a
    plain `ftune eval` to the printed digit; each adapter row is PeftModel's loss and equals
    `ftune eval --adapter` alone; the table shows the same rows."""
    from peft import PeftModel
    from conftest import last_json_line
    d = zoo.model("llama", "f32")
    a, b = zoo.adapter("llama"), second_adapter(zoo, d)
    rng = np.random.default_rng(31)
    ex = []
    for i, T in enumerate((21, 9, 14)):
        ids = [int(t) for t in rng.integers(0, 500, size=T)]
        ex.append(dict(input_ids=ids, labels=[-100] * 3 + ids[3:] if i == 1 else ids))
    data = models.write_jsonl(str(tmp_path / "eval.jsonl"), ex)
    base_args = ["eval", "--model", d, "--data", data, "--batch-size", "2"]
    j = last_json_line(run_ok(base_args + ["--adapter", a, "--adapter", b, "--compare-adapter",
                                           "--json"]).stdout)
    assert [x["adapter"] for x in j["adapters"]] == [a, b]
    assert j["base"] == last_json_line(run_ok(base_args).stdout)
    for x, ad in zip(j["adapters"], (a, b)):
        alone = last_json_line(run_ok(base_args + ["--adapter", ad]).stdout)
        assert {k: x[k] for k in alone} == alone, (x, alone)
    ref = models.reference_eval(models.load_model(d), ex)
    assert j["base"]["tokens"] == ref["tokens"] and close(j["base"]["loss"], ref["loss"]), (j, ref)
    for x, ad in zip(j["adapters"], (a, b)):
        r = models.reference_eval(PeftModel.from_pretrained(models.load_model(d), ad).eval(), ex)
        assert x["tokens"] == r["tokens"] and close(x["loss"], r["loss"]), (x, r["loss"])
        assert abs(x["loss"] - ref["loss"]) > 1e-3  # the adapter changes the loss
        assert close(x["loss_diff"], x["loss"] - j["base"]["loss"], 1e-6)
        print(f"{os.path.basename(ad)}: loss {x['loss']:.7f} vs PEFT {r['loss']:.7f}, "
              f"base {j['base']['loss']:.7f} vs transformers {ref['loss']:.7f}")
    # the table: a header, the base row, one row per adapter, the same numbers
    rows = run_ok(base_args + ["--adapter", a, "--adapter", b, "--compare-adapter"]).stdout
    rows = [r.split() for r in rows.strip().splitlines()]
    assert rows[0][:4] == ["model", "loss", "perplexity", "tokens"] and len(rows) == 4, rows
    assert rows[1][0] == "base" and rows[2][0] == a and rows[3][0] == b, rows
    assert close(float(rows[1][1]), j["base"]["loss"], 1e-6) and int(rows[3][3]) == ref["tokens"]
    # bad use: two adapters without --compare-adapter; --compare-adapter without an adapter
    p = run_ftune(base_args + ["--adapter", a, "--adapter", b])
    assert p.returncode == 2 and "--compare-adapter" in p.stderr and "hint" in p.stderr, p.stderr
    p = run_ftune(base_args + ["--compare-adapter"])
    assert p.returncode == 2 and "--adapter" in p.stderr and "hint" in p.stderr, p.stderr


def test_eval_compare_adapter_stride(zoo, text_model, tmp_path):
    """--stride text perplexity, base and adapter: the guide's loop over transformers' model and
    over PeftModel (1e-5 relative, tokens exact); the base equals plain `ftune eval --stride`."""
    from peft import PeftModel
    from conftest import last_json_line
    mdir, tokdir = text_model
    r = random.Random(12)
    text = " ".join(r.choice(WORDS) for _ in range(120))
    f = tmp_path / "text.txt"
    f.write_text(text)
    ids = hf_tokenizer(tokdir)(text)["input_ids"]
    ad = zoo.adapter("llama")
    args = ["eval", "--model", mdir, "--data", f, "--seq-len", 48, "--stride", 24]
    j = last_json_line(run_ok(args + ["--adapter", ad, "--compare-adapter", "--json"]).stdout)
    assert j["base"] == last_json_line(run_ok(args).stdout)
    base_ppl, n = guide_perplexity(models.load_model(str(mdir)), ids, 48, 24)
    ad_ppl, n2 = guide_perplexity(PeftModel.from_pretrained(models.load_model(str(mdir)), ad).eval(),
                                  ids, 48, 24)
    x = j["adapters"][0]
    assert j["base"]["tokens"] == n and x["tokens"] == n2 == n
    assert close(j["base"]["perplexity"], base_ppl) and close(x["perplexity"], ad_ppl), (j, base_ppl,
                                                                                        ad_ppl)
    assert abs(x["perplexity"] - j["base"]["perplexity"]) > 1e-3 * base_ppl
    print(f"stride: base {j['base']['perplexity']:.6f} vs {base_ppl:.6f}, "
          f"adapter {x['perplexity']:.6f} vs {ad_ppl:.6f}")


# --- end-of-sequence ids, Ctrl-C in an interactive chat ----------------------------------------

@pytest.mark.parametrize("where", ["generation_config.json", "config.json"])
def test_eos_ids_list(zoo, tmp_path, where):
    """A list of eos_token_id ends generation at the first of them (not printed), read from
    generation_config.json, or from config.json when the folder has no generation_config.json."""
    d = tmp_path / "model"
    shutil.copytree(zoo.model("llama", "f32"), d)
    prompt = prompt_for(8, seed=6)
    free, _ = ftune_generate(tmp_path, d, prompt, ["--greedy", "--ignore-eos",
                                                   "--max-new-tokens", "40"], "free")
    ids = free["ids"]
    k = next(i for i in range(4, 40) if ids[i] not in ids[:i])
    other = next(t for t in range(3, V) if t not in ids)
    if where == "config.json":
        (d / "generation_config.json").unlink()
    cfg = json.loads((d / where).read_text())
    cfg["eos_token_id"] = [other, ids[k]]
    (d / where).write_text(json.dumps(cfg))
    out, _ = ftune_generate(tmp_path, d, prompt, ["--greedy", "--max-new-tokens", "40"])
    assert out["stop"] == "eos" and out["ids"] == ids[:k]


def chat_on_terminal(mdir, max_new, poll=0.1):
    """ftune chat on a pseudo-terminal (greedy, EOS ignored, one thread): its pid and fd, and
    read(seconds, until), the output until the bytes `until` appear or the time is up."""
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(ftune_bin(), ["ftune", "chat", "--model", str(mdir), "--ignore-eos", "--greedy",
                               "--max-new-tokens", str(max_new), "--threads", "1"])

    def read(seconds, until):
        out, end = b"", time.time() + seconds
        while time.time() < end and until not in out:
            if select.select([fd], [], [], poll)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return out.decode("utf-8", "replace")

    return pid, fd, read


def test_chat_terminal(text_model):
    """On a terminal: a line is a turn, the answer streams, a statistics line follows; /reset
    forgets the cached history; /exit ends with status 0. (Ctrl-C: test_chat_terminal_ctrl_c.)"""
    mdir, _ = text_model
    pid, fd, read = chat_on_terminal(mdir, 40)

    try:
        assert "> " in read(30, b"> ")
        os.write(fd, b"tell me a story\n")
        out = read(60, b"]\r\n> ")
        assert "40 generated" in out and "stop: length" in out and "(0 reused)" in out, out[-300:]
        os.write(fd, b"and then?\n")
        out = read(60, b"]\r\n> ")
        assert "stop: length" in out and "(0 reused)" not in out, out[-300:]
        os.write(fd, b"/reset\n")
        read(10, b"> ")
        os.write(fd, b"hello\n")
        out = read(60, b"]\r\n> ")
        assert "(0 reused)" in out, out[-300:]
        os.write(fd, b"/exit\n")
        read(10, b"\n")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_chat_terminal_ctrl_c(text_model):
    """Ctrl-C (the terminal's ^C, a SIGINT) while an answer streams ends that answer (stop:
    interrupted, fewer tokens than asked) and not the session: the next turn answers, reusing
    the cache, and /exit ends with status 0."""
    mdir, _ = text_model
    pid, fd, read = chat_on_terminal(mdir, 450, poll=0.05)

    try:
        assert "> " in read(30, b"> ")
        os.write(fd, b"tell me a story\n")
        read(30, b"story\r\n")  # the echoed line
        # the first piece of the answer: it is streaming now
        end = time.time() + 30
        while time.time() < end and not select.select([fd], [], [], 0.001)[0]:
            pass
        os.write(fd, b"\x03")
        out = read(60, b"]\r\n> ")
        assert "stop: interrupted" in out, out[-400:]
        n = int(out.rsplit(" generated", 1)[0].rsplit(" ", 1)[1])
        assert n < 450, out[-300:]
        print(f"Ctrl-C stopped the answer after {n} of 450 tokens")
        os.write(fd, b"and then?\n")
        out = read(60, b"]\r\n> ")
        assert "450 generated" in out or "stop: context" in out, out[-300:]
        assert "(0 reused)" not in out, out[-300:]
        os.write(fd, b"/exit\n")
        read(10, b"\n")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


# --- real chat templates (../shared/tokenizers, beside the project) ----------------------------

SHARED_TOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                          "tokenizers")


@pytest.mark.parametrize("name,arch,eot", [("llama3", "llama", "<|eot_id|>"),
                                           ("qwen3", "qwen3", "<|im_end|>")])
def test_real_template_prompt_and_end_of_turn(tmp_path, name, arch, eot):
    """The prompt ids of a real model's template (Llama 3, Qwen3 without thinking) equal
    apply_chat_template's, and the template's end-of-turn token ends generation."""
    folder = os.path.join(SHARED_TOK, name)
    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        pytest.skip(f"{folder} is absent (real tokenizers live beside the project only)")
    from transformers import AutoTokenizer
    m = tmp_path / "m"
    run_ok(["init", "--size", "tiny", "--arch", arch, "--tokenizer", folder, "--out", m])
    extra = ["--template-arg", "enable_thinking=false"] if name == "qwen3" else []
    p = run_ok(["generate", "--model", m, "--prompt", "Wie spät ist es? 🕰️", "--system",
                "Be brief.", "--apply-chat-template", "--greedy", "--max-new-tokens", "4",
                "--json"] + extra)
    j = json.loads(p.stdout)
    tok = AutoTokenizer.from_pretrained(folder)
    conv = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Wie spät ist es? 🕰️"}]
    kw = {"enable_thinking": False} if name == "qwen3" else {}
    want = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, **kw)
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    assert j["prompt_ids"] == list(want)
    assert tok.convert_tokens_to_ids(eot) in j["eos_ids"], (j["eos_ids"], eot)


# --- NF4 against bitsandbytes ------------------------------------------------------------------

@pytest.mark.parametrize("double_quant", [False, True])
def test_greedy_nf4_like_bitsandbytes(zoo, tmp_path, double_quant):
    """--quant nf4 (ftune quantizes as bitsandbytes does) against transformers + bitsandbytes
    4-bit NF4 with fp32 compute, on its reference (not the packed AVX512_BF16) path: conftest.py
    pins it, as for the QLoRA tests. Tokens identical, logits within 1e-4."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    d = zoo.model("qwen2", "f32")
    prompt = prompt_for(33, seed=12)
    extra = ["--double-quant"] if double_quant else []
    out, dump = ftune_generate(tmp_path, d, prompt, ["--quant", "nf4", "--greedy", "--ignore-eos",
                                                     "--max-new-tokens", "32"] + extra)
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_compute_dtype=torch.float32,
                             bnb_4bit_use_double_quant=double_quant)
    ref = AutoModelForCausalLM.from_pretrained(d, device_map="cpu", dtype=torch.float32,
                                               attn_implementation="eager",
                                               quantization_config=cfg).eval()
    ref_ids, ref_logits = hf_greedy(ref, prompt, 32)
    check_greedy(out["ids"], dump["logits"], ref_ids, ref_logits,
                 f"nf4{' double-quant' if double_quant else ''}")
