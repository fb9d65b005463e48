"""The GGUF reader and dequantization against the `gguf` package (gguf-py 0.19.0, llama.cpp's own
Python reader and writer).

Files are written with gguf.GGUFWriter: F32 and F16 from numpy arrays (with infinities, signed
zeros and f16 subnormals), BF16 / Q8_0 / Q4_0 by gguf.quants.quantize of random rows at many
scales, and, for every type, random-but-valid raw blocks (finite f16 scales as random bit
patterns, random quants; gguf-py cannot quantize Q4_K and Q6_K, so those are raw blocks only).
ftune reads them through `ftune inspect --gguf FILE --tensor NAME`, whose JSON floats (9
significant digits) round-trip fp32 exactly; the reference is gguf.GGUFReader's bytes for the
tensor through gguf.quants.dequantize. Tolerance: none, the fp32 bit patterns must be equal
(ftune rounds each product as numpy does).

Metadata: every value type, string / int / float / bool arrays, through `--key`, equal
GGUFReader's field.contents(); the tensor list (names, types, shapes in GGUF order, bytes) equals
GGUFReader's tensors.

The real file ../shared/models/stories260K/stories260K.gguf (skipped when absent): every tensor
equal, and architecture, tokenizer model, token list and context length as GGUFReader reports.

Bad input: truncated, bad magic, bad version, unknown tensor type, offset past the end, string
length past the end, too many tensors: exit status 2 and a message naming the file and the key or
tensor, also under the ASan/UBSan build when it exists (no sanitizer report).
"""

import json
import os
import struct

import numpy as np
import pytest

from conftest import asan_bin, run_ftune, run_ok

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STORIES = os.path.join(REPO, "..", "shared", "models", "stories260K", "stories260K.gguf")
# the types real Q4_K_M / Q5_K_M / Q3_K_M / Q2_K downloads hold besides Q8_0, Q4_0, Q4_K, Q6_K
# (llama.cpp's fallbacks for rows that are not whole 256-value blocks: Q5_0, Q5_1, Q4_0)
NEW_TYPES = (T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q5_K)


def inspect(path, *args):
    return json.loads(run_ok(["inspect", "--gguf", path, *args]).stdout)


def ftune_values(path, name):
    out = inspect(path, "--tensor", name)
    return out, np.array(out["values"], dtype=np.float64).astype(np.float32)


def reference_values(reader_tensor):
    t = reader_tensor
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)


def assert_bits_equal(got, want, what):
    """Equal fp32 bit patterns; NaN (whose payload JSON does not carry) only where want has NaN."""
    assert got.shape == want.shape, f"{what}: {got.shape} values, expected {want.shape}"
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all(), f"{what}: NaN at other places"
    g, w = got.view(np.uint32)[~nan], want.view(np.uint32)[~nan]
    got, want = got[~nan], want[~nan]
    bad = np.nonzero(g != w)[0]
    assert bad.size == 0, (f"{what}: {bad.size} of {g.size} values differ, first at {bad[0]}: "
                           f"{got[bad[0]]!r} vs {want[bad[0]]!r}")


def finite_f16_bits(rng, n):
    """n random IEEE half bit patterns that are finite (any sign, subnormals included)."""
    b = rng.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16)
    inf_nan = (b >> 10) & 0x1F == 0x1F
    b[inf_nan] &= ~np.uint16(0x4000)  # exponent 31 -> 15: finite
    return b


def raw_blocks(rng, qtype, rows, cols):
    """rows x (cols / block) random valid blocks of qtype as uint8 (rows, bytes per row)."""
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // bs
    b = rng.integers(0, 256, (nb, ts), dtype=np.uint16).astype(np.uint8)
    # where each block keeps its f16 scale(s): (byte offset, count)
    halves = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
              T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
              T.Q6_K: [208]}[qtype]
    for off in halves:
        b[:, off:off + 2] = finite_f16_bits(rng, nb).view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // bs * ts)


def scaled_rows(rng, rows, cols):
    """Random rows at scales 1e-6 .. 1e6 (Q4_0's f16 scale overflows to inf above ~5e5: inf
    times a zero quant is NaN, in both)."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= (np.float32(10.0) ** rng.uniform(-6, 6, (rows, 1))).astype(np.float32)
    x[0, :32] = 0  # a zero block
    return x


def write_gguf(path, tensors, kvs=()):
    """tensors: (name, array, raw_dtype or None); kvs: (method name, key, value)."""
    w = gguf.GGUFWriter(path, arch="llama")
    for method, key, value in kvs:
        getattr(w, method)(key, value)
    for name, arr, raw in tensors:
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    """One tensor per (type, source) pair, each with a few rows."""
    rng = np.random.default_rng(16)
    tensors = []
    f32 = scaled_rows(rng, 3, 96)
    f32[1, :6] = [np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.4e38]
    tensors.append(("f32", f32, None))
    tensors.append(("f32.3d", rng.standard_normal((2, 3, 8)).astype(np.float32), None))
    f16 = (rng.standard_normal((4, 64)) * 100).astype(np.float16)
    f16[0, :8] = np.array([np.inf, -np.inf, -0.0, 6e-8, -6e-8, 6.1e-5, 65504, -65504], np.float16)
    tensors.append(("f16", f16, None))
    tensors.append(("f16.raw", finite_f16_bits(rng, 3 * 64).view(np.float16).reshape(3, 64),
                    None))
    bf = scaled_rows(rng, 4, 64)
    bf[1, :4] = [np.inf, -np.inf, -0.0, 1e-40]
    tensors.append(("bf16", gguf.quants.quantize(bf, T.BF16), T.BF16))
    bfraw = rng.integers(0, 1 << 16, (3, 64), dtype=np.uint32).astype(np.uint16)
    bfraw[(bfraw >> 7) & 0xFF == 0xFF] &= ~np.uint16(0x4000)  # no NaN / inf patterns
    tensors.append(("bf16.raw", bfraw.view(np.uint8).reshape(3, 128), T.BF16))
    for q in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        tensors.append((f"{q.name.lower()}", gguf.quants.quantize(scaled_rows(rng, 5, 128), q), q))
    for q in NEW_TYPES + (T.Q8_0, T.Q4_0, T.Q4_K, T.Q6_K):
        tensors.append((f"{q.name.lower()}.raw", raw_blocks(rng, q, 8, 2048), q))
    path = str(tmp_path_factory.mktemp("gguf") / "typed.gguf")
    write_gguf(path, tensors)
    return path, [t[0] for t in tensors]


def test_every_type_dequantizes_bit_identically(typed_file):
    path, names = typed_file
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    assert sorted(by_name) == sorted(names)
    compared = {}
    for name in names:
        rt = by_name[name]
        out, got = ftune_values(path, name)
        assert out["type"] == rt.tensor_type.name, name
        assert out["shape"] == [int(d) for d in rt.shape], name
        want = reference_values(rt)
        assert_bits_equal(got, want, f"{name} ({rt.tensor_type.name})")
        compared[rt.tensor_type.name] = compared.get(rt.tensor_type.name, 0) + got.size
    print(f"values compared bit for bit: {compared}")
    assert set(compared) == {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"} | {
        q.name for q in NEW_TYPES}, compared


def test_tensor_list_equals_reader(typed_file):
    path, _ = typed_file
    reader = gguf.GGUFReader(path)
    out = inspect(path)
    assert out["version"] == 3 and out["alignment"] == reader.alignment
    got = [(t["name"], t["type"], t["shape"], t["nbytes"]) for t in out["tensors"]]
    want = [(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_bytes))
            for t in reader.tensors]
    assert got == want
    data_start = min(t.data_offset for t in reader.tensors) - out["tensors"][0]["offset"]
    for t, rt in zip(out["tensors"], reader.tensors):
        assert data_start + t["offset"] == rt.data_offset, t["name"]


KVS = [
    ("add_uint8", "t.u8", 250), ("add_int8", "t.i8", -100), ("add_uint16", "t.u16", 65000),
    ("add_int16", "t.i16", -32000), ("add_uint32", "t.u32", 4000000000),
    ("add_int32", "t.i32", -2000000000), ("add_float32", "t.f32", 0.1),
    ("add_uint64", "t.u64", 2**63 + 5), ("add_int64", "t.i64", -2**62),
    ("add_float64", "t.f64", 1 / 3), ("add_float64", "t.f64.int", -2.0),
    ("add_bool", "t.bool", True), ("add_bool", "t.no", False),
    ("add_string", "t.str", "h\u00e9llo \"quoted\" \\ tab\t\u4e16\u754c"),
    ("add_string", "t.empty", ""),
    ("add_array", "t.strs", ["<unk>", "", "\u2581the", "a\nb", "<0x0A>"]),
    ("add_array", "t.ints", [1, -2, 3]),
    ("add_array", "t.floats", [0.5, -1e-3, 3.25]),
    ("add_array", "t.bools", [True, False, True]),
    ("add_array", "t.long", list(range(20))),
]


def test_metadata_equals_reader(tmp_path):
    path = str(tmp_path / "meta.gguf")
    write_gguf(path, [("w", np.ones((2, 32), np.float32), None)], KVS)
    reader = gguf.GGUFReader(path)
    out = inspect(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(out["metadata"]) == keys
    for key in keys:
        field = reader.fields[key]
        want = field.contents()
        got = inspect(path, "--key", key)
        vt = field.types[-1]
        if vt == gguf.GGUFValueType.FLOAT32:  # compare as the stored fp32
            assert np.array_equal(np.float32(got), np.float32(want)), f"{key}: {got} vs {want}"
        else:
            assert got == want and type(got) is type(want), f"{key}: {got!r} vs {want!r}"
        if field.types[0] == gguf.GGUFValueType.ARRAY and len(want) > 8:
            brief = out["metadata"][key]
            assert brief["count"] == len(want) and brief["head"] == want[:8], key
        elif vt != gguf.GGUFValueType.FLOAT32:
            assert out["metadata"][key] == want, key


def test_stories260k_equals_reader():
    if not os.path.exists(STORIES):
        pytest.skip(f"{STORIES} is absent (../shared is beside the project only on the dev "
                    "machines)")
    reader = gguf.GGUFReader(STORIES)
    out = inspect(STORIES)
    assert len(out["tensors"]) == len(reader.tensors) == 48
    values = 0
    for rt in reader.tensors:
        got_info, got = ftune_values(STORIES, rt.name)
        assert got_info["type"] == rt.tensor_type.name
        assert got_info["shape"] == [int(d) for d in rt.shape]
        assert_bits_equal(got, reference_values(rt), rt.name)
        values += got.size
    assert values > 250000  # about 260K parameters, tied embedding stored twice

    def field(k):
        return reader.fields[k].contents()
    md = out["metadata"]
    assert md["general.architecture"] == field("general.architecture") == "llama"
    assert md["tokenizer.ggml.model"] == field("tokenizer.ggml.model") == "llama"
    assert md["llama.context_length"] == field("llama.context_length")
    tokens = field("tokenizer.ggml.tokens")
    assert md["tokenizer.ggml.tokens"]["count"] == len(tokens) == 512
    assert inspect(STORIES, "--key", "tokenizer.ggml.tokens") == tokens
    scores = np.float32(inspect(STORIES, "--key", "tokenizer.ggml.scores"))
    assert (scores == np.float32(field("tokenizer.ggml.scores"))).all()


# ---- bad input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bad") / "good.gguf")
    write_gguf(path, [("blk.0.weight", np.arange(64, dtype=np.float32).reshape(2, 32), None),
                      ("blk.1.weight", gguf.quants.quantize(np.ones((2, 32), np.float32), T.Q8_0),
                       T.Q8_0)],
               [("add_string", "general.name", "tiny-model-name")])
    with open(path, "rb") as f:
        return f.read()


def tensor_info_at(data, name):
    """Byte offsets of (type, offset) fields of tensor `name`'s info."""
    i = data.index(name.encode()) + len(name)
    nd = struct.unpack_from("<I", data, i)[0]
    t = i + 4 + 8 * nd
    return t, t + 4


def corrupt(data, case):
    b = bytearray(data)
    if case == "truncated":
        return bytes(b[:len(b) - 40]), "blk.1.weight"  # its 68 bytes (+28 padding) are cut
    if case == "truncated_infos":
        return bytes(b[:data.index(b"blk.1.weight") + 5]), "tensor info #1"
    if case == "bad_magic":
        b[:4] = b"GGML"
        return bytes(b), "not a GGUF file"
    if case == "bad_version":
        struct.pack_into("<I", b, 4, 7)
        return bytes(b), "GGUF version 7"
    if case == "unknown_type":
        t, _ = tensor_info_at(data, "blk.1.weight")
        struct.pack_into("<I", b, t, 99)
        return bytes(b), "blk.1.weight"
    if case == "offset_past_end":
        _, o = tensor_info_at(data, "blk.0.weight")
        struct.pack_into("<Q", b, o, 1 << 20)
        return bytes(b), "blk.0.weight"
    if case == "string_past_end":
        i = data.index(b"tiny-model-name")
        struct.pack_into("<Q", b, i - 8, 1 << 40)
        return bytes(b), "general.name"
    if case == "too_many_tensors":
        struct.pack_into("<Q", b, 8, 1 << 33)
        return bytes(b), "tensors cannot be right"
    raise ValueError(case)


CASES = ["truncated", "truncated_infos", "bad_magic", "bad_version", "unknown_type",
         "offset_past_end", "string_past_end", "too_many_tensors"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_2(tmp_path, small_file, case):
    data, word = corrupt(small_file, case)
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(data)
    binaries = [None] + ([asan_bin()] if asan_bin() else [])
    for b in binaries:
        p = run_ftune(["inspect", "--gguf", path], binary=b)
        label = f"{case} ({'asan' if b else 'ftune'})"
        assert p.returncode == 2, f"{label}: exit {p.returncode}\n{p.stderr}"
        assert "ftune: error:" in p.stderr and str(path) in p.stderr, f"{label}: {p.stderr}"
        assert word in p.stderr, f"{label}: {word!r} not in: {p.stderr}"
        assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr


@pytest.mark.parametrize("qtype", [q.name for q in NEW_TYPES])
def test_truncated_block_of_new_type(tmp_path, qtype):
    """A file whose last tensor (of a newly read type) loses the end of its last block: exit 2
    naming the tensor, for the listing and for reading the values (and under ASan/UBSan)."""
    q = T[qtype]
    rng = np.random.default_rng(5)
    path = tmp_path / f"{qtype}.gguf"
    write_gguf(str(path), [("blk.0.a", np.ones((2, 32), np.float32), None),
                           ("blk.0.last", raw_blocks(rng, q, 2, 256), q)])
    data = path.read_bytes()
    _, ts = gguf.GGML_QUANT_SIZES[q]
    path.write_bytes(data[:len(data) - ts // 2])  # GGUFWriter pads nothing after the last tensor
    for b in [None] + ([asan_bin()] if asan_bin() else []):
        for args in (["inspect", "--gguf", path], ["inspect", "--gguf", path, "--tensor",
                                                    "blk.0.last"]):
            p = run_ftune(args, binary=b)
            assert p.returncode == 2, f"{qtype}: exit {p.returncode}\n{p.stderr}"
            assert "blk.0.last" in p.stderr and str(path) in p.stderr, p.stderr
            assert "end past the end of the file" in p.stderr, p.stderr
            assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr


def test_good_small_file_reads(tmp_path, small_file):
    path = tmp_path / "good.gguf"
    path.write_bytes(small_file)
    out, got = ftune_values(str(path), "blk.0.weight")
    assert (got == np.arange(64, dtype=np.float32)).all()


def test_unsupported_type_named(tmp_path):
    """A type ggml has but ftune does not dequantize (IQ4_NL) lists, and reading it says so."""
    rng = np.random.default_rng(1)
    path = str(tmp_path / "iq4nl.gguf")
    write_gguf(path, [("w.iq4", rng.integers(0, 256, (1, 18), dtype=np.uint16)
                       .astype(np.uint8), T.IQ4_NL)])
    out = inspect(path)
    assert out["tensors"][0]["type"] == "IQ4_NL"
    p = run_ftune(["inspect", "--gguf", path, "--tensor", "w.iq4"])
    assert p.returncode == 2 and "w.iq4" in p.stderr and "IQ4_NL" in p.stderr, p.stderr
    assert "Q5_K" in p.stderr, p.stderr  # the list of types ftune does read
    p = run_ftune(["inspect", "--gguf", path, "--tensor", "nope"])
    assert p.returncode == 2 and "nope" in p.stderr and "not found" in p.stderr, p.stderr
    p = run_ftune(["inspect", "--gguf", path, "--key", "no.key"])
    assert p.returncode == 2 and "no.key" in p.stderr, p.stderr


# ---- the fuzz seeds ---------------------------------------------------------------------------

CORPUS = os.path.join(REPO, "tests", "corpus", "gguf")


def make_seeds(folder):
    """The seed files of tests/corpus/gguf/ (each under 4 KB): every dequantized type, every value
    type, version 2 with alignment 64, a llama-shaped file with a small vocabulary, a Q5_K
    tensor of random bytes, a block of each of NEW_TYPES, and two whole tiny models (llama, phi3). `python tests/peers/test_gguf.py --make-seeds DIR`."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    x = rng.standard_normal((1, 32)).astype(np.float32)
    write_gguf(p("seed-types.gguf"), [
        ("f32", rng.standard_normal((2, 4)).astype(np.float32), None),
        ("f16", rng.standard_normal(8).astype(np.float16), None),
        ("bf16", gguf.quants.quantize(x[:, :8], T.BF16), T.BF16),
        ("q8_0", gguf.quants.quantize(x, T.Q8_0), T.Q8_0),
        ("q4_0", gguf.quants.quantize(x, T.Q4_0), T.Q4_0),
        ("q4_k", raw_blocks(rng, T.Q4_K, 1, 256), T.Q4_K),
        ("q6_k", raw_blocks(rng, T.Q6_K, 1, 256), T.Q6_K)])
    write_gguf(p("seed-meta.gguf"), [("w", np.ones((1, 32), np.float32), None)],
               [kv for kv in KVS if kv[1] != "t.long"])
    w = gguf.GGUFWriter(p("seed-v2-align64.gguf"), arch="llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", gguf.quants.quantize(x, T.Q8_0), raw_dtype=T.Q8_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with open(p("seed-v2-align64.gguf"), "r+b") as f:
        f.seek(4), f.write(struct.pack("<I", 2))
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(5)] + list("abcdefgh")
    write_gguf(p("seed-llama-tiny.gguf"), [
        ("token_embd.weight", rng.standard_normal((16, 8)).astype(np.float32), None),
        ("blk.0.attn_q.weight", rng.standard_normal((8, 8)).astype(np.float16), None),
        ("output_norm.weight", np.ones(8, np.float32), None)], [
        ("add_uint32", "llama.context_length", 64), ("add_uint32", "llama.embedding_length", 8),
        ("add_uint32", "llama.block_count", 1),
        ("add_float32", "llama.attention.layer_norm_rms_epsilon", 1e-5),
        ("add_string", "tokenizer.ggml.model", "llama"),
        ("add_array", "tokenizer.ggml.tokens", toks),
        ("add_array", "tokenizer.ggml.scores", [float(-i) for i in range(16)]),
        ("add_array", "tokenizer.ggml.token_type", [2, 3, 3] + [6] * 5 + [1] * 8),
        ("add_uint32", "tokenizer.ggml.bos_token_id", 1)])
    write_gguf(p("seed-q5k.gguf"), [("q5_k", rng.integers(0, 256, (1, 176), dtype=np.uint16)
                                     .astype(np.uint8), T.Q5_K)])
    # whole models ftune loads with --model FILE.gguf (fuzz_gguf reads them as models too): a
    # llama (GQA 2:1, F16 linear layers) and a phi3 (fused attn_qkv and ffn_up, 4 of 8 head
    # dims rotated, a sliding window)
    model_seed(p("seed-model-llama.gguf"), "llama", rng)
    model_seed(p("seed-model-phi3.gguf"), "phi3", rng)
    # one raw block of each type added after the first seeds (its own generator, so the files
    # above stay as they were)
    rk = np.random.default_rng(7)
    write_gguf(p("seed-ktypes.gguf"), [
        (q.name.lower(), raw_blocks(rk, q, 1, gguf.GGML_QUANT_SIZES[q][0]), q) for q in NEW_TYPES])


def model_seed(path, arch, rng):
    C, H, Hkv, I, V = 8, 2, 1, 8, 8
    D = C // H
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_context_length(32), w.add_embedding_length(C), w.add_block_count(1)
    w.add_feed_forward_length(I), w.add_head_count(H), w.add_head_count_kv(Hkv)
    w.add_layer_norm_rms_eps(1e-5)
    if arch == "phi3":
        w.add_rope_dimension_count(D // 2), w.add_sliding_window(8)
    f = lambda *sh: rng.standard_normal(sh).astype(np.float32)  # noqa: E731
    h = lambda *sh: f(*sh).astype(np.float16)  # noqa: E731
    w.add_tensor("token_embd.weight", f(V, C))
    w.add_tensor("output_norm.weight", np.ones(C, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(C, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(C, np.float32))
    if arch == "phi3":
        w.add_tensor("blk.0.attn_qkv.weight", h((H + 2 * Hkv) * D, C))
        w.add_tensor("blk.0.ffn_up.weight", h(2 * I, C))
    else:
        w.add_tensor("blk.0.attn_q.weight", h(H * D, C))
        w.add_tensor("blk.0.attn_k.weight", h(Hkv * D, C))
        w.add_tensor("blk.0.attn_v.weight", h(Hkv * D, C))
        w.add_tensor("blk.0.ffn_gate.weight", h(I, C))
        w.add_tensor("blk.0.ffn_up.weight", h(I, C))
    w.add_tensor("blk.0.attn_output.weight", h(C, H * D))
    w.add_tensor("blk.0.ffn_down.weight", h(C, I))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()


def test_fuzz_seeds_read_like_reader(tmp_path):
    """The committed seeds are what make_seeds writes now, under 4 KB, and every tensor of a type
    ftune dequantizes reads as GGUFReader + dequantize gives it."""
    make_seeds(str(tmp_path))
    seeds = sorted(f for f in os.listdir(tmp_path))
    for name in seeds:
        with open(tmp_path / name, "rb") as f:
            fresh = f.read()
        with open(os.path.join(CORPUS, name), "rb") as f:
            assert f.read() == fresh, f"tests/corpus/gguf/{name} differs from make_seeds' file"
        assert len(fresh) < 4096, name
        reader = gguf.GGUFReader(str(tmp_path / name))
        for rt in reader.tensors:
            _, got = ftune_values(str(tmp_path / name), rt.name)
            assert_bits_equal(got, reference_values(rt), f"{name}: {rt.name}")


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
    else:
        sys.exit("usage: test_gguf.py --make-seeds DIR")
