"""qtensor_quantize against the reference quantizers, byte for byte.

Q8_0: the bytes ftune writes equal gguf-py's gguf.quants.quantize(x, Q8_0) (which gguf-py keeps
bit-exact with ggml's quantize_row_q8_0_ref), on random rows of many scales, rows of zeros, huge
values (f16 scale overflowing to inf) and tiny ones (f16 scale subnormal or zero).
F16 / BF16: the stored halves equal numpy's astype(float16) and torch's .to(bfloat16) (round to
nearest even), on the same data.

ftune's quantizer runs through the C test binary's tool mode:
    qtensor_test --quantize FMT IN.f32 ROWS COLS OUT.bin
found in $FTUNE_TESTS_DIR (default <repo>/build/tests).
"""

import os
import subprocess

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def qtensor_test_bin():
    d = os.environ.get("FTUNE_TESTS_DIR", os.path.join(REPO, "build", "tests"))
    b = os.path.join(d, "qtensor_test")
    if not os.path.exists(b):
        pytest.skip(f"{b} not found: build it with `make` (or set FTUNE_TESTS_DIR)")
    return b


def ftune_quantize(tmp_path, fmt, x):
    rows, cols = x.shape
    src, dst = tmp_path / "in.f32", tmp_path / "out.bin"
    np.ascontiguousarray(x, dtype=np.float32).tofile(src)
    p = subprocess.run([qtensor_test_bin(), "--quantize", fmt, str(src), str(rows), str(cols),
                        str(dst)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"qtensor_test --quantize {fmt} failed:\n{p.stderr}"
    return np.fromfile(dst, dtype=np.uint8)


def weights(rows=67, cols=256, seed=0):
    """Rows at scales from 1e-30 to 1e30 (one scale per row), zero rows and zero blocks, and
    values at exact rounding ties of the Q8_0 grid."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    scales = np.float32(10.0) ** rng.uniform(-30, 30, rows).astype(np.float32)
    scales[:8] = [1, 1e-3, 6e-5, 1e-7, 1e-10, 6e4, 7e5, 3e36]
    x *= scales[:, None]
    x[8] = 0
    x[9, :32] = 0
    # amax 127 makes d = 1 and id = 1 exactly, so k + 0.5 is an exact tie (roundf: away from 0)
    x[11, :32] = np.arange(-16, 16, dtype=np.float32) + np.float32(0.5)
    x[11, 0] = 127
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_q8_0_bytes_equal_gguf(tmp_path, seed):
    x = weights(seed=seed)
    want = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0).reshape(-1)
    got = ftune_quantize(tmp_path, "q8_0", x)
    assert got.shape == want.shape
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (f"{bad.size} bytes differ, first at byte {bad[0]} "
                           f"(block {bad[0] // 34}, row {bad[0] // 34 // (x.shape[1] // 32)})")


def test_q8_0_rejects_cols_not_multiple_of_32(tmp_path):
    x = np.ones((2, 48), dtype=np.float32)
    src = tmp_path / "in.f32"
    x.tofile(src)
    p = subprocess.run([qtensor_test_bin(), "--q8-0", str(src), "2", "48",
                        str(tmp_path / "o.bin")], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "cannot quantize" in p.stderr


def test_f16_equals_numpy(tmp_path):
    x = weights(seed=2)
    x[12, :8] = [65504, 65519.996, 65520, 1e5, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-26]
    want = x.astype(np.float16).view(np.uint8).reshape(-1)
    got = ftune_quantize(tmp_path, "f16", x)
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} bytes differ"


def test_bf16_equals_torch(tmp_path):
    x = weights(seed=3)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
    got = ftune_quantize(tmp_path, "bf16", x)
    assert np.array_equal(got, want.reshape(-1)), f"{np.count_nonzero(got != want.reshape(-1))} bytes differ"
