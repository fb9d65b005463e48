/*
 * gemm_bf16.c: bf16 products with fp32 accumulation (gemm_bf16.h): the reference, the fallback
 * (widen to fp32, OpenBLAS sgemm) and the choice between them, the AVX512_BF16 kernel
 * (gemm_bf16_avx512.c) and the AMX one (gemm_bf16_amx.c), a table row per ISA level (base/cpu.h);
 * and the fp32 <-> bf16 row conversions (bf16_round_rows, the fallback's widening), AVX2 ones at
 * level avx2 and up. Nothing here allocates: the products work in the caller's scratch
 * (gemm_bf16_scratch_bytes).
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_GEMM_BF16_AVX512 1 /* and gemm_bf16_avx2.c, gemm_bf16_amx.c */
#endif
#include "ops/gemm_bf16.h"

#include "base/cpu.h"
#include "base/half.h"
#include "ops/ops.h"

#include <string.h>

/* Row conversions: these loops over base/half.h are the definition; gemm_bf16_avx2.c has the same
 * 16 at a time (the scalar loops do not vectorize at -O2), chosen with the product kernel below. */
typedef void (*widen_fn)(float *dst, const uint16_t *src, size_t n);
typedef void (*round_fn)(uint16_t *dst, const float *src, size_t n);

static void widen_portable(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

static void round_portable(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

typedef struct bf16_kernels bf16_kernels;
static const bf16_kernels *kernels(void);

void bf16_round_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, int cols);

void gemm_bf16_ref(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc) {
    /* each C element summed over k in order, in double; a row's columns in runs of REF_COLS on
     * the stack (B read along its rows either way, so the tests' large products stay fast) */
    enum { REF_COLS = 256 };
    double acc[REF_COLS];
    for (int m = 0; m < M; m++) {
        const uint16_t *a = A + (size_t)m * lda;
        for (int n0 = 0; n0 < N; n0 += REF_COLS) {
            int nn = N - n0 < REF_COLS ? N - n0 : REF_COLS;
            for (int n = 0; n < nn; n++)
                acc[n] = 0;
            if (transB)
                for (int n = 0; n < nn; n++)
                    for (int k = 0; k < K; k++)
                        acc[n] +=
                            (double)bf16_to_f32(a[k]) * bf16_to_f32(B[(size_t)(n0 + n) * ldb + k]);
            else
                for (int k = 0; k < K; k++) {
                    double av = bf16_to_f32(a[k]);
                    const uint16_t *b = B + (size_t)k * ldb + n0;
                    for (int n = 0; n < nn; n++)
                        acc[n] += av * bf16_to_f32(b[n]);
                }
            for (int n = 0; n < nn; n++) {
                float *c = &C[(size_t)m * ldc + n0 + n];
                *c = (float)(beta == 0 ? acc[n] : beta * *c + acc[n]);
            }
        }
    }
}

/* Widen rows of bf16 to fp32 (exact). */
static void widen_rows(float *dst, size_t ldd, const uint16_t *src, size_t lds, int rows, int cols);

/* Rows of A widened per block, so the fp32 copy stays small; B widened once per call. */
enum { FALLBACK_ROWS = 256 };

/* Bytes of the fallback's fp32 copies: all of B and a block of A's rows. */
static size_t fallback_bytes(int M, int N, int K) {
    int mb = M < FALLBACK_ROWS ? M : FALLBACK_ROWS;
    return ((size_t)N * K + (size_t)mb * K) * sizeof(float);
}

/* -1 (C untouched) when the scratch is too small for the fp32 copies. */
static int gemm_bf16_fallback(int transB, int M, int N, int K, const uint16_t *A, int lda,
                              const uint16_t *B, int ldb, float beta, float *C, int ldc, void *ws,
                              size_t wsb) {
    int br = transB ? N : K, bc = transB ? K : N;
    int mb = M < FALLBACK_ROWS ? M : FALLBACK_ROWS;
    if (!ws || wsb < fallback_bytes(M, N, K)) return -1;
    float *b32 = ws, *a32 = b32 + (size_t)br * bc;
    widen_rows(b32, (size_t)bc, B, (size_t)ldb, br, bc);
    for (int m0 = 0; m0 < M; m0 += mb) {
        int m = M - m0 < mb ? M - m0 : mb;
        widen_rows(a32, (size_t)K, A + (size_t)m0 * lda, (size_t)lda, m, K);
        gemm(0, transB, m, N, K, 1.0f, a32, K, b32, bc, beta, C + (size_t)m0 * ldc, ldc);
    }
    return 0;
}

/* A product kernel: 0, or -1 (C untouched) when it cannot run (its scratch is too small). */
typedef int (*gemm_bf16_fn)(int, int, int, int, const uint16_t *, int, const uint16_t *, int, float,
                            float *, int, void *, size_t);

#ifdef HAVE_GEMM_BF16_AVX512
/* gemm_bf16_avx2.c */
void bf16_widen_avx2(float *dst, const uint16_t *src, size_t n);
void bf16_round_avx2(uint16_t *dst, const float *src, size_t n);

/* gemm_bf16_avx512.c; -1 when the scratch is too small for its packing buffers */
int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc, void *ws, size_t wsb);
size_t gemm_bf16_avx512_scratch(int M, int N, int K);

/* gemm_bf16_amx.c; the same contract (it hands products of few rows to the AVX512_BF16 one) */
int gemm_bf16_amx(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc, void *ws, size_t wsb);
size_t gemm_bf16_amx_scratch(int M, int N, int K);
#endif

/* The kernel sets, best first: the product and the row conversions (the AVX2 conversions are
 * the portable loops 16 at a time, gemm_bf16_test checks them against each other). The first
 * one the ISA level (base/cpu.h) allows runs; when its product cannot (scratch too small), the
 * ones after it are tried, and the reference, which needs nothing, ends the list. */
struct bf16_kernels {
    const char *name;
    cpu_isa level;
    gemm_bf16_fn gemm;
    size_t (*scratch)(int M, int N, int K);
    widen_fn widen;
    round_fn round;
};

static const bf16_kernels table[] = {
#ifdef HAVE_GEMM_BF16_AVX512
    {"amx", CPU_AMX, gemm_bf16_amx, gemm_bf16_amx_scratch, bf16_widen_avx2, bf16_round_avx2},
    {"avx512", CPU_AVX512BF16, gemm_bf16_avx512, gemm_bf16_avx512_scratch, bf16_widen_avx2,
     bf16_round_avx2},
    {"fallback", CPU_AVX2, gemm_bf16_fallback, fallback_bytes, bf16_widen_avx2, bf16_round_avx2},
#endif
    {"fallback", CPU_PORTABLE, gemm_bf16_fallback, fallback_bytes, widen_portable, round_portable},
};
enum { NTABLE = sizeof table / sizeof table[0] };

static const bf16_kernels *kernels(void) { return &table[CPU_PICK(table)]; }

static void widen_rows(float *dst, size_t ldd, const uint16_t *src, size_t lds, int rows,
                       int cols) {
    widen_fn w = kernels()->widen;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= 65536)
    for (int r = 0; r < rows; r++)
        w(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols);
}

void bf16_round_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, int cols) {
    round_fn round = kernels()->round;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= 65536)
    for (int r = 0; r < rows; r++)
        round(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols);
}

void gemm_bf16(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
               int ldb, float beta, float *C, int ldc, void *scratch, size_t scratch_bytes) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: C = beta * C */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float *c = &C[(size_t)m * ldc + n];
                *c = beta == 0 ? 0 : beta * *c;
            }
        return;
    }
    for (const bf16_kernels *k = kernels(); k < table + NTABLE; k++)
        if (!k->gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, scratch, scratch_bytes)) return;
    gemm_bf16_ref(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

size_t gemm_bf16_scratch_bytes(int M, int N, int K) {
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    return kernels()->scratch(M, N, K);
}

const char *gemm_bf16_isa(void) { return kernels()->name; }
