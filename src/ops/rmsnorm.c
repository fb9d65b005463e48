/*
 * rmsnorm.c: RMSNorm forward and backward, as Hugging Face's LlamaRMSNorm computes it in fp32:
 * variance = mean(x^2) over the row, rstd = 1 / sqrt(variance + eps), out = (x * rstd) * w.
 *
 * Backward, per row with r = rstd and g = dout * w:
 *   dx_j = r * g_j - r^3 * x_j * (sum_i g_i x_i) / C        (r depends on every x_j)
 *   dw_i += dout_i * x_i * r                                 (summed over rows)
 * Rows are independent and split across OpenMP threads; the dw sum is split by columns instead,
 * so each thread owns a slice of dw and nothing is shared or allocated. The row code is
 * row_ops.h's, which attn_input.c shares.
 */
#include "ops/ops.h"
#include "ops/row_ops.h"

#include <math.h>

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        rstd[n] = rmsnorm_row(out + (size_t)n * C, inp + (size_t)n * C, w, C, eps);
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++)
            rmsnorm_row_backward(dinp + (size_t)n * C, dout + (size_t)n * C, inp + (size_t)n * C,
                                 w, rstd[n], C, 1);
        if (dw) {
            /* Column slices: thread t owns dw[c0, c1) and walks every row over that slice. */
#pragma omp for schedule(static)
            for (int c0 = 0; c0 < C; c0 += 256) {
                int c1 = c0 + 256 < C ? c0 + 256 : C;
                for (int n = 0; n < N; n++) {
                    const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
                    float r = rstd[n];
#pragma omp simd
                    for (int c = c0; c < c1; c++)
                        dw[c] += g[c] * x[c] * r;
                }
            }
        }
    }
}
