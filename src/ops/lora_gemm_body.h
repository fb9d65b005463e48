/*
 * lora_gemm_body.h: lora_gemm.h's three kernels, written once and included by lora_gemm_avx2.c
 * (8 floats a vector) and lora_gemm_avx512.c (16). The including file defines, before the
 * #include: vf, VW, vzero() vload(p) vloadn(p, n) (the first n < VW lanes, the rest 0, nothing
 * read past them) vstore(p, v) vset1(s) vfma(a, b, c) vmul(a, b) vhsum(v); LG_NAME(f) (the
 * kernel's name at this ISA); and the register tiles (accumulators: their products):
 *   LG_DR, LG_DW    lg_xw: rows of X by rows of W^T, as dot products along K (loads per FMA:
 *                   (DR + DW) / (DR DW)), summed across lanes once per tile
 *   LG_MR2, LG_NV2  lg_hw: rows of H by vectors of a packed panel of W (broadcasts of H)
 *   LG_PR, LG_PV    lg_pth: columns of H by vectors of a strip of P (broadcasts of H)
 *
 * The large operand (X, P, and C of lg_hw) is read in place, once; the small one is packed on
 * each thread's stack where its layout needs it (W^T of lg_xw without wt, the panels of lg_hw),
 * since a training step allocates nothing (model.h). Each sum is one thread's, in registers,
 * over the inner size in an order fixed by the shapes (lg_xw without wt and lg_hw past LG_RC
 * of R add chunks into C; lg_pth keeps a strip's sums in L1 between blocks of LG_IB rows), so
 * the thread count changes no bits. Threads take contiguous ranges of output rows (lg_xw),
 * column panels (lg_hw) or strips of P's columns (lg_pth).
 */
#ifndef FT_OPS_LORA_GEMM_BODY_H
#define FT_OPS_LORA_GEMM_BODY_H

#include "ops/lora_gemm.h"

#include <stdint.h>
#include <xmmintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LG_INLINE static inline __attribute__((always_inline))
#define LG_UNROLL _Pragma("GCC unroll 16")
enum {
    LG_CB = 16,           /* lg_xw: rows of W^T per packed panel */
    LG_KT = 512,          /* lg_xw: columns of W^T per packed panel (32 KB) */
    LG_NC2 = LG_NV2 * VW, /* lg_hw: columns of C per tile */
    LG_RC = 128,          /* lg_hw: rows of W per packed chunk (at most 32 KB) */
    LG_PW = LG_PV * VW,   /* lg_pth: columns of P per strip */
    LG_RB = 256,          /* lg_pth: columns of H whose sums a strip keeps (at most 32 KB) */
    LG_IB = 64            /* lg_pth: rows of P per block */
};
#define LG_ALIGN __attribute__((aligned(64)))

static int lg_nthreads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* This thread's contiguous share [*a, *b) of n items. */
static void lg_share(int n, int *a, int *b) {
#ifdef _OPENMP
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int t = 0, nt = 1;
#endif
    *a = (int)((int64_t)n * t / nt), *b = (int)((int64_t)n * (t + 1) / nt);
}

/* c = alpha t + beta c (first; beta 0 never reads c), or c += alpha t (later chunks). */
LG_INLINE float lg_comb(float c, float t, float alpha, float beta, int first) {
    return !first ? c + alpha * t : beta == 0.0f ? alpha * t : alpha * t + beta * c;
}
LG_INLINE vf lg_vcomb(const float *c, vf t, float alpha, float beta, int first) {
    return !first         ? vfma(vset1(alpha), t, vload(c))
           : beta == 0.0f ? vmul(vset1(alpha), t)
                          : vfma(vset1(alpha), t, vmul(vset1(beta), vload(c)));
}

/* ---- lg_xw: C (N x R) = alpha X W + beta C ------------------------------------------------- */

/* Dot products of DR rows of X with DW rows of Wt (both contiguous along k, kc long), DR and DW
 * constants after inlining: s[r * LG_DW + w]. */
LG_INLINE void xw_dot(const int DR, const int DW, const float *X, size_t ldx, const float *Wt,
                      size_t ldw, int kc, float *s) {
    vf acc[LG_DR][LG_DW];
    LG_UNROLL for (int r = 0; r < DR; r++) LG_UNROLL for (int w = 0; w < DW; w++)
        acc[r][w] = vzero();
    int k = 0;
    for (; k + VW <= kc; k += VW) {
        vf x[LG_DR];
        LG_UNROLL for (int r = 0; r < DR; r++) x[r] = vload(X + (size_t)r * ldx + k);
        LG_UNROLL for (int w = 0; w < DW; w++) {
            vf wv = vload(Wt + (size_t)w * ldw + k);
            LG_UNROLL for (int r = 0; r < DR; r++) acc[r][w] = vfma(x[r], wv, acc[r][w]);
        }
    }
    if (k < kc) {
        int n = kc - k;
        vf x[LG_DR];
        LG_UNROLL for (int r = 0; r < DR; r++) x[r] = vloadn(X + (size_t)r * ldx + k, n);
        LG_UNROLL for (int w = 0; w < DW; w++) {
            vf wv = vloadn(Wt + (size_t)w * ldw + k, n);
            LG_UNROLL for (int r = 0; r < DR; r++) acc[r][w] = vfma(x[r], wv, acc[r][w]);
        }
    }
    LG_UNROLL for (int r = 0; r < DR; r++) LG_UNROLL for (int w = 0; w < DW; w++)
        s[r * LG_DW + w] = vhsum(acc[r][w]);
}

/* mr (<= LG_DR) rows of X against nw (<= LG_DW) rows of Wt: the full tile, or its edges. */
static void xw_dot_any(int mr, int nw, const float *X, size_t ldx, const float *Wt, size_t ldw,
                       int kc, float *s) {
    if (mr == LG_DR && nw == LG_DW) {
        xw_dot(LG_DR, LG_DW, X, ldx, Wt, ldw, kc, s);
        return;
    }
    for (int r = 0; r < mr; r++) {
        if (nw == LG_DW) {
            xw_dot(1, LG_DW, X + (size_t)r * ldx, ldx, Wt, ldw, kc, s + r * LG_DW);
            continue;
        }
        for (int w = 0; w < nw; w++)
            xw_dot(1, 1, X + (size_t)r * ldx, ldx, Wt + (size_t)w * ldw, ldw, kc, s + r * LG_DW + w);
    }
}

void LG_NAME(lg_xw)(int N, int K, int R, float alpha, const float *X, int ldx, const float *W,
                    int wt, float beta, float *C, int ldc) {
    int ntiles = (N + LG_DR - 1) / LG_DR;
#pragma omp parallel num_threads(lg_nthreads())
    {
        /* W (K x R) is read as W^T, LG_CB rows by LG_KT columns at a time, packed here */
        float Wt[LG_CB * LG_KT] LG_ALIGN, s[LG_DR * LG_DW];
        int a, b;
        lg_share(ntiles, &a, &b);
        for (int rb = 0; a < b && rb < R; rb += LG_CB) {
            int nr = R - rb < LG_CB ? R - rb : LG_CB;
            int kstep = wt ? K : LG_KT;
            for (int k0 = 0; k0 < K; k0 += kstep) {
                int kc = K - k0 < kstep ? K - k0 : kstep;
                const float *wp = W + (size_t)rb * K + k0;
                size_t ldw = (size_t)K;
                if (!wt) {
                    for (int k = 0; k < kc; k++)
                        for (int j = 0; j < nr; j++)
                            Wt[j * LG_KT + k] = W[(size_t)(k0 + k) * R + rb + j];
                    wp = Wt, ldw = LG_KT;
                }
                for (int tile = a; tile < b; tile++) {
                    int i0 = tile * LG_DR, mr = N - i0 < LG_DR ? N - i0 : LG_DR;
                    for (int w0 = 0; w0 < nr; w0 += LG_DW) {
                        int nw = nr - w0 < LG_DW ? nr - w0 : LG_DW;
                        xw_dot_any(mr, nw, X + (size_t)i0 * ldx + k0, (size_t)ldx,
                                   wp + (size_t)w0 * ldw, ldw, kc, s);
                        for (int r = 0; r < mr; r++)
                            for (int w = 0; w < nw; w++) {
                                float *c = C + (size_t)(i0 + r) * ldc + rb + w0 + w;
                                *c = lg_comb(*c, s[r * LG_DW + w], alpha, beta, k0 == 0);
                            }
                    }
                }
            }
        }
    }
}

/* ---- lg_hw: C (N x M) = alpha H W + beta C ------------------------------------------------- */

/* MR rows of H (kc values each) times the packed panel Wp (kc x LG_NC2), combined into C's nc
 * columns (vector stores for a whole panel; through t otherwise). */
LG_INLINE void hw_tile(const int MR, const float *H, size_t ldh, const float *Wp, int kc,
                       float *C, size_t ldc, int nc, float alpha, float beta, int first,
                       float *t) {
    vf acc[LG_MR2][LG_NV2];
    LG_UNROLL for (int r = 0; r < MR; r++) LG_UNROLL for (int v = 0; v < LG_NV2; v++)
        acc[r][v] = vzero();
    for (int k = 0; k < kc; k++) {
        vf w[LG_NV2];
        LG_UNROLL for (int v = 0; v < LG_NV2; v++) w[v] = vload(Wp + (size_t)k * LG_NC2 + v * VW);
        LG_UNROLL for (int r = 0; r < MR; r++) {
            vf h = vset1(H[(size_t)r * ldh + k]);
            LG_UNROLL for (int v = 0; v < LG_NV2; v++) acc[r][v] = vfma(h, w[v], acc[r][v]);
        }
    }
    if (nc == LG_NC2) {
        LG_UNROLL for (int r = 0; r < MR; r++) LG_UNROLL for (int v = 0; v < LG_NV2; v++) {
            float *c = C + (size_t)r * ldc + v * VW;
            vstore(c, lg_vcomb(c, acc[r][v], alpha, beta, first));
        }
        return;
    }
    LG_UNROLL for (int r = 0; r < MR; r++) {
        LG_UNROLL for (int v = 0; v < LG_NV2; v++) vstore(t + v * VW, acc[r][v]);
        for (int j = 0; j < nc; j++) {
            float *c = C + (size_t)r * ldc + j;
            *c = lg_comb(*c, t[j], alpha, beta, first);
        }
    }
}

void LG_NAME(lg_hw)(int N, int M, int R, float alpha, const float *H, int ldh, const float *W,
                    int wt, float beta, float *C, int ldc) {
    int npanels = (M + LG_NC2 - 1) / LG_NC2;
#pragma omp parallel num_threads(lg_nthreads())
    {
        float Wp[LG_RC * LG_NC2] LG_ALIGN, t[LG_NC2] LG_ALIGN;
        int a, b;
        lg_share(npanels, &a, &b);
        for (int p = a; p < b; p++) {
            int j0 = p * LG_NC2, nc = M - j0 < LG_NC2 ? M - j0 : LG_NC2;
            for (int k0 = 0; k0 < R; k0 += LG_RC) {
                int kc = R - k0 < LG_RC ? R - k0 : LG_RC;
                for (int k = 0; k < kc; k++)
                    for (int c = 0; c < LG_NC2; c++)
                        Wp[k * LG_NC2 + c] = c >= nc ? 0.0f
                                             : wt    ? W[(size_t)(j0 + c) * R + k0 + k]
                                                     : W[(size_t)(k0 + k) * M + j0 + c];
                const float *h = H + k0;
                float *c = C + j0;
                int i = 0;
                for (; i + LG_MR2 <= N; i += LG_MR2)
                    hw_tile(LG_MR2, h + (size_t)i * ldh, (size_t)ldh, Wp, kc,
                            c + (size_t)i * ldc, (size_t)ldc, nc, alpha, beta, k0 == 0, t);
                for (; i < N; i++)
                    hw_tile(1, h + (size_t)i * ldh, (size_t)ldh, Wp, kc, c + (size_t)i * ldc,
                            (size_t)ldc, nc, alpha, beta, k0 == 0, t);
            }
        }
    }
}

/* ---- lg_pth: G += alpha P^T H -------------------------------------------------------------- */

/* PR columns of H (from r0) times the rows of a strip of P (LG_PW columns, nm of them inside
 * the matrix), over the rows [i0, i1): acc (PR x LG_PV vectors, in t) += sum_i H[i][r] P[i][m].
 * FULL (nm == LG_PW) and PR are constants after inlining. */
LG_INLINE void pth_tile(const int PR, const int FULL, const float *P, size_t ldp, int nm,
                        const float *H, size_t ldh, int i0, int i1, float *t) {
    vf acc[LG_PR][LG_PV];
    int nv[LG_PV];
    LG_UNROLL for (int v = 0; v < LG_PV; v++)
        nv[v] = nm - v * VW >= VW ? VW : nm - v * VW > 0 ? nm - v * VW : 0;
    LG_UNROLL for (int r = 0; r < PR; r++) LG_UNROLL for (int v = 0; v < LG_PV; v++)
        acc[r][v] = vload(t + r * LG_PW + v * VW);
    for (int i = i0; i < i1; i++) {
        const float *p = P + (size_t)i * ldp;
        vf pv[LG_PV];
        LG_UNROLL for (int v = 0; v < LG_PV; v++)
            pv[v] = FULL || nv[v] == VW ? vload(p + v * VW) : nv[v] ? vloadn(p + v * VW, nv[v]) : vzero();
        LG_UNROLL for (int r = 0; r < PR; r++) {
            vf h = vset1(H[(size_t)i * ldh + r]);
            LG_UNROLL for (int v = 0; v < LG_PV; v++) acc[r][v] = vfma(h, pv[v], acc[r][v]);
        }
    }
    LG_UNROLL for (int r = 0; r < PR; r++) LG_UNROLL for (int v = 0; v < LG_PV; v++)
        vstore(t + r * LG_PW + v * VW, acc[r][v]);
}

void LG_NAME(lg_pth)(int N, int M, int R, float alpha, const float *P, int ldp, const float *H,
                     int ldh, float *G, int gt) {
    int nstrips = (M + LG_PW - 1) / LG_PW;
#pragma omp parallel num_threads(lg_nthreads())
    {
        /* the sums of one strip for LG_RB columns of H, kept here between row blocks */
        float acc[LG_RB * LG_PW] LG_ALIGN;
        int a, b;
        lg_share(nstrips, &a, &b);
        for (int st = a; st < b; st++) {
            int m0 = st * LG_PW, nm = M - m0 < LG_PW ? M - m0 : LG_PW;
            const float *ps = P + m0;
            for (int rb = 0; rb < R; rb += LG_RB) {
                int nrb = R - rb < LG_RB ? R - rb : LG_RB;
                for (int j = 0; j < nrb * LG_PW; j++) acc[j] = 0.0f;
                /* rows of P in blocks that stay in L1 while every group of PR columns of H
                 * passes over them */
                for (int i0 = 0; i0 < N; i0 += LG_IB) {
                    int i1 = N - i0 < LG_IB ? N : i0 + LG_IB;
                    int r = 0;
                    for (; r + LG_PR <= nrb; r += LG_PR) {
                        if (nm == LG_PW)
                            pth_tile(LG_PR, 1, ps, (size_t)ldp, nm, H + rb + r, (size_t)ldh, i0,
                                     i1, acc + r * LG_PW);
                        else
                            pth_tile(LG_PR, 0, ps, (size_t)ldp, nm, H + rb + r, (size_t)ldh, i0,
                                     i1, acc + r * LG_PW);
                    }
                    for (; r < nrb; r++)
                        pth_tile(1, 0, ps, (size_t)ldp, nm, H + rb + r, (size_t)ldh, i0, i1,
                                 acc + r * LG_PW);
                }
                for (int r = 0; r < nrb; r++)
                    for (int m = 0; m < nm; m++) {
                        float *g = gt ? G + (size_t)(rb + r) * M + m0 + m
                                      : G + (size_t)(m0 + m) * R + rb + r;
                        *g += alpha * acc[r * LG_PW + m];
                    }
            }
        }
    }
}

#endif
