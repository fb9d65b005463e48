#!/usr/bin/env bash
# Build llama-cpp-python's wheel once (it compiles llama.cpp: about 7 minutes on 2 cores) into
# ~/.cache/ftune/wheels/, with GGML_NATIVE=OFF so the cached wheel runs on AVX2-only and AVX-512
# CPUs alike, and unpack llama.cpp's converter scripts (convert_hf_to_gguf.py,
# convert_lora_to_gguf.py and the gguf-py they import) from the same source distribution into
# ~/.cache/ftune/llama.cpp-<version>/ for the export tests. Usage: llama-wheel.sh VENV
set -euo pipefail
venv=$1
ver=$(sed -n 's/^llama-cpp-python==//p' "$(dirname "$0")/../tests/peers/requirements-extra.txt")
cache="${FTUNE_CACHE:-$HOME/.cache/ftune}"
wheels="$cache/wheels"
src="$cache/llama.cpp-$ver"
mkdir -p "$wheels"
if ! ls "$wheels"/llama_cpp_python-"$ver"-*.whl >/dev/null 2>&1; then
  command -v cmake >/dev/null || { echo "ftune: error: building llama-cpp-python needs cmake" >&2
    echo "  hint: sudo apt-get install cmake g++" >&2; exit 1; }
  echo "ftune: building llama-cpp-python $ver once (compiles llama.cpp, ~7 min on 2 cores)" >&2
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$ver" -d "$tmp"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$venv/bin/pip" wheel -q --disable-pip-version-check --no-deps "$tmp"/llama_cpp_python-"$ver".tar.gz \
    -w "$tmp/out"
  mv "$tmp"/out/llama_cpp_python-"$ver"-*.whl "$wheels/"
  rm -rf "$tmp"
fi
# (conversion/ is the package convert_hf_to_gguf.py imports since llama.cpp split it up; an
# unpack made before it was listed here lacks it and is redone)
if [ ! -f "$src/.complete" ] || [ ! -d "$src/conversion" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$ver" -d "$tmp"
  rm -rf "$src" && mkdir -p "$src"
  tar xzf "$tmp"/llama_cpp_python-"$ver".tar.gz -C "$src" --strip-components=3 \
    "llama_cpp_python-$ver/vendor/llama.cpp/convert_hf_to_gguf.py" \
    "llama_cpp_python-$ver/vendor/llama.cpp/convert_lora_to_gguf.py" \
    "llama_cpp_python-$ver/vendor/llama.cpp/conversion" \
    "llama_cpp_python-$ver/vendor/llama.cpp/gguf-py"
  rm -rf "$tmp"
  touch "$src/.complete"
fi
