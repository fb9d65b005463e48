"""Shared fixtures of the peer tests: the ftune binary, a runner, and a session-wide zoo of tiny
models and adapters built by transformers and PEFT (tests/peers/models.py).

The binary is $FTUNE_BIN (default <repo>/build/ftune); the ASan/UBSan build, when it exists, is
$FTUNE_ASAN_BIN (default <repo>/build-asan/ftune). Models are built once per pytest session, lazily,
under a pytest tmp dir, so a test file that needs two architectures pays for two. PyTorch runs on
one thread: the models are tiny and the machine is shared.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import models  # noqa: E402

torch.set_num_threads(1)

# bitsandbytes 0.50 takes another path on CPUs with AVX512_BF16 (Zen 4, Sapphire Rapids): the first
# forward of a Linear4bit in eval mode without grad repacks its weight in place into a tiled
# layout with bf16-rounded absmax (functional._convert_weight_packed_for_cpu) and multiplies
# through a kernel of its own. That path is an inference speed-up, not the definition of the
# format: it fails on in_features that are not a multiple of the block size, its logits differ
# from the dequantized weights' by the bf16 rounding, and a module that ran forward holds other
# bytes than it loaded. The peer tests compare with bitsandbytes' reference path (dequantize_4bit
# and a float matmul), the one every other CPU and training take, so they mean the same thing on
# every x86-64 CPU: each Linear4bit is built believing the CPU has no AVX512_BF16.
#
# Its C++ CPU dequantize_4bit also has an AVX-512 branch (taken on any AVX512F CPU) that indexes
# absmax by row: for a weight whose rows are not a whole number of blocks (in_features 96, block
# 64) it scales values by the wrong blocks (max error 1.97 instead of 0.45 on a randn(64, 96),
# Zen 4), while quantize_4bit, the scalar branch, the CUDA kernels and bitsandbytes' own PyTorch
# implementation (backends/default/ops.py) all index blocks over the flattened tensor. The CPU
# kernel is replaced by that PyTorch implementation, which on AVX2 CPUs gives the scalar
# branch's bits (code value * absmax, one fp32 product), so the reference is the format's own
# definition everywhere. test_quantize_bnb.py::test_bnb_reference_path checks both switches.
try:
    import bitsandbytes.nn.modules as _bnb_modules
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code

    _bnb_modules.has_avx512bf16 = lambda: False

    def _dequantize_4bit_flat(A, absmax, blocksize, quant_type, shape, dtype):
        A = A.view(torch.uint8) if A.dtype != torch.uint8 else A
        code = _get_4bit_code(quant_type, A.device)
        if quant_type == "fp4":  # the C++ and CUDA kernels give FP4 code 8 (sign bit, 0) as -0.0
            code = code.clone()
            code[8] = -0.0
        return _dequantize_4bit_compute(A.reshape(-1), absmax.float(), code, blocksize, shape,
                                        dtype)

    torch.library.register_kernel("bitsandbytes::dequantize_4bit", "cpu", _dequantize_4bit_flat)
except ImportError:  # the tests that need bitsandbytes skip themselves
    pass


def ftune_bin():
    return os.environ.get("FTUNE_BIN", os.path.join(REPO, "build", "ftune"))


def asan_bin():
    """The ASan/UBSan build if it exists, else None."""
    p = os.environ.get("FTUNE_ASAN_BIN", os.path.join(REPO, "build-asan", "ftune"))
    return p if os.path.exists(p) else None


def run_ftune(args, binary=None, timeout=600, env=None):
    """Run ftune with args (strings), return the CompletedProcess (text mode, never raises on a
    non-zero exit)."""
    b = binary or ftune_bin()
    if not os.path.exists(b):
        pytest.fail(f"ftune binary not found at {b} (build it with make, or set FTUNE_BIN)")
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([b] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def run_ok(args, **kw):
    """Run ftune and fail the test, with its stderr, unless it exits 0."""
    p = run_ftune(args, **kw)
    if p.returncode != 0:
        pytest.fail(f"ftune {' '.join(map(str, args))} exited {p.returncode}\n"
                    f"stderr:\n{p.stderr[-4000:]}\nstdout:\n{p.stdout[-2000:]}")
    return p


def peak_rss(args):
    """Run ftune with args (strings) in a child process; return its peak RSS in bytes (the
    child's ru_maxrss, so this test process's own memory does not count). Fails on a non-zero
    exit."""
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "assert r.returncode == 0, r.stderr\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, ftune_bin()] + [str(a) for a in args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def last_json_line(text):
    """The last line of text that parses as a JSON object (ftune eval prints one)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON line in output:\n{text[-2000:]}")


class Zoo:
    """Lazily built model folders (per architecture and dtype) and PEFT adapters."""

    def __init__(self, root):
        self.root = str(root)
        self._models = {}

    def _f32(self, arch):
        if arch not in self._models:
            self._models[arch] = models.build_model(arch)
        return self._models[arch]

    def model(self, arch, dtype="f32"):
        d = os.path.join(self.root, f"{arch}-{dtype}")
        if not os.path.exists(os.path.join(d, "config.json")):
            models.save_model(self._f32(arch), d, dtype)
        return d

    def adapter(self, arch, name="ad", **lora_over):
        """A PEFT adapter (init_lora_weights=False) for the f32 model of arch."""
        d = os.path.join(self.root, f"{arch}-{name}")
        if not os.path.exists(os.path.join(d, "adapter_config.json")):
            models.make_adapter(self.model(arch, "f32"), arch, d, **lora_over)
        return d


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(tmp_path_factory.mktemp("zoo"))


def pytest_configure(config):
    # transformers 5 warns about its own deprecated helpers when PEFT calls them; not ours.
    config.addinivalue_line("filterwarnings", "ignore::FutureWarning")
    # Tests that need the extra peers (tests/peers/requirements-extra.txt), so they can be run
    # apart: `pytest -m llama_cpp`, `pytest -m mergekit` (or left out with `-m "not llama_cpp"`).
    config.addinivalue_line("markers", "llama_cpp: compares with llama.cpp (llama-cpp-python)")
    config.addinivalue_line("markers", "mergekit: compares with mergekit")


def llama_cpp_scripts():
    """The folder holding llama.cpp's convert_hf_to_gguf.py and convert_lora_to_gguf.py (with the
    gguf-py they import), unpacked by tools/llama-wheel.sh from llama-cpp-python's sdist."""
    import re

    here = os.path.dirname(os.path.abspath(__file__))
    req = open(os.path.join(here, "requirements-extra.txt")).read()
    ver = re.search(r"^llama-cpp-python==(\S+)", req, re.M).group(1)
    cache = os.environ.get("FTUNE_CACHE", os.path.expanduser("~/.cache/ftune"))
    return os.path.join(cache, "llama.cpp-" + ver)
