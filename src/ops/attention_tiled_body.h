/*
 * attention_tiled_body.h: causal grouped-query flash attention organised as small matrix
 * products so that the FMA units, not the bookkeeping, set the speed; written once and included
 * by attention_tiled_avx2.c and attention_tiled_avx512.c, which define TL_NAME(f) (the exported
 * name at that ISA) and, after the #include, the two register-tiled kernels declared below
 * (tl_scores, tl_acc). The rest (packing, softmax rows, masks, block geometry) is AVX2 code,
 * which the AVX-512 file runs as it is. Same contract and masks as attention.c (the reference;
 * ops.h), tested against it and a naive reference.
 *
 * Blocks. A work item takes one batch row b and one kv head g. The G = H/Hkv query heads that
 * read g are stacked as rows: a block of Bq query positions gives R = G*Bq rows (about 144),
 * row r being position i0 + r/G of head g*G + r%G, copied into a contiguous R x D buffer. K and
 * V are never copied per query head: each thread packs the keys of the (b, g) it is working on
 * once, transposed into panels of 16 keys ([panel][d][16]; V too in backward), and keeps them
 * across its items of that (b, g); V (forward) or K (backward) rows are read in place when
 * 32-byte aligned, else copied once with the panels. Keys go in chunks of NC = 256.
 * Two register-tiled kernels do all the O(T^2 D) work, on tiles of 6 rows (TL_MR):
 *   tl_scores: S (6 x 16k) = X (6 x D) . Kpanel      (scores, and dP = dO . V^T in backward)
 *   tl_acc:    C (6 x D) += A (6 x n) . Y (n x D)    (P.V, dQ += dS.K, and, with A read
 *                                                      transposed, dK += dS^T.Q, dV += P^T.dO)
 * Each sums its products in the same order at every ISA (one FMA after another along d, or
 * along u, per output), so the AVX2 and AVX-512 files give the same bits.
 * Each group of 6 rows computes only the 16-key panels its rows can see (causal diagonal,
 * window), so fully masked work is skipped; the mask rule is attention_mask.h's.
 *
 * Forward: one item per (b, g, query block), (b, g)-major and heaviest block first; an online
 * softmax over the chunks (running max m and sum l per row, the output row rescaled when m
 * grows), then out = O / l and lse = m + log l. Scores are kept in base 2 (the stacked queries
 * carry scale * log2 e) so each probability is one 2^x (tl_exp2).
 * Backward (FlashAttention-2 with lse known, so no rescaling): per query block and chunk,
 * P = exp(scale S - lse) (as 2^x), dS = scale P (dP - Di) with Di = dO.O; dQ of the block is
 * accumulated in a stacked buffer and written once (overwrite), dK and dV of the chunk over the
 * block's rows into contiguous per-run rows, copied to dk/dv at the end. An item owns (b, g) and
 * a run of query blocks; when B*Hkv items would leave threads idle, each (b, g) is split into
 * `parts` runs of equal work, whose dK/dV buffers are summed into dk/dv at the end.
 *
 * Memory, in the caller's workspace (attention_tiled_ws_bytes; the model sizes it once, so no
 * allocation per step, and two callers with their own never share one): per thread
 * 2 R NC + 3 R D floats plus the packed keys, 2 T D (forward) or 3 T D (backward) floats, plus in
 * backward 2 T D for one (b, g)'s dK, dV, and 2 (parts - 1) B Hkv T D for split runs: about 1.5 MB
 * (forward) and 3 MB (backward) per thread at T = 2048, D = 64.
 */
#ifndef FT_OPS_ATTENTION_TILED_BODY_H
#define FT_OPS_ATTENTION_TILED_BODY_H

#include "ops/attention_mask.h"
#include "ops/attention_tiled.h"
#include "ops/ops.h"

#include "ops/hsum_avx2.h"
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TL_NC 256    /* keys per chunk */
#define TL_ROWS 144  /* target stacked rows per query block (G * Bq) */
#define TL_MR 6      /* rows per register tile */
#define TL_MAXPART 8 /* most runs one (b, kv head) is split into in backward */

/* The including file's kernels (after the #include), for mr <= TL_MR rows:
 * S[r][16p .. 16p+16) = X[r] . panel p of Kp, for panels [p0, p1) (Kp: [panel][d][16]) */
static void tl_scores(int mr, float *S, size_t ss, const float *X, size_t xs, const float *Kp,
                      int p0, int p1, int D);
/* C[t][0..D) += sum_{u < n} A[t*ars + u*acs] * Y[u*ys + 0..D) (D a multiple of 16) */
static void tl_acc(int mr, float *C, size_t cs, const float *A, size_t ars, size_t acs,
                   const float *Y, size_t ys, int n, int D);

/* ---- workspace: the caller's (attention_tiled_ws_bytes), 64-byte aligned here ---------- */

/* n floats at the first 64-byte boundary of ws (wsb bytes), or NULL when they do not fit. */
static float *tl_ws_take(void *ws, size_t wsb, size_t n) {
    if (!ws) return NULL;
    uintptr_t p = ((uintptr_t)ws + 63) & ~(uintptr_t)63;
    size_t pad = (size_t)(p - (uintptr_t)ws);
    return wsb >= pad && (wsb - pad) / sizeof(float) >= n ? (float *)p : NULL;
}

static int tl_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int tl_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int tl_len(const int *len, int b, int T) {
    if (!len) return T;
    return len[b] < 0 ? 0 : len[b] > T ? T : len[b];
}

/* query positions per block: about TL_ROWS stacked rows, a multiple of 8 */
static int tl_bq(int G) {
    int bq = TL_ROWS / G / 8 * 8;
    return bq < 8 ? 8 : bq;
}

static size_t tl_round(size_t n) { return (n + 15) / 16 * 16; }

/* ---- kernels ---------------------------------------------------------------------------- */

/* Transposes the 8 x 8 block r[0..8) in place: r[e] lane c becomes r[c] lane e. */
static inline void tl_tr8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static const float tl_zero[256]; /* stands in for the key rows past the chunk's end */

/* Kp (npanel x D x 16) = the n key rows x (row stride xs) transposed into panels of 16; keys
 * n..16*npanel-1 are zero. Goes in 8 x 8 blocks transposed in registers. */
static void tl_pack(float *Kp, const float *x, size_t xs, int n, int D) {
    for (int c0 = 0; c0 < n; c0 += 8) {
        const float *row[8];
        for (int e = 0; e < 8; e++)
            row[e] = c0 + e < n ? x + (size_t)(c0 + e) * xs : tl_zero;
        float *dst = Kp + (size_t)(c0 / 16) * 16 * D + c0 % 16;
        for (int d = 0; d < D; d += 8) {
            __m256 r[8];
            for (int e = 0; e < 8; e++)
                r[e] = _mm256_loadu_ps(row[e] + d);
            tl_tr8(r);
            for (int e = 0; e < 8; e++)
                _mm256_store_ps(dst + (size_t)(d + e) * 16, r[e]);
        }
    }
    if (n % 16 && n % 16 <= 8) /* the upper half of the last panel */
        for (int d = 0; d < D; d++)
            _mm256_store_ps(Kp + (size_t)(n / 16) * 16 * D + (size_t)d * 16 + 8,
                            _mm256_setzero_ps());
}

#define TL_LOG2E 1.44269504088896341f
#define TL_LN2 0.693147180559945309f

/* 2^x of 8 floats for softmax arguments (x <= ~0; lanes that will be masked may hold anything):
 * x clamped at -126 (2^-126 is below 1e-37 of the row's largest term), n = round(x), 2^(x-n)
 * by its Taylor series in (x-n) ln 2 to degree 6 (|x-n| <= 1/2: truncation 1.2e-7 relative),
 * times 2^n built in the exponent bits. Working in base 2 (scores pre-multiplied by log2 e)
 * saves exp's multiply and two-step range reduction. */
static inline __m256 tl_exp2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146428441e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.618129107628477e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504108664821576e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.402265069591007e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.931471805599453e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Lanes of the 8 keys j, j+1, ..., j+7 (absolute) that row i sees: lo <= key < hi, and with
 * sv (those keys' segment ids, for non-monotone ids) the same segment as si. NULL mask (all
 * lanes) is returned as all ones. */
static inline __m256 tl_mask8(int j, int lo, int hi, const int *sv, int si) {
    return attn_mask8(
        _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), lo, hi,
        sv, si);
}

/* ---- shared block geometry ---------------------------------------------------------------- */

/* One (b, g) pair's view of the inputs. */
typedef struct {
    int T, H, Hkv, D, G, L;
    size_t qs, ks; /* row strides of q-like (H*D) and k-like (Hkv*D) tensors */
    att_mask m;
    int nonmono;
} tl_geo;

static void tl_geo_init(tl_geo *c, const int *seg, const int *len, int b, int T, int H, int Hkv,
                        int D, int window) {
    c->T = T, c->H = H, c->Hkv = Hkv, c->D = D, c->G = H / Hkv;
    c->L = tl_len(len, b, T);
    c->qs = (size_t)H * D, c->ks = (size_t)Hkv * D;
    c->m.seg = seg ? seg + (size_t)b * T : NULL;
    c->m.window = window;
    c->m.monotone = c->m.seg ? att_seg_monotone(c->m.seg, c->L) : 0;
    c->nonmono = c->m.seg && !c->m.monotone;
}

/* The panels [*p0, *p1) of the chunk [j0, j0 + nc) that rows [r, r + mr) of the block starting
 * at position i0 can see (lo[] holds att_lo of the block's positions); empty when *p0 >= *p1. */
static void tl_panels(const tl_geo *c, const int *lo, int i0, int r, int mr, int j0, int nc,
                      int *p0, int *p1) {
    int tf = r / c->G, tl = (r + mr - 1) / c->G; /* first and last position, block-relative */
    int a = lo[tf] > j0 ? lo[tf] - j0 : 0;
    int e = i0 + tl + 1 < j0 + nc ? i0 + tl + 1 - j0 : nc;
    if (e <= a) {
        *p0 = *p1 = 0;
        return;
    }
    *p0 = a / 16, *p1 = (e + 15) / 16;
}

/* A thread's packed copy of one (b, g)'s keys, kept across the items it runs in one call (the
 * blocks of a (b, g) need overlapping key ranges): panels [pa, pe) of 16 keys are ready in kt
 * (K transposed, for the scores), vt (V transposed, backward's dP; NULL in forward) and, when
 * the rows they stream are not 32-byte aligned, yn (rows of y = V in forward, K in backward). */
typedef struct {
    float *kt, *vt, *yn;
    const float *kb, *vb, *yb; /* this (b, g)'s K, V, and the rows tl_acc streams */
    int b, g, pa, pe, T, D;
    size_t ks;
} tl_kcache;

static void tl_kc_fill(tl_kcache *kc, int a, int e) {
    int D = kc->D, j = 16 * a, n = (16 * e < kc->T ? 16 * e : kc->T) - j;
    if (n <= 0) return;
    tl_pack(kc->kt + (size_t)j * D, kc->kb + (size_t)j * kc->ks, kc->ks, n, D);
    if (kc->vt) tl_pack(kc->vt + (size_t)j * D, kc->vb + (size_t)j * kc->ks, kc->ks, n, D);
    if (kc->yn)
        for (int u = j; u < j + n; u++)
            memcpy(kc->yn + (size_t)u * D, kc->yb + (size_t)u * kc->ks, (size_t)D * sizeof(float));
}

/* Makes keys [j0, j1) of (b, g) ready (K, V: the whole tensors; y = V or K). */
static void tl_kc_need(tl_kcache *kc, const float *k, const float *v, const float *y, int b, int g,
                       int j0, int j1) {
    if (kc->b != b || kc->g != g) {
        size_t off = (size_t)b * kc->T * kc->ks + (size_t)g * kc->D;
        kc->b = b, kc->g = g, kc->pa = kc->pe = 0;
        kc->kb = k + off, kc->vb = v + off, kc->yb = y + off;
    }
    int na = j0 / 16, ne = (j1 + 15) / 16;
    if (kc->pa == kc->pe) kc->pa = kc->pe = na;
    int ua = na < kc->pa ? na : kc->pa, ue = ne > kc->pe ? ne : kc->pe;
    tl_kc_fill(kc, ua, kc->pa);
    tl_kc_fill(kc, kc->pe, ue);
    kc->pa = ua, kc->pe = ue;
}

/* Sets up a thread's cache in w (tl_kc_floats(T, D, bwd) floats); y: the rows tl_acc streams. */
static size_t tl_kc_floats(int T, int D, int bwd) {
    size_t pan = tl_round((size_t)(T + 15) / 16 * 16 * D);
    return pan * (bwd ? 3 : 2);
}

static void tl_kc_init(tl_kcache *kc, float *w, int T, int Hkv, int D, int bwd, const float *y) {
    size_t pan = tl_round((size_t)(T + 15) / 16 * 16 * D);
    kc->kt = w;
    kc->vt = bwd ? w + pan : NULL;
    /* the streamed rows can be read in place when aligned (the row stride Hkv D is a multiple of
     * 16 floats, so one aligned row means all are) */
    kc->yn = (uintptr_t)y % 32 == 0 ? NULL : w + (bwd ? 2 : 1) * pan;
    kc->b = kc->g = -1, kc->pa = kc->pe = 0, kc->T = T, kc->D = D;
    kc->ks = (size_t)Hkv * D;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* Online-softmax update of one row over the panels [p0, p1) of S (scaled scores of keys
 * j0 + col): masks, keeps P = exp(s - m_new) in S, and returns the factor the row's output must
 * be scaled by (1 when nothing changes). Only 8-key groups that straddle [lo, hi) (or any, with
 * per-key segment ids) pay for the mask. */
/* x rounded to bf16 precision (nearest even), kept as fp32; x finite and non-negative here */
static inline __m256 tl_round16(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i r = _mm256_add_epi32(
        u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                            _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
}

static inline __attribute__((always_inline)) float tl_fwd_row_p(const int round16, float *S, int p0,
                                                                int p1, int j0, int lo, int hi,
                                                                const int *segt, int si, float *m,
                                                                float *l) {
    int c0 = p0 * 16, c1 = p1 * 16;
    __m256 ninf = _mm256_set1_ps(-INFINITY), mx = ninf;
    for (int c = c0; c < c1; c += 8) {
        __m256 s = _mm256_loadu_ps(S + c);
        if (j0 + c < lo || j0 + c + 8 > hi || segt) {
            s = _mm256_blendv_ps(ninf, s, tl_mask8(j0 + c, lo, hi, segt ? segt + c : NULL, si));
            _mm256_storeu_ps(S + c, s);
        }
        mx = _mm256_max_ps(mx, s);
    }
    float tmax = avx2_hmax(mx);
    if (tmax == -INFINITY) { /* nothing visible here: P = 0, no change */
        memset(S + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        return 1.0f;
    }
    float mold = *m, mnew = tmax > mold ? tmax : mold;
    float corr = mold == -INFINITY ? 0.0f : exp2f(mold - mnew);
    __m256 mn = _mm256_set1_ps(mnew), sum = _mm256_setzero_ps();
    for (int c = c0; c < c1; c += 8) {
        __m256 s = _mm256_loadu_ps(S + c), p = tl_exp2(_mm256_sub_ps(s, mn));
        /* 2^(-inf - m) comes out of the clamp as ~1e-38: masked keys get exactly 0 */
        if (j0 + c < lo || j0 + c + 8 > hi || segt)
            p = _mm256_and_ps(p, _mm256_cmp_ps(s, ninf, _CMP_NEQ_OQ));
        if (round16) p = tl_round16(p);
        _mm256_storeu_ps(S + c, p);
        sum = _mm256_add_ps(sum, p);
    }
    *l = *l * corr + avx2_hsum(sum);
    *m = mnew;
    return corr;
}

static float tl_fwd_row(float *S, int p0, int p1, int j0, int lo, int hi, const int *segt, int si,
                        float *m, float *l) {
    return tl_fwd_row_p(0, S, p0, p1, j0, lo, hi, segt, si, m, l);
}

/* The start of query block [i0, i1) of (b, g), of which [i0, ie) is inside the row's length:
 * lse -inf on every row (the finish overwrites the real ones), out 0 on the padding rows, and
 * lo[] the first key each position sees. Returns 0 when the block is all padding. */
static int tl_fwd_start(float *out, float *lse, const tl_geo *c, int b, int g, int i0, int i1,
                        int ie, int *lo) {
    int T = c->T, H = c->H, D = c->D, G = c->G;
    for (int i = i0; i < i1; i++)
        for (int hh = 0; hh < G; hh++) {
            lse[((size_t)b * H + g * G + hh) * T + i] = -INFINITY;
            if (i >= ie)
                memset(out + (size_t)(b * T + i) * c->qs + (size_t)(g * G + hh) * D, 0,
                       (size_t)D * sizeof(float));
        }
    for (int i = i0; i < ie; i++)
        lo[i - i0] = att_lo(&c->m, i);
    return ie > i0;
}

/* out = O / l and lse = m ln 2 + log l (m in base 2) of the block's R stacked rows. */
static void tl_fwd_finish(float *out, float *lse, const tl_geo *c, int b, int g, int i0, int R,
                          const float *Xo, const float *mrow, const float *lrow) {
    int T = c->T, H = c->H, D = c->D, G = c->G;
    for (int r = 0; r < R; r++) {
        int i = i0 + r / G, h = g * G + r % G;
        float *o = out + (size_t)(b * T + i) * c->qs + (size_t)h * D;
        const float *x = Xo + (size_t)r * D;
        __m256 inv = _mm256_set1_ps(1.0f / lrow[r]);
        for (int d = 0; d < D; d += 8)
            _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(x + d), inv));
        lse[((size_t)b * H + h) * T + i] = mrow[r] * TL_LN2 + logf(lrow[r]);
    }
}

/* o[0 .. D) *= corr (the online softmax's correction of an output row). */
static void tl_scale_row(float *o, int D, float corr) {
    __m256 cv = _mm256_set1_ps(corr);
    for (int d = 0; d < D; d += 8)
        _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), cv));
}

/* Query block [i0, i0 + bq) of (b, g): out rows and lse. w: this thread's workspace. */
static void tl_fwd_block(float *out, float *lse, const float *q, const float *k, const float *v,
                         const tl_geo *c, int b, int g, int i0, int bq, float scale, float *w,
                         tl_kcache *kc) {
    int T = c->T, D = c->D, G = c->G;
    int i1 = i0 + bq < T ? i0 + bq : T, ie = i1 < c->L ? i1 : c->L, R = (ie - i0) * G;
    float *S = w, *Xq = S + (size_t)R * TL_NC, *Xo = Xq + (size_t)R * D;
    float *mrow = Xo + (size_t)R * D, *lrow = mrow + R;
    int lo[TL_ROWS + 8], segt[TL_NC];
    if (!tl_fwd_start(out, lse, c, b, g, i0, i1, ie, lo)) return;
    /* the stacked queries carry the scale and log2 e: the scores come out scaled, in base 2 */
    __m256 sc = _mm256_set1_ps(scale * TL_LOG2E);
    for (int r = 0; r < R; r++) {
        const float *qr = q + (size_t)(b * T + i0 + r / G) * c->qs + (size_t)(g * G + r % G) * D;
        for (int d = 0; d < D; d += 8)
            _mm256_store_ps(Xq + (size_t)r * D + d, _mm256_mul_ps(_mm256_loadu_ps(qr + d), sc));
        memset(Xo + (size_t)r * D, 0, (size_t)D * sizeof(float));
        mrow[r] = -INFINITY, lrow[r] = 0.0f;
    }
    /* chunks start on a 16-key panel of the thread's packed keys */
    tl_kc_need(kc, k, v, v, b, g, lo[0] / 16 * 16, ie);
    size_t vs = kc->yn ? (size_t)D : c->ks;
    for (int j0 = lo[0] / 16 * 16; j0 < ie; j0 += TL_NC) {
        int nc = ie - j0 < TL_NC ? ie - j0 : TL_NC;
        const float *Kp = kc->kt + (size_t)j0 * D;
        const float *Vc = kc->yn ? kc->yn + (size_t)j0 * D : kc->vb + (size_t)j0 * c->ks;
        if (c->nonmono)
            for (int t = 0; t < nc; t++)
                segt[t] = c->m.seg[j0 + t];
        for (int r = 0; r < R; r += TL_MR) {
            int mr = R - r < TL_MR ? R - r : TL_MR, p0, p1;
            tl_panels(c, lo, i0, r, mr, j0, nc, &p0, &p1);
            if (p0 >= p1) continue;
            float *Sr = S + (size_t)r * TL_NC;
            tl_scores(mr, Sr, TL_NC, Xq + (size_t)r * D, D, Kp, p0, p1, D);
            for (int t = 0; t < mr; t++) {
                int i = i0 + (r + t) / G;
                float corr = tl_fwd_row(Sr + (size_t)t * TL_NC, p0, p1, j0, lo[i - i0], i + 1,
                                        c->nonmono ? segt : NULL, c->nonmono ? c->m.seg[i] : 0,
                                        &mrow[r + t], &lrow[r + t]);
                if (corr != 1.0f) tl_scale_row(Xo + (size_t)(r + t) * D, D, corr);
            }
            /* keys past the chunk (inside the last panel) have P = 0 and are not read */
            int u0 = p0 * 16, u1 = p1 * 16 < nc ? p1 * 16 : nc;
            tl_acc(mr, Xo + (size_t)r * D, D, Sr + u0, TL_NC, 1, Vc + (size_t)u0 * vs, vs, u1 - u0,
                   D);
        }
    }
    tl_fwd_finish(out, lse, c, b, g, i0, R, Xo, mrow, lrow);
}

static size_t tl_fwd_ws(int R, int T, int D) {
    return tl_kc_floats(T, D, 0) + tl_round((size_t)R * TL_NC + 2 * (size_t)R * D + 2 * (size_t)R);
}

#ifdef TL_BF16
/* ---- the bf16 products (--dtype bf16 where gemm_bf16 runs on AMX tiles) ----------------------
 * The same blocks, masks, softmax rows and threads as above, but each block's products are
 * gemm_bf16 calls over chunks of TL_NCB keys, on bf16 copies of Q, K, V, dO (rounded to nearest
 * even) and of P and dS as they come out of the fp32 softmax rows; sums in fp32. K and V are
 * rounded once per call into a buffer the threads share; the block's stacked rows of Q (and
 * dO) once per block, and in backward also transposed (D x R), so that dK and dV come out as
 * dK^T += Q^T dS and dV^T += dO^T P, accumulated transposed ([D][T]) and written out at the end:
 * no product needs a transposed operand gemm_bf16 does not take. */
#include "ops/gemm_bf16.h"

#define TL_NCB 512 /* keys per chunk of the bf16 products */

static size_t tl_u16_floats(size_t n) { return tl_round((n + 1) / 2); }

/* Floats of gemm_bf16's scratch for a block of R rows: the most its products need. */
static size_t tl_gemm_floats(int R, int D) {
    size_t a = gemm_bf16_scratch_bytes(R, TL_NCB, D), b = gemm_bf16_scratch_bytes(R, D, TL_NCB);
    size_t c = gemm_bf16_scratch_bytes(D, TL_NCB, R), m = a > b ? a : b;
    return tl_round((m > c ? m : c) / sizeof(float) + 16);
}

/* The bf16 copies of K and V the threads share (B T Hkv D values each), as floats. */
static size_t tl_kv16_floats(int B, int T, int Hkv, int D) {
    return 2 * tl_u16_floats((size_t)B * T * Hkv * D);
}

/* The shared bf16 copies of K and V (tl_kv16_floats floats at ws), rounded from k and v. */
static void tl_round_kv(float *ws, const float *k, const float *v, int B, int T, int Hkv, int D,
                        const uint16_t **k16, const uint16_t **v16) {
    int rows = B * T, ks = Hkv * D;
    uint16_t *kb = (uint16_t *)ws, *vb = (uint16_t *)(ws + tl_kv16_floats(B, T, Hkv, D) / 2);
    bf16_round_rows(kb, (size_t)ks, k, (size_t)ks, rows, ks);
    bf16_round_rows(vb, (size_t)ks, v, (size_t)ks, rows, ks);
    *k16 = kb, *v16 = vb;
}

static size_t tl_fwd_ws_bf16(int R, int D) {
    return tl_round((size_t)R * TL_NCB + (size_t)R * D + 2 * (size_t)R) +
           tl_u16_floats((size_t)R * D) + tl_u16_floats((size_t)R * TL_NCB) + tl_gemm_floats(R, D);
}

/* dst (D x R) = src (R x D) transposed. */
static void tl_transpose16(uint16_t *dst, const uint16_t *src, int R, int D) {
    for (int r = 0; r < R; r++)
        for (int d = 0; d < D; d++)
            dst[(size_t)d * R + r] = src[(size_t)r * D + d];
}

/* tl_fwd_block with bf16 products: k16, v16 the shared bf16 copies of K and V. */
static void tl_fwd_block_bf16(float *out, float *lse, const float *q, const uint16_t *k16,
                              const uint16_t *v16, const tl_geo *c, int b, int g, int i0, int bq,
                              float scale, float *w) {
    int T = c->T, D = c->D, G = c->G, ks = (int)c->ks;
    int i1 = i0 + bq < T ? i0 + bq : T, ie = i1 < c->L ? i1 : c->L, R = (ie - i0) * G;
    int lo[TL_ROWS + 8], segt[TL_NCB];
    if (!tl_fwd_start(out, lse, c, b, g, i0, i1, ie, lo)) return;
    float *S = w, *Xo = S + (size_t)R * TL_NCB, *mrow = Xo + (size_t)R * D, *lrow = mrow + R;
    uint16_t *Qb = (uint16_t *)(lrow + R), *Pb = Qb + (size_t)R * D;
    void *gs = Pb + (size_t)R * TL_NCB;
    size_t gsb = tl_gemm_floats(G * tl_bq(G), D) * sizeof(float);
    /* the stacked rows (r: position i0 + r / G, head g G + r % G) are the G heads of each
     * position side by side */
    bf16_round_rows(Qb, (size_t)G * D, q + (size_t)(b * T + i0) * c->qs + (size_t)g * G * D, c->qs,
                    ie - i0, G * D);
    memset(Xo, 0, (size_t)R * D * sizeof(float));
    for (int r = 0; r < R; r++)
        mrow[r] = -INFINITY, lrow[r] = 0.0f;
    const uint16_t *kb = k16 + (size_t)b * T * ks + (size_t)g * D;
    const uint16_t *vb = v16 + (size_t)b * T * ks + (size_t)g * D;
    __m256 l2 = _mm256_set1_ps(scale * TL_LOG2E);
    for (int j0 = lo[0] / 16 * 16; j0 < ie; j0 += TL_NCB) {
        int nc = ie - j0 < TL_NCB ? ie - j0 : TL_NCB;
        gemm_bf16(1, R, nc, D, Qb, D, kb + (size_t)j0 * ks, ks, 0.0f, S, TL_NCB, gs, gsb);
        if (c->nonmono)
            for (int t = 0; t < nc; t++)
                segt[t] = c->m.seg[j0 + t];
        for (int r = 0; r < R; r++) {
            int i = i0 + r / G, p0, p1, a = 0, e = 0;
            float *Sr = S + (size_t)r * TL_NCB;
            tl_panels(c, lo, i0, r, 1, j0, nc, &p0, &p1);
            if (p0 < p1) {
                for (int x = 16 * p0; x < 16 * p1; x += 8) /* scores in base 2 */
                    _mm256_storeu_ps(Sr + x, _mm256_mul_ps(_mm256_loadu_ps(Sr + x), l2));
                float corr =
                    tl_fwd_row_p(1, Sr, p0, p1, j0, lo[i - i0], i + 1, c->nonmono ? segt : NULL,
                                 c->nonmono ? c->m.seg[i] : 0, &mrow[r], &lrow[r]);
                if (corr != 1.0f) tl_scale_row(Xo + (size_t)r * D, D, corr);
                a = 16 * p0, e = 16 * p1 < nc ? 16 * p1 : nc;
            }
            /* P outside the panels the row sees is 0 */
            memset(Sr, 0, (size_t)a * sizeof(float));
            memset(Sr + e, 0, (size_t)(nc - e) * sizeof(float));
        }
        bf16_round_rows(Pb, TL_NCB, S, TL_NCB, R, nc);
        gemm_bf16(0, R, D, nc, Pb, TL_NCB, vb + (size_t)j0 * ks, ks, 1.0f, Xo, D, gs, gsb);
    }
    tl_fwd_finish(out, lse, c, b, g, i0, R, Xo, mrow, lrow);
}
#endif

/* The forward of either kind (bf16: the products in bf16, TL_BF16 builds only). */
static int tl_forward(int bf16, float *out, float *lse, const float *q, const float *k,
                      const float *v, const int *seg, const int *len, int B, int T, int H, int Hkv,
                      int D, int window, float scale, void *wsp, size_t wsb) {
    int G = H / Hkv, bq = tl_bq(G), nqb = (T + bq - 1) / bq, nth = tl_threads();
    size_t per = tl_fwd_ws(G * bq, T, D), shared = 0;
#ifdef TL_BF16
    if (bf16) per = tl_fwd_ws_bf16(G * bq, D), shared = tl_kv16_floats(B, T, Hkv, D);
#endif
    float *ws = tl_ws_take(wsp, wsb, shared + per * nth);
    if (!ws) return -1; /* too little workspace: the dispatcher runs the portable code */
    const uint16_t *k16 = NULL, *v16 = NULL;
#ifdef TL_BF16
    if (bf16) tl_round_kv(ws, k, v, B, T, Hkv, D, &k16, &v16);
#endif
    ws += shared;
    long items = (long)B * Hkv * nqb;
#pragma omp parallel
    {
        float *w = ws + per * tl_tid();
        tl_kcache kc;
        if (!bf16) {
            tl_kc_init(&kc, w, T, Hkv, D, 0, v);
            w += tl_kc_floats(T, D, 0);
        }
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            /* (b, g)-major so a thread's next item mostly reuses its packed keys; within it,
             * late (costly) query blocks first so the last items are the short ones */
            int qb = nqb - 1 - (int)(it % nqb);
            int b = (int)(it / nqb) / Hkv, g = (int)(it / nqb) % Hkv;
            tl_geo c;
            tl_geo_init(&c, seg, len, b, T, H, Hkv, D, window);
#ifdef TL_BF16
            if (bf16) {
                tl_fwd_block_bf16(out, lse, q, k16, v16, &c, b, g, qb * bq, bq, scale, w);
                continue;
            }
#endif
            tl_fwd_block(out, lse, q, k, v, &c, b, g, qb * bq, bq, scale, w, &kc);
        }
    }
    (void)k16, (void)v16;
    return 0;
}

int TL_NAME(attention_forward_tiled)(float *out, float *lse, const float *q, const float *k,
                                     const float *v, const int *seg, const int *len, int B, int T,
                                     int H, int Hkv, int D, int window, float scale, void *wsp,
                                     size_t wsb) {
    return tl_forward(0, out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, wsp, wsb);
}

/* ---- backward ----------------------------------------------------------------------------- */

typedef struct {
    float *dq;
    const float *dout, *q, *k, *v, *out, *lse;
    float scale;
} tl_bwd_io;

/* P and dS of one row over the panels [p0, p1) (in S and dP), zero over the rest of [0, np). */
static void tl_bwd_row(float *S, float *dP, int np, int p0, int p1, int j0, int lo, int hi,
                       const int *segt, int si, float scale, float lse, float Di) {
    if (p0 > 0) {
        memset(S, 0, (size_t)p0 * 16 * sizeof(float));
        memset(dP, 0, (size_t)p0 * 16 * sizeof(float));
    }
    if (p1 < np) {
        memset(S + p1 * 16, 0, (size_t)(np - p1) * 16 * sizeof(float));
        memset(dP + p1 * 16, 0, (size_t)(np - p1) * 16 * sizeof(float));
    }
    /* P = 2^(S scale log2 e - lse log2 e) */
    __m256 sc = _mm256_set1_ps(scale), di = _mm256_set1_ps(Di);
    __m256 sc2 = _mm256_set1_ps(scale * TL_LOG2E), li = _mm256_set1_ps(lse * TL_LOG2E);
    for (int c = p0 * 16; c < p1 * 16; c += 8) {
        __m256 p = tl_exp2(_mm256_fmsub_ps(_mm256_loadu_ps(S + c), sc2, li));
        if (j0 + c < lo || j0 + c + 8 > hi || segt)
            p = _mm256_and_ps(p, tl_mask8(j0 + c, lo, hi, segt ? segt + c : NULL, si));
        __m256 ds = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dP + c), di)), sc);
        _mm256_storeu_ps(S + c, p);
        _mm256_storeu_ps(dP + c, ds);
    }
}

/* The start of query block [i0, i1) of (b, g) in backward ([i0, ie) inside the row's length):
 * dq 0 on the padding rows, lo[] the first key each position sees, and per stacked row
 * Drow = dO . O and lrow = lse. Returns 0 when the block is all padding. */
static int tl_bwd_start(const tl_bwd_io *io, const tl_geo *c, int b, int g, int i0, int i1, int ie,
                        int *lo, float *Drow, float *lrow) {
    int T = c->T, H = c->H, D = c->D, G = c->G;
    for (int i = ie > i0 ? ie : i0; i < i1; i++)
        memset(io->dq + (size_t)(b * T + i) * c->qs + (size_t)g * G * D, 0,
               (size_t)G * D * sizeof(float));
    for (int i = i0; i < ie; i++)
        lo[i - i0] = att_lo(&c->m, i);
    for (int r = 0; r < (ie - i0) * G; r++) {
        int i = i0 + r / G, h = g * G + r % G;
        size_t off = (size_t)(b * T + i) * c->qs + (size_t)h * D;
        __m256 s = _mm256_setzero_ps();
        for (int d = 0; d < D; d += 8)
            s = _mm256_fmadd_ps(_mm256_loadu_ps(io->dout + off + d),
                                _mm256_loadu_ps(io->out + off + d), s);
        Drow[r] = avx2_hsum(s);
        lrow[r] = io->lse[((size_t)b * H + h) * T + i];
    }
    return ie > i0;
}

/* dq rows of the block = the R stacked rows of Xdq. */
static void tl_bwd_finish(const tl_bwd_io *io, const tl_geo *c, int b, int g, int i0, int R,
                          const float *Xdq) {
    int T = c->T, D = c->D, G = c->G;
    for (int r = 0; r < R; r++) {
        int i = i0 + r / G, h = g * G + r % G;
        memcpy(io->dq + (size_t)(b * T + i) * c->qs + (size_t)h * D, Xdq + (size_t)r * D,
               (size_t)D * sizeof(float));
    }
}

/* Query block [i0, i0 + bq) of (b, g): its dq rows (overwritten), and dK, dV of every key it
 * sees added into dk, dv (row stride dks). */
static void tl_bwd_block(const tl_bwd_io *io, const tl_geo *c, int b, int g, int i0, int bq,
                         float *dk, float *dv, size_t dks, float *w, tl_kcache *kc) {
    int T = c->T, D = c->D, G = c->G;
    int i1 = i0 + bq < T ? i0 + bq : T, ie = i1 < c->L ? i1 : c->L, R = (ie - i0) * G;
    float *S = w;
    float *dP = S + (size_t)R * TL_NC, *Xq = dP + (size_t)R * TL_NC, *Xdo = Xq + (size_t)R * D;
    float *Xdq = Xdo + (size_t)R * D, *lrow = Xdq + (size_t)R * D, *Drow = lrow + R;
    int lo[TL_ROWS + 8], segt[TL_NC];
    if (!tl_bwd_start(io, c, b, g, i0, i1, ie, lo, Drow, lrow)) return;
    for (int r = 0; r < R; r++) {
        size_t off = (size_t)(b * T + i0 + r / G) * c->qs + (size_t)(g * G + r % G) * D;
        memcpy(Xq + (size_t)r * D, io->q + off, (size_t)D * sizeof(float));
        memcpy(Xdo + (size_t)r * D, io->dout + off, (size_t)D * sizeof(float));
        memset(Xdq + (size_t)r * D, 0, (size_t)D * sizeof(float));
    }
    tl_kc_need(kc, io->k, io->v, io->k, b, g, lo[0] / 16 * 16, ie);
    size_t vs = kc->yn ? (size_t)D : c->ks;
    for (int j0 = lo[0] / 16 * 16; j0 < ie; j0 += TL_NC) {
        int nc = ie - j0 < TL_NC ? ie - j0 : TL_NC, np = (nc + 15) / 16;
        const float *Kp = kc->kt + (size_t)j0 * D, *Vp = kc->vt + (size_t)j0 * D;
        const float *Kc = kc->yn ? kc->yn + (size_t)j0 * D : kc->kb + (size_t)j0 * c->ks;
        if (c->nonmono)
            for (int t = 0; t < nc; t++)
                segt[t] = c->m.seg[j0 + t];
        for (int r = 0; r < R; r += TL_MR) {
            int mr = R - r < TL_MR ? R - r : TL_MR, p0, p1;
            tl_panels(c, lo, i0, r, mr, j0, nc, &p0, &p1);
            float *Sr = S + (size_t)r * TL_NC, *dPr = dP + (size_t)r * TL_NC;
            if (p0 < p1) {
                tl_scores(mr, Sr, TL_NC, Xq + (size_t)r * D, D, Kp, p0, p1, D);
                tl_scores(mr, dPr, TL_NC, Xdo + (size_t)r * D, D, Vp, p0, p1, D);
            }
            for (int t = 0; t < mr; t++) {
                int i = i0 + (r + t) / G;
                tl_bwd_row(Sr + (size_t)t * TL_NC, dPr + (size_t)t * TL_NC, np, p0,
                           p1 > p0 ? p1 : p0, j0, lo[i - i0], i + 1, c->nonmono ? segt : NULL,
                           c->nonmono ? c->m.seg[i] : 0, io->scale, lrow[r + t], Drow[r + t]);
            }
            if (p0 < p1) { /* dQ += dS . K over the visible keys of the chunk */
                int u0 = p0 * 16, u1 = p1 * 16 < nc ? p1 * 16 : nc;
                tl_acc(mr, Xdq + (size_t)r * D, D, dPr + u0, TL_NC, 1, Kc + (size_t)u0 * vs, vs,
                       u1 - u0, D);
            }
        }
        /* dK += dS^T . Q and dV += P^T . dO over the rows that can see each group of 6 keys
         * (causal: positions >= the first key); the other rows' entries are 0 */
        for (int jg = 0; jg < nc; jg += TL_MR) {
            int mr = nc - jg < TL_MR ? nc - jg : TL_MR;
            int rs = (j0 + jg - i0) > 0 ? (j0 + jg - i0) * G : 0;
            if (rs >= R) break;
            size_t dro = (size_t)(j0 + jg) * dks;
            tl_acc(mr, dk + dro, dks, dP + (size_t)rs * TL_NC + jg, 1, TL_NC, Xq + (size_t)rs * D,
                   D, R - rs, D);
            tl_acc(mr, dv + dro, dks, S + (size_t)rs * TL_NC + jg, 1, TL_NC, Xdo + (size_t)rs * D,
                   D, R - rs, D);
        }
    }
    tl_bwd_finish(io, c, b, g, i0, R, Xdq);
}

static size_t tl_bwd_ws(int R, int T, int D) {
    return tl_kc_floats(T, D, 1) +
           tl_round(2 * (size_t)R * TL_NC + 3 * (size_t)R * D + 2 * (size_t)R);
}

/* Splits query blocks [0, nqb) of (b, g) into `parts` runs of about equal work (keys seen,
 * summed over the rows); bounds[0..parts]. */
static void tl_split(const tl_geo *c, int bq, int nqb, int parts, int *bounds) {
    double total = 0, acc = 0;
    for (int i = 0; i < c->L; i++)
        total += i + 1 - att_lo(&c->m, i) + 16.0; /* + a per-row constant for the copies */
    bounds[0] = 0;
    int p = 1;
    for (int qb = 0; qb < nqb && p < parts; qb++) {
        for (int i = qb * bq; i < (qb + 1) * bq && i < c->L; i++)
            acc += i + 1 - att_lo(&c->m, i) + 16.0;
        while (p < parts && acc >= total * p / parts)
            bounds[p++] = qb + 1;
    }
    while (p <= parts)
        bounds[p++] = nqb;
}

/* The runs each (b, g) is split into: the fewest whose B*Hkv*parts items fill the threads'
 * rounds to >= 85% (attention_tiled_parts, when set, instead), at most TL_MAXPART and nqb. */
static int tl_parts(long bg, int nqb, int nth) {
    int parts = attention_tiled_parts;
    if (parts <= 0) {
        parts = 1;
        for (int p = 1; p <= TL_MAXPART; p++) {
            long items = bg * p, rounds = (items + nth - 1) / nth;
            if (items * 100 >= rounds * nth * 85) {
                parts = p;
                break;
            }
        }
    }
    if (parts > TL_MAXPART) parts = TL_MAXPART;
    if (parts > nqb) parts = nqb;
    return parts;
}

/* Floats of the backward's workspace: per thread its buffers and one run's dK, dV of (b, g);
 * and the dK, dV of the runs after the first. */
#ifdef TL_BF16
static size_t tl_bwd_ws_bf16(int R, int D) {
    return tl_round(2 * (size_t)R * TL_NCB + (size_t)R * D + 2 * (size_t)R) +
           4 * tl_u16_floats((size_t)R * D) + 2 * tl_u16_floats((size_t)R * TL_NCB) +
           tl_gemm_floats(R, D);
}

/* tl_bwd_block with bf16 products: dq rows of the block (overwritten); dK^T, dV^T of the keys
 * it sees added into dKT, dVT ([D][T]). */
static void tl_bwd_block_bf16(const tl_bwd_io *io, const uint16_t *k16, const uint16_t *v16,
                              const tl_geo *c, int b, int g, int i0, int bq, float *dKT, float *dVT,
                              float *w) {
    int T = c->T, D = c->D, G = c->G, ks = (int)c->ks;
    int i1 = i0 + bq < T ? i0 + bq : T, ie = i1 < c->L ? i1 : c->L, R = (ie - i0) * G;
    int lo[TL_ROWS + 8], segt[TL_NCB];
    float *S = w, *dP = S + (size_t)R * TL_NCB, *Xdq = dP + (size_t)R * TL_NCB;
    float *lrow = Xdq + (size_t)R * D, *Drow = lrow + R;
    if (!tl_bwd_start(io, c, b, g, i0, i1, ie, lo, Drow, lrow)) return;
    uint16_t *Qb = (uint16_t *)(Drow + R), *dOb = Qb + (size_t)R * D, *QT = dOb + (size_t)R * D;
    uint16_t *dOT = QT + (size_t)R * D, *Pb = dOT + (size_t)R * D, *dSb = Pb + (size_t)R * TL_NCB;
    void *gs = dSb + (size_t)R * TL_NCB;
    size_t gsb = tl_gemm_floats(G * tl_bq(G), D) * sizeof(float);
    size_t off = (size_t)(b * T + i0) * c->qs + (size_t)g * G * D;
    bf16_round_rows(Qb, (size_t)G * D, io->q + off, c->qs, ie - i0, G * D);
    bf16_round_rows(dOb, (size_t)G * D, io->dout + off, c->qs, ie - i0, G * D);
    tl_transpose16(QT, Qb, R, D);
    tl_transpose16(dOT, dOb, R, D);
    /* Di from the rounded dO, as dP will be: where P is exact (one visible key: P = 1, O = V)
     * dP - Di is then 0 as it should be, not the rounding of dO times |V| */
    for (int r = 0; r < R; r++) {
        const float *o = io->out + off + (size_t)(r / G) * c->qs + (size_t)(r % G) * D;
        __m256 acc = _mm256_setzero_ps();
        for (int d = 0; d < D; d += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(dOb + (size_t)r * D + d));
            __m256 x = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
            acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(o + d), acc);
        }
        Drow[r] = avx2_hsum(acc);
    }
    memset(Xdq, 0, (size_t)R * D * sizeof(float));
    const uint16_t *kb = k16 + (size_t)b * T * ks + (size_t)g * D;
    const uint16_t *vb = v16 + (size_t)b * T * ks + (size_t)g * D;
    for (int j0 = lo[0] / 16 * 16; j0 < ie; j0 += TL_NCB) {
        int nc = ie - j0 < TL_NCB ? ie - j0 : TL_NCB, np = (nc + 15) / 16;
        gemm_bf16(1, R, nc, D, Qb, D, kb + (size_t)j0 * ks, ks, 0.0f, S, TL_NCB, gs, gsb);
        gemm_bf16(1, R, nc, D, dOb, D, vb + (size_t)j0 * ks, ks, 0.0f, dP, TL_NCB, gs, gsb);
        if (c->nonmono)
            for (int t = 0; t < nc; t++)
                segt[t] = c->m.seg[j0 + t];
        for (int r = 0; r < R; r++) {
            int i = i0 + r / G, p0, p1;
            tl_panels(c, lo, i0, r, 1, j0, nc, &p0, &p1);
            tl_bwd_row(S + (size_t)r * TL_NCB, dP + (size_t)r * TL_NCB, np, p0, p1 > p0 ? p1 : p0,
                       j0, lo[i - i0], i + 1, c->nonmono ? segt : NULL,
                       c->nonmono ? c->m.seg[i] : 0, io->scale, lrow[r], Drow[r]);
        }
        bf16_round_rows(Pb, TL_NCB, S, TL_NCB, R, nc);
        bf16_round_rows(dSb, TL_NCB, dP, TL_NCB, R, nc);
        /* dQ += dS K; dK^T += Q^T dS; dV^T += dO^T P */
        gemm_bf16(0, R, D, nc, dSb, TL_NCB, kb + (size_t)j0 * ks, ks, 1.0f, Xdq, D, gs, gsb);
        gemm_bf16(0, D, nc, R, QT, R, dSb, TL_NCB, 1.0f, dKT + j0, T, gs, gsb);
        gemm_bf16(0, D, nc, R, dOT, R, Pb, TL_NCB, 1.0f, dVT + j0, T, gs, gsb);
    }
    tl_bwd_finish(io, c, b, g, i0, R, Xdq);
}
#endif

/* Floats of the backward's workspace: per thread its buffers and one run's dK, dV of (b, g);
 * and the dK, dV of the runs after the first (and, bf16, the shared copies of K and V). */
static size_t tl_bwd_floats(int bf16, int B, int T, int H, int Hkv, int D, int nth) {
    (void)bf16;
    int bq = tl_bq(H / Hkv), nqb = (T + bq - 1) / bq;
    long bg = (long)B * Hkv;
    int parts = tl_parts(bg, nqb, nth);
    size_t slab = tl_round((size_t)T * D), per = tl_bwd_ws(H / Hkv * bq, T, D), shared = 0;
#ifdef TL_BF16
    if (bf16) per = tl_bwd_ws_bf16(H / Hkv * bq, D), shared = tl_kv16_floats(B, T, Hkv, D);
#endif
    return shared + (per + 2 * slab) * nth + (size_t)(parts - 1) * bg * 2 * slab;
}

static size_t tl_ws_bytes(int bf16, int maxB, int maxT, int H, int Hkv, int D) {
    if (maxB <= 0 || maxT <= 0) return 0;
    int nth = tl_threads(), bq = tl_bq(H / Hkv);
    size_t most = tl_fwd_ws(H / Hkv * bq, maxT, D) * nth;
#ifdef TL_BF16
    if (bf16) most = tl_kv16_floats(maxB, maxT, Hkv, D) + tl_fwd_ws_bf16(H / Hkv * bq, D) * nth;
#endif
    /* fewer rows than maxB may split into more runs: the largest over every B up to maxB (at
     * maxT, as every size grows with T) */
    for (int B = 1; B <= maxB; B++) {
        size_t f = tl_bwd_floats(bf16, B, maxT, H, Hkv, D, nth);
        if (f > most) most = f;
    }
    return most * sizeof(float) + 64;
}

size_t TL_NAME(attention_tiled_ws_bytes)(int maxB, int maxT, int H, int Hkv, int D) {
    return tl_ws_bytes(0, maxB, maxT, H, Hkv, D);
}

/* Where a run's dK, dV accumulators keep (t, d): rows [T][D], or transposed [D][T] (bf16). */
static inline size_t tl_at(int bf16, int t, int d, int T, int D) {
    return bf16 ? (size_t)d * T + t : (size_t)t * D + d;
}

/* The backward of either kind (bf16: the products in bf16, TL_BF16 builds only). */
static int tl_backward(int bf16, float *dq, float *dk, float *dv, const float *dout, const float *q,
                       const float *k, const float *v, const float *out, const float *lse,
                       const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                       int window, float scale, void *wsp, size_t wsb) {
    int G = H / Hkv, bq = tl_bq(G), nqb = (T + bq - 1) / bq, nth = tl_threads();
    long bg = (long)B * Hkv;
    int parts = tl_parts(bg, nqb, nth);
    size_t slab = tl_round((size_t)T * D); /* one run's dK (or dV) of (b, g) */
    size_t per = tl_bwd_ws(G * bq, T, D) + 2 * slab, shared = 0;
#ifdef TL_BF16
    if (bf16) per = tl_bwd_ws_bf16(G * bq, D) + 2 * slab, shared = tl_kv16_floats(B, T, Hkv, D);
#endif
    float *ws = tl_ws_take(wsp, wsb, tl_bwd_floats(bf16, B, T, H, Hkv, D, nth));
    if (!ws) return -1;
    const uint16_t *k16 = NULL, *v16 = NULL;
#ifdef TL_BF16
    if (bf16) tl_round_kv(ws, k, v, B, T, Hkv, D, &k16, &v16);
#endif
    ws += shared;
    float *partbuf = ws + per * nth;
    tl_bwd_io io = {dq, dout, q, k, v, out, lse, scale};
    size_t ks = (size_t)Hkv * D;
#pragma omp parallel
    {
        float *w = ws + per * tl_tid();
        tl_kcache kc;
        if (!bf16) {
            tl_kc_init(&kc, w, T, Hkv, D, 1, k);
            w += tl_kc_floats(T, D, 1);
        }
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < bg * parts; it++) {
            int part = (int)(it % parts), b = (int)(it / parts / Hkv), g = (int)(it / parts % Hkv);
            tl_geo c;
            tl_geo_init(&c, seg, len, b, T, H, Hkv, D, window);
            int bounds[TL_MAXPART + 1];
            tl_split(&c, bq, nqb, parts, bounds);
            /* dK, dV accumulate in contiguous rows (the first run: this thread's buffer, copied
             * out at the end; later runs: their own buffers), so each tile's read-modify-write
             * streams through the cache instead of striding over Hkv heads */
            float *tk, *tv;
            if (part == 0)
                tk = ws + per * (tl_tid() + 1) - 2 * slab;
            else
                tk = partbuf + ((size_t)(part - 1) * bg + (size_t)b * Hkv + g) * 2 * slab;
            tv = tk + slab;
            /* rows past the length stay 0: the first run does not read them (fp32 rows) */
            size_t nz = bf16 || part > 0 ? (size_t)T * D : (size_t)c.L * D;
            memset(tk, 0, nz * sizeof(float));
            memset(tv, 0, nz * sizeof(float));
            for (int qb = bounds[part]; qb < bounds[part + 1]; qb++) {
#ifdef TL_BF16
                if (bf16) {
                    tl_bwd_block_bf16(&io, k16, v16, &c, b, g, qb * bq, bq, tk, tv, w);
                    continue;
                }
#endif
                tl_bwd_block(&io, &c, b, g, qb * bq, bq, tk, tv, D, w, &kc);
            }
            if (part == 0) /* dk, dv of (b, g) are this run's sums (zero on padding) */
                for (int t = 0; t < T; t++) {
                    float *ok = dk + ((size_t)b * T + t) * ks + (size_t)g * D;
                    float *ov = dv + ((size_t)b * T + t) * ks + (size_t)g * D;
                    for (int d = 0; d < D; d++) {
                        int in = t < c.L;
                        ok[d] = in ? tk[tl_at(bf16, t, d, T, D)] : 0.0f;
                        ov[d] = in ? tv[tl_at(bf16, t, d, T, D)] : 0.0f;
                    }
                }
        }
        if (parts > 1) {
            /* dk, dv += the other runs' accumulators, split over (b, g, position) */
#pragma omp for schedule(static)
            for (long x = 0; x < bg * T; x++) {
                int t = (int)(x % T), b = (int)(x / T / Hkv), g = (int)(x / T % Hkv);
                float *ok = dk + ((size_t)b * T + t) * ks + (size_t)g * D;
                float *ov = dv + ((size_t)b * T + t) * ks + (size_t)g * D;
                for (int p = 1; p < parts; p++) {
                    const float *sk =
                        partbuf + ((size_t)(p - 1) * bg + (size_t)b * Hkv + g) * 2 * slab;
                    const float *sv = sk + slab;
                    for (int d = 0; d < D; d++)
                        ok[d] += sk[tl_at(bf16, t, d, T, D)], ov[d] += sv[tl_at(bf16, t, d, T, D)];
                }
            }
        }
    }
    (void)k16, (void)v16;
    return 0;
}

int TL_NAME(attention_backward_tiled)(float *dq, float *dk, float *dv, const float *dout,
                                      const float *q, const float *k, const float *v,
                                      const float *out, const float *lse, const int *seg,
                                      const int *len, int B, int T, int H, int Hkv, int D,
                                      int window, float scale, void *wsp, size_t wsb) {
    return tl_backward(0, dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                       scale, wsp, wsb);
}

#ifdef TL_BF16
int attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                           int window, float scale, void *wsp, size_t wsb) {
    return tl_forward(1, out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, wsp, wsb);
}

int attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                            int window, float scale, void *wsp, size_t wsb) {
    return tl_backward(1, dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                       scale, wsp, wsb);
}

size_t attention_bf16_ws_bytes(int maxB, int maxT, int H, int Hkv, int D) {
    return tl_ws_bytes(1, maxB, maxT, H, Hkv, D);
}
#endif

#endif
