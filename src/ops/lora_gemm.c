/*
 * lora_gemm.c: lora_gemm.h's dispatcher, its portable kernels (OpenBLAS's sgemm through gemm())
 * and the plain reference loops the tests compare every kernel with.
 */
#include "ops/lora_gemm.h"
#include "base/cpu.h"
#include "ops/ops.h"

#include <stddef.h>

/* ---- the reference: plain loops, sums in double ------------------------------------------- */

void lg_xw_ref(int N, int K, int R, float alpha, const float *X, int ldx, const float *W, int wt,
               float beta, float *C, int ldc) {
    for (int i = 0; i < N; i++)
        for (int r = 0; r < R; r++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)X[(size_t)i * ldx + k] * (wt ? W[(size_t)r * K + k] : W[(size_t)k * R + r]);
            float *c = C + (size_t)i * ldc + r;
            *c = beta == 0.0f ? alpha * (float)s : alpha * (float)s + beta * *c;
        }
}

void lg_hw_ref(int N, int M, int R, float alpha, const float *H, int ldh, const float *W, int wt,
               float beta, float *C, int ldc) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            double s = 0;
            for (int k = 0; k < R; k++)
                s += (double)H[(size_t)i * ldh + k] * (wt ? W[(size_t)j * R + k] : W[(size_t)k * M + j]);
            float *c = C + (size_t)i * ldc + j;
            *c = beta == 0.0f ? alpha * (float)s : alpha * (float)s + beta * *c;
        }
}

void lg_pth_ref(int N, int M, int R, float alpha, const float *P, int ldp, const float *H, int ldh,
                float *G, int gt) {
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) {
            double s = 0;
            for (int i = 0; i < N; i++)
                s += (double)P[(size_t)i * ldp + m] * H[(size_t)i * ldh + r];
            G[gt ? (size_t)r * M + m : (size_t)m * R + r] += alpha * (float)s;
        }
}

/* ---- portable: OpenBLAS ------------------------------------------------------------------- */

static void xw_blas(int N, int K, int R, float alpha, const float *X, int ldx, const float *W,
                   int wt, float beta, float *C, int ldc) {
    gemm(0, wt, N, R, K, alpha, X, ldx, W, wt ? K : R, beta, C, ldc);
}

static void hw_blas(int N, int M, int R, float alpha, const float *H, int ldh, const float *W,
                   int wt, float beta, float *C, int ldc) {
    gemm(0, wt, N, M, R, alpha, H, ldh, W, wt ? R : M, beta, C, ldc);
}

static void pth_blas(int N, int M, int R, float alpha, const float *P, int ldp, const float *H,
                    int ldh, float *G, int gt) {
    if (gt)
        gemm(1, 0, R, M, N, alpha, H, ldh, P, ldp, 1.0f, G, M);
    else
        gemm(1, 0, M, R, N, alpha, P, ldp, H, ldh, 1.0f, G, R);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

typedef void (*xw_fn)(int, int, int, float, const float *, int, const float *, int, float, float *,
                     int);
typedef void (*pth_fn)(int, int, int, float, const float *, int, const float *, int, float *, int);

static const struct {
    const char *name;
    cpu_isa level;
    xw_fn xw, hw;
    pth_fn pth;
} table[] = {
    {"avx512", CPU_AVX512, lg_xw_avx512, lg_hw_avx512, lg_pth_avx512},
    {"avx2", CPU_AVX2, lg_xw_avx2, lg_hw_avx2, lg_pth_avx2},
    {"portable", CPU_PORTABLE, xw_blas, hw_blas, pth_blas},
};
static int pick(void) { return CPU_PICK(table); }

const char *lg_isa(void) { return table[pick()].name; }

/* Empty products: C is scaled by beta as a GEMM would (nothing to do for G). */
static void scale_rows(int N, int M, float beta, float *C, int ldc) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            float *c = C + (size_t)i * ldc + j;
            *c = beta == 0.0f ? 0.0f : beta * *c;
        }
}

void lg_xw(int N, int K, int R, float alpha, const float *X, int ldx, const float *W, int wt,
           float beta, float *C, int ldc) {
    if (N <= 0 || R <= 0) return;
    if (K <= 0) {
        scale_rows(N, R, beta, C, ldc);
        return;
    }
    table[pick()].xw(N, K, R, alpha, X, ldx, W, wt, beta, C, ldc);
}

void lg_hw(int N, int M, int R, float alpha, const float *H, int ldh, const float *W, int wt,
           float beta, float *C, int ldc) {
    if (N <= 0 || M <= 0) return;
    if (R <= 0) {
        scale_rows(N, M, beta, C, ldc);
        return;
    }
    table[pick()].hw(N, M, R, alpha, H, ldh, W, wt, beta, C, ldc);
}

void lg_pth(int N, int M, int R, float alpha, const float *P, int ldp, const float *H, int ldh,
            float *G, int gt) {
    if (N <= 0 || M <= 0 || R <= 0) return;
    table[pick()].pth(N, M, R, alpha, P, ldp, H, ldh, G, gt);
}
