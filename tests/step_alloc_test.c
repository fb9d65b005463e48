/*
 * step_alloc_test.c: a training step (model_forward + model_backward) allocates nothing, as
 * model.h promises: the activations, the matmul scratch and attention's workspace are sized once
 * by acts_alloc.
 *
 * How: this program defines malloc, calloc, realloc, aligned_alloc, posix_memalign and free
 * itself, over glibc's __libc_* functions, so every allocation in the process, on every thread,
 * passes a counter, which tells by the caller's address those made by this executable's code
 * (ftune is linked in statically) from those made inside shared libraries (libgomp's thread
 * teams and OpenBLAS's buffers, which are theirs and only reported). A step is run once to warm
 * up, then ftune's count must stay at zero over two more steps. Each configuration takes a
 * different matmul path: fp32 (BLAS on the stored matrix), nf4 with double quantization
 * (dequantized panels in the scratch), --dtype bf16 (bf16 panels and gemm_bf16's scratch), with a
 * q8 LM head, and with gradient checkpointing (recompute in backward), at the ISA level this CPU
 * runs and at portable. The loss of the counted steps must equal the warm-up's (the same batch), so
 * the steps ran for real.
 *
 * Under AddressSanitizer (make asan), which owns malloc, the counting is skipped and only the
 * steps run.
 */
#include "base/cpu.h"
#include "data/dataset.h"
#include "model/init.h"
#include "model/model.h"
#include "test.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNTING 0
#endif
#endif
#ifndef COUNTING
#define COUNTING 1
#endif

/* Allocations since the counters were last cleared: those called from this executable's code
 * (ftune is linked in statically), and those from the shared libraries (libgomp's thread teams,
 * OpenBLAS's buffers: not ftune's to remove, reported only). */
static atomic_long allocs, foreign;
#if COUNTING
static void *callers[8]; /* the callers of the first few of ours, printed when a check fails */
extern char __executable_start, etext;

static void count(void *caller) {
    if ((char *)caller < &__executable_start || (char *)caller >= &etext) {
        atomic_fetch_add(&foreign, 1);
        return;
    }
    long i = atomic_fetch_add(&allocs, 1);
    if (i >= 0 && i < 8) callers[i] = caller;
}

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void __libc_free(void *);

void *malloc(size_t n) {
    count(__builtin_return_address(0));
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t s) {
    count(__builtin_return_address(0));
    return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
    count(__builtin_return_address(0));
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t al, size_t n) {
    count(__builtin_return_address(0));
    return __libc_memalign(al, n);
}
int posix_memalign(void **p, size_t al, size_t n) {
    count(__builtin_return_address(0));
    *p = __libc_memalign(al, n);
    return *p ? 0 : 12; /* ENOMEM */
}
void *memalign(size_t al, size_t n) {
    count(__builtin_return_address(0));
    return __libc_memalign(al, n);
}
void free(void *p) { __libc_free(p); }
#endif

static void check_config(const char *dir, const char *name, const model_load_options *lo,
                         int ckpt) {
    ft_error err;
    model m;
    REQUIRE(model_load_with(dir, lo, &m, &err) == FT_OK, "%s: load: %s", name, err.what);
    unsigned mask;
    REQUIRE(lora_parse_targets(&m.cfg, "all-linear", &mask, &err) == FT_OK, "targets: %s",
            err.what);
    REQUIRE(lora_create(&m.cfg, 4, 8, 0.1, 0, mask, NULL, &m.lora, &err) == FT_OK,
            "lora_create: %s", err.what);
    for (size_t i = 0; i < m.lora->n_params; i++)
        m.lora->params[i] = 0.01f * (float)((int)(i % 13) - 6);
    batch b;
    REQUIRE(batch_alloc(&b, 2, 24, &err) == FT_OK, "batch_alloc: %s", err.what);
    acts *a;
    REQUIRE(acts_alloc_ckpt(&m, 2, 24, 0, ckpt, &a, &err) == FT_OK, "acts: %s", err.what);
    dataset ds = {0};
    ds.n = 2;
    ds.ex = calloc(2, sizeof(example));
    for (int e = 0; e < 2; e++) {
        int n = 24 - 7 * e;
        ds.ex[e].n = n;
        ds.ex[e].ids = malloc(sizeof(int32_t) * (size_t)n);
        ds.ex[e].labels = malloc(sizeof(int32_t) * (size_t)n);
        for (int t = 0; t < n; t++)
            ds.ex[e].ids[t] = ds.ex[e].labels[t] = (int32_t)((t * 31 + e * 7) % 97);
    }
    int idx[2] = {0, 1};
    batch_fill(&b, &ds, idx, 2);
    double warm = model_forward(&m, a, &b, 1, 5, NULL, NULL);
    model_backward(&m, a, &b, 0.5f, 5);
    atomic_store(&allocs, 0);
    atomic_store(&foreign, 0);
    double loss[2];
    for (int s = 0; s < 2; s++) {
        loss[s] = model_forward(&m, a, &b, 1, 5, NULL, NULL);
        model_backward(&m, a, &b, 0.5f, 5);
    }
    long n = atomic_load(&allocs), nf = atomic_load(&foreign);
    CHECK(!COUNTING || n == 0, "%s at %s: %ld allocations in two steps", name,
          cpu_isa_name(cpu_level()), n);
    if (COUNTING)
        printf("%s at %s: %ld allocations by ftune, %ld by the shared libraries (OpenMP, BLAS)\n",
               name, cpu_isa_name(cpu_level()), n, nf);
#if COUNTING
    for (long i = 0; i < n && i < 8; i++) {
        Dl_info info = {0};
        dladdr(callers[i], &info);
        fprintf(stderr, "  allocation %ld called from %p (%s in %s)\n", i, callers[i],
                info.dli_sname ? info.dli_sname : "?", info.dli_fname ? info.dli_fname : "?");
    }
#endif
    CHECK(isfinite(warm) && loss[0] == warm && loss[1] == warm, "%s: losses %.17g %.17g %.17g",
          name, warm, loss[0], loss[1]);
    acts_free(a);
    batch_free(&b);
    dataset_free(&ds);
    model_free(&m);
}

int main(void) {
    char dir[] = "/tmp/ftune_step_alloc_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp %s", dir);
        return test_summary("step_alloc");
    }
    ft_error err;
    CHECK(model_init_random("llama", "tiny", 97, 3, dir, &err) == FT_OK, "init: %s", err.what);
    const model_load_options fp32 = {0}, nf4 = {.quant = "nf4", .double_quant = 1},
                             bf16 = {.dtype = "bf16", .lm_head = "q8"};
    cpu_isa native = cpu_level();
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !cpu_set_level(CPU_PORTABLE)) break;
        check_config(dir, "fp32", &fp32, CKPT_NONE);
        check_config(dir, "fp32, checkpointed", &fp32, CKPT_FP32);
        check_config(dir, "nf4 double-quant", &nf4, CKPT_NONE);
        check_config(dir, "bf16 compute, q8 head", &bf16, CKPT_BF16);
    }
    cpu_set_level(native);
    if (!COUNTING) printf("step_alloc: allocations not counted (AddressSanitizer owns malloc)\n");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    return test_summary("step_alloc");
}
