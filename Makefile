# ftune build. `make` builds build/ftune and build/libftune.a; `make test` is what CI runs.
# Sources are found by wildcard: adding src/<module>/<file>.c or tests/<module>_test.c needs no
# change here. Files named *_avx512.c / *_avx2.c / *_amx.c are compiled for that instruction set only and
# are called through run-time dispatch (src/base/cpu.c), never directly.

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# Flags the build needs whatever CFLAGS / LDFLAGS a caller passes (make asan passes its own).
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Iinclude -Isrc \
           $(shell pkg-config --cflags openblas 2>/dev/null)
LIBS    := -fopenmp -lopenblas -lcjson -lpcre2-8 -lutf8proc -lm -lpthread
# MPI (src/dist/, docs/distributed.md): built in when Open MPI's compiler wrapper (or pkg-config's
# ompi-c) gives its flags, defining FT_HAVE_MPI; without it ftune builds as one process
# (`ftune --version` says which). Only the flags are taken: the compiler stays $(CC).
MPI_LIBS := $(shell mpicc --showme:link 2>/dev/null || pkg-config --libs ompi-c 2>/dev/null)
ifneq ($(strip $(MPI_LIBS)),)
BASE_CFLAGS += -DFT_HAVE_MPI $(shell mpicc --showme:compile 2>/dev/null || pkg-config --cflags ompi-c 2>/dev/null)
LIBS    += $(MPI_LIBS)
endif
AVX512  := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c
AVX2    := -mavx2 -mfma -mf16c
AMX     := $(AVX512) -mamx-tile -mamx-bf16
# The instruction-set flags a source file gets from its name (every compile rule uses this one).
isa_flags = $(if $(findstring _avx512,$(1)),$(AVX512))$(if $(findstring _avx2,$(1)),$(AVX2))$(if $(findstring _amx,$(1)),$(AMX))

B       ?= build
LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
TESTS   := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/*_test.c))
# drivers the peer tests run to reach library internals (each file says what it is for)
TOOLS   := $(patsubst tests/tools/%.c,$(B)/tests/tools/%,$(wildcard tests/tools/*.c))
HDRS    := $(wildcard include/*.h src/*/*.h)

.PHONY: all test ctest ctest-avx2 peertest peertest-avx2 asan demo bench bench-train bench-gemm bench-compare bench-dist bench-generate bench-merge bench-test deps venv clean format
all: $(B)/ftune $(TESTS) $(TOOLS)

$(B)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(call isa_flags,$<) -c $< -o $@

$(B)/libftune.a: $(patsubst %.c,$(B)/%.o,$(LIB_SRC))
	@rm -f $@
	ar rcs $@ $^

$(B)/ftune: $(patsubst %.c,$(B)/%.o,$(CLI_SRC)) $(B)/libftune.a
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(LDFLAGS) $^ -o $@ $(LIBS)

$(B)/tests/tools/%: tests/tools/%.c $(B)/libftune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(LDFLAGS) $< $(B)/libftune.a -o $@ $(LIBS)

$(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(B)/libftune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(LDFLAGS) $< $(B)/libftune.a -o $@ $(LIBS)
# gemm_bf16_test also builds the AVX512_BF16 kernel against SIMDe's emulation; GCC notes the
# 64-byte vectors passed by value there (an ABI change of GCC 4.6; no pragma silences it).
$(B)/tests/gemm_bf16_test: private BASE_CFLAGS += -Wno-psabi

# Install missing Debian packages (when we can), then the pinned Python peers in a venv under
# ~/.cache/ftune/ keyed by tests/peers/requirements.txt (created once, reused).
deps:
	@bash tools/deps.sh

venv:
	@bash tools/venv.sh >/dev/null

ctest: all
	@bash tools/run-ctests.sh $(B)/tests

peertest: all asan-build
	@VENV=$$(bash tools/venv.sh) && FTUNE_BIN=$(abspath $(B)/ftune) \
	  FTUNE_ASAN_BIN=$(abspath build-asan/ftune) \
	  $$VENV/bin/python -m pytest -q -p no:cacheprovider tests/peers

# The machines that test ftune differ from day to day (AVX2-only and AVX-512 + BF16 CPUs), and
# ftune's kernels, PyTorch and bitsandbytes each pick code paths by CPU. On an AVX-512 CPU
# `make test` also runs the C tests and the peer tests whose numbers depend on those paths as an
# AVX2-only CPU runs them (FTUNE_ISA=avx2 caps ftune's kernels, ATEN_CPU_CAPABILITY=avx2
# PyTorch's), so a change made on either kind of machine is tested for both.
ISA_PEERS := $(addprefix tests/peers/,test_model_parity.py test_train_parity.py test_qlora.py \
               test_quantize_bnb.py test_dtype_bf16.py test_q8_0.py test_packing.py \
               test_generate.py test_gguf_model.py test_llamacpp.py test_merge_models.py)
HAVE_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo yes)

ctest-avx2: all
	@FTUNE_ISA=avx2 bash tools/run-ctests.sh $(B)/tests

peertest-avx2: all
	@VENV=$$(bash tools/venv.sh) && FTUNE_BIN=$(abspath $(B)/ftune) FTUNE_ISA=avx2 \
	  ATEN_CPU_CAPABILITY=avx2 FTUNE_ASAN_BIN=/nonexistent \
	  $$VENV/bin/python -m pytest -q -p no:cacheprovider $(ISA_PEERS)

test: deps
	@$(MAKE) --no-print-directory ctest
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory peertest
ifeq ($(HAVE_AVX512),yes)
	@echo "ftune: AVX-512 CPU: the ISA-dependent tests again as on an AVX2-only CPU (FTUNE_ISA=avx2 ATEN_CPU_CAPABILITY=avx2)"
	@$(MAKE) --no-print-directory ctest-avx2
	@$(MAKE) --no-print-directory peertest-avx2
endif

# libFuzzer harnesses: `make fuzz` (FUZZ_SECONDS per harness, default 60) and `make fuzz-smoke`
# (replays tests/corpus/ and runs each harness briefly; part of make test).
-include tests/fuzz/fuzz.mk
fuzz-smoke::
fuzz::

# The C tests under AddressSanitizer and UndefinedBehaviorSanitizer.
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan-build:
	@$(MAKE) --no-print-directory B=build-asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
asan: deps asan-build
	@ASAN_OPTIONS=detect_leaks=1 bash tools/run-ctests.sh build-asan/tests

demo: deps all
	@bash tools/demo.sh $(B)/ftune

# Benchmarks (bench/README.md). bench-gemm: the fp32 GEMM peak of each kernel family this CPU
# runs; bench-train: ftune against PyTorch + PEFT on the issue's shapes (BENCH_QUICK=1: one shape),
# saved under bench/results/ (SHAPES=qwen3-0.6b: one shape; merge files with bench/run.sh --merge);
# bench-compare [A=old.json B=new.json]: the last two runs (or A, B) configuration by
# configuration; bench-test: the bench's own bookkeeping on stored results (seconds, no training).
# oneDNN is optional: compared when libdnnl-dev is installed.
DNNL_DEF := $(if $(wildcard /usr/include/dnnl.h),-DHAVE_DNNL)
$(B)/bench/gemm_peak: bench/gemm_peak.c $(B)/libftune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(DNNL_DEF) $< $(B)/libftune.a -o $@ $(LIBS) $(if $(DNNL_DEF),-ldnnl)
bench-gemm: $(B)/bench/gemm_peak
	@python3 bench/gemm_peaks.py --bin $(B)/bench/gemm_peak
bench-train: all $(B)/bench/gemm_peak
	@bash bench/run.sh $(if $(SHAPES),--shapes $(SHAPES))
# bench-merge: ftune merge / merge-models beside PEFT and mergekit on a Qwen3-0.6B-shape model
# (bench/bench_merge.py; results under bench/results/merge-*.json). Not part of make test.
bench-merge: all
	@$$(bash tools/venv.sh)/bin/python bench/bench_merge.py --python $$(bash tools/venv.sh)/bin/python
# bench-generate: ftune generate against llama.cpp on the same GGUF files (bench/bench_generate.py)
$(B)/bench/membw: bench/membw.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $< -o $@
# matvec: decode's matrix-vector product alone, one-row kernel calls against qmatvec (bench/matvec.c)
$(B)/bench/matvec: bench/matvec.c $(B)/libftune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) $(LDFLAGS) $< $(B)/libftune.a -o $@ $(LIBS)
bench-generate: all $(B)/bench/membw
	@bash bench/run.sh --generate --membw $(B)/bench/membw $(if $(SHAPES),--shapes $(SHAPES))
bench-test:
	@$$(bash tools/venv.sh)/bin/python -m pytest -q bench/test_bench_train.py
bench-compare:
	@bash bench/run.sh --compare $(A) $(if $(A),$(B))
bench: bench-train
# data-parallel: tokens/s at 1 and 2 ranks, communication, per-rank peak RSS with --shard-base
bench-dist: all
	@python3 bench/bench_dist.py $(BENCH_DIST_ARGS)

format:
	clang-format -i $(wildcard include/*.h src/*/*.c src/*/*.h tests/*.c tests/*.h bench/*.c)

clean:
	rm -rf build build-asan build-fuzz
