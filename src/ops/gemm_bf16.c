/*
 * gemm_bf16.c: bf16 products with fp32 accumulation (gemm_bf16.h): the reference, the fallback
 * (widen to fp32, OpenBLAS sgemm) and the choice between them and the AVX512_BF16 kernel
 * (gemm_bf16_avx512.c), made once, on first use, from CPUID and FTUNE_ISA; and the fp32 <-> bf16
 * row conversions (bf16_round_rows, the fallback's widening), AVX2 ones when the CPU has it.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#define HAVE_GEMM_BF16_AVX512 1 /* and gemm_bf16_avx2.c */
#endif
#include "ops/gemm_bf16.h"

#include "ops/ops.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static inline float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Row conversions: these loops are the definition; gemm_bf16_avx2.c has the same 16 at a time
 * (the scalar loops do not vectorize at -O2), chosen with the product kernel below. */
typedef void (*widen_fn)(float *dst, const uint16_t *src, size_t n);
typedef void (*round_fn)(uint16_t *dst, const float *src, size_t n);

static void widen_portable(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = widen(src[i]);
}

static void round_portable(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = round_bf16(src[i]);
}

static widen_fn widen_row = widen_portable;
static round_fn round_row = round_portable;
static void init(void);

void bf16_round_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, int cols) {
    init();
    round_fn round = round_row;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= 65536)
    for (int r = 0; r < rows; r++)
        round(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols);
}

void gemm_bf16_ref(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc) {
    /* each C row summed over k in order, in a row of doubles (B read along its rows either way,
     * so the tests' large products stay fast enough to run) */
    double *acc = malloc((size_t)(N > 0 ? N : 1) * sizeof(double));
    if (!acc) abort(); /* a test-only reference: no way to go on */
    for (int m = 0; m < M; m++) {
        const uint16_t *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++)
            acc[n] = 0;
        if (transB)
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++)
                    acc[n] += (double)widen(a[k]) * widen(B[(size_t)n * ldb + k]);
        else
            for (int k = 0; k < K; k++) {
                double av = widen(a[k]);
                const uint16_t *b = B + (size_t)k * ldb;
                for (int n = 0; n < N; n++)
                    acc[n] += av * widen(b[n]);
            }
        for (int n = 0; n < N; n++) {
            float *c = &C[(size_t)m * ldc + n];
            *c = (float)(beta == 0 ? acc[n] : beta * *c + acc[n]);
        }
    }
    free(acc);
}

/* Widen rows of bf16 to fp32 (exact). */
static void widen_rows(float *dst, size_t ldd, const uint16_t *src, size_t lds, int rows,
                       int cols) {
    widen_fn w = widen_row;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= 65536)
    for (int r = 0; r < rows; r++)
        w(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols);
}

/* Rows of A widened per block, so the fp32 copy stays small; B widened once per call. */
enum { FALLBACK_ROWS = 256 };

/* Floats of the fallback's fp32 copies: all of B and a block of A's rows. */
static size_t fallback_floats(int M, int N, int K) {
    int mb = M < FALLBACK_ROWS ? M : FALLBACK_ROWS;
    return (size_t)N * K + (size_t)mb * K;
}

static void gemm_bf16_fallback(int transB, int M, int N, int K, const uint16_t *A, int lda,
                               const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    int br = transB ? N : K, bc = transB ? K : N;
    int mb = M < FALLBACK_ROWS ? M : FALLBACK_ROWS;
    float *b32 = malloc(fallback_floats(M, N, K) * sizeof(float));
    if (!b32) { /* no memory for the copies: the reference needs none */
        gemm_bf16_ref(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *a32 = b32 + (size_t)br * bc;
    widen_rows(b32, (size_t)bc, B, (size_t)ldb, br, bc);
    for (int m0 = 0; m0 < M; m0 += mb) {
        int m = M - m0 < mb ? M - m0 : mb;
        widen_rows(a32, (size_t)K, A + (size_t)m0 * lda, (size_t)lda, m, K);
        gemm(0, transB, m, N, K, 1.0f, a32, K, b32, bc, beta, C + (size_t)m0 * ldc, ldc);
    }
    free(b32);
}

typedef void (*gemm_bf16_fn)(int, int, int, int, const uint16_t *, int, const uint16_t *, int,
                             float, float *, int);

#ifdef HAVE_GEMM_BF16_AVX512
/* gemm_bf16_avx2.c */
void bf16_widen_avx2(float *dst, const uint16_t *src, size_t n);
void bf16_round_avx2(uint16_t *dst, const float *src, size_t n);

/* gemm_bf16_avx512.c; -1 when it could not allocate its packing buffers */
int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc);
size_t gemm_bf16_avx512_scratch(int M, int N, int K);

static void gemm_bf16_dp(int transB, int M, int N, int K, const uint16_t *A, int lda,
                         const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    if (gemm_bf16_avx512(transB, M, N, K, A, lda, B, ldb, beta, C, ldc))
        gemm_bf16_fallback(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* AVX512_BF16 from CPUID (leaf 7 subleaf 1, EAX bit 5), with the AVX-512 subsets the kernel's
 * file is compiled for (leaf 7: EBX bits 16 F, 17 DQ, 30 BW, 31 VL), and the OS saving the
 * opmask and zmm registers (OSXSAVE, then XCR0 bits 1, 2, 5, 6, 7). CPUID, not
 * __builtin_cpu_supports: clang 14 does not know "avx512bf16". */
static int cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 27 & 1)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned need = 1u << 16 | 1u << 17 | 1u << 30 | 1u << 31;
    if ((b & need) != need || a < 1) return 0; /* a: the last subleaf of leaf 7 */
    __cpuid_count(7, 1, a, b, c, d);
    return a >> 5 & 1;
}
#else
static int cpu_has_avx512_bf16(void) { return 0; }
#endif

static gemm_bf16_fn active = gemm_bf16_fallback;
static const char *active_name = "fallback";
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

/* The AVX512_BF16 kernel when the CPU runs it, and the AVX2 conversions when it has AVX2,
 * unless FTUNE_ISA caps the choice with the names qtensor.h uses: "avx2" means the fallback
 * product, "portable" that and the scalar conversions. */
static void choose_kernel(void) {
    const char *cap = getenv("FTUNE_ISA");
    int portable = cap && !strcasecmp(cap, "portable");
    int capped = portable || (cap && !strcasecmp(cap, "avx2"));
#ifdef HAVE_GEMM_BF16_AVX512
    if (!portable && __builtin_cpu_supports("avx2"))
        widen_row = bf16_widen_avx2, round_row = bf16_round_avx2;
#endif
    if (!capped) gemm_bf16_set_isa("avx512");
}

static void init(void) { pthread_once(&active_once, choose_kernel); }

void gemm_bf16(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
               int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: C = beta * C */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float *c = &C[(size_t)m * ldc + n];
                *c = beta == 0 ? 0 : beta * *c;
            }
        return;
    }
    init();
    active(transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

size_t gemm_bf16_scratch_bytes(int M, int N, int K) {
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    init();
#ifdef HAVE_GEMM_BF16_AVX512
    if (active == gemm_bf16_dp) return gemm_bf16_avx512_scratch(M, N, K);
#endif
    return fallback_floats(M, N, K) * sizeof(float);
}

const char *gemm_bf16_isa(void) {
    init();
    return active_name;
}

int gemm_bf16_set_isa(const char *isa) {
    if (isa && !strcmp(isa, "fallback")) {
        init(); /* so that a later first use does not choose again over this */
        active = gemm_bf16_fallback, active_name = "fallback";
        return 1;
    }
#ifdef HAVE_GEMM_BF16_AVX512
    if (isa && !strcmp(isa, "avx512") && cpu_has_avx512_bf16()) {
        active = gemm_bf16_dp, active_name = "avx512";
        return 1;
    }
#endif
    return 0;
}
