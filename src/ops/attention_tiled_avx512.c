/*
 * attention_tiled_avx512.c: attention_tiled_body.h with AVX-512 kernels. A 16-key panel is one
 * zmm register, so the tiles are 6 rows by 4 panels (tl_scores: 64 keys) or by 64 columns of D
 * (tl_acc): 24 of the 32 zmm registers as accumulators, per step 4 loads and 6 broadcasts for
 * 24 FMAs (the AVX2 tile: 8 for 12). Narrower tiles take the rest. Each output is summed in the
 * AVX2 kernels' order, so both give the same bits (tests/attention_test.c). This file also
 * builds the body's bf16 products (TL_BF16), which run where gemm_bf16 has AMX.
 */
#define TL_NAME(f) f##_avx512
#define TL_BF16 /* and the bf16 products (attention_forward_bf16, ...) */
#include "ops/attention_tiled_body.h"

#define TL_INLINE static inline __attribute__((always_inline))
#define TL_UNROLL _Pragma("GCC unroll 8")
#define TL_NP 4 /* panels (tl_scores) or vectors of D (tl_acc) per tile */

/* S[r][16q .. 16q+16) = X[r] . panel q of Kp for rows r < MR, panels q < NP */
TL_INLINE void sc_tile(const int MR, const int NP, float *S, size_t ss, const float *X, size_t xs,
                       const float *Kp, int D) {
    __m512 a[TL_MR][TL_NP];
    TL_UNROLL for (int r = 0; r < MR; r++) TL_UNROLL for (int q = 0; q < NP; q++) a[r][q] =
        _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m512 k[TL_NP];
        TL_UNROLL for (int q = 0; q < NP; q++) k[q] =
            _mm512_load_ps(Kp + (size_t)q * 16 * D + 16 * d);
        TL_UNROLL for (int r = 0; r < MR; r++) {
            __m512 x = _mm512_set1_ps(X[r * xs + d]);
            TL_UNROLL for (int q = 0; q < NP; q++) a[r][q] = _mm512_fmadd_ps(x, k[q], a[r][q]);
        }
    }
    TL_UNROLL for (int r = 0; r < MR; r++) TL_UNROLL for (int q = 0; q < NP; q++)
        _mm512_storeu_ps(S + r * ss + 16 * q, a[r][q]);
}

TL_INLINE void sc_rows(const int MR, float *S, size_t ss, const float *X, size_t xs,
                       const float *Kp, int p0, int p1, int D) {
    int p = p0;
    for (; p + TL_NP <= p1; p += TL_NP)
        sc_tile(MR, TL_NP, S + 16 * p, ss, X, xs, Kp + (size_t)p * 16 * D, D);
    switch (p1 - p) {
    case 3:
        sc_tile(MR, 3, S + 16 * p, ss, X, xs, Kp + (size_t)p * 16 * D, D);
        break;
    case 2:
        sc_tile(MR, 2, S + 16 * p, ss, X, xs, Kp + (size_t)p * 16 * D, D);
        break;
    case 1:
        sc_tile(MR, 1, S + 16 * p, ss, X, xs, Kp + (size_t)p * 16 * D, D);
        break;
    default:
        break;
    }
}

/* C[t][0 .. 16 NV) += sum_{u < n} A[t*ars + u*acs] * Y[u*ys + 0 .. 16 NV) for rows t < MR */
TL_INLINE void acc_tile(const int MR, const int NV, float *C, size_t cs, const float *A, size_t ars,
                        size_t acs, const float *Y, size_t ys, int n) {
    __m512 a[TL_MR][TL_NP];
    TL_UNROLL for (int t = 0; t < MR; t++) TL_UNROLL for (int q = 0; q < NV; q++) a[t][q] =
        _mm512_loadu_ps(C + t * cs + 16 * q);
    const float *y = Y, *ap = A;
    for (int u = 0; u < n; u++, y += ys, ap += acs) {
        __m512 yv[TL_NP];
        TL_UNROLL for (int q = 0; q < NV; q++) yv[q] = _mm512_loadu_ps(y + 16 * q);
        TL_UNROLL for (int t = 0; t < MR; t++) {
            __m512 x = _mm512_set1_ps(ap[t * ars]);
            TL_UNROLL for (int q = 0; q < NV; q++) a[t][q] = _mm512_fmadd_ps(x, yv[q], a[t][q]);
        }
    }
    TL_UNROLL for (int t = 0; t < MR; t++) TL_UNROLL for (int q = 0; q < NV; q++)
        _mm512_storeu_ps(C + t * cs + 16 * q, a[t][q]);
}

TL_INLINE void acc_rows(const int MR, float *C, size_t cs, const float *A, size_t ars, size_t acs,
                        const float *Y, size_t ys, int n, int D) {
    int dc = 0;
    for (; dc + 16 * TL_NP <= D; dc += 16 * TL_NP)
        acc_tile(MR, TL_NP, C + dc, cs, A, ars, acs, Y + dc, ys, n);
    switch ((D - dc) / 16) {
    case 3:
        acc_tile(MR, 3, C + dc, cs, A, ars, acs, Y + dc, ys, n);
        break;
    case 2:
        acc_tile(MR, 2, C + dc, cs, A, ars, acs, Y + dc, ys, n);
        break;
    case 1:
        acc_tile(MR, 1, C + dc, cs, A, ars, acs, Y + dc, ys, n);
        break;
    default:
        break;
    }
}

/* one call per row count, so each tile's loops unroll with constant sizes */
#define TL_BY_ROWS(mr, call)                                                                       \
    switch (mr) {                                                                                  \
    case 6:                                                                                        \
        call(6);                                                                                   \
        break;                                                                                     \
    case 5:                                                                                        \
        call(5);                                                                                   \
        break;                                                                                     \
    case 4:                                                                                        \
        call(4);                                                                                   \
        break;                                                                                     \
    case 3:                                                                                        \
        call(3);                                                                                   \
        break;                                                                                     \
    case 2:                                                                                        \
        call(2);                                                                                   \
        break;                                                                                     \
    case 1:                                                                                        \
        call(1);                                                                                   \
        break;                                                                                     \
    default:                                                                                       \
        break;                                                                                     \
    }

static void tl_scores(int mr, float *S, size_t ss, const float *X, size_t xs, const float *Kp,
                      int p0, int p1, int D) {
#define TL_SC(MR) sc_rows(MR, S, ss, X, xs, Kp, p0, p1, D)
    TL_BY_ROWS(mr, TL_SC)
#undef TL_SC
}

static void tl_acc(int mr, float *C, size_t cs, const float *A, size_t ars, size_t acs,
                   const float *Y, size_t ys, int n, int D) {
    if (n <= 0) return;
#define TL_AC(MR) acc_rows(MR, C, cs, A, ars, acs, Y, ys, n, D)
    TL_BY_ROWS(mr, TL_AC)
#undef TL_AC
}
