/*
 * ops_test.c: rmsnorm, rope, swiglu and the chunked LM-head cross-entropy (src/ops/) against
 * naive double-precision references written here, and every backward against finite differences.
 *
 * Method, for each op: the fp32 forward is compared with a double reference of the same formula
 * (tolerance 1e-5 relative to the largest reference value: the fp32 ops round each of a handful
 * of operations at 6e-8, or sum C <= 300 products, so their error is ~1e-6 of the scale; a wrong
 * formula or index is off by far more). The fp32 backward is compared with central differences of
 * the double reference of L = sum(out * R), R fixed random (eps 1e-5 or 1e-4: truncation error
 * ~eps^2 * |f'''| <= 1e-8, roundoff ~1e-16 / eps), at 1e-5 of the largest gradient (fp32 level).
 * Also: backward ACCUMULATES where ops.h says so (rmsnorm dinp/dw, xent dh: two calls give twice
 * one call), overwrites where it says so (swiglu), xent gives the same loss and dh for chunk sizes
 * 1, 7 and N, skips targets of -100 (their dh rows untouched), and rope matches transformers'
 * float32 angle convention (pos * inv_freq rounded to float before cos/sin).
 * attn_input (the fused split + qk-norm + RoPE of the attention input, and its backward) is
 * compared with the composition of the separate ops above (within 1e-6; it matches to the bit).
 * swiglu and xent run three times: the portable code (*_ref), the AVX2 code when the CPU has it,
 * and the dispatching entry points, each against the same references.
 */
#include "base/cpu.h"
#include "ops/ops.h"
#include "ops/qtensor.h"
#include "test.h"

#include <string.h>

static unsigned long long rng_state = 0x2545F4914F6CDD1Dull;
static double rnd(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

static float *frand(size_t n, double a) {
    float *x = malloc(4 * n);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(a * rnd());
    return x;
}
static double *todouble(const float *x, size_t n) {
    double *y = malloc(8 * n);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i];
    return y;
}

/* max |a - b| / max |b| (b the reference); NaN counts as a huge error */
static double rel_err(const float *a, const double *b, size_t n) {
    double e = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > e || d != d) e = d != d ? INFINITY : d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return e / m;
}

/* Central differences of f over x[0..n) compared with grad: returns the relative error. */
typedef double (*loss_fn)(void *ctx);
static double fd_rel_err(loss_fn f, void *ctx, double *x, size_t n, const float *grad, double eps) {
    double *num = malloc(8 * n);
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + eps;
        double lp = f(ctx);
        x[i] = x0 - eps;
        double lm = f(ctx);
        x[i] = x0;
        num[i] = (lp - lm) / (2 * eps);
    }
    double e = rel_err(grad, num, n);
    free(num);
    return e;
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */
typedef struct {
    int N, C;
    double eps, *x, *w, *R, *out;
} rms_ctx;

static void rms_ref(rms_ctx *c) {
    for (int n = 0; n < c->N; n++) {
        double ss = 0;
        for (int i = 0; i < c->C; i++)
            ss += c->x[n * c->C + i] * c->x[n * c->C + i];
        double r = 1 / sqrt(ss / c->C + c->eps);
        for (int i = 0; i < c->C; i++)
            c->out[n * c->C + i] = c->x[n * c->C + i] * r * c->w[i];
    }
}
static double rms_loss(void *p) {
    rms_ctx *c = p;
    rms_ref(c);
    double L = 0;
    for (int i = 0; i < c->N * c->C; i++)
        L += c->out[i] * c->R[i];
    return L;
}

static void test_rmsnorm(int N, int C) {
    size_t n = (size_t)N * C;
    float eps = 1e-5f;
    float *x = frand(n, 2), *w = frand(C, 1.5), *R = frand(n, 1), *out = malloc(4 * n);
    float *rstd = malloc(4 * N), *dx = calloc(n, 4), *dw = calloc(C, 4), *dx2 = calloc(n, 4);
    rms_ctx c = {N, C, eps, todouble(x, n), todouble(w, C), todouble(R, n), malloc(8 * n)};
    rmsnorm_forward(out, rstd, x, w, N, C, eps);
    rms_ref(&c);
    CHECK(rel_err(out, c.out, n) <= 1e-5, "rmsnorm C=%d: out vs double ref: %.3g", C,
          rel_err(out, c.out, n));
    rmsnorm_backward(dx, dw, R, x, w, rstd, N, C);
    double ex = fd_rel_err(rms_loss, &c, c.x, n, dx, 1e-5),
           ew = fd_rel_err(rms_loss, &c, c.w, C, dw, 1e-5);
    CHECK(ex <= 1e-5, "rmsnorm C=%d: dinp vs finite differences: %.3g", C, ex);
    CHECK(ew <= 1e-5, "rmsnorm C=%d: dw vs finite differences: %.3g", C, ew);
    /* accumulation: a second call adds the same again; dw NULL (frozen) leaves dinp the same */
    float *dw2 = malloc(4 * C);
    memcpy(dw2, dw, 4 * C);
    rmsnorm_backward(dx, dw2, R, x, w, rstd, N, C);
    rmsnorm_backward(dx2, NULL, R, x, w, rstd, N, C);
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += dx[i] != 2 * dx2[i];
    /* dw2 = (dw + t1) + t2 + ..., summed in another order than 2*dw: fp32 rounding apart */
    float dwmax = 0;
    for (int i = 0; i < C; i++)
        dwmax = fmaxf(dwmax, fabsf(dw[i]));
    for (int i = 0; i < C; i++)
        bad += fabsf(dw2[i] - 2 * dw[i]) > 1e-6f * dwmax;
    CHECK(bad == 0, "rmsnorm C=%d: second backward call must double dinp and dw (%d differ)", C,
          bad);
    free(x), free(w), free(R), free(out), free(rstd), free(dx), free(dw), free(dx2), free(dw2);
    free(c.x), free(c.w), free(c.R), free(c.out);
}

/* ---- rope ------------------------------------------------------------------------------- */
typedef struct {
    int N, H, D, rot;
    const int *pos;
    const float *inv_freq;
    double scale, *x, *R, *out;
} rope_ctx;

static void rope_ref(rope_ctx *c) {
    int half = c->rot / 2;
    for (int n = 0; n < c->N; n++)
        for (int h = 0; h < c->H; h++) {
            const double *x = c->x + ((size_t)n * c->H + h) * c->D;
            double *o = c->out + ((size_t)n * c->H + h) * c->D;
            for (int d = 0; d < c->D; d++)
                o[d] = x[d];
            for (int i = 0; i < half; i++) {
                /* transformers: freqs = position_ids.float() * inv_freq, a float32 product */
                float a = (float)c->pos[n] * c->inv_freq[i];
                double cs = cos((double)a) * c->scale, sn = sin((double)a) * c->scale;
                o[i] = x[i] * cs - x[i + half] * sn;
                o[i + half] = x[i + half] * cs + x[i] * sn;
            }
        }
}
static double rope_loss(void *p) {
    rope_ctx *c = p;
    rope_ref(c);
    double L = 0;
    for (int i = 0; i < c->N * c->H * c->D; i++)
        L += c->out[i] * c->R[i];
    return L;
}

static void test_rope(int D, int rot, float scale) {
    int N = 6, H = 3, pos[6] = {0, 1, 2, 17, 1000, 4095};
    size_t n = (size_t)N * H * D;
    float inv_freq[256];
    for (int i = 0; i < rot / 2; i++) /* the default rope: 1 / base^(2i/dim), base 10000 */
        inv_freq[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)rot);
    float *x = frand(n, 1), *R = frand(n, 1), *y = malloc(4 * n), *dx = malloc(4 * n);
    memcpy(y, x, 4 * n);
    memcpy(dx, R, 4 * n);
    rope_ctx c = {
        N, H, D, rot, pos, inv_freq, scale, todouble(x, n), todouble(R, n), malloc(8 * n)};
    rope_forward(y, pos, inv_freq, N, H, D, rot, scale);
    rope_ref(&c);
    /* cosf/sinf vs cos/sin of the same float angle: ~1 ulp apart */
    CHECK(rel_err(y, c.out, n) <= 1e-6, "rope rot=%d: forward vs double ref: %.3g", rot,
          rel_err(y, c.out, n));
    int pass = 0;
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++)
            for (int d = rot; d < D; d++)
                pass += y[(t * H + h) * D + d] != x[(t * H + h) * D + d];
    CHECK(pass == 0, "rope rot=%d: dims past rot_dim must pass through (%d changed)", rot, pass);
    rope_backward(dx, pos, inv_freq, N, H, D, rot, scale);
    double e = fd_rel_err(rope_loss, &c, c.x, n, dx, 1e-5);
    CHECK(e <= 1e-5, "rope rot=%d: dx vs finite differences: %.3g", rot, e);
    free(x), free(R), free(y), free(dx), free(c.x), free(c.R), free(c.out);
}

/* ---- attn_input: the fused split + qk-norm + rope against the separate ops ----------------- */

/* max |a - b| / max |b| over n floats, both fp32; *same counts the bit-identical values */
static double frel_err(const float *a, const float *b, size_t n, size_t *same) {
    double e = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > e || d != d) e = d != d ? INFINITY : d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
        if (same) *same += memcmp(&a[i], &b[i], 4) == 0;
    }
    return e / m;
}

/* The fused pass against the composition it replaces (model.c, now model/block.c, before it):
 * copies of each row's parts, rmsnorm_forward per head (qk-norm), rope_forward on q and k; backward
 * rope_backward, rmsnorm_backward into zeroed buffers, copies into dqkv. Both run the same row code
 * (row_ops.h) in the same order, so they should agree to the bit (the fused backward reads the
 * pre-norm values from qkv, where the separate ops kept copies); the bound is 1e-6 of the
 * largest value (fp32 rounding of a few operations) so that a compiler vectorizing the two
 * differently does not fail it, while a wrong index or a missed head is off by O(1). */
static void test_attn_input(int N, int H, int Hkv, int D, int rot, int norm, float scale) {
    const int HD = H * D, KD = Hkv * D, QKV = HD + 2 * KD, ld = QKV + 3; /* 3: a row stride */
    const float eps = 1e-6f;
    int *pos = malloc(sizeof(int) * N);
    for (int n = 0; n < N; n++) /* positions up to 4095, some repeated (packed documents) */
        pos[n] = n % 5 == 4 ? 0 : (int)((rnd() + 1) * 2047.5);
    float inv_freq[256];
    for (int i = 0; i < rot / 2; i++)
        inv_freq[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)rot);
    int P = 0; /* the cos/sin table covers positions 0 .. P-1 */
    for (int n = 0; n < N; n++)
        P = pos[n] + 1 > P ? pos[n] + 1 : P;
    float *rc = malloc(4 * (size_t)P * (rot / 2)), *rs = malloc(4 * (size_t)P * (rot / 2));
    rope_table(rc, rs, P, inv_freq, rot, scale);
    float *qkv = frand((size_t)N * ld, 2), *qw = frand(D, 1.5), *kw = frand(D, 1.5);
    const float *qn = norm ? qw : NULL, *kn = norm ? kw : NULL;
    size_t nq = (size_t)N * HD, nk = (size_t)N * KD;
    /* reference: the separate ops */
    float *rq = malloc(4 * nq), *rk = malloc(4 * nk), *rv = malloc(4 * nk), *rqp = malloc(4 * nq),
          *rkp = malloc(4 * nk), *rqr = malloc(4 * (size_t)N * H),
          *rkr = malloc(4 * (size_t)N * Hkv);
    for (int n = 0; n < N; n++) {
        const float *row = qkv + (size_t)n * ld;
        memcpy((norm ? rqp : rq) + (size_t)n * HD, row, 4 * (size_t)HD);
        memcpy((norm ? rkp : rk) + (size_t)n * KD, row + HD, 4 * (size_t)KD);
        memcpy(rv + (size_t)n * KD, row + HD + KD, 4 * (size_t)KD);
    }
    if (norm) {
        rmsnorm_forward(rq, rqr, rqp, qw, N * H, D, eps);
        rmsnorm_forward(rk, rkr, rkp, kw, N * Hkv, D, eps);
    }
    rope_forward(rq, pos, inv_freq, N, H, D, rot, scale);
    rope_forward(rk, pos, inv_freq, N, Hkv, D, rot, scale);
    /* fused */
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk),
          *qr = malloc(4 * (size_t)N * H), *kr = malloc(4 * (size_t)N * Hkv);
    attn_input_forward(q, k, v, qr, kr, qkv, ld, qn, kn, eps, pos, rc, rs, N, H, Hkv, D, rot);
    size_t same = 0, total = nq + 2 * nk;
    double e = frel_err(q, rq, nq, &same);
    e = fmax(e, frel_err(k, rk, nk, &same));
    e = fmax(e, frel_err(v, rv, nk, &same));
    if (norm) {
        e = fmax(e, frel_err(qr, rqr, (size_t)N * H, NULL));
        e = fmax(e, frel_err(kr, rkr, (size_t)N * Hkv, NULL));
    }
    CHECK(e <= 1e-6,
          "attn_input N=%d H=%d Hkv=%d D=%d rot=%d norm=%d: forward vs separate ops: %.3g", N, H,
          Hkv, D, rot, norm, e);
    /* backward: dq, dk, dv as attention_backward leaves them */
    float *dq = frand(nq, 1), *dk = frand(nk, 1), *dv = frand(nk, 1);
    float *dq0 = malloc(4 * nq), *dk0 = malloc(4 * nk);
    memcpy(dq0, dq, 4 * nq), memcpy(dk0, dk, 4 * nk);
    float *rdq = malloc(4 * nq), *rdk = malloc(4 * nk), *rdqkv = malloc(4 * (size_t)N * ld);
    memcpy(rdq, dq, 4 * nq), memcpy(rdk, dk, 4 * nk);
    rope_backward(rdq, pos, inv_freq, N, H, D, rot, scale);
    rope_backward(rdk, pos, inv_freq, N, Hkv, D, rot, scale);
    float *gq = rdq, *gk = rdk;
    if (norm) {
        gq = calloc(nq, 4), gk = calloc(nk, 4);
        rmsnorm_backward(gq, NULL, rdq, rqp, qw, rqr, N * H, D);
        rmsnorm_backward(gk, NULL, rdk, rkp, kw, rkr, N * Hkv, D);
    }
    float *dqkv = malloc(4 * (size_t)N * ld);
    for (size_t i = 0; i < (size_t)N * ld; i++)
        dqkv[i] = NAN; /* every value of a row must be overwritten, the 3 padding ones left */
    for (int n = 0; n < N; n++) {
        float *row = rdqkv + (size_t)n * ld;
        memcpy(row, gq + (size_t)n * HD, 4 * (size_t)HD);
        memcpy(row + HD, gk + (size_t)n * KD, 4 * (size_t)KD);
        memcpy(row + HD + KD, dv + (size_t)n * KD, 4 * (size_t)KD);
    }
    attn_input_backward(dqkv, dq, dk, dv, norm ? qkv : NULL, ld, qr, kr, qn, kn, pos, rc, rs, N, H,
                        Hkv, D, rot);
    size_t bsame = 0;
    double eb = 0;
    int pad = 0;
    for (int n = 0; n < N; n++) {
        eb = fmax(eb, frel_err(dqkv + (size_t)n * ld, rdqkv + (size_t)n * ld, QKV, &bsame));
        for (int j = QKV; j < ld; j++)
            pad += !isnan(dqkv[(size_t)n * ld + j]);
    }
    CHECK(eb <= 1e-6,
          "attn_input N=%d H=%d Hkv=%d D=%d rot=%d norm=%d: backward vs separate ops: %.3g", N, H,
          Hkv, D, rot, norm, eb);
    CHECK(pad == 0, "attn_input backward wrote %d values past the row's q|k|v", pad);
    CHECK(!memcmp(dq, dq0, 4 * nq) && !memcmp(dk, dk0, 4 * nk),
          "attn_input backward changed dq/dk");
    printf(
        "attn_input N=%d H=%d Hkv=%d D=%d rot=%d norm=%d: forward %.2g (%zu of %zu bit-identical), "
        "backward %.2g (%zu of %zu)\n",
        N, H, Hkv, D, rot, norm, e, same, total, eb, bsame, (size_t)N * QKV);
    if (norm) free(gq), free(gk);
    free(rc), free(rs), free(pos), free(qkv), free(qw), free(kw), free(rq), free(rk), free(rv),
        free(rqp), free(rkp), free(rqr), free(rkr), free(q), free(k), free(v), free(qr), free(kr),
        free(dq), free(dk), free(dv), free(dq0), free(dk0), free(rdq), free(rdk), free(rdqkv),
        free(dqkv);
}

/* ---- swiglu ----------------------------------------------------------------------------- */
typedef struct {
    int N, I, ld;
    double *g, *u, *R, *out; /* g, u with row stride ld */
} swi_ctx;

static double swi_loss(void *p) {
    swi_ctx *c = p;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int i = 0; i < c->I; i++) {
            double g = c->g[n * c->ld + i];
            c->out[n * c->I + i] = g / (1 + exp(-g)) * c->u[n * c->ld + i];
            L += c->out[n * c->I + i] * c->R[n * c->I + i];
        }
    return L;
}

typedef void (*swi_fwd)(float *, const float *, const float *, int, int, int);
typedef void (*swi_bwd)(float *, float *, const float *, const float *, const float *, int, int,
                        int);

static void test_swiglu(int fused, swi_fwd fwd, swi_bwd bwd, const char *vname) {
    int N = 4, I = 21, ld = fused ? 2 * I : I; /* I = 21: two 8-wide AVX2 steps and a tail */
    size_t nin = (size_t)N * ld, n = (size_t)N * I;
    /* fused: one (N, 2I) buffer, gate = first I columns, up = next I (Phi-3's gate_up_proj) */
    float *gbuf = frand(nin, 4), *ubuf = fused ? gbuf : frand(nin, 2);
    const float *g = gbuf, *u = fused ? gbuf + I : ubuf;
    float *R = frand(n, 1), *out = malloc(4 * n), *dgb = malloc(4 * nin),
          *dub = fused ? dgb : malloc(4 * nin);
    float *dg = dgb, *du = fused ? dgb + I : dub;
    double *gd = todouble(gbuf, nin), *ud = fused ? gd : todouble(ubuf, nin);
    swi_ctx c = {N, I, ld, gd, fused ? gd + I : ud, todouble(R, n), malloc(8 * n)};
    fwd(out, g, u, N, I, ld);
    swi_loss(&c);
    CHECK(rel_err(out, c.out, n) <= 1e-5, "swiglu %s fused=%d: forward vs double ref: %.3g", vname,
          fused, rel_err(out, c.out, n));
    for (size_t i = 0; i < nin; i++)
        dgb[i] = dub[i] = 5.0f; /* garbage: must be overwritten */
    bwd(dg, du, R, g, u, N, I, ld);
    float *dgc = malloc(4 * n), *duc = malloc(4 * n);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < I; i++)
            dgc[r * I + i] = dg[r * ld + i], duc[r * I + i] = du[r * ld + i];
    /* FD over the gate / up entries only (the layout's other columns belong to the other) */
    double *num_g = malloc(8 * n), *num_u = malloc(8 * n);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < I; i++)
            for (int which = 0; which < 2; which++) {
                double *x = (which ? c.u : c.g) + r * ld + i, x0 = *x, eps = 1e-5;
                *x = x0 + eps;
                double lp = swi_loss(&c);
                *x = x0 - eps;
                double lm = swi_loss(&c);
                *x = x0;
                (which ? num_u : num_g)[r * I + i] = (lp - lm) / (2 * eps);
            }
    CHECK(rel_err(dgc, num_g, n) <= 1e-5, "swiglu %s fused=%d: dgate vs FD: %.3g", vname, fused,
          rel_err(dgc, num_g, n));
    CHECK(rel_err(duc, num_u, n) <= 1e-5, "swiglu %s fused=%d: dup vs FD: %.3g", vname, fused,
          rel_err(duc, num_u, n));
    free(gbuf), free(R), free(out), free(dgb), free(dgc), free(duc), free(num_g), free(num_u);
    if (!fused) free(ubuf), free(dub), free(ud);
    free(gd), free(c.R), free(c.out);
}

/* silu at large |gate|: exp(-g) overflows float at g < -88; results must stay finite.
 * 8 values so that the AVX2 code takes them in its vector loop. */
static void test_swiglu_extremes(swi_fwd fwd, swi_bwd bwd, const char *vname) {
    float g[8] = {-1000, -100, 100, 1000, -1000, -100, 100, 1000}, u[8], d[8];
    float o[8], dg[8], du[8];
    for (int i = 0; i < 8; i++)
        u[i] = 2, d[i] = 1;
    fwd(o, g, u, 1, 8, 8);
    bwd(dg, du, d, g, u, 1, 8, 8);
    int bad = 0;
    for (int i = 0; i < 8; i++)
        bad += !isfinite(o[i]) || !isfinite(dg[i]) || !isfinite(du[i]);
    CHECK(bad == 0, "swiglu %s: %d non-finite values at |gate| = 100, 1000", vname, bad);
    /* limits: silu(g) -> 0 for g -> -inf (PyTorch gives -0; 1e-30 allows the AVX2 code's
     * clamped exp, ~1e-36) and -> g for g -> +inf; its slope -> 0 and -> 1 */
    CHECK(fabsf(o[0]) < 1e-30f && fabsf(o[1]) < 1e-30f && o[3] == 2000.0f &&
              fabsf(dg[0]) < 1e-30f && dg[3] == 2.0f,
          "swiglu %s limits: %g %g %g %g %g", vname, o[0], o[1], o[3], dg[0], dg[3]);
}

/* ---- lmhead_xent ------------------------------------------------------------------------ */
typedef struct {
    int N, C, V;
    const int *tg;
    double *h, *W;
} xent_ctx;

/* sum over counted tokens of logsumexp(logits) - logit[target], logits in double */
static double xent_ref(void *p) {
    xent_ctx *c = p;
    double L = 0, *l = malloc(8 * c->V);
    for (int n = 0; n < c->N; n++) {
        if (c->tg[n] < 0) continue;
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < c->V; v++) {
            l[v] = 0;
            for (int i = 0; i < c->C; i++)
                l[v] += c->h[n * c->C + i] * c->W[v * c->C + i];
            mx = l[v] > mx ? l[v] : mx;
        }
        for (int v = 0; v < c->V; v++)
            s += exp(l[v] - mx);
        L += mx + log(s) - l[c->tg[n]];
    }
    free(l);
    return L;
}

typedef double (*xent_fn)(float *, const float *, const float *, const int *, int, int, int, float,
                          float *, int);

static void test_xent(xent_fn xent, const char *vname) {
    enum { N = 12, C = 16, V = 53 }; /* V = 53: six 8-wide AVX2 steps and a tail */
    int tg[N] = {3, -100, 7, 7, 49, 0, -100, -100, 12, 30, 1, -100};
    float *h = frand(N * C, 1.5), *W = frand(V * C, 1.5), *scratch = malloc(4 * N * V);
    float *pre = frand(N * C, 1), *dh[3], gs = 0.25f;
    xent_ctx c = {N, C, V, tg, todouble(h, N * C), todouble(W, V * C)};
    double ref = xent_ref(&c), loss[3];
    int chunks[3] = {1, 7, N};
    for (int k = 0; k < 3; k++) {
        dh[k] = malloc(4 * N * C);
        memcpy(dh[k], pre, 4 * N * C);
        loss[k] = xent(dh[k], h, W, tg, N, C, V, gs, scratch, chunks[k]);
        CHECK(fabs(loss[k] - ref) <= 1e-5 * fabs(ref), "xent %s chunk %d: loss %.9g vs double %.9g",
              vname, chunks[k], loss[k], ref);
    }
    /* chunking changes only which rows go into one GEMM: same answer to fp32 rounding */
    int diff = 0;
    for (int k = 1; k < 3; k++) {
        diff += fabs(loss[k] - loss[0]) > 1e-6 * fabs(loss[0]);
        for (int i = 0; i < N * C; i++)
            diff += fabsf(dh[k][i] - dh[0][i]) > 1e-6f;
    }
    CHECK(diff == 0, "xent %s: chunk sizes 1, 7, N disagree in %d places", vname, diff);
    /* dh accumulates onto `pre`; rows with target -100 stay exactly as they were */
    float *g = malloc(4 * N * C);
    int untouched = 0;
    for (int i = 0; i < N * C; i++) {
        g[i] = (dh[2][i] - pre[i]) / gs;
        if (tg[i / C] < 0) untouched += dh[2][i] != pre[i];
    }
    CHECK(untouched == 0, "xent %s: %d dh values of skipped (-100) rows changed", vname, untouched);
    double e = fd_rel_err(xent_ref, &c, c.h, N * C, g, 1e-4);
    /* g is (dh - pre)/gs, one fp32 subtraction of O(1) values: ~1e-7 absolute noise */
    CHECK(e <= 2e-5, "xent %s: dh vs finite differences of the double loss: %.3g", vname, e);
    /* no dh: the same loss; a second call with dh adds the same gradient again */
    double l0 = xent(NULL, h, W, tg, N, C, V, gs, scratch, 5);
    CHECK(fabs(l0 - loss[2]) <= 1e-6 * fabs(l0), "xent %s without dh: %.9g vs %.9g", vname, l0,
          loss[2]);
    xent(dh[2], h, W, tg, N, C, V, gs, scratch, 5);
    int acc = 0;
    for (int i = 0; i < N * C; i++)
        acc += fabsf(dh[2][i] - pre[i] - 2 * gs * g[i]) > 1e-5f;
    CHECK(acc == 0, "xent %s: second call must add dh again (%d values differ)", vname, acc);
    /* all targets skipped: loss 0, dh untouched */
    int none[N];
    for (int i = 0; i < N; i++)
        none[i] = -100;
    memcpy(dh[0], pre, 4 * N * C);
    double lz = xent(dh[0], h, W, none, N, C, V, gs, scratch, 4);
    CHECK(lz == 0 && memcmp(dh[0], pre, 4 * N * C) == 0, "xent %s all skipped: loss %g", vname, lz);
    /* a target >= V cannot be scored: NaN loss rather than a read out of bounds */
    int badt[1] = {V};
    CHECK(isnan(xent(NULL, h, W, badt, 1, C, V, gs, scratch, 1)),
          "xent %s: target >= V must give NaN", vname);
    for (int k = 0; k < 3; k++)
        free(dh[k]);
    free(h), free(W), free(scratch), free(pre), free(g), free(c.h), free(c.W);
}

/* ---- lmhead_xent_rows: the head in chunks of rows ---------------------------------------- */
typedef struct {
    const float *W;
    int C, V, R, calls, seq[64], next[64];
    qtensor t;
    float *copy;
} rows_ctx;

/* Chunk k as --shard-base hands it over: its rows copied into a buffer of their own. */
static const qtensor *rows_get(void *p, int k, int next) {
    rows_ctx *c = p;
    int r0 = k * c->R, m = c->V - r0 < c->R ? c->V - r0 : c->R;
    if (c->calls < 64) c->seq[c->calls] = k, c->next[c->calls] = next;
    c->calls++;
    free(c->copy);
    c->copy = malloc(4 * (size_t)m * c->C);
    memcpy(c->copy, c->W + (size_t)r0 * c->C, 4 * (size_t)m * c->C);
    c->t = (qtensor){.fmt = QF_F32, .rows = m, .cols = c->C, .blocksize = 1, .data = c->copy};
    return &c->t;
}

static void test_xent_rows(void) {
    enum { N = 12, C = 16, V = 203 }; /* V not a multiple of 8: a tail in the last chunk */
    int tg[N] = {3, -100, 7, 202, 49, 0, -100, -100, 120, 30, 199, -100};
    float *h = frand(N * C, 1.5), *W = frand(V * C, 1.5), *scratch = malloc(4 * N * V);
    float *pre = frand(N * C, 1), gs = 0.25f;
    qtensor w = {.fmt = QF_F32, .rows = V, .cols = C, .blocksize = 1, .data = W};
    float *dq = malloc(4 * N * C), *d1 = malloc(4 * N * C), *d2 = malloc(4 * N * C);
    memcpy(dq, pre, 4 * N * C);
    double lq = lmhead_xent_q(dq, h, &w, tg, N, gs, scratch, 5, NULL, 0);
    int Rs[4] = {V, 64, 24, 8};
    for (int i = 0; i < 4; i++) {
        int R = Rs[i], K = (V + R - 1) / R;
        memcpy(d1, pre, 4 * N * C), memcpy(d2, pre, 4 * N * C);
        double l1 = lmhead_xent_rows(d1, h, &w, tg, N, gs, scratch, 5, NULL, 0, R, NULL, NULL);
        rows_ctx c = {.W = W, .C = C, .V = V, .R = R};
        qtensor shape = w;
        shape.data = NULL; /* sharded: the head's bytes are only in the chunks */
        double l2 =
            lmhead_xent_rows(d2, h, &shape, tg, N, gs, scratch, 5, NULL, 0, R, rows_get, &c);
        /* one chunk: lmhead_xent_q's bits; more: the same to rounding */
        if (R == V)
            CHECK(l1 == lq && memcmp(d1, dq, 4 * N * C) == 0,
                  "xent rows R = V: %.17g vs lmhead_xent_q %.17g", l1, lq);
        int far = 0;
        for (int j = 0; j < N * C; j++)
            far += fabsf(d1[j] - dq[j]) > 1e-6f;
        CHECK(fabs(l1 - lq) <= 1e-6 * fabs(lq) && far == 0,
              "xent rows R %d: loss %.9g vs %.9g, %d dh values apart", R, l1, lq, far);
        /* chunks handed over one at a time: the same bits as the whole head */
        CHECK(l1 == l2 && memcmp(d1, d2, 4 * N * C) == 0,
              "xent rows R %d: chunks from get give %.17g, the whole head %.17g", R, l2, l1);
        /* asked for 0 .. K-1 then K-1 .. 0, each naming the next */
        int order = c.calls == 2 * K;
        for (int j = 0; order && j < 2 * K; j++) {
            int k = j < K ? j : 2 * K - 1 - j;
            int nx = j < K - 1 ? j + 1 : j == K - 1 ? (K > 1 ? K - 2 : -1) : k > 0 ? k - 1 : -1;
            order = c.seq[j] == k && c.next[j] == nx;
        }
        CHECK(order, "xent rows R %d: %d chunk requests, not 0 .. K-1, K-1 .. 0", R, c.calls);
        /* without dh: one pass */
        c.calls = 0;
        double l3 =
            lmhead_xent_rows(NULL, h, &shape, tg, N, gs, scratch, 5, NULL, 0, R, rows_get, &c);
        CHECK(l3 == l1 && c.calls == K && c.next[K - 1 < 63 ? K - 1 : 63] == -1,
              "xent rows R %d without dh: %.17g vs %.17g, %d requests", R, l3, l1, c.calls);
        /* the logits in chunks: the whole matmul's values */
        float *lg = malloc(4 * N * V), *lw = malloc(4 * N * V);
        c.calls = 0;
        int bad = lmhead_logits(lg, h, &shape, N, R, rows_get, &c, NULL, 0);
        qmatmul_forward(lw, V, h, C, &w, NULL, N, 0.0f, NULL, 0);
        CHECK(!bad && memcmp(lg, lw, 4 * N * V) == 0 && c.calls == K,
              "xent rows R %d: logits in chunks differ from the whole head's", R);
        free(lg), free(lw), free(c.copy);
    }
    free(h), free(W), free(scratch), free(pre), free(dq), free(d1), free(d2);
}

int main(void) {
    test_rmsnorm(5, 37);
    test_rmsnorm(3, 300);      /* more than one 256-column dw slice */
    test_rope(10, 10, 1.0f);   /* full rotary, rot_dim = D */
    test_rope(10, 6, 1.3f);    /* partial rotary (Phi-3), attention scaling != 1 */
    test_rope(300, 260, 1.0f); /* 130 frequencies: more than one 64-wide cos/sin chunk */
    /* fused attention input: with and without qk-norm; GQA; partial rotary; odd N; > 64 freqs */
    for (int norm = 0; norm < 2; norm++) {
        test_attn_input(7, 4, 2, 16, 16, norm, 1.0f);
        test_attn_input(13, 6, 2, 10, 6, norm, 1.3f);
        test_attn_input(5, 3, 3, 300, 260, norm, 1.0f);
        test_attn_input(33, 9, 3, 64, 64, norm, 1.0f); /* SmolLM-135M's heads */
    }
    /* the portable code, the AVX2 code (where the CPU has it), and the dispatching entry points */
    test_swiglu(0, swiglu_forward_ref, swiglu_backward_ref, "portable");
    test_swiglu(1, swiglu_forward_ref, swiglu_backward_ref, "portable");
    test_swiglu_extremes(swiglu_forward_ref, swiglu_backward_ref, "portable");
    test_xent(lmhead_xent_ref, "portable");
    if (cpu_native_level() >= CPU_AVX2) {
        test_swiglu(0, swiglu_forward_avx2, swiglu_backward_avx2, "avx2");
        test_swiglu(1, swiglu_forward_avx2, swiglu_backward_avx2, "avx2");
        test_swiglu_extremes(swiglu_forward_avx2, swiglu_backward_avx2, "avx2");
    } else {
        printf("note: no AVX2+FMA on this CPU, the AVX2 swiglu and xent are not tested\n");
    }
    test_swiglu(1, swiglu_forward, swiglu_backward, "dispatch");
    test_xent(lmhead_xent, "dispatch (avx2 rows where the CPU has AVX2)");
    test_xent_rows();
    return test_summary("ops");
}
