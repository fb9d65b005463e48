/*
 * attention_avx2.c: the AVX2+FMA version of attention.c's flash attention: same masks, same
 * work split, same results to fp32 rounding; attention.c calls it when the CPU has AVX2 and FMA,
 * D is a multiple of 16 (at most 256) and H/Hkv is at most 32, and tests compare it with the
 * portable code and with a naive reference.
 *
 * Where the portable code goes one query row and one key at a time, this works on blocks as
 * small register-tiled matrix products over a tile of 64 keys:
 *   scores   S (4 rows x 64 keys) = Q4 . Kt, Kt the tile transposed into (D x 64) on the stack;
 *   values   O (4 rows x D) += P (4 x 64) . V, V read in place;
 *   backward dV, dK (64 keys x D) += P^T . dO16, dS^T . Q16 over blocks of 16 query rows, and
 *            dQ16 += dS . K, dP = dO . Vt like the scores.
 * exp() is a vectorised Cephes-style expf (range reduction by ln 2, degree-6 polynomial, the
 * exponent built in the integer unit; about 1 ulp on the arguments softmax gives it, which are
 * <= 0 and clamped at -87, where the true value is below 1e-37 of the row's largest term).
 *
 * Forward: one work item per (b, kv head, block of 64 queries), so the transposed key tile is
 * shared by the H/Hkv query heads that read it. Backward, when B*Hkv items keep the threads
 * busy enough: one item per (b, kv head), which owns dk, dv of that head and dq of its query heads
 * (no races). Otherwise (batch 1, few kv heads, many cores) two passes: items (b, kv head, key
 * tile) own their tile's dk and dv, then items (b, kv head, query block) own their rows' dq; this
 * recomputes S and dP once more (7 block products instead of 5) but keeps every thread busy.
 * attention_backward_passes (ops.h) forces one mode, for the tests. All scratch is on the stack
 * (at most ~140 KB at D = 256).
 */
#include "ops/ops.h"

#include <immintrin.h>
#include "ops/hsum_avx2.h"
#include "ops/vexp_avx2.h"
#include "ops/attention_mask.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <string.h>

#define AX_BQ 64    /* forward: queries per work item */
#define AX_BK 64    /* keys per tile */
#define AX_RB 16    /* backward: query rows per block */
#define AX_DMAX 256 /* largest head dim handled here */
#define AX_GMAX 32  /* largest H / Hkv handled here */

static const float ax_zero[AX_DMAX]; /* a zero row for the unused rows of a 4-row group */


static int ax_len(const int *len, int b, int T) {
    if (!len) return T;
    return len[b] < 0 ? 0 : len[b] > T ? T : len[b];
}

/* ---- vector helpers --------------------------------------------------------------------- */

static inline float ax_dot(const float *a, const float *b, int D) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), s1);
    }
    return avx2_hsum(_mm256_add_ps(s0, s1));
}

/* Xt (D x 64) = the n <= 64 rows (stride rs) of x, transposed; columns n..63 are zero. */
static void ax_transpose(float *Xt, const float *x, size_t rs, int n, int D) {
    for (int d = 0; d < D; d++)
        memset(Xt + d * AX_BK + n, 0, (size_t)(AX_BK - n) * sizeof(float));
    for (int j = 0; j < n; j++) {
        const float *xj = x + j * rs;
        for (int d = 0; d < D; d++)
            Xt[d * AX_BK + j] = xj[d];
    }
}

/* S[r][0, 16*nkc) = x[r] . Xt for 4 rows x[r] */
static inline void ax_scores(float S[4][AX_BK], const float *const x[4], const float *Xt, int nkc,
                             int D) {
    for (int kc = 0; kc < nkc; kc++) {
        __m256 a[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            a[r][0] = a[r][1] = _mm256_setzero_ps();
        const float *kt = Xt + kc * 16;
        for (int d = 0; d < D; d++) {
            __m256 k0 = _mm256_loadu_ps(kt + d * AX_BK), k1 = _mm256_loadu_ps(kt + d * AX_BK + 8);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m256 q = _mm256_broadcast_ss(x[r] + d);
                a[r][0] = _mm256_fmadd_ps(q, k0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(q, k1, a[r][1]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            _mm256_storeu_ps(S[r] + kc * 16, a[r][0]);
            _mm256_storeu_ps(S[r] + kc * 16 + 8, a[r][1]);
        }
    }
}

/* o[r] (D) = o[r] * corr[r] + sum_j P[r][j] y_j over j < n, y_j = y + j*ys, for 4 rows */
static inline void ax_pv(float *const o[4], const float corr[4], const float P[4][AX_BK],
                         const float *y, size_t ys, int n, int D) {
    for (int dc = 0; dc < D; dc += 16) {
        __m256 a[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 c = _mm256_set1_ps(corr[r]);
            a[r][0] = _mm256_mul_ps(_mm256_loadu_ps(o[r] + dc), c);
            a[r][1] = _mm256_mul_ps(_mm256_loadu_ps(o[r] + dc + 8), c);
        }
        for (int j = 0; j < n; j++) {
            __m256 y0 = _mm256_loadu_ps(y + j * ys + dc), y1 = _mm256_loadu_ps(y + j * ys + dc + 8);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m256 p = _mm256_broadcast_ss(&P[r][j]);
                a[r][0] = _mm256_fmadd_ps(p, y0, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(p, y1, a[r][1]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            _mm256_storeu_ps(o[r] + dc, a[r][0]);
            _mm256_storeu_ps(o[r] + dc + 8, a[r][1]);
        }
    }
}

/* dst_j (D) += sum_{r < nr} P[r][j] x[r] for keys j < n, dst_j = dst + j*ds */
static inline void ax_tpv(float *dst, size_t ds, const float P[AX_RB][AX_BK],
                          const float *const x[AX_RB], int nr, int n, int D) {
    int j = 0;
    for (; j + 4 <= n; j += 4)
        for (int dc = 0; dc < D; dc += 16) {
            __m256 a[4][2];
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                a[t][0] = _mm256_loadu_ps(dst + (j + t) * ds + dc);
                a[t][1] = _mm256_loadu_ps(dst + (j + t) * ds + dc + 8);
            }
            for (int r = 0; r < nr; r++) {
                __m256 x0 = _mm256_loadu_ps(x[r] + dc), x1 = _mm256_loadu_ps(x[r] + dc + 8);
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) {
                    __m256 p = _mm256_broadcast_ss(&P[r][j + t]);
                    a[t][0] = _mm256_fmadd_ps(p, x0, a[t][0]);
                    a[t][1] = _mm256_fmadd_ps(p, x1, a[t][1]);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                _mm256_storeu_ps(dst + (j + t) * ds + dc, a[t][0]);
                _mm256_storeu_ps(dst + (j + t) * ds + dc + 8, a[t][1]);
            }
        }
    for (; j < n; j++)
        for (int dc = 0; dc < D; dc += 16) {
            __m256 a0 = _mm256_loadu_ps(dst + j * ds + dc),
                   a1 = _mm256_loadu_ps(dst + j * ds + dc + 8);
            for (int r = 0; r < nr; r++) {
                __m256 p = _mm256_broadcast_ss(&P[r][j]);
                a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(x[r] + dc), a0);
                a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(x[r] + dc + 8), a1);
            }
            _mm256_storeu_ps(dst + j * ds + dc, a0);
            _mm256_storeu_ps(dst + j * ds + dc + 8, a1);
        }
}

void attention_forward_avx2(float *out, float *lse, const float *q, const float *k, const float *v,
                            const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                            int window, float scale) {
    int G = H / Hkv, nqb = (T + AX_BQ - 1) / AX_BQ;
    long BG = (long)B * Hkv, items = BG * nqb;
    size_t ks = (size_t)Hkv * D;
#pragma omp parallel for schedule(dynamic, 1)
    for (long it = 0; it < items; it++) {
        int qb = nqb - 1 - (int)(it / BG); /* late (costly) query blocks first */
        int b = (int)(it % BG) / Hkv, g = (int)(it % BG) % Hkv;
        int L = ax_len(len, b, T);
        att_mask m = {seg ? seg + (size_t)b * T : NULL, 0, window};
        if (m.seg) m.monotone = att_seg_monotone(m.seg, L);
        int i0 = qb * AX_BQ, i1 = i0 + AX_BQ < T ? i0 + AX_BQ : T, ie = i1 < L ? i1 : L;
        const float *kb = k + ((size_t)b * T * Hkv + g) * D;
        const float *vb = v + ((size_t)b * T * Hkv + g) * D;
        float Kt[AX_DMAX * AX_BK], S[4][AX_BK], P[4][AX_BK], dummy[AX_DMAX] = {0};
        float mrow[AX_GMAX][AX_BQ], lrow[AX_GMAX][AX_BQ];
        int lo[AX_BQ], segt[AX_BK];
        for (int hh = 0; hh < G; hh++) {
            int h = g * G + hh;
            for (int i = i0; i < i1; i++) {
                memset(out + ((size_t)(b * T + i) * H + h) * D, 0, (size_t)D * sizeof(float));
                lse[((size_t)b * H + h) * T + i] = -INFINITY;
                mrow[hh][i - i0] = -INFINITY;
                lrow[hh][i - i0] = 0.0f;
            }
        }
        if (ie <= i0) continue;
        for (int i = i0; i < ie; i++)
            lo[i - i0] = att_lo(&m, i);
        int nonmono = m.seg && !m.monotone;
        for (int j0 = lo[0] / AX_BK * AX_BK; j0 < ie; j0 += AX_BK) {
            int jn = (j0 + AX_BK < ie ? j0 + AX_BK : ie) - j0, nkc = (jn + 15) / 16;
            ax_transpose(Kt, kb + j0 * ks, ks, jn, D);
            if (nonmono)
                for (int t = 0; t < AX_BK; t++)
                    segt[t] = t < jn ? m.seg[j0 + t] : 0;
            for (int hh = 0; hh < G; hh++) {
                int h = g * G + hh;
                for (int r0 = i0; r0 < ie; r0 += 4) {
                    int nr = ie - r0 < 4 ? ie - r0 : 4;
                    /* rows r0..r0+nr-1 see keys [lo, i]: skip the group if none is in the tile */
                    if (r0 + nr - 1 < j0 || lo[r0 - i0] >= j0 + jn) continue;
                    const float *x[4];
                    float *o[4], corr[4];
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) {
                        x[r] = r < nr ? q + ((size_t)(b * T + r0 + r) * H + h) * D : ax_zero;
                        o[r] = r < nr ? out + ((size_t)(b * T + r0 + r) * H + h) * D : dummy;
                    }
                    ax_scores(S, x, Kt, nkc, D);
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) {
                        int i = r0 + r, hi = i + 1 < j0 + jn ? i + 1 : j0 + jn;
                        corr[r] = 1.0f;
                        if (r >= nr || lo[i - i0] >= hi || hi <= j0) {
                            memset(P[r], 0, sizeof P[r]);
                            continue;
                        }
                        __m256 sv[AX_BK / 8], mk[AX_BK / 8], mx = _mm256_set1_ps(-INFINITY);
                        for (int c = 0; c < nkc * 2; c++) {
                            __m256i idx =
                                _mm256_add_epi32(_mm256_set1_epi32(j0 + 8 * c),
                                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                            mk[c] = attn_mask8(idx, lo[i - i0], hi, nonmono ? segt + 8 * c : NULL,
                                               nonmono ? m.seg[i] : 0);
                            sv[c] = _mm256_blendv_ps(
                                _mm256_set1_ps(-INFINITY),
                                _mm256_mul_ps(_mm256_loadu_ps(S[r] + 8 * c), _mm256_set1_ps(scale)),
                                mk[c]);
                            mx = _mm256_max_ps(mx, sv[c]);
                        }
                        float tmax = avx2_hmax(mx);
                        if (tmax == -INFINITY) {
                            memset(P[r], 0, sizeof P[r]);
                            continue;
                        }
                        float mold = mrow[hh][i - i0], mnew = tmax > mold ? tmax : mold;
                        corr[r] = mold == -INFINITY ? 0.0f : expf(mold - mnew);
                        __m256 sum = _mm256_setzero_ps(), mn = _mm256_set1_ps(mnew);
                        for (int c = 0; c < nkc * 2; c++) {
                            __m256 p = _mm256_and_ps(vexp_avx2(_mm256_sub_ps(sv[c], mn)), mk[c]);
                            sum = _mm256_add_ps(sum, p);
                            _mm256_storeu_ps(P[r] + 8 * c, p);
                        }
                        lrow[hh][i - i0] = lrow[hh][i - i0] * corr[r] + avx2_hsum(sum);
                        mrow[hh][i - i0] = mnew;
                    }
                    ax_pv(o, corr, P, vb + j0 * ks, ks, jn, D);
                }
            }
        }
        for (int hh = 0; hh < G; hh++) {
            int h = g * G + hh;
            for (int i = i0; i < ie; i++) {
                float *oi = out + ((size_t)(b * T + i) * H + h) * D, l = lrow[hh][i - i0];
                __m256 inv = _mm256_set1_ps(1.0f / l);
                for (int d = 0; d < D; d += 8)
                    _mm256_storeu_ps(oi + d, _mm256_mul_ps(_mm256_loadu_ps(oi + d), inv));
                lse[((size_t)b * H + h) * T + i] = mrow[hh][i - i0] + logf(l);
            }
        }
    }
}

/* Everything the backward blocks need about one call. */
typedef struct {
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v, *out, *lse;
    const int *seg, *len;
    int B, T, H, Hkv, D, window;
    float scale;
} ax_bwd;

/* The batch row's valid length and mask. */
static int ax_bwd_mask(const ax_bwd *c, int b, att_mask *m) {
    int L = ax_len(c->len, b, c->T);
    m->seg = c->seg ? c->seg + (size_t)b * c->T : NULL;
    m->window = c->window;
    m->monotone = m->seg ? att_seg_monotone(m->seg, L) : 0;
    return L;
}

/* For query head h, rows r0..r0+nr-1 (nr <= 16) against the key tile [j0, j0+jn) whose
 * transposes are Kt, Vt: P and dS = P (dP - Di) scale into Pb, dSb (rows nr..15 zero), and with
 * do_dq, dq += dS K. */
static void ax_bwd_rows(const ax_bwd *c, const att_mask *m, int b, int h, int j0, int jn,
                        const float *Kt, const float *Vt, const int *segt, int r0, int nr,
                        float Pb[AX_RB][AX_BK], float dSb[AX_RB][AX_BK], const float *xq[AX_RB],
                        const float *xdo[AX_RB], int do_dq) {
    int T = c->T, H = c->H, D = c->D, g = h / (c->H / c->Hkv), nkc = (jn + 15) / 16;
    int nonmono = m->seg && !m->monotone;
    size_t ks = (size_t)c->Hkv * D;
    const float *lb = c->lse + ((size_t)b * H + h) * T;
    const float *kb = c->k + ((size_t)b * T * c->Hkv + g) * D;
    float S[4][AX_BK], dP[4][AX_BK], dummy[AX_DMAX] = {0};
    for (int r = 0; r < AX_RB; r++) {
        size_t off = ((size_t)(b * T + r0 + r) * H + h) * D;
        xq[r] = r < nr ? c->q + off : ax_zero;
        xdo[r] = r < nr ? c->dout + off : ax_zero;
    }
    for (int g4 = 0; g4 < AX_RB; g4 += 4) {
        if (g4 >= nr) {
            for (int r = g4; r < AX_RB; r++) {
                memset(Pb[r], 0, sizeof Pb[r]);
                memset(dSb[r], 0, sizeof dSb[r]);
            }
            break;
        }
        ax_scores(S, xq + g4, Kt, nkc, D);
        ax_scores(dP, xdo + g4, Vt, nkc, D);
        float *o[4], one[4] = {1, 1, 1, 1};
        for (int r = 0; r < 4; r++) {
            int R = g4 + r, i = r0 + R;
            o[r] = R < nr ? c->dq + ((size_t)(b * T + i) * H + h) * D : dummy;
            int lo = R < nr ? att_lo(m, i) : 0;
            int hi = i + 1 < j0 + jn ? i + 1 : j0 + jn;
            if (R >= nr || lo >= hi) {
                memset(Pb[R], 0, sizeof Pb[R]);
                memset(dSb[R], 0, sizeof dSb[R]);
                continue;
            }
            float Di = ax_dot(xdo[R], c->out + ((size_t)(b * T + i) * H + h) * D, D);
            __m256 li = _mm256_set1_ps(lb[i]), di = _mm256_set1_ps(Di),
                   sc = _mm256_set1_ps(c->scale);
            for (int ch = 0; ch < AX_BK / 8; ch++) {
                __m256 p = _mm256_setzero_ps(), ds = _mm256_setzero_ps();
                if (ch < nkc * 2) {
                    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(j0 + 8 * ch),
                                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                    __m256 mk = attn_mask8(idx, lo, hi, nonmono ? segt + 8 * ch : NULL,
                                           nonmono ? m->seg[i] : 0);
                    __m256 sv = _mm256_fmsub_ps(_mm256_loadu_ps(S[r] + 8 * ch), sc, li);
                    p = _mm256_and_ps(vexp_avx2(sv), mk);
                    ds = _mm256_mul_ps(
                        _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dP[r] + 8 * ch), di)), sc);
                }
                _mm256_storeu_ps(Pb[R] + 8 * ch, p);
                _mm256_storeu_ps(dSb[R] + 8 * ch, ds);
            }
        }
        if (do_dq) ax_pv(o, one, (const float(*)[AX_BK])dSb[g4], kb + j0 * ks, ks, jn, D);
    }
}

/* Transposes the key tile [j0, j0+jn) of (b, g) into Kt, Vt, and its segment ids into segt. */
static void ax_bwd_tile(const ax_bwd *c, const att_mask *m, int b, int g, int j0, int jn, float *Kt,
                        float *Vt, int *segt) {
    size_t ks = (size_t)c->Hkv * c->D, off = ((size_t)(b * c->T + j0) * c->Hkv + g) * c->D;
    ax_transpose(Kt, c->k + off, ks, jn, c->D);
    ax_transpose(Vt, c->v + off, ks, jn, c->D);
    if (m->seg && !m->monotone)
        for (int t = 0; t < AX_BK; t++)
            segt[t] = t < jn ? m->seg[j0 + t] : 0;
}

/* dV and dK of the key tile [j0, j0+jn) of (b, g) from every query row of every head of the
 * group that sees it; with do_dq also those rows' dq (one-pass mode). */
static void ax_bwd_keytile(const ax_bwd *c, const att_mask *m, int L, int b, int g, int j0, int jn,
                           int do_dq) {
    int G = c->H / c->Hkv, D = c->D;
    size_t ks = (size_t)c->Hkv * D, off = ((size_t)(b * c->T + j0) * c->Hkv + g) * D;
    float Kt[AX_DMAX * AX_BK], Vt[AX_DMAX * AX_BK], Pb[AX_RB][AX_BK], dSb[AX_RB][AX_BK];
    int segt[AX_BK];
    const float *xq[AX_RB], *xdo[AX_RB];
    ax_bwd_tile(c, m, b, g, j0, jn, Kt, Vt, segt);
    for (int hh = 0; hh < G; hh++)
        for (int r0 = j0; r0 < L; r0 += AX_RB) {
            if (att_lo(m, r0) >= j0 + jn) break; /* lo is non-decreasing in the row */
            int nr = L - r0 < AX_RB ? L - r0 : AX_RB;
            ax_bwd_rows(c, m, b, g * G + hh, j0, jn, Kt, Vt, segt, r0, nr, Pb, dSb, xq, xdo, do_dq);
            ax_tpv(c->dv + off, ks, (const float(*)[AX_BK])Pb, xdo, nr, jn, D);
            ax_tpv(c->dk + off, ks, (const float(*)[AX_BK])dSb, xq, nr, jn, D);
        }
}

/* Two-pass mode, pass 2: dq of query rows [i0, i0 + AX_BQ) of every head of group (b, g). */
static void ax_bwd_dq(const ax_bwd *c, const att_mask *m, int L, int b, int g, int i0) {
    int G = c->H / c->Hkv;
    int ie = i0 + AX_BQ < L ? i0 + AX_BQ : L;
    float Kt[AX_DMAX * AX_BK], Vt[AX_DMAX * AX_BK], Pb[AX_RB][AX_BK], dSb[AX_RB][AX_BK];
    int segt[AX_BK];
    const float *xq[AX_RB], *xdo[AX_RB];
    if (ie <= i0) return;
    for (int j0 = att_lo(m, i0) / AX_BK * AX_BK; j0 < ie; j0 += AX_BK) {
        int jn = (j0 + AX_BK < ie ? j0 + AX_BK : ie) - j0;
        ax_bwd_tile(c, m, b, g, j0, jn, Kt, Vt, segt);
        for (int hh = 0; hh < G; hh++)
            for (int r0 = i0; r0 < ie; r0 += AX_RB) {
                int nr = ie - r0 < AX_RB ? ie - r0 : AX_RB;
                if (r0 + nr - 1 < j0 || att_lo(m, r0) >= j0 + jn) continue;
                ax_bwd_rows(c, m, b, g * G + hh, j0, jn, Kt, Vt, segt, r0, nr, Pb, dSb, xq, xdo, 1);
            }
    }
}

int attention_backward_passes = 0;

void attention_backward_avx2(float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *out, const float *lse,
                             const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                             int window, float scale) {
    ax_bwd c = {dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window, scale};
    int G = H / Hkv, threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    /* one pass takes ceil(items / threads) rounds of items; two passes do 7/5 of the work
     * spread evenly: pick the faster */
    long items = (long)B * Hkv, rounds = (items + threads - 1) / threads;
    int passes = attention_backward_passes           ? attention_backward_passes
                 : rounds * 5 * threads <= 7 * items ? 1
                                                     : 2;
    size_t ks = (size_t)Hkv * D;
    if (passes == 1) {
        /* one item per (b, kv head): it owns dk, dv of the head and dq of its query heads */
#pragma omp parallel for schedule(dynamic, 1)
        for (int bg = 0; bg < B * Hkv; bg++) {
            int b = bg / Hkv, g = bg % Hkv;
            att_mask m;
            int L = ax_bwd_mask(&c, b, &m);
            for (int t = 0; t < T; t++) {
                memset(dk + ((size_t)b * T + t) * ks + (size_t)g * D, 0, (size_t)D * 4);
                memset(dv + ((size_t)b * T + t) * ks + (size_t)g * D, 0, (size_t)D * 4);
                memset(dq + ((size_t)(b * T + t) * H + g * G) * D, 0, (size_t)G * D * 4);
            }
            for (int j0 = 0; j0 < L; j0 += AX_BK)
                ax_bwd_keytile(&c, &m, L, b, g, j0, (j0 + AX_BK < L ? j0 + AX_BK : L) - j0, 1);
        }
        return;
    }
    /* Two passes, for when B*Hkv items would leave threads idle: (b, kv head, key tile) items
     * own their tile's dk, dv; then (b, kv head, query block) items own their rows' dq. Costs
     * a second computation of S and dP (7 block products instead of 5). */
    int nt = (T + AX_BK - 1) / AX_BK, nqb = (T + AX_BQ - 1) / AX_BQ;
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < (long)B * Hkv * nt; it++) {
            int jt = (int)(it % nt), b = (int)(it / nt) / Hkv, g = (int)(it / nt) % Hkv;
            int j0 = jt * AX_BK, j1 = j0 + AX_BK < T ? j0 + AX_BK : T;
            att_mask m;
            int L = ax_bwd_mask(&c, b, &m);
            for (int t = j0; t < j1; t++) {
                memset(dk + ((size_t)b * T + t) * ks + (size_t)g * D, 0, (size_t)D * 4);
                memset(dv + ((size_t)b * T + t) * ks + (size_t)g * D, 0, (size_t)D * 4);
            }
            if (j0 < L) ax_bwd_keytile(&c, &m, L, b, g, j0, (j1 < L ? j1 : L) - j0, 0);
        }
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < (long)B * Hkv * nqb; it++) {
            int qt = nqb - 1 - (int)(it / (B * Hkv)); /* late (costly) query blocks first */
            int b = (int)(it % (B * Hkv)) / Hkv, g = (int)(it % (B * Hkv)) % Hkv;
            int i0 = qt * AX_BQ, i1 = i0 + AX_BQ < T ? i0 + AX_BQ : T;
            att_mask m;
            int L = ax_bwd_mask(&c, b, &m);
            for (int t = i0; t < i1; t++)
                memset(dq + ((size_t)(b * T + t) * H + g * G) * D, 0, (size_t)G * D * 4);
            ax_bwd_dq(&c, &m, L, b, g, i0);
        }
    }
}
