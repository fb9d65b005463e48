# tests/fuzz/fuzz.mk: libFuzzer harnesses for every parser of outside input (included by the
# Makefile; see docs/fuzzing.md).
#
# Each tests/fuzz/fuzz_NAME.c is one harness, built with clang, libFuzzer, ASan and UBSan into
# build-fuzz/fuzz_NAME against the library compiled the same way (build-fuzz/libftune.a). Its
# corpus is tests/corpus/NAME/ (seeds plus inputs that grew coverage or once crashed).
#
#   make fuzz        each harness for FUZZ_SECONDS (60); new coverage-growing inputs are merged
#                    into tests/corpus/NAME/ (-merge=1 -use_counters=0 keeps only those that reach
#                    code the corpus does not: tens of files, not hundreds); any
#                    crash, leak, timeout or sanitizer report fails, and its input is copied to
#                    tests/corpus/NAME-pending/ (not replayed until the bug is fixed and the file
#                    moved to tests/corpus/NAME/).
#   make fuzz-smoke  replays every corpus file through its harness, then fuzzes each harness for
#                    FUZZ_SMOKE_SECONDS (10) without touching the corpus; part of make test.
# Without clang's libFuzzer runtime (Debian: clang, libclang-rt-14-dev) both print why and skip.

FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_B             := build-fuzz
# UBSan checks stay recoverable in the code so that tests/fuzz/ubsan.supp can silence a known,
# reported finding while the fuzzers look for others; every other report stops the run
# (halt_on_error=1), which libFuzzer counts as a crash.
FUZZ_SAN           := -fsanitize=address,undefined -fno-omit-frame-pointer
FUZZ_CFLAGS        := -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-pass-failed -fopenmp \
                      -Iinclude -Isrc $(shell pkg-config --cflags openblas 2>/dev/null) $(FUZZ_SAN)
FUZZ_NAMES         := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS          := $(patsubst %,$(FUZZ_B)/fuzz_%,$(FUZZ_NAMES))
FUZZ_LIB_OBJ       := $(patsubst %.c,$(FUZZ_B)/%.o,$(LIB_SRC))
# Longest input per harness (bytes): room for real files of each kind, small enough to stay fast.
FUZZ_MAXLEN_safetensors   := 16384
FUZZ_MAXLEN_config        := 8192
FUZZ_MAXLEN_dataset       := 8192
FUZZ_MAXLEN_peft          := 8192
FUZZ_MAXLEN_tokenizer     := 65536
FUZZ_MAXLEN_chat_template := 16384
FUZZ_MAXLEN_gguf          := 8192
# libFuzzer options common to every run: 10 s per input is a hang; stop at the first finding.
FUZZ_OPTS := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_ENV  := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
             UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=tests/fuzz/ubsan.supp \
             OMP_NUM_THREADS=1

# Can clang link a libFuzzer program here? (checked when a fuzz target runs, not on every make)
FUZZ_CHECK = printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }\n' \
  | $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c - -o $(FUZZ_B)/.check >/dev/null 2>&1

$(FUZZ_B)/%.o: %.c $(HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	  $(call isa_flags,$<) -c $< -o $@

$(FUZZ_B)/libftune.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(FUZZ_B)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_B)/libftune.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_B)/libftune.a -o $@ $(LIBS)

.PHONY: fuzz-build
fuzz-build:
	@mkdir -p $(FUZZ_B)
	@if $(FUZZ_CHECK); then $(MAKE) --no-print-directory $(FUZZ_BINS); else \
	  echo "fuzz: skipped: $(FUZZ_CC) cannot link -fsanitize=fuzzer programs here" \
	       "(install clang and libclang-rt-14-dev: apt-get install clang libclang-rt-14-dev)"; fi

# Replay the corpus (libFuzzer runs every file of the corpus folder first), then fuzz briefly
# into a throw-away folder so that the committed corpus is left as it is.
fuzz-smoke:: fuzz-build
	@$(FUZZ_CHECK) || exit 0; fail=""; \
	for n in $(FUZZ_NAMES); do \
	  mkdir -p tests/corpus/$$n $(FUZZ_B)/smoke/$$n $(FUZZ_B)/artifacts/$$n; \
	  rm -f $(FUZZ_B)/smoke/$$n/* $(FUZZ_B)/artifacts/$$n/*; \
	  dict=""; [ -f tests/fuzz/$$n.dict ] && dict="-dict=tests/fuzz/$$n.dict"; \
	  if $(FUZZ_ENV) $(FUZZ_B)/fuzz_$$n $(FUZZ_OPTS) $$dict -max_len=$(FUZZ_MAXLEN_$$n) \
	       -max_total_time=$(FUZZ_SMOKE_SECONDS) -artifact_prefix=$(FUZZ_B)/artifacts/$$n/ \
	       $(FUZZ_B)/smoke/$$n tests/corpus/$$n > $(FUZZ_B)/smoke-$$n.log 2>&1; then \
	    echo "fuzz-smoke: $$n: ok ($$(ls tests/corpus/$$n | wc -l) corpus files replayed;" \
	         "$$(grep -o 'stat::number_of_executed_units: [0-9]*' $(FUZZ_B)/smoke-$$n.log | grep -o '[0-9]*$$') runs)"; \
	  else \
	    echo "fuzz-smoke: $$n: FAILED (log: $(FUZZ_B)/smoke-$$n.log; input: $(FUZZ_B)/artifacts/$$n/)"; \
	    grep -m1 -A12 -E '^==[0-9]+==ERROR|runtime error|^==[0-9]+== ERROR|ALARM' $(FUZZ_B)/smoke-$$n.log; \
	    fail="$$fail $$n"; \
	  fi; \
	done; \
	[ -z "$$fail" ] || { echo "fuzz-smoke: failed:$$fail"; exit 1; }

# Fuzz each harness for FUZZ_SECONDS, then merge what grew coverage into the corpus.
fuzz:: fuzz-build
	@$(FUZZ_CHECK) || exit 0; fail=""; \
	for n in $(FUZZ_NAMES); do \
	  mkdir -p tests/corpus/$$n $(FUZZ_B)/run/$$n $(FUZZ_B)/artifacts/$$n; \
	  rm -f $(FUZZ_B)/artifacts/$$n/*; \
	  dict=""; [ -f tests/fuzz/$$n.dict ] && dict="-dict=tests/fuzz/$$n.dict"; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS) s (log: $(FUZZ_B)/fuzz-$$n.log)"; \
	  if $(FUZZ_ENV) $(FUZZ_B)/fuzz_$$n $(FUZZ_OPTS) $$dict -max_len=$(FUZZ_MAXLEN_$$n) \
	       -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_B)/artifacts/$$n/ \
	       $(FUZZ_B)/run/$$n tests/corpus/$$n > $(FUZZ_B)/fuzz-$$n.log 2>&1; then :; else \
	    echo "fuzz: $$n: FAILED (log: $(FUZZ_B)/fuzz-$$n.log)"; \
	    grep -m1 -A12 -E '^==[0-9]+==ERROR|runtime error|^==[0-9]+== ERROR|ALARM' $(FUZZ_B)/fuzz-$$n.log; \
	    mkdir -p tests/corpus/$$n-pending; \
	    for a in $(FUZZ_B)/artifacts/$$n/*; do [ -f "$$a" ] && cp "$$a" tests/corpus/$$n-pending/ \
	      && echo "fuzz: $$n: input kept as tests/corpus/$$n-pending/$$(basename $$a)"; done; \
	    fail="$$fail $$n"; \
	  fi; \
	  grep -E '^#[0-9]+.*cov:' $(FUZZ_B)/fuzz-$$n.log | tail -n 1 | cut -c1-100 | sed "s/^/fuzz: $$n: /"; \
	  grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' $(FUZZ_B)/fuzz-$$n.log | sed "s/^/fuzz: $$n: /"; \
	  before=$$(ls tests/corpus/$$n | wc -l); \
	  $(FUZZ_ENV) $(FUZZ_B)/fuzz_$$n -merge=1 -use_counters=0 $(FUZZ_OPTS) -max_len=$(FUZZ_MAXLEN_$$n) \
	    tests/corpus/$$n $(FUZZ_B)/run/$$n > $(FUZZ_B)/merge-$$n.log 2>&1 \
	    || echo "fuzz: $$n: merge failed (log: $(FUZZ_B)/merge-$$n.log)"; \
	  echo "fuzz: $$n: corpus $$before -> $$(ls tests/corpus/$$n | wc -l) files"; \
	done; \
	[ -z "$$fail" ] || { echo "fuzz: failed:$$fail"; exit 1; }

.PHONY: fuzz-clean
fuzz-clean:
	rm -rf $(FUZZ_B)
