/*
 * attention_tiled_avx2.c: attention_tiled_body.h with AVX2+FMA kernels, on tiles of 6 rows x 16
 * columns (12 of the 16 ymm registers as accumulators; per step 2 loads, 6 broadcasts, 12 FMAs).
 */
#define TL_NAME(f) f##_avx2
#include "ops/attention_tiled_body.h"

/* S[r][16p .. 16p+16) = X[r] . panel p of Kp, for rows r < MR and panels [p0, p1) */
static inline __attribute__((always_inline)) void tl_scores_mr(const int MR, float *S, size_t ss,
                                                               const float *X, size_t xs,
                                                               const float *Kp, int p0, int p1,
                                                               int D) {
    for (int p = p0; p < p1; p++) {
        __m256 a[TL_MR][2];
#pragma GCC unroll 6
        for (int r = 0; r < TL_MR; r++)
            if (r < MR) a[r][0] = a[r][1] = _mm256_setzero_ps();
        const float *kp = Kp + (size_t)p * 16 * D;
        for (int d = 0; d < D; d++) {
            __m256 k0 = _mm256_load_ps(kp + 16 * d), k1 = _mm256_load_ps(kp + 16 * d + 8);
#pragma GCC unroll 6
            for (int r = 0; r < TL_MR; r++)
                if (r < MR) {
                    __m256 x = _mm256_broadcast_ss(X + r * xs + d);
                    a[r][0] = _mm256_fmadd_ps(x, k0, a[r][0]);
                    a[r][1] = _mm256_fmadd_ps(x, k1, a[r][1]);
                }
        }
#pragma GCC unroll 6
        for (int r = 0; r < TL_MR; r++)
            if (r < MR) {
                _mm256_storeu_ps(S + r * ss + 16 * p, a[r][0]);
                _mm256_storeu_ps(S + r * ss + 16 * p + 8, a[r][1]);
            }
    }
}

static void tl_scores(int mr, float *S, size_t ss, const float *X, size_t xs, const float *Kp,
                      int p0, int p1, int D) {
    switch (mr) {
    case 6:
        tl_scores_mr(6, S, ss, X, xs, Kp, p0, p1, D);
        break;
    case 5:
        tl_scores_mr(5, S, ss, X, xs, Kp, p0, p1, D);
        break;
    case 4:
        tl_scores_mr(4, S, ss, X, xs, Kp, p0, p1, D);
        break;
    case 3:
        tl_scores_mr(3, S, ss, X, xs, Kp, p0, p1, D);
        break;
    case 2:
        tl_scores_mr(2, S, ss, X, xs, Kp, p0, p1, D);
        break;
    case 1:
        tl_scores_mr(1, S, ss, X, xs, Kp, p0, p1, D);
        break;
    default:
        break;
    }
}

/* C[t][0..D) += sum_{u < n} A[t*ars + u*acs] * Y[u*ys + 0..D) for rows t < MR */
static inline __attribute__((always_inline)) void tl_acc_mr(const int MR, float *C, size_t cs,
                                                            const float *A, size_t ars, size_t acs,
                                                            const float *Y, size_t ys, int n,
                                                            int D) {
    for (int dc = 0; dc < D; dc += 16) {
        __m256 a[TL_MR][2];
#pragma GCC unroll 6
        for (int t = 0; t < TL_MR; t++)
            if (t < MR) {
                a[t][0] = _mm256_loadu_ps(C + t * cs + dc);
                a[t][1] = _mm256_loadu_ps(C + t * cs + dc + 8);
            }
        const float *y = Y + dc, *ap = A;
        for (int u = 0; u < n; u++, y += ys, ap += acs) {
            __m256 y0 = _mm256_loadu_ps(y), y1 = _mm256_loadu_ps(y + 8);
#pragma GCC unroll 6
            for (int t = 0; t < TL_MR; t++)
                if (t < MR) {
                    __m256 x = _mm256_broadcast_ss(ap + t * ars);
                    a[t][0] = _mm256_fmadd_ps(x, y0, a[t][0]);
                    a[t][1] = _mm256_fmadd_ps(x, y1, a[t][1]);
                }
        }
#pragma GCC unroll 6
        for (int t = 0; t < TL_MR; t++)
            if (t < MR) {
                _mm256_storeu_ps(C + t * cs + dc, a[t][0]);
                _mm256_storeu_ps(C + t * cs + dc + 8, a[t][1]);
            }
    }
}

static void tl_acc(int mr, float *C, size_t cs, const float *A, size_t ars, size_t acs,
                   const float *Y, size_t ys, int n, int D) {
    if (n <= 0) return;
    switch (mr) {
    case 6:
        tl_acc_mr(6, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    case 5:
        tl_acc_mr(5, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    case 4:
        tl_acc_mr(4, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    case 3:
        tl_acc_mr(3, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    case 2:
        tl_acc_mr(2, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    case 1:
        tl_acc_mr(1, C, cs, A, ars, acs, Y, ys, n, D);
        break;
    default:
        break;
    }
}
