#!/usr/bin/env bash
# Install the Debian packages ftune builds against, if any is missing. Needs root or sudo;
# otherwise prints the apt-get line to run. The build itself never needs Python.
set -euo pipefail
need=()
have_hdr() { [ -e "$1" ] || [ -n "$(find /usr/include -path "*$2" -print -quit 2>/dev/null)" ]; }
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
have_hdr /usr/include/cjson/cJSON.h cjson/cJSON.h || need+=(libcjson-dev)
have_hdr /usr/include/pcre2.h pcre2.h || need+=(libpcre2-dev)
have_hdr /usr/include/utf8proc.h utf8proc.h || need+=(libutf8proc-dev)
[ -e /usr/include/x86_64-linux-gnu/cblas-openblas.h ] || ls /usr/include/*/openblas*/cblas.h >/dev/null 2>&1 \
  || [ -e /usr/include/openblas/cblas.h ] || need+=(libopenblas-dev)
# tests/gemm_bf16_test.c runs the AVX512_BF16 kernel through SIMDe's emulation on CPUs without it
have_hdr /usr/include/simde/x86/avx512.h simde/x86/avx512.h || need+=(libsimde-dev)
# MPI for data-parallel training (mpirun -np N ftune train; docs/distributed.md)
# (the Makefile takes MPI's flags from the mpicc wrapper, which libopenmpi-dev brings)
command -v mpicc >/dev/null || need+=(libopenmpi-dev)
command -v mpirun >/dev/null || need+=(openmpi-bin)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# the fuzz harnesses (make fuzz, make fuzz-smoke): clang's libFuzzer runtime and OpenMP
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
ls /usr/lib/llvm-*/lib/libomp.so >/dev/null 2>&1 || [ -e /usr/lib/x86_64-linux-gnu/libomp.so ] || need+=(libomp-dev)
[ ${#need[@]} -eq 0 ] && exit 0
echo "ftune: installing missing packages: ${need[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"; } >/tmp/ftune-apt.log 2>&1; then
  echo "ftune: error: could not install ${need[*]} (see /tmp/ftune-apt.log)" >&2
  echo "  hint: run: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
