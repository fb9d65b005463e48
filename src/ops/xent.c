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
 * threads; their losses (double) are added in row order. A target >= V cannot be scored: its row
 * adds NaN to the loss (so the caller notices) and no gradient. The per-row work (max, exp, sum,
 * gradient) is xent_stats_ref / xent_grad_ref here or the AVX2 ones (xent_avx2.c) at ISA level avx2
 * and up (base/cpu.h); lmhead_xent_ref always uses the portable ones. The head can be taken in
 * chunks of rows (lmhead_xent_rows): a row's max and sum then come in pieces, one per chunk,
 * combined in chunk order; under --shard-base the chunks are gathered one at a time
 * (docs/distributed.md), and the unsharded run takes the same chunks so that the two give the same
 * bits.
 */
#include "base/cpu.h"
#include "ops/ops.h"
#include "ops/qtensor.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The portable row pieces: the statistics of x[0 .. w) (its max, the sum of exp(x - max) in
 * double), and x[0 .. w) = exp(x - mx) * k. */
static void xent_stats_ref(const float *x, int w, float *m, double *s) {
    float mx = x[0];
    for (int j = 1; j < w; j++)
        mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < w; j++)
        sum += expf(x[j] - mx);
    *m = mx, *s = sum;
}

static void xent_grad_ref(float *x, int w, float mx, float k) {
    for (int j = 0; j < w; j++) {
        float e = expf(x[j] - mx);
        x[j] = e * k;
    }
}

typedef void (*xent_stats_fn)(const float *x, int w, float *m, double *s);
typedef void (*xent_grad_fn)(float *x, int w, float mx, float k);
typedef struct xent_kernel {
    xent_stats_fn stats;
    xent_grad_fn grad;
} xent_kernel;

/* A row's pieces (one per chunk of the vocabulary, K of them: max m[k], sum s[k]) into its
 * max *M and sum *S: the sums rescaled to the largest max, added in chunk order. One piece is
 * the row's own max and sum exactly (exp(0) = 1). */
static void combine(const float *m, const double *s, int K, float *M, double *S) {
    float mx = m[0];
    for (int k = 1; k < K; k++)
        mx = m[k] > mx ? m[k] : mx;
    double sum = 0.0;
    for (int k = 0; k < K; k++)
        sum += s[k] * exp((double)m[k] - (double)mx);
    *M = mx, *S = sum;
}

/* One row of logits x (V) as one piece: returns logsumexp(x) - x[t]; with grad, x becomes
 * (softmax(x) - onehot(t)) * grad_scale. */
static double xent_row(const xent_kernel *kn, float *x, int V, int t, float grad_scale, int grad) {
    float mx;
    double sum;
    kn->stats(x, V, &mx, &sum);
    float xt = x[t];
    if (grad) {
        kn->grad(x, V, mx, (float)(grad_scale / sum));
        x[t] -= grad_scale;
    }
    return log(sum) + (double)mx - (double)xt;
}

static const xent_kernel kernel_ref = {xent_stats_ref, xent_grad_ref};
static const xent_kernel kernel_avx2 = {xent_stats_avx2, xent_grad_avx2};

double xent_row_avx2(float *x, int V, int t, float grad_scale, int grad) {
    return xent_row(&kernel_avx2, x, V, t, grad_scale, grad);
}

/* Rows of the head as a qtensor of their own: formats whose rows are stored one after another
 * (model_head_chunk_rows keeps the others whole). */
static size_t row_bytes(const qtensor *W) {
    switch (W->fmt) {
    case QF_F32:
        return (size_t)W->cols * 4;
    case QF_BF16:
    case QF_F16:
        return (size_t)W->cols * 2;
    case QF_Q8_0:
        return (size_t)W->cols / 32 * 34;
    default:
        return 0;
    }
}

int xent_rows_splittable(const qtensor *W) { return row_bytes(W) > 0; }

static qtensor rows_view(const qtensor *W, int r0, int m) {
    qtensor v = *W;
    v.rows = m, v.owned = NULL;
    if (W->data) v.data = (const uint8_t *)W->data + (size_t)r0 * row_bytes(W);
    return v;
}

/* The next run of at most `chunk` consecutive counted tokens at or after *n0 (its length; 0 at
 * the end). Masked tokens cost no GEMM. */
static int next_run(const int *targets, int N, int chunk, int *n0) {
    while (*n0 < N && targets[*n0] < 0)
        (*n0)++;
    int n1 = *n0;
    while (n1 < N && n1 - *n0 < chunk && targets[n1] >= 0)
        n1++;
    return n1 - *n0;
}

/* The head's chunks of R rows: chunk k is rows [k R, k R + width(k)). */
static int chunk_count(int V, int R) { return R >= V ? 1 : (V + R - 1) / R; }
static int chunk_width(int V, int R, int k) { return V - k * R < R ? V - k * R : R; }

/* Every chunk whole in W (no sharding): per run of tokens, all logits (n, V) into scratch a
 * chunk of columns at a time, each row's pieces from its chunks, and dh from the chunks last
 * to first. */
static double xent_whole(const xent_kernel *kn, float *dh, const float *h, const qtensor *W,
                         const int *targets, int N, float grad_scale, float *scratch, int chunk,
                         void *ws, size_t wsb, int R, double *lrow, float *pm, double *ps) {
    const int C = W->cols, V = W->rows, K = chunk_count(V, R);
    double loss = 0.0;
    int n0 = 0, n;
    while ((n = next_run(targets, N, chunk, &n0)) > 0) {
        const float *hn = h + (size_t)n0 * C;
        for (int k = 0; k < K; k++) {
            qtensor w = rows_view(W, k * R, chunk_width(V, R, k));
            if (qmatmul_forward(scratch + (size_t)k * R, V, hn, C, &w, NULL, n, 0.0f, ws, wsb))
                return NAN; /* the matmul scratch is too small (lmhead_xent_q says so) */
        }
        const int *tg = targets + n0;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < n; r++) {
            float *x = scratch + (size_t)r * V, M;
            double S;
            if (tg[r] >= V) {
                lrow[r] = NAN;
                if (dh)
                    for (int j = 0; j < V; j++)
                        x[j] = 0.0f;
                continue;
            }
            for (int k = 0; k < K; k++)
                kn->stats(x + (size_t)k * R, chunk_width(V, R, k), &pm[(size_t)r * K + k],
                          &ps[(size_t)r * K + k]);
            combine(pm + (size_t)r * K, ps + (size_t)r * K, K, &M, &S);
            float xt = x[tg[r]];
            lrow[r] = log(S) + (double)M - (double)xt;
            if (dh) {
                float kf = (float)(grad_scale / S);
                for (int k = 0; k < K; k++)
                    kn->grad(x + (size_t)k * R, chunk_width(V, R, k), M, kf);
                x[tg[r]] -= grad_scale;
            }
        }
        for (int r = 0; r < n; r++)
            loss += lrow[r];
        for (int k = K - 1; dh && k >= 0; k--) {
            qtensor w = rows_view(W, k * R, chunk_width(V, R, k));
            if (qmatmul_backward_input(dh + (size_t)n0 * C, C, scratch + (size_t)k * R, V, &w, n,
                                       ws, wsb))
                return NAN;
        }
        n0 += n;
    }
    return loss;
}

/* The state of a chunked pass (xent_chunked): per counted row its pieces pm/ps (K each), its
 * target's logit, max and sum. */
typedef struct chunk_pass {
    const xent_kernel *kn;
    float *dh;
    const float *h;
    const int *targets;
    int N, V, C, K, R, chunk;
    float grad_scale, *scratch, *xt, *M;
    double *S, *ps;
    float *pm;
    void *ws;
    size_t wsb;
} chunk_pass;

/* Chunk k (rows Wk) against every run of tokens: its logits, then with grad the rows' gradient
 * and dh's part, else the rows' pieces. Nonzero: a matmul's scratch is too small. */
static int run_chunk(const chunk_pass *p, const qtensor *Wk, int k, int grad) {
    const int w = chunk_width(p->V, p->R, k), v0 = k * p->R, C = p->C, K = p->K;
    const int *tg = p->targets;
    int n0 = 0, n;
    while ((n = next_run(tg, p->N, p->chunk, &n0)) > 0) {
        float *sc = p->scratch;
        if (qmatmul_forward(sc, w, p->h + (size_t)n0 * C, C, Wk, NULL, n, 0.0f, p->ws, p->wsb))
            return -1;
#pragma omp parallel for schedule(static)
        for (int r = n0; r < n0 + n; r++) {
            float *x = sc + (size_t)(r - n0) * w;
            int in = tg[r] >= v0 && tg[r] < v0 + w;
            if (!grad) {
                p->kn->stats(x, w, &p->pm[(size_t)r * K + k], &p->ps[(size_t)r * K + k]);
                if (in) p->xt[r] = x[tg[r] - v0];
            } else if (tg[r] >= p->V) {
                for (int j = 0; j < w; j++)
                    x[j] = 0.0f;
            } else {
                p->kn->grad(x, w, p->M[r], (float)(p->grad_scale / p->S[r]));
                if (in) x[tg[r] - v0] -= p->grad_scale;
            }
        }
        if (grad && qmatmul_backward_input(p->dh + (size_t)n0 * C, C, sc, w, Wk, n, p->ws, p->wsb))
            return -1;
        n0 += n;
    }
    return 0;
}

/* The chunks one at a time from get (sharded): the forward pass over chunks 0 .. K-1 scores
 * every run's rows against each, the backward pass over K-1 .. 0 recomputes a chunk's logits
 * and adds its part of dh. Every GEMM and row piece is the same call on the same values as in
 * xent_whole, and dh's parts are added in the same order, so the bits are those. Every chunk
 * is asked for even after a failure: under --shard-base each request is a collective. */
static double xent_chunked(const xent_kernel *kn, float *dh, const float *h, const qtensor *W,
                           const int *targets, int N, float grad_scale, float *scratch, int chunk,
                           void *ws, size_t wsb, int R, xent_chunk_fn get, void *ctx, float *pm,
                           double *ps, float *xtm, double *S) {
    const int K = chunk_count(W->rows, R);
    /* positional, in the fields' order; xt, M and S are allocated below */
    chunk_pass p = {kn,         dh,      h,    targets, N,    W->rows, W->cols, K,  R,  chunk,
                    grad_scale, scratch, NULL, NULL,    NULL, ps,      pm,      ws, wsb};
    p.xt = xtm, p.M = xtm + N, p.S = S;
    int failed = 0;
    for (int k = 0; k < K; k++) {
        const qtensor *Wk = get(ctx, k, k + 1 < K ? k + 1 : dh && K > 1 ? K - 2 : -1);
        if (!failed) failed = run_chunk(&p, Wk, k, 0);
    }
    double loss = 0.0;
    for (int r = 0; !failed && r < N; r++) {
        if (targets[r] < 0) continue;
        if (targets[r] >= p.V) {
            loss += NAN;
            continue;
        }
        combine(pm + (size_t)r * K, ps + (size_t)r * K, K, &p.M[r], &p.S[r]);
        loss += log(p.S[r]) + (double)p.M[r] - (double)p.xt[r];
    }
    for (int k = K - 1; dh && k >= 0; k--) {
        const qtensor *Wk = get(ctx, k, k > 0 ? k - 1 : -1);
        if (!failed) failed = run_chunk(&p, Wk, k, 1);
    }
    return failed ? NAN : loss;
}

size_t lmhead_xent_state_bytes(int N, int chunk, int V, int R, int chunked) {
    if (chunk < 1) chunk = 1;
    if (R < 1 || R >= V) R = V;
    size_t K = (size_t)chunk_count(V, R), rows = chunked ? (size_t)N : (size_t)chunk;
    size_t b = rows * K * (sizeof(double) + sizeof(float)) + (size_t)chunk * sizeof(double);
    if (chunked) b += (size_t)N * (sizeof(double) + 2 * sizeof(float));
    return (b + 63) & ~(size_t)63;
}

static double xent_run(const xent_kernel *kn, float *dh, const float *h, const qtensor *W,
                       const int *targets, int N, float grad_scale, float *scratch, int chunk,
                       void *ws, size_t wsb, int R, xent_chunk_fn get, void *ctx) {
    const int V = W->rows;
    if (chunk < 1) chunk = 1;
    if (R < 1 || R >= V || !xent_rows_splittable(W)) R = V;
    const int K = chunk_count(V, R);
    /* each row's pieces (the runs' rows; all N when chunked), per-row losses (added in row
     * order whatever the threads) and, chunked, each row's target logit, max and sum: the tail
     * of the matmul scratch ws (sized for it by the model: nothing allocated in a step), else
     * (a caller without that room, as the tests) allocated here */
    size_t rows = get ? (size_t)N : (size_t)chunk;
    size_t need = lmhead_xent_state_bytes(N, chunk, V, R, get != NULL);
    void *own = NULL;
    char *st;
    if (ws && wsb >= need) {
        wsb = (wsb - need) & ~(size_t)63;
        st = (char *)ws + wsb;
    } else if (!(st = own = malloc(need)))
        return NAN;
    double *ps = (double *)st, *lrow = ps + rows * K, *S = lrow + chunk;
    float *pm = (float *)(S + (get ? N : 0)), *xtm = pm + rows * K;
    double loss = get ? xent_chunked(kn, dh, h, W, targets, N, grad_scale, scratch, chunk, ws, wsb,
                                     R, get, ctx, pm, ps, xtm, S)
                      : xent_whole(kn, dh, h, W, targets, N, grad_scale, scratch, chunk, ws, wsb, R,
                                   lrow, pm, ps);
    free(own);
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
    return xent_run(&kernel_ref, dh, h, &w, targets, N, grad_scale, scratch, chunk, NULL, 0, 0,
                    NULL, NULL);
}

/* The row kernels, best first, each with the ISA level it needs (base/cpu.h). */
static const struct {
    const char *name;
    cpu_isa level;
    const xent_kernel *k;
} table[] = {
    {"avx2", CPU_AVX2, &kernel_avx2},
    {"portable", CPU_PORTABLE, &kernel_ref},
};
static int pick(void) { return CPU_PICK(table); }

const char *xent_isa(void) { return table[pick()].name; }

double lmhead_xent_q(float *dh, const float *h, const qtensor *W, const int *targets, int N,
                     float grad_scale, float *scratch, int chunk, void *ws, size_t wsb) {
    return xent_run(table[pick()].k, dh, h, W, targets, N, grad_scale, scratch, chunk, ws, wsb, 0,
                    NULL, NULL);
}

double lmhead_xent_rows(float *dh, const float *h, const qtensor *W, const int *targets, int N,
                        float grad_scale, float *scratch, int chunk, void *ws, size_t wsb, int R,
                        xent_chunk_fn get, void *ctx) {
    return xent_run(table[pick()].k, dh, h, W, targets, N, grad_scale, scratch, chunk, ws, wsb, R,
                    get, ctx);
}

int lmhead_logits(float *logits, const float *h, const qtensor *W, int N, int R, xent_chunk_fn get,
                  void *ctx, void *ws, size_t wsb) {
    const int V = W->rows, C = W->cols;
    if (R < 1 || R >= V || !xent_rows_splittable(W)) R = V;
    const int K = chunk_count(V, R);
    for (int k = 0; k < K; k++) {
        qtensor w = rows_view(W, k * R, chunk_width(V, R, k));
        const qtensor *Wk = get ? get(ctx, k, k + 1 < K ? k + 1 : 0) : &w;
        if (qmatmul_forward(logits + (size_t)k * R, V, h, C, Wk, NULL, N, 0.0f, ws, wsb)) return -1;
    }
    return 0;
}

double lmhead_xent(float *dh, const float *h, const float *W, const int *targets, int N, int C,
                   int V, float grad_scale, float *scratch, int chunk) {
    qtensor w = f32_head(W, C, V);
    return lmhead_xent_q(dh, h, &w, targets, N, grad_scale, scratch, chunk, NULL, 0);
}
