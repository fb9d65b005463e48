/*
 * lora_gemm_test.c: ops/lora_gemm's kernels (the LoRA products with one size the rank R) against
 * the plain double-sum loops, at every ISA level this CPU runs (AVX-512, AVX2, and the portable
 * OpenBLAS row):
 *   - every tail of the tiles: N, K, M and R from 1 past two tiles, R not a multiple of 16, and
 *     K and R past one packed chunk (lg_xw packs 256 rows of W at a time, lg_hw 128);
 *   - both layouts of W (wt) and G (gt), alpha and beta (beta 0 with NaN in C: never read), row
 *     strides wider than the rows, with guard values past each row and after the last that must
 *     stay as they were;
 *   - the error of each element within 1e-5 of the sum of its terms' magnitudes (fp32 sums of a
 *     few hundred terms stay far inside; a wrong index or a dropped term does not);
 *   - the same bits with one thread and with two (the order of a sum is the shapes' alone).
 */
#include "base/cpu.h"
#include "ops/lora_gemm.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = rnd();
    return p;
}

#define GUARD 12345.0f
enum { PAD = 3 }; /* extra floats in each row stride */

/* Compare got with ref over an (rows x cols, ld) matrix, guard values past each row untouched;
 * mag: per element, the sum of its terms' magnitudes. Returns the number of bad values. */
static int compare(const float *got, const float *ref, const float *mag, int rows, int cols, int ld,
                   int guarded) {
    int bad = 0;
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * ld + j;
            if (!(fabsf(got[k] - ref[k]) <= 1e-5f * mag[k] + 1e-30f)) bad++;
        }
        if (guarded)
            for (int j = cols; j < ld; j++)
                if (got[(size_t)i * ld + j] != GUARD) bad++;
    }
    return bad;
}

typedef struct shape {
    int N, K, R;
} shape;

/* lg_xw and lg_hw are both C (N x cols) = alpha A (N x inner) W + beta C, W (inner x cols) or,
 * with wt, (cols x inner): lg_xw's inner size is K and its cols R, lg_hw's the other way. */
typedef void (*prod_fn)(int N, int inner, int cols, float alpha, const float *A, int lda,
                        const float *W, int wt, float beta, float *C, int ldc);
static void xw_kernel(int N, int in, int cols, float al, const float *A, int lda, const float *W,
                      int wt, float be, float *C, int ldc) {
    lg_xw(N, in, cols, al, A, lda, W, wt, be, C, ldc);
}
static void xw_ref(int N, int in, int cols, float al, const float *A, int lda, const float *W,
                   int wt, float be, float *C, int ldc) {
    lg_xw_ref(N, in, cols, al, A, lda, W, wt, be, C, ldc);
}
static void hw_kernel(int N, int in, int cols, float al, const float *A, int lda, const float *W,
                      int wt, float be, float *C, int ldc) {
    lg_hw(N, cols, in, al, A, lda, W, wt, be, C, ldc);
}
static void hw_ref(int N, int in, int cols, float al, const float *A, int lda, const float *W,
                   int wt, float be, float *C, int ldc) {
    lg_hw_ref(N, cols, in, al, A, lda, W, wt, be, C, ldc);
}

static int check_prod(prod_fn kernel, prod_fn ref_fn, int N, int in, int cols, int wt,
                      float alpha, float beta, int threads) {
    int lda = in + PAD, ldc = cols + PAD;
    float *A = rand_buf((size_t)N * lda), *W = rand_buf((size_t)in * cols);
    float *C0 = rand_buf((size_t)N * ldc), *got = malloc((size_t)N * ldc * 4),
          *ref = malloc((size_t)N * ldc * 4), *mag = calloc((size_t)N * ldc, 4);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < ldc; j++)
            C0[(size_t)i * ldc + j] = j >= cols ? GUARD : beta == 0.0f ? NAN : C0[(size_t)i * ldc + j];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < cols; j++) {
            double m = 0;
            for (int k = 0; k < in; k++)
                m += fabs(A[(size_t)i * lda + k] * (wt ? W[(size_t)j * in + k] : W[(size_t)k * cols + j]));
            float c = C0[(size_t)i * ldc + j];
            mag[(size_t)i * ldc + j] = (float)(fabs(alpha) * m + (beta == 0.0f ? 0 : fabs(beta * c)));
        }
    memcpy(got, C0, (size_t)N * ldc * 4), memcpy(ref, C0, (size_t)N * ldc * 4);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    (void)threads;
    kernel(N, in, cols, alpha, A, lda, W, wt, beta, got, ldc);
    ref_fn(N, in, cols, alpha, A, lda, W, wt, beta, ref, ldc);
    int bad = compare(got, ref, mag, N, cols, ldc, 1);
    free(A), free(W), free(C0), free(got), free(ref), free(mag);
    return bad;
}

/* lg_pth: G (M x R, or R x M) += alpha P^T H, shape (N, M, R) */
static int check_pth(shape s, int gt, float alpha, int threads) {
    int M = s.K, ldp = M + PAD, ldh = s.R + PAD;
    size_t ng = (size_t)M * s.R;
    float *P = rand_buf((size_t)s.N * ldp), *H = rand_buf((size_t)s.N * ldh);
    float *G0 = rand_buf(ng + 1), *got = malloc((ng + 1) * 4), *ref = malloc((ng + 1) * 4),
          *mag = calloc(ng + 1, 4);
    G0[ng] = GUARD;
    for (int m = 0; m < M; m++)
        for (int r = 0; r < s.R; r++) {
            double a = 0;
            for (int i = 0; i < s.N; i++) a += fabs(P[(size_t)i * ldp + m] * H[(size_t)i * ldh + r]);
            size_t k = gt ? (size_t)r * M + m : (size_t)m * s.R + r;
            mag[k] = (float)(fabs(alpha) * a + fabs(G0[k]));
        }
    memcpy(got, G0, (ng + 1) * 4), memcpy(ref, G0, (ng + 1) * 4);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    (void)threads;
    lg_pth(s.N, M, s.R, alpha, P, ldp, H, ldh, got, gt);
    lg_pth_ref(s.N, M, s.R, alpha, P, ldp, H, ldh, ref, gt);
    int bad = compare(got, ref, mag, 1, (int)ng, (int)ng + 1, 1);
    free(P), free(H), free(G0), free(got), free(ref), free(mag);
    return bad;
}

/* The bits of lg_xw, lg_hw and lg_pth on one shape with 1 and with 2 threads. */
static int same_bits_across_threads(void) {
    int N = 75, K = 301, R = 20, diff = 0;
    float *X = rand_buf((size_t)N * K), *W = rand_buf((size_t)K * R), *H = rand_buf((size_t)N * R);
    float *out[2][3];
    for (int t = 0; t < 2; t++) {
#ifdef _OPENMP
        omp_set_num_threads(t + 1);
#endif
        out[t][0] = malloc((size_t)N * R * 4), out[t][1] = malloc((size_t)N * K * 4);
        out[t][2] = calloc((size_t)K * R, 4);
        lg_xw(N, K, R, 0.7f, X, K, W, 1, 0.0f, out[t][0], R);
        lg_hw(N, K, R, 0.7f, H, R, W, 1, 0.0f, out[t][1], K);
        lg_pth(N, K, R, 0.7f, X, K, H, R, out[t][2], 1);
    }
    diff = memcmp(out[0][0], out[1][0], (size_t)N * R * 4) || memcmp(out[0][1], out[1][1], (size_t)N * K * 4) ||
           memcmp(out[0][2], out[1][2], (size_t)K * R * 4);
    for (int t = 0; t < 2; t++)
        for (int j = 0; j < 3; j++) free(out[t][j]);
    free(X), free(W), free(H);
    return diff;
}

static void check_at(cpu_isa l) {
    static const int Ns[] = {1, 5, 13, 29, 64}, Ks[] = {1, 7, 64, 65, 300}, Rs[] = {1, 4, 16, 17, 40, 300};
    static const float alphas[] = {1.0f, -0.37f}, betas[] = {0.0f, 1.0f, 0.5f};
    int bad_xw = 0, bad_hw = 0, bad_pth = 0, n = 0;
    for (size_t ni = 0; ni < 5; ni++)
        for (size_t ki = 0; ki < 5; ki++)
            for (size_t ri = 0; ri < 6; ri++)
                for (int t = 0; t < 2; t++) {
                    shape s = {Ns[ni], Ks[ki], Rs[ri]};
                    float alpha = alphas[(ni + ki + ri) % 2];
                    float beta = betas[(ni + ri + (size_t)t) % 3];
                    int threads = 1 + (int)((ki + ri + (size_t)t) % 2);
                    bad_xw += check_prod(xw_kernel, xw_ref, s.N, s.K, s.R, t, alpha, beta, threads);
                    bad_hw += check_prod(hw_kernel, hw_ref, s.N, s.R, s.K, t, alpha, beta, threads);
                    bad_pth += check_pth(s, t, alpha, threads);
                    n++;
                }
    const char *isa = lg_isa();
    CHECK(bad_xw == 0, "%s (%s kernel): lg_xw: %d values off over %d cases", cpu_isa_name(l), isa, bad_xw, n);
    CHECK(bad_hw == 0, "%s (%s kernel): lg_hw: %d values off over %d cases", cpu_isa_name(l), isa, bad_hw, n);
    CHECK(bad_pth == 0, "%s (%s kernel): lg_pth: %d values off over %d cases", cpu_isa_name(l), isa, bad_pth, n);
    CHECK(!same_bits_across_threads(), "%s (%s kernel): 1 and 2 threads give other bits",
          cpu_isa_name(l), isa);
}

int main(void) {
    cpu_isa keep = cpu_level();
    /* the kernel each level runs: the test must reach the SIMD ones where the CPU has them */
    static const char *want[CPU_NLEVELS] = {"portable", "avx2", "avx512", "avx512", "avx512"};
    for (int l = 0; l < CPU_NLEVELS; l++)
        if (cpu_set_level((cpu_isa)l)) {
            CHECK(!strcmp(lg_isa(), want[l]), "level %s runs the %s kernels", cpu_isa_name((cpu_isa)l),
                  lg_isa());
            check_at((cpu_isa)l);
            printf("%s: lora_gemm %s kernels checked\n", cpu_isa_name((cpu_isa)l), lg_isa());
        }
    cpu_set_level(keep);
    return test_summary("lora_gemm");
}
