/*
 * attention_test.c: flash attention (src/ops/attention.c) against a naive reference written here.
 *
 * The reference computes, in double, each query's full softmax over all keys with the mask rule
 * spelled out directly (j <= i, i - j < window, seg[i] == seg[j], i and j < len), and the
 * backward from the softmax Jacobian: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P*dP)),
 * dQ = scale dS K, dK = scale dS^T Q (it uses rowsum(P*dP), not dO.O as the flash code does).
 *
 * 1. Forward (out, lse) and backward (dq, dk, dv) of the fp32 flash code vs the double
 *    reference, for: T not a multiple of the 64/32 tiles, T = 1, H = Hkv, H = 4*Hkv, window < T,
 *    two and three segments (and non-monotone segment ids), len < T including a row with
 *    len = 0, and masks combined. Tolerance: max |ours - ref| <= 1e-5 * max |ref| per tensor.
 *    Inputs are O(1) and a value is a sum of at most ~150 fp32 products (unit roundoff 6e-8), so
 *    fp32 rounding stays around 1e-6 of the scale; 1e-5 fails on any mask or indexing slip, which
 *    moves values by O(1e-2) or more. Padding rows must be exactly 0 (out, dq, dk, dv) and their
 *    lse -inf; dq/dk/dv are pre-filled with garbage to check that backward overwrites.
 *    Every case runs the portable code, the
 *    tiled version at AVX2 and, where the CPU has it, AVX-512 (attention_tiled_body.h: backward
 *    in 1, 2 and 3 parts, K/V rows aligned and 16 bytes off; the two ISAs' outputs must be the
 *    same bits) and the dispatching entry points. The bf16 products (attention_forward_bf16, where
 *    the CPU has AVX-512: gemm_bf16 on tiles, VDPBF16PS or widened, whichever the ISA level
 *    runs) are compared with the naive reference over the inputs rounded to bf16, as the kernel
 *    rounds them, at BF16_TOL = 8e-3 of each result's largest value: what is left is the
 *    rounding of P and dS to bf16 (2^-9 relative each), measured at most 3.7e-3 over the cases
 *    here; a mask slip of one key among the ~70 a row sees moves a value by ~1e-2 or more. Cases
 * with T = 600 cross its 256-key chunks; GQA groups 1..8 and D = 64, 80, 128 cut its 6-row tiles
 * and 16-wide panels.
 * 2. Finite differences: the gradient of L = sum(out * R) (R fixed random) is taken by central
 *    differences of the double reference forward (eps 1e-5: truncation ~eps^2 = 1e-10, roundoff
 *    ~1e-16/eps = 1e-11) and compared with the fp32 analytic backward at 1e-5 of the largest
 *    gradient, for GQA H=4 Hkv=2 plain, with a window, with segments and with padding.
 */
#include "base/cpu.h"
#include "base/half.h"
#include "ops/attention_tiled.h"
#include "ops/ops.h"
#include "test.h"

#include <string.h>

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static double rnd(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

static int seg_of(int kind, int T, int t) {
    switch (kind) {
    case 2:
        return t < T * 2 / 5 ? 0 : 1;
    case 3:
        return t < T / 6 ? 0 : t < T * 2 / 3 ? 1 : 2;
    case 4:
        return t < T / 4 ? 5 : t < T / 2 ? 2 : 5;
    default:
        return 0;
    }
}

static int ref_allowed(const int *seg, int L, int window, int i, int j) {
    if (i >= L || j >= L || j > i) return 0;
    if (window > 0 && i - j >= window) return 0;
    if (seg && seg[i] != seg[j]) return 0;
    return 1;
}

/* out (B,T,H,D), lse (B,H,T); if dout: dq, dk, dv (zeroed here) get the gradients. */
static void ref_attention(double *out, double *lse, const double *q, const double *k,
                          const double *v, const int *seg, const int *len, int B, int T, int H,
                          int Hkv, int D, int window, double scale, const double *dout, double *dq,
                          double *dk, double *dv) {
    int G = H / Hkv;
    double *P = malloc(sizeof(double) * T), *dP = malloc(sizeof(double) * T);
    if (dout) {
        memset(dq, 0, sizeof(double) * B * T * H * D);
        memset(dk, 0, sizeof(double) * B * T * Hkv * D);
        memset(dv, 0, sizeof(double) * B * T * Hkv * D);
    }
    for (int b = 0; b < B; b++) {
        int L = len ? len[b] : T;
        const int *sb = seg ? seg + b * T : NULL;
        for (int h = 0; h < H; h++) {
            int g = h / G;
            for (int i = 0; i < T; i++) {
                const double *qi = q + ((size_t)(b * T + i) * H + h) * D;
                double *oi = out + ((size_t)(b * T + i) * H + h) * D;
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    P[j] = -INFINITY;
                    if (!ref_allowed(sb, L, window, i, j)) continue;
                    const double *kj = k + ((size_t)(b * T + j) * Hkv + g) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += qi[d] * kj[d];
                    P[j] = s * scale;
                    if (P[j] > mx) mx = P[j];
                }
                for (int d = 0; d < D; d++)
                    oi[d] = 0;
                if (mx == -INFINITY) {
                    lse[(b * H + h) * T + i] = -INFINITY;
                    continue;
                }
                double sum = 0;
                for (int j = 0; j < T; j++)
                    sum += P[j] == -INFINITY ? 0 : exp(P[j] - mx);
                lse[(b * H + h) * T + i] = mx + log(sum);
                for (int j = 0; j < T; j++) {
                    P[j] = P[j] == -INFINITY ? 0 : exp(P[j] - mx) / sum;
                    const double *vj = v + ((size_t)(b * T + j) * Hkv + g) * D;
                    for (int d = 0; d < D; d++)
                        oi[d] += P[j] * vj[d];
                }
                if (!dout) continue;
                const double *doi = dout + ((size_t)(b * T + i) * H + h) * D;
                double rs = 0;
                for (int j = 0; j < T; j++) {
                    const double *vj = v + ((size_t)(b * T + j) * Hkv + g) * D;
                    dP[j] = 0;
                    for (int d = 0; d < D; d++)
                        dP[j] += doi[d] * vj[d];
                    rs += P[j] * dP[j];
                }
                for (int j = 0; j < T; j++) {
                    if (P[j] == 0) continue;
                    double ds = P[j] * (dP[j] - rs) * scale;
                    size_t kvj = ((size_t)(b * T + j) * Hkv + g) * D;
                    double *dqi = dq + ((size_t)(b * T + i) * H + h) * D;
                    for (int d = 0; d < D; d++) {
                        dv[kvj + d] += P[j] * doi[d];
                        dk[kvj + d] += ds * qi[d];
                        dqi[d] += ds * k[kvj + d];
                    }
                }
            }
        }
    }
    free(P);
    free(dP);
}

/* max |a - b| / max |b| over n values (b the reference). The scale has a floor of 0.1 (the
 * inputs are O(1), so are outputs and gradients): when every key but one is masked (T = 1,
 * window = 1) the true dq and dk are exactly 0 and fp32 leaves ~3e-7 there (dP - Di cancels to
 * rounding), which is right, not a relative error of 1e22. */
static double rel_err(const float *a, const double *b, size_t n) {
    double e = 0, m = 0.1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > e || d != d) e = d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return e / m;
}

typedef struct {
    int B, T, H, Hkv, D, window;
    const int *seg, *len;
    double scale;
    double *q, *k, *v, *R, *out, *lse;
} fd_ctx;

static double fd_loss(fd_ctx *c) {
    ref_attention(c->out, c->lse, c->q, c->k, c->v, c->seg, c->len, c->B, c->T, c->H, c->Hkv, c->D,
                  c->window, c->scale, NULL, NULL, NULL, NULL);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->H * c->D; i++)
        L += c->out[i] * c->R[i];
    return L;
}

/* num[0..n) = central differences of fd_loss over x[0..n) */
static void fd_grad(fd_ctx *c, double *x, size_t n, double *num) {
    const double eps = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + eps;
        double lp = fd_loss(c);
        x[i] = x0 - eps;
        double lm = fd_loss(c);
        x[i] = x0;
        num[i] = (lp - lm) / (2 * eps);
    }
}

/* One test case: its inputs (fp32, and the same values in double), the naive reference's
 * outputs and gradients, and (FD cases) the finite-difference gradients. */
typedef struct {
    const char *name;
    int B, T, H, Hkv, D, window, do_fd;
    const int *len;
    int *seg;
    float scale, *q, *k, *v, *dout;
    double *outd, *lsed, *dqd, *dkd, *dvd, *nq_, *nk_, *nv_;
} att_case;

typedef void (*fwd_fn)(float *, float *, const float *, const float *, const float *, const int *,
                       const int *, int, int, int, int, int, int, float);
typedef void (*bwd_fn)(float *, float *, float *, const float *, const float *, const float *,
                       const float *, const float *, const float *, const int *, const int *, int,
                       int, int, int, int, int, float);

/* The bound of run_variant_kv's comparisons (relative to each result's largest value): 1e-5 for
 * fp32 products, BF16_TOL for the bf16 ones. */
static double variant_tol = 1e-5;
#define BF16_TOL 8e-3

/* Runs one version on the case's inputs, with K and V read from k, v (the case's own, or copies
 * at another alignment). */
static void run_variant_kv(const att_case *c, const char *vname, fwd_fn fwd, bwd_fn bwd,
                           const float *k, const float *v) {
    int B = c->B, T = c->T, H = c->H, Hkv = c->Hkv, D = c->D;
    const int *len = c->len;
    char name[200];
    snprintf(name, sizeof name, "%s [%s]", c->name, vname);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    float *out = malloc(4 * nq), *lse = malloc(4 * nl), *dq = malloc(4 * nq), *dk = malloc(4 * nk),
          *dv = malloc(4 * nk);
    fwd(out, lse, c->q, k, v, c->seg, len, B, T, H, Hkv, D, c->window, c->scale);
    CHECK(rel_err(out, c->outd, nq) <= variant_tol, "%s: out vs naive double: rel err %.3g", name,
          rel_err(out, c->outd, nq));
    int lse_bad = 0, pad_bad = 0;
    for (size_t i = 0; i < nl; i++) {
        if (isinf(c->lsed[i]))
            lse_bad += !(isinf(lse[i]) && lse[i] < 0);
        else
            lse_bad += !(fabs(lse[i] - c->lsed[i]) <= variant_tol * (1 + fabs(c->lsed[i])));
    }
    CHECK(lse_bad == 0, "%s: %d lse values differ from the naive double lse", name, lse_bad);

    for (size_t i = 0; i < nq; i++)
        dq[i] = 7.0f;
    for (size_t i = 0; i < nk; i++)
        dk[i] = dv[i] = -3.0f;
    bwd(dq, dk, dv, c->dout, c->q, k, v, out, lse, c->seg, len, B, T, H, Hkv, D, c->window,
        c->scale);
    CHECK(rel_err(dq, c->dqd, nq) <= variant_tol, "%s: dq rel err %.3g", name,
          rel_err(dq, c->dqd, nq));
    CHECK(rel_err(dk, c->dkd, nk) <= variant_tol, "%s: dk rel err %.3g", name,
          rel_err(dk, c->dkd, nk));
    CHECK(rel_err(dv, c->dvd, nk) <= variant_tol, "%s: dv rel err %.3g", name,
          rel_err(dv, c->dvd, nk));
    for (int b = 0; b < B && len; b++)
        for (int t = len[b]; t < T; t++) {
            for (int x = 0; x < H * D; x++) {
                size_t o = (size_t)(b * T + t) * H * D + x;
                pad_bad += out[o] != 0.0f || dq[o] != 0.0f;
            }
            for (int x = 0; x < Hkv * D; x++) {
                size_t o = (size_t)(b * T + t) * Hkv * D + x;
                pad_bad += dk[o] != 0.0f || dv[o] != 0.0f;
            }
        }
    CHECK(pad_bad == 0, "%s: %d padding values are not exactly 0", name, pad_bad);
    if (c->do_fd) {
        /* L = sum(out * R) with R = dout, so dL/dq = dq from the backward given dout */
        double eq = rel_err(dq, c->nq_, nq), ek = rel_err(dk, c->nk_, nk),
               ev = rel_err(dv, c->nv_, nk);
        CHECK(eq <= variant_tol, "%s: dq vs finite differences: rel err %.3g", name, eq);
        CHECK(ek <= variant_tol, "%s: dk vs finite differences: rel err %.3g", name, ek);
        CHECK(ev <= variant_tol, "%s: dv vs finite differences: rel err %.3g", name, ev);
    }
    free(out), free(lse), free(dq), free(dk), free(dv);
}

/* The tiled kernel at the ISA tiled_isa names (its table: attention_tiled.h), which reports a
 * missing workspace instead of running the portable code: here that is a failure. */
typedef struct {
    const char *name;
    size_t (*ws)(int, int, int, int, int);
    int (*fwd)(float *, float *, const float *, const float *, const float *, const int *,
               const int *, int, int, int, int, int, int, float, void *, size_t);
    int (*bwd)(float *, float *, float *, const float *, const float *, const float *,
               const float *, const float *, const float *, const int *, const int *, int, int, int,
               int, int, int, float, void *, size_t);
    cpu_isa level;
    double tol; /* of each result against the double reference, relative to its largest value */
    int bf16;   /* the reference takes q, k, v, dout rounded to bf16, as the kernel does */
} tiled_isa_row;
static const tiled_isa_row tiled_isas[] = {
    {"avx2", attention_tiled_ws_bytes_avx2, attention_forward_tiled_avx2,
     attention_backward_tiled_avx2, CPU_AVX2, 1e-5, 0},
    {"avx512", attention_tiled_ws_bytes_avx512, attention_forward_tiled_avx512,
     attention_backward_tiled_avx512, CPU_AVX512, 1e-5, 0},
    {"bf16", attention_bf16_ws_bytes, attention_forward_bf16, attention_backward_bf16, CPU_AVX512,
     BF16_TOL, 1},
};
static const tiled_isa_row *tiled_isa = &tiled_isas[0];

static void tiled_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                          int window, float scale) {
    size_t n = tiled_isa->ws(B, T, H, Hkv, D);
    void *ws = malloc(n);
    int rc = tiled_isa->fwd(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, ws, n);
    CHECK(rc == 0, "the tiled forward (%s) did not run (%d)", tiled_isa->name, rc);
    /* with a workspace too small for one thread's buffers it refuses (and writes nothing) */
    CHECK(tiled_isa->fwd(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, ws, 64) == -1,
          "the tiled forward (%s) ran in 64 bytes", tiled_isa->name);
    free(ws);
}

static void tiled_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                           int window, float scale) {
    size_t n = tiled_isa->ws(B, T, H, Hkv, D);
    void *ws = malloc(n);
    int rc = tiled_isa->bwd(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                            scale, ws, n);
    CHECK(rc == 0, "the tiled backward (%s) did not run (%d)", tiled_isa->name, rc);
    free(ws);
}

/* The case's reference on its inputs rounded to bf16 (the naive double reference over
 * bf16(q), bf16(k), bf16(v), bf16(dout)): what the bf16 products compute up to their rounding of
 * P and dS. The caller frees outd .. dvd. */
static att_case rounded_reference(const att_case *c) {
    att_case r = *c;
    size_t nq = (size_t)c->B * c->T * c->H * c->D, nk = (size_t)c->B * c->T * c->Hkv * c->D;
    size_t nl = (size_t)c->B * c->H * c->T;
    double *qd = malloc(8 * nq), *kd = malloc(8 * nk), *vd = malloc(8 * nk), *dod = malloc(8 * nq);
    for (size_t i = 0; i < nq; i++)
        qd[i] = bf16_to_f32(f32_to_bf16(c->q[i])), dod[i] = bf16_to_f32(f32_to_bf16(c->dout[i]));
    for (size_t i = 0; i < nk; i++)
        kd[i] = bf16_to_f32(f32_to_bf16(c->k[i])), vd[i] = bf16_to_f32(f32_to_bf16(c->v[i]));
    r.outd = malloc(8 * nq), r.lsed = malloc(8 * nl), r.dqd = malloc(8 * nq);
    r.dkd = malloc(8 * nk), r.dvd = malloc(8 * nk), r.do_fd = 0;
    ref_attention(r.outd, r.lsed, qd, kd, vd, c->seg, c->len, c->B, c->T, c->H, c->Hkv, c->D,
                  c->window, c->scale, dod, r.dqd, r.dkd, r.dvd);
    free(qd), free(kd), free(vd), free(dod);
    return r;
}

/* The AVX-512 kernels sum every output in the AVX2 kernels' order: forward and backward of the
 * case give the same bits at both ISAs (the backward from the AVX2 forward's out and lse). */
static void check_isas_agree(const att_case *c) {
    int B = c->B, T = c->T, H = c->H, Hkv = c->Hkv, D = c->D;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    float *r[2][5];
    for (int i = 0; i < 2; i++) {
        float *out = malloc(4 * nq), *lse = malloc(4 * nl), *dq = malloc(4 * nq),
              *dk = malloc(4 * nk), *dv = malloc(4 * nk);
        tiled_isa = &tiled_isas[i];
        tiled_forward(out, lse, c->q, c->k, c->v, c->seg, c->len, B, T, H, Hkv, D, c->window,
                      c->scale);
        tiled_backward(dq, dk, dv, c->dout, c->q, c->k, c->v, i ? r[0][0] : out, i ? r[0][1] : lse,
                       c->seg, c->len, B, T, H, Hkv, D, c->window, c->scale);
        r[i][0] = out, r[i][1] = lse, r[i][2] = dq, r[i][3] = dk, r[i][4] = dv;
    }
    tiled_isa = &tiled_isas[0];
    size_t n[5] = {nq, nl, nq, nk, nk};
    const char *what[5] = {"out", "lse", "dq", "dk", "dv"};
    for (int t = 0; t < 5; t++) {
        CHECK(!memcmp(r[0][t], r[1][t], 4 * n[t]), "%s: %s differs between AVX2 and AVX-512",
              c->name, what[t]);
        free(r[0][t]), free(r[1][t]);
    }
}

/* The dispatching entry points with the workspace they ask for, as the model gives it; and with
 * none, when they must run the portable code (fallback). */
static void dispatch_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                             const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                             int window, float scale) {
    size_t n = attention_workspace_bytes(B, T, H, Hkv, D, 0);
    void *ws = n ? malloc(n) : NULL;
    attention_forward(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, 0, ws, n);
    free(ws);
}

static void dispatch_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                              int window, float scale) {
    size_t n = attention_workspace_bytes(B, T, H, Hkv, D, 0);
    void *ws = n ? malloc(n) : NULL;
    attention_backward(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                       scale, 0, ws, n);
    free(ws);
}

static void noworkspace_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int *seg, const int *len, int B, int T, int H,
                                int Hkv, int D, int window, float scale) {
    attention_forward(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, 0, NULL, 0);
}

static void noworkspace_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *out, const float *lse,
                                 const int *seg, const int *len, int B, int T, int H, int Hkv,
                                 int D, int window, float scale) {
    attention_backward(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                       scale, 0, NULL, 0);
}

static void run_variant(const att_case *c, const char *vname, fwd_fn fwd, bwd_fn bwd) {
    run_variant_kv(c, vname, fwd, bwd, c->k, c->v);
}

/* Each case runs the portable code, the AVX2 code where the CPU and D allow it (its backward
 * in both work splits), and the dispatching entry points (whichever of the two they pick), all
 * on the same inputs and against the same reference. */
static void run_case(const char *name, int B, int T, int H, int Hkv, int D, int window,
                     int seg_kind, const int *len, int do_fd) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * H * T;
    att_case c = {.name = name,
                  .B = B,
                  .T = T,
                  .H = H,
                  .Hkv = Hkv,
                  .D = D,
                  .window = window,
                  .do_fd = do_fd,
                  .len = len,
                  .scale = 1.0f / sqrtf((float)D)};
    c.q = malloc(4 * nq), c.k = malloc(4 * nk), c.v = malloc(4 * nk), c.dout = malloc(4 * nq);
    double *qd = malloc(8 * nq), *kd = malloc(8 * nk), *vd = malloc(8 * nk), *dod = malloc(8 * nq);
    c.outd = malloc(8 * nq), c.lsed = malloc(8 * nl), c.dqd = malloc(8 * nq);
    c.dkd = malloc(8 * nk), c.dvd = malloc(8 * nk);
    /* q scaled up so that scores reach ~+-10 and the online max really moves between tiles */
    for (size_t i = 0; i < nq; i++)
        c.q[i] = (float)(4 * rnd()), qd[i] = c.q[i];
    for (size_t i = 0; i < nk; i++)
        c.k[i] = (float)rnd(), kd[i] = c.k[i];
    for (size_t i = 0; i < nk; i++)
        c.v[i] = (float)rnd(), vd[i] = c.v[i];
    for (size_t i = 0; i < nq; i++)
        c.dout[i] = (float)rnd(), dod[i] = c.dout[i];
    /* batch row b sees the pattern shifted by 3b, so for b > 0 the ids wrap around and are not
     * monotone: both paths of attention.c (binary-searched segment start, per-pair check) run */
    if (seg_kind) {
        c.seg = malloc(sizeof(int) * B * T);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                c.seg[b * T + t] = seg_of(seg_kind, T, (t + 3 * b) % T);
    }
    ref_attention(c.outd, c.lsed, qd, kd, vd, c.seg, len, B, T, H, Hkv, D, window, c.scale, dod,
                  c.dqd, c.dkd, c.dvd);
    if (do_fd) {
        double *o = malloc(8 * nq), *l = malloc(8 * nl);
        fd_ctx f = {B, T, H, Hkv, D, window, c.seg, len, c.scale, qd, kd, vd, dod, o, l};
        c.nq_ = malloc(8 * nq), c.nk_ = malloc(8 * nk), c.nv_ = malloc(8 * nk);
        fd_grad(&f, qd, nq, c.nq_);
        fd_grad(&f, kd, nk, c.nk_);
        fd_grad(&f, vd, nk, c.nv_);
        free(o), free(l);
    }
    run_variant(&c, "portable", attention_forward_ref, attention_backward_ref);
    if (attention_avx2_usable(H, Hkv, D)) {
        /* the tiled version at each ISA the CPU has (and FTUNE_ISA allows): its backward with
         * each (b, kv head) in 1, 2 and 3 runs of query blocks (the runs after the first sum
         * through their own buffers), and with K, V rows 32-byte aligned (read in place) and
         * 16-byte off (copied first) */
        float *ka = aligned_alloc(64, 4 * nk + 64), *va = aligned_alloc(64, 4 * nk + 64);
        memcpy(ka, c.k, 4 * nk), memcpy(va, c.v, 4 * nk);
        float *ku = aligned_alloc(64, 4 * nk + 64), *vu = aligned_alloc(64, 4 * nk + 64);
        memcpy(ku + 4, c.k, 4 * nk), memcpy(vu + 4, c.v, 4 * nk);
        for (size_t i = 0; i < sizeof tiled_isas / sizeof tiled_isas[0]; i++) {
            if (tiled_isas[i].level > cpu_level()) {
                static int noted;
                if (!noted++)
                    printf("note: no %s here (or FTUNE_ISA caps it): its tiled attention is not "
                           "tested\n",
                           tiled_isas[i].name);
                continue;
            }
            tiled_isa = &tiled_isas[i];
            variant_tol = tiled_isa->tol;
            att_case cr = tiled_isa->bf16 ? rounded_reference(&c) : c;
            for (int parts = 1; parts <= 3; parts++) {
                char vn[80];
                attention_tiled_parts = parts;
                snprintf(vn, sizeof vn, "tiled %s, backward in %d part(s), K/V aligned",
                         tiled_isa->name, parts);
                run_variant_kv(&cr, vn, tiled_forward, tiled_backward, ka, va);
                snprintf(vn, sizeof vn, "tiled %s, backward in %d part(s), K/V 16 bytes off",
                         tiled_isa->name, parts);
                run_variant_kv(&cr, vn, tiled_forward, tiled_backward, ku + 4, vu + 4);
            }
            attention_tiled_parts = 0;
            if (tiled_isa->bf16)
                free(cr.outd), free(cr.lsed), free(cr.dqd), free(cr.dkd), free(cr.dvd);
        }
        tiled_isa = &tiled_isas[0];
        variant_tol = 1e-5;
        if (cpu_level() >= CPU_AVX512) check_isas_agree(&c);
        free(ka), free(va), free(ku), free(vu);
    } else if (D % 16 == 0) {
        printf("note: no AVX2+FMA on this CPU, the AVX2 attention is not tested\n");
    }
    run_variant(&c, "dispatch", dispatch_forward, dispatch_backward);
    run_variant(&c, "dispatch without a workspace", noworkspace_forward, noworkspace_backward);
    free(c.q), free(c.k), free(c.v), free(c.dout), free(qd), free(kd), free(vd), free(dod);
    free(c.outd), free(c.lsed), free(c.dqd), free(c.dkd), free(c.dvd), free(c.seg);
    free(c.nq_), free(c.nk_), free(c.nv_);
}

int main(void) {
    int len3[3] = {70, 33, 0}, len2[2] = {11, 6}, len2b[2] = {1, 150}, len3b[3] = {300, 131, 0};
    /* against the naive reference */
    run_case("GQA H=4 Hkv=2, T=70 (not a multiple of the tiles)", 2, 70, 4, 2, 16, 0, 0, NULL, 0);
    run_case("T=1", 2, 1, 2, 1, 16, 0, 0, NULL, 0);
    run_case("D=8 (portable only)", 2, 70, 4, 2, 8, 0, 0, NULL, 0);
    run_case("D=48, T=200", 1, 200, 3, 1, 48, 0, 0, NULL, 0);
    run_case("H=Hkv=3, T=37", 1, 37, 3, 3, 16, 0, 0, NULL, 0);
    run_case("H=4*Hkv, T=50", 2, 50, 8, 2, 16, 0, 0, NULL, 0);
    run_case("window 5 < T=70", 2, 70, 4, 2, 16, 5, 0, NULL, 0);
    run_case("window 70 < T=150 (tiles skipped)", 1, 150, 4, 2, 16, 70, 0, NULL, 0);
    run_case("window 1 (self only)", 1, 20, 2, 1, 16, 1, 0, NULL, 0);
    /* windows whose first visible key falls on a tile edge for some 16-row or 64-row block
     * start (e.g. window 2: row 64 sees 63..64; window 18: row 80 sees 63..80) */
    int wins[] = {2, 18, 63, 64, 65, 66, 129};
    for (size_t w = 0; w < sizeof wins / sizeof wins[0]; w++) {
        char nm[64];
        snprintf(nm, sizeof nm, "window %d at tile edges, T=200", wins[w]);
        run_case(nm, 1, 200, 2, 1, 16, wins[w], 0, NULL, 0);
    }
    run_case("two segments, T=70", 2, 70, 4, 2, 16, 0, 2, NULL, 0);
    run_case("three segments, T=130", 2, 130, 4, 2, 16, 0, 3, NULL, 0);
    run_case("non-monotone segment ids", 2, 70, 4, 2, 16, 0, 4, NULL, 0);
    run_case("len {70, 33, 0} < T=70", 3, 70, 4, 2, 16, 0, 0, len3, 0);
    run_case("len {1, 150}", 2, 150, 2, 1, 16, 0, 0, len2b, 0);
    run_case("window + three segments + len", 3, 70, 4, 2, 16, 9, 3, len3, 0);
    run_case("window 100 + segments + len, T=300", 3, 300, 2, 1, 32, 100, 3, len3b, 0);
    /* against finite differences of the reference */
    /* the tiled version's edges: more than one 256-key chunk (online softmax across chunks),
     * query blocks of 144/G rounded to 8 positions, 6-row register tiles cut by the stacking of
     * G heads, GQA groups 1..8, head dims 64, 80, 128 */
    int len2c[2] = {600, 333};
    run_case("T=600 (3 key chunks), G=2", 1, 600, 4, 2, 16, 0, 0, NULL, 0);
    run_case("T=600, window 300, three segments, len {600, 333}", 2, 600, 2, 1, 16, 300, 3, len2c,
             0);
    run_case("T=600, non-monotone segment ids", 2, 600, 2, 2, 16, 0, 4, NULL, 0);
    for (int G = 1; G <= 8; G++) {
        char nm[64];
        snprintf(nm, sizeof nm, "GQA group %d (H=%d Hkv=2), T=131", G, 2 * G);
        run_case(nm, 1, 131, 2 * G, 2, 32, 0, 0, NULL, 0);
    }
    run_case("D=64 (SmolLM heads), T=300, H=9 Hkv=3", 1, 300, 9, 3, 64, 0, 0, NULL, 0);
    run_case("D=80, T=77, H=4 Hkv=2, window 30", 2, 77, 4, 2, 80, 30, 0, NULL, 0);
    run_case("D=128 (Qwen3 heads), T=100, H=4 Hkv=2", 1, 100, 4, 2, 128, 0, 0, NULL, 0);
    run_case("FD: GQA H=4 Hkv=2", 2, 9, 4, 2, 16, 0, 0, NULL, 1);
    run_case("FD: window 4", 2, 11, 4, 2, 16, 4, 0, NULL, 1);
    run_case("FD: two segments", 2, 11, 4, 2, 16, 0, 2, NULL, 1);
    run_case("FD: padding len {11, 6}", 2, 11, 4, 2, 16, 0, 0, len2, 1);
    return test_summary("attention");
}
