"""Bad input: each broken file gives exit status 2 and a message on stderr that names the file and
the line, tensor or field, says what was expected, and gives a hint; never a crash.

Each case starts from a valid tiny Llama folder that transformers wrote (tests/peers/models.py)
and a valid JSONL file, breaks one thing, and runs `ftune eval` on it (`ftune train` for the JSONL
cases as well). The breakages are made with the peers' own view of the formats: config.json is
edited as JSON, safetensors headers are rewritten from the layout the format defines (8-byte
little-endian header length, JSON header, data buffer; huggingface/safetensors README), and a
missing tensor is made by re-saving with safetensors.numpy.save_file without it, so the only thing
wrong in each file is the thing under test. Before the cases run, the intact folder must load
(exit 0), so a case cannot pass because everything fails.

With an ASan/UBSan build present ($FTUNE_ASAN_BIN, `make asan-build` writes build-asan/ftune),
every case also runs under it: the same exit status 2, and no "AddressSanitizer",
"LeakSanitizer" or "runtime error" in stderr.
"""

import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

import models
from conftest import asan_bin, run_ftune, run_ok

ARCH = "llama"


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def edit_header(path, fn):
    header, data = read_st(path)
    fn(header, len(data))
    write_st(path, header, data)


def edit_config(model_dir, fn):
    p = os.path.join(model_dir, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    fn(cfg)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)


# --- the cases: (id, breaker(model_dir, data_path, adapter_dir) -> extra args, regexes) --------
# Each regex must match stderr; they name the file and the line / tensor / field.

W = "model.layers.1.mlp.down_proj.weight"
G = "model.layers.0.mlp.gate_proj.weight"
K = "model.layers.1.self_attn.k_proj.weight"
LA = "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"


def missing_config(m, d, a):
    os.remove(os.path.join(m, "config.json"))
    return [], [r"config\.json"]


def malformed_config(m, d, a):
    with open(os.path.join(m, "config.json"), "w") as f:
        f.write('{\n  "architectures": ["LlamaForCausalLM"],\n  "hidden_size": 64,,\n'
                '  "vocab_size": 1031\n}\n')
    return [], [r"config\.json\D{0,12}3\b|config\.json.*line 3\b"]


def config_field_wrong_type(m, d, a):
    edit_config(m, lambda c: c.update(num_attention_heads="four"))
    return [], [r"config\.json", r"num_attention_heads"]


def unknown_architecture(m, d, a):
    edit_config(m, lambda c: c.update(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    return [], [r"config\.json", r"architectures|GPT2LMHeadModel"]


def truncated_safetensors(m, d, a):
    p = os.path.join(m, "model.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size * 6 // 10)
    return [], [r"model\.safetensors"]


def truncated_header(m, d, a):
    p = os.path.join(m, "model.safetensors")
    with open(p, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        f.truncate(8 + n // 2)  # the JSON header itself is cut
    return [], [r"model\.safetensors"]


def offsets_out_of_range(m, d, a):
    def fn(h, nbuf):
        b, e = h[W]["data_offsets"]
        h[W]["data_offsets"] = [nbuf + 4096, nbuf + 4096 + (e - b)]
    edit_header(os.path.join(m, "model.safetensors"), fn)
    return [], [r"model\.safetensors", re.escape(W)]


def bogus_dtype(m, d, a):
    edit_header(os.path.join(m, "model.safetensors"), lambda h, n: h[W].update(dtype="F33"))
    return [], [r"model\.safetensors", re.escape(W)]


def wrong_dtype_consistent(m, d, a):
    # I32 has F32's size: the header is self-consistent, but a weight cannot be integers.
    edit_header(os.path.join(m, "model.safetensors"), lambda h, n: h[W].update(dtype="I32"))
    return [], [r"model\.safetensors", re.escape(W)]


def shape_vs_offsets(m, d, a):
    # shape [128, 65] while the offsets hold 128 x 64 floats: the header lies about the size.
    edit_header(os.path.join(m, "model.safetensors"),
                lambda h, n: h[G].update(shape=[h[G]["shape"][0], h[G]["shape"][1] + 1]))
    return [], [r"model\.safetensors", re.escape(G)]


def shape_vs_config(m, d, a):
    # Transposed shape, same byte count: a valid file whose tensor does not fit the config.
    edit_header(os.path.join(m, "model.safetensors"),
                lambda h, n: h[G].update(shape=h[G]["shape"][::-1]))
    return [], [r"model\.safetensors", re.escape(G)]


def missing_tensor(m, d, a):
    from safetensors.numpy import load_file, save_file
    p = os.path.join(m, "model.safetensors")
    t = load_file(p)
    del t[K]
    save_file(t, p, metadata={"format": "pt"})
    return [], [r"model\.safetensors|" + re.escape(m), re.escape(K)]


def jsonl_malformed_line(m, d, a):
    with open(d) as f:
        lines = f.readlines()
    lines[2] = '{"input_ids": [5, 6, 7,, 8]}\n'
    with open(d, "w") as f:
        f.writelines(lines)
    return [], [re.escape(os.path.basename(d)) + r":3\b"]


def jsonl_missing_field(m, d, a):
    with open(d) as f:
        lines = f.readlines()
    lines[3] = '{"ids": [5, 6, 7, 8]}\n'
    with open(d, "w") as f:
        f.writelines(lines)
    return [], [re.escape(os.path.basename(d)) + r":4\b", r"input_ids"]


def jsonl_token_out_of_range(m, d, a):
    with open(d) as f:
        lines = f.readlines()
    lines[1] = json.dumps({"input_ids": [5, 6, 1031, 8]}) + "\n"  # vocab is 1031: ids 0..1030
    with open(d, "w") as f:
        f.writelines(lines)
    return [], [re.escape(os.path.basename(d)) + r":2\b"]


def jsonl_labels_length(m, d, a):
    with open(d) as f:
        lines = f.readlines()
    lines[4] = json.dumps({"input_ids": [5, 6, 7, 8], "labels": [5, 6, 7]}) + "\n"
    with open(d, "w") as f:
        f.writelines(lines)
    return [], [re.escape(os.path.basename(d)) + r":5\b", r"labels"]


def adapter_shape_mismatch(m, d, a):
    from safetensors.numpy import load_file, save_file
    p = os.path.join(a, "adapter_model.safetensors")
    t = load_file(p)
    t[LA] = np.ascontiguousarray(t[LA][:, :-1])  # [r, in - 1]
    save_file(t, p, metadata={"format": "pt"})
    return ["--adapter", a], [r"adapter_model\.safetensors", re.escape(LA)]


def adapter_missing_config(m, d, a):
    os.remove(os.path.join(a, "adapter_config.json"))
    return ["--adapter", a], [r"adapter_config\.json"]


CASES = [missing_config, malformed_config, config_field_wrong_type, unknown_architecture,
         truncated_safetensors, truncated_header, offsets_out_of_range, bogus_dtype,
         wrong_dtype_consistent, shape_vs_offsets, shape_vs_config, missing_tensor,
         jsonl_malformed_line, jsonl_missing_field, jsonl_token_out_of_range,
         jsonl_labels_length, adapter_shape_mismatch, adapter_missing_config]
JSONL_CASES = {jsonl_malformed_line, jsonl_missing_field, jsonl_token_out_of_range,
               jsonl_labels_length}


@pytest.fixture(scope="module")
def good(zoo, tmp_path_factory):
    """The intact model, adapter and data, checked to work (exit 0) before anything is broken."""
    d = tmp_path_factory.mktemp("good")
    ex = models.random_examples(np.random.default_rng(5), 6, 1031, 5, 12, mask_prefix=False)
    data = models.write_jsonl(str(d / "data.jsonl"), ex)
    m, a = zoo.model(ARCH), zoo.adapter(ARCH)
    run_ok(["eval", "--model", m, "--adapter", a, "--data", data])
    return m, a, data


def make_case(good, tmp_path, case):
    m0, a0, d0 = good
    m, a, d = str(tmp_path / "model"), str(tmp_path / "adapter"), str(tmp_path / "data.jsonl")
    shutil.copytree(m0, m)
    shutil.copytree(a0, a)
    shutil.copy(d0, d)
    extra, patterns = case(m, d, a)
    return m, d, extra, patterns


def check_failure(p, patterns, what):
    err = p.stderr
    assert p.returncode == 2, f"{what}: exit {p.returncode}, expected 2\nstderr:\n{err[-3000:]}"
    for pat in patterns:
        assert re.search(pat, err), f"{what}: stderr does not match {pat!r}:\n{err[-3000:]}"
    assert re.search(r"hint", err, re.I), f"{what}: no hint in stderr:\n{err[-3000:]}"


def sanitizer_clean(p, what):
    for word in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
        assert word not in p.stderr, f"{what} under ASan/UBSan:\n{p.stderr[-5000:]}"


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(good, tmp_path, case):
    m, d, extra, patterns = make_case(good, tmp_path, case)
    commands = [["eval", "--model", m, "--data", d] + extra]
    if case in JSONL_CASES:
        commands.append(["train", "--model", m, "--data", d, "--out", str(tmp_path / "run"),
                         "--steps", "1", "--threads", "1"] + extra)
    for args in commands:
        what = f"{case.__name__} (ftune {args[0]})"
        check_failure(run_ftune(args), patterns, what)
        if asan_bin():
            p = run_ftune(args, binary=asan_bin(),
                          env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS":
                               "print_stacktrace=1"})
            sanitizer_clean(p, what)
            check_failure(p, patterns, what + " [asan build]")


def test_usage_errors(good, tmp_path):
    """Usage errors are exit 2 as well: an unknown option, a missing required one."""
    m, a, d = good
    p = run_ftune(["eval", "--model", m, "--data", d, "--no-such-option", "1"])
    assert p.returncode == 2 and "no-such-option" in p.stderr, p.stderr
    p = run_ftune(["train", "--model", m, "--out", str(tmp_path / "r")])
    assert p.returncode == 2 and "--data" in p.stderr, p.stderr
    p = run_ftune(["eval", "--model", str(tmp_path / "does-not-exist"), "--data", d])
    assert p.returncode == 2 and "does-not-exist" in p.stderr, p.stderr
