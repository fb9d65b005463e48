/*
 * xent.c: the LM head and cross-entropy loss together, in chunks, so that the N x V logits
 * never exist at once (at V = 150k and N = 2048 they would be 1.2 GB).
 *
 * Tokens whose target is negative (-100, transformers' ignore_index) are skipped entirely: a
 * chunk is a run of at most `chunk` consecutive counted tokens, so masked prompt tokens cost no
 * GEMM. The head is a qtensor (fp32, or stored quantized and dequantized a panel at a time by
 * qmatmul). For each chunk: logits (n,V) = h W^T into scratch; per row a stable
 * log-softmax (max subtracted, exp in float, the sum in double); loss += log(sum) + max -
 * logit[target]. With dh, the row is turned in place into dlogits = (softmax - onehot(target)) *
 * grad_scale and dh += dlogits W by a second matmul. Rows of a chunk are split across OpenMP
 * threads; the loss is a double reduction. A target >= V cannot be scored: its row adds NaN to
 * the loss (so the caller notices) and no gradient.
 * The per-row work (max, exp, sum, gradient) is xent_row_ref here or xent_row_avx2
 * (xent_avx2.c) at ISA level avx2 and up (base/cpu.h); lmhead_xent_ref always uses the portable
 * one.
 */
#include "base/cpu.h"
#include "ops/ops.h"
#include "ops/qtensor.h"

#include <math.h>

/* One row of logits x (V): returns logsumexp(x) - x[t]; with grad, x becomes
 * (softmax(x) - onehot(t)) * grad_scale. */
static double xent_row_ref(float *x, int V, int t, float grad_scale, int grad) {
    float mx = x[0];
    for (int j = 1; j < V; j++)
        mx = x[j] > mx ? x[j] : mx;
    float xt = x[t];
    double sum = 0.0;
    if (grad) {
        for (int j = 0; j < V; j++) {
            float e = expf(x[j] - mx);
            x[j] = e;
            sum += e;
        }
        float k = (float)(grad_scale / sum);
        for (int j = 0; j < V; j++)
            x[j] *= k;
        x[t] -= grad_scale;
    } else {
        for (int j = 0; j < V; j++)
            sum += expf(x[j] - mx);
    }
    return log(sum) + (double)mx - (double)xt;
}

typedef double (*xent_row_fn)(float *x, int V, int t, float grad_scale, int grad);

/* Scores rows [0, n) of the logits in `l` (n, V); returns the chunk's loss sum. */
static double xent_chunk(xent_row_fn row, float *l, const int *tg, int n, int V, float grad_scale,
                         int grad) {
    double loss = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int r = 0; r < n; r++) {
        float *x = l + (size_t)r * V;
        if (tg[r] >= V) {
            loss += NAN;
            if (grad)
                for (int j = 0; j < V; j++)
                    x[j] = 0.0f;
            continue;
        }
        loss += row(x, V, tg[r], grad_scale, grad);
    }
    return loss;
}

static double xent_run(xent_row_fn row, float *dh, const float *h, const qtensor *W,
                       const int *targets, int N, float grad_scale, float *scratch, int chunk,
                       void *ws, size_t wsb) {
    const int C = W->cols, V = W->rows;
    double loss = 0.0;
    if (chunk < 1) chunk = 1;
    int n0 = 0;
    while (n0 < N) {
        if (targets[n0] < 0) {
            n0++;
            continue;
        }
        int n1 = n0 + 1;
        while (n1 < N && n1 - n0 < chunk && targets[n1] >= 0)
            n1++;
        int n = n1 - n0;
        if (qmatmul_forward(scratch, V, h + (size_t)n0 * C, C, W, NULL, n, 0.0f, ws, wsb))
            return NAN; /* the matmul scratch is too small (lmhead_xent_q says so) */
        loss += xent_chunk(row, scratch, targets + n0, n, V, grad_scale, dh != NULL);
        if (dh && qmatmul_backward_input(dh + (size_t)n0 * C, C, scratch, V, W, n, ws, wsb))
            return NAN;
        n0 = n1;
    }
    return loss;
}

/* An F32 qtensor over the plain (V, C) matrix W. */
static qtensor f32_head(const float *W, int C, int V) {
    qtensor t = {0};
    t.fmt = QF_F32, t.rows = V, t.cols = C, t.blocksize = 1, t.data = W;
    return t;
}

double lmhead_xent_ref(float *dh, const float *h, const float *W, const int *targets, int N, int C,
                       int V, float grad_scale, float *scratch, int chunk) {
    qtensor w = f32_head(W, C, V);
    return xent_run(xent_row_ref, dh, h, &w, targets, N, grad_scale, scratch, chunk, NULL, 0);
}

/* The row kernels, best first, each with the ISA level it needs (base/cpu.h). */
static const struct {
    const char *name;
    cpu_isa level;
    xent_row_fn row;
} table[] = {
    {"avx2", CPU_AVX2, xent_row_avx2},
    {"portable", CPU_PORTABLE, xent_row_ref},
};
static int pick(void) { return CPU_PICK(table); }

const char *xent_isa(void) { return table[pick()].name; }

double lmhead_xent_q(float *dh, const float *h, const qtensor *W, const int *targets, int N,
                     float grad_scale, float *scratch, int chunk, void *ws, size_t wsb) {
    return xent_run(table[pick()].row, dh, h, W, targets, N, grad_scale, scratch, chunk, ws, wsb);
}

double lmhead_xent(float *dh, const float *h, const float *W, const int *targets, int N, int C,
                   int V, float grad_scale, float *scratch, int chunk) {
    qtensor w = f32_head(W, C, V);
    return lmhead_xent_q(dh, h, &w, targets, N, grad_scale, scratch, chunk, NULL, 0);
}
