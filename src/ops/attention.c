/*
 * attention.c: causal grouped-query attention, FlashAttention style, in portable C.
 *
 * Layout: q, out (B,T,H,D); k, v (B,T,Hkv,D); lse (B,H,T). Query head h reads kv head
 * h / (H/Hkv) by indexing; K and V are never copied or expanded.
 *
 * Masks. Query i may see key j iff j <= i (causal), i - j < window when window > 0 (the rule of
 * transformers 5.23, masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window),
 * seg[i] == seg[j] when seg is given (packed documents), and i, j < len[b] when len is given.
 * So every row sees the keys [lo(i), i] and nothing else, with lo(i) = max(0, i - window + 1) and,
 * when the row's segment ids are non-decreasing (how packing numbers documents), the start of
 * i's segment, found by binary search. Loops run over exactly those keys: fully masked tiles and
 * padding are never computed. If seg ids are not non-decreasing, lo comes from the window alone
 * and each (i, j) also checks seg[i] == seg[j].
 *
 * Forward: one work item per (b, h, block of 64 queries), heaviest blocks first, OpenMP dynamic.
 * For each tile of 64 keys and each query row: scores s = scale q.k, then the online softmax:
 * running max m and sum l, the output row (accumulated in place in `out`) rescaled by
 * exp(m_old - m_new) when the max grows. At the end out /= l and lse = m + log(l). Memory is the
 * output plus a few stack arrays; there is no T x T buffer.
 * Padding rows (t >= len[b]) get out = 0 and lse = -INFINITY (the log-sum-exp of no scores);
 * backward never reads them.
 *
 * Backward (FlashAttention-2): with Di = dO_i . O_i, recompute p = exp(scale q_i.k_j - lse_i),
 * dv_j += p dO_i, dp = dO_i . v_j, ds = p (dp - Di), dq_i += scale ds k_j, dk_j += scale ds q_i.
 * One work item per (b, kv head): it owns dk and dv of that kv head and dq of the H/Hkv query
 * heads that read it, so threads never write the same memory. Keys go in tiles of 32 so the tile's
 * K, V, dK and dV rows stay in L1 while every query row that sees them streams past. dq, dk and dv
 * are overwritten. Parallelism is B*Hkv items; SIMD kernels are left to a later speed pass.
 */
#include "base/cpu.h"
#include "ops/attention_mask.h"
#include "ops/attention_tiled.h"
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATT_BQ 64  /* queries per forward work item */
#define ATT_BK 64  /* keys per forward tile */
#define ATT_BKB 32 /* keys per backward tile */

static inline int att_seg_skip(const att_mask *m, int i, int j) {
    return m->seg && !m->monotone && m->seg[i] != m->seg[j];
}

static inline float att_dot(const float *a, const float *b, int D) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < D; d++)
        s += a[d] * b[d];
    return s;
}

static inline void att_axpy(float *y, float a, const float *x, int D) {
#pragma omp simd
    for (int d = 0; d < D; d++)
        y[d] += a * x[d];
}

static int att_len(const int *len, int b, int T) {
    if (!len) return T;
    return len[b] < 0 ? 0 : len[b] > T ? T : len[b];
}

void attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                           int window, float scale) {
    int G = H / Hkv, nqb = (T + ATT_BQ - 1) / ATT_BQ;
    long BH = (long)B * H, items = BH * nqb;
    size_t qs = (size_t)H * D, ks = (size_t)Hkv * D; /* row strides */
#pragma omp parallel for schedule(dynamic, 1)
    for (long it = 0; it < items; it++) {
        int qb = nqb - 1 - (int)(it / BH); /* late (costly) query blocks first */
        int b = (int)(it % BH) / H, h = (int)(it % BH) % H, g = h / G;
        int L = att_len(len, b, T);
        att_mask m = {seg ? seg + (size_t)b * T : NULL, 0, window};
        if (m.seg) m.monotone = att_seg_monotone(m.seg, L);
        const float *qb_ = q + ((size_t)b * T * H + h) * D;
        const float *kb = k + ((size_t)b * T * Hkv + g) * D;
        const float *vb = v + ((size_t)b * T * Hkv + g) * D;
        float *ob = out + ((size_t)b * T * H + h) * D;
        float *lb = lse + ((size_t)b * H + h) * T;
        int i0 = qb * ATT_BQ, i1 = i0 + ATT_BQ < T ? i0 + ATT_BQ : T, ie = i1 < L ? i1 : L;
        float mrow[ATT_BQ], lrow[ATT_BQ], sbuf[ATT_BK];
        int lo[ATT_BQ];
        for (int i = i0; i < i1; i++) {
            memset(ob + i * qs, 0, (size_t)D * sizeof(float));
            mrow[i - i0] = -INFINITY;
            lrow[i - i0] = 0.0f;
            lo[i - i0] = i < ie ? att_lo(&m, i) : 0;
            lb[i] = -INFINITY;
        }
        if (ie <= i0) continue;
        for (int j0 = lo[0] / ATT_BK * ATT_BK; j0 < ie; j0 += ATT_BK) {
            int j1 = j0 + ATT_BK < ie ? j0 + ATT_BK : ie;
            for (int i = i0; i < ie; i++) {
                int r = i - i0, jl = lo[r] > j0 ? lo[r] : j0, jh = j1 < i + 1 ? j1 : i + 1;
                if (jl >= jh) continue;
                const float *qi = qb_ + i * qs;
                float *oi = ob + i * qs;
                float tmax = -INFINITY;
                for (int j = jl; j < jh; j++) {
                    float s =
                        att_seg_skip(&m, i, j) ? -INFINITY : scale * att_dot(qi, kb + j * ks, D);
                    sbuf[j - j0] = s;
                    tmax = s > tmax ? s : tmax;
                }
                if (tmax == -INFINITY) continue;
                float mold = mrow[r], mnew = tmax > mold ? tmax : mold;
                if (mnew > mold && lrow[r] > 0.0f) {
                    float corr = expf(mold - mnew);
                    lrow[r] *= corr;
                    for (int d = 0; d < D; d++)
                        oi[d] *= corr;
                }
                float sum = 0.0f;
                for (int j = jl; j < jh; j++) {
                    if (sbuf[j - j0] == -INFINITY) continue;
                    float p = expf(sbuf[j - j0] - mnew);
                    sum += p;
                    att_axpy(oi, p, vb + j * ks, D);
                }
                lrow[r] += sum;
                mrow[r] = mnew;
            }
        }
        for (int i = i0; i < ie; i++) {
            float l = lrow[i - i0], inv = 1.0f / l;
            float *oi = ob + i * qs;
            for (int d = 0; d < D; d++)
                oi[d] *= inv;
            lb[i] = mrow[i - i0] + logf(l);
        }
    }
}

void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                            int window, float scale) {
    int G = H / Hkv;
    size_t qs = (size_t)H * D, ks = (size_t)Hkv * D;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bg = 0; bg < B * Hkv; bg++) {
        int b = bg / Hkv, g = bg % Hkv;
        int L = att_len(len, b, T);
        att_mask m = {seg ? seg + (size_t)b * T : NULL, 0, window};
        if (m.seg) m.monotone = att_seg_monotone(m.seg, L);
        const float *kb = k + ((size_t)b * T * Hkv + g) * D;
        const float *vb = v + ((size_t)b * T * Hkv + g) * D;
        float *dkb = dk + ((size_t)b * T * Hkv + g) * D;
        float *dvb = dv + ((size_t)b * T * Hkv + g) * D;
        for (int t = 0; t < T; t++) {
            memset(dkb + t * ks, 0, (size_t)D * sizeof(float));
            memset(dvb + t * ks, 0, (size_t)D * sizeof(float));
            for (int hh = 0; hh < G; hh++)
                memset(dq + ((size_t)(b * T + t) * H + g * G + hh) * D, 0,
                       (size_t)D * sizeof(float));
        }
        for (int j0 = 0; j0 < L; j0 += ATT_BKB) {
            int j1 = j0 + ATT_BKB < L ? j0 + ATT_BKB : L;
            for (int hh = 0; hh < G; hh++) {
                int h = g * G + hh;
                size_t hoff = ((size_t)b * T * H + h) * D;
                const float *lb = lse + ((size_t)b * H + h) * T;
                for (int i = j0; i < L; i++) {
                    int lo = att_lo(&m, i);
                    if (lo >= j1) break; /* lo is non-decreasing: no later row sees this tile */
                    int jl = lo > j0 ? lo : j0, jh = j1 < i + 1 ? j1 : i + 1;
                    const float *qi = q + hoff + i * qs, *doi = dout + hoff + i * qs;
                    float *dqi = dq + hoff + i * qs;
                    float Di = att_dot(doi, out + hoff + i * qs, D), li = lb[i];
                    for (int j = jl; j < jh; j++) {
                        if (att_seg_skip(&m, i, j)) continue;
                        const float *kj = kb + j * ks, *vj = vb + j * ks;
                        float p = expf(scale * att_dot(qi, kj, D) - li);
                        float ds = scale * p * (att_dot(doi, vj, D) - Di);
                        att_axpy(dvb + j * ks, p, doi, D);
                        att_axpy(dkb + j * ks, ds, qi, D);
                        att_axpy(dqi, ds, kj, D);
                    }
                }
            }
        }
    }
}

/* ---- dispatch ----------------------------------------------------------------------------
 * A table of kernels, best first, each with the ISA level it needs (base/cpu.h) and a shape
 * test; the first that the level allows and that accepts the shape runs. A kernel returns
 * nonzero when it cannot run (no workspace), and the dispatcher goes on down the table to this
 * file's portable code, which always can: the fast kernels never call back into it. */
typedef struct att_kernels {
    const char *name;
    cpu_isa level;
    int (*usable)(int H, int Hkv, int D);
    size_t (*ws_bytes)(int maxB, int maxT, int H, int Hkv, int D);
    int (*forward)(float *, float *, const float *, const float *, const float *, const int *,
                   const int *, int, int, int, int, int, int, float, void *, size_t);
    int (*backward)(float *, float *, float *, const float *, const float *, const float *,
                    const float *, const float *, const float *, const int *, const int *, int, int,
                    int, int, int, int, float, void *, size_t);
} att_kernels;

int attention_tiled_parts = 0; /* attention_tiled.h */

static int tiled_shape(int H, int Hkv, int D) { return D % 16 == 0 && D <= 256 && H / Hkv <= 32; }

static const att_kernels table[] = {
    {"avx512", CPU_AVX512, tiled_shape, attention_tiled_ws_bytes_avx512,
     attention_forward_tiled_avx512, attention_backward_tiled_avx512},
    {"avx2", CPU_AVX2, tiled_shape, attention_tiled_ws_bytes_avx2, attention_forward_tiled_avx2,
     attention_backward_tiled_avx2},
};
enum { NTABLE = sizeof table / sizeof table[0] };

/* The first table row the ISA level allows for this shape, or NULL (the portable code). */
static const att_kernels *pick(int H, int Hkv, int D) {
    for (int i = 0; i < NTABLE; i++)
        if (table[i].level <= cpu_level() && table[i].usable(H, Hkv, D)) return &table[i];
    return NULL;
}

int attention_avx2_usable(int H, int Hkv, int D) {
    return tiled_shape(H, Hkv, D) && cpu_native_level() >= CPU_AVX2;
}

const char *attention_isa(int H, int Hkv, int D) {
    const att_kernels *k = pick(H, Hkv, D);
    return k ? k->name : "portable";
}

int attention_bf16_active(int H, int Hkv, int D) {
    return cpu_level() >= CPU_AMX && tiled_shape(H, Hkv, D);
}

size_t attention_workspace_bytes(int maxB, int maxT, int H, int Hkv, int D, int bf16) {
    const att_kernels *k = pick(H, Hkv, D);
    size_t n = k ? k->ws_bytes(maxB, maxT, H, Hkv, D) : 0;
    if (bf16 && attention_bf16_active(H, Hkv, D)) { /* either may run (bf16 needs its own) */
        size_t b = attention_bf16_ws_bytes(maxB, maxT, H, Hkv, D);
        n = b > n ? b : n;
    }
    return n;
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                       int window, float scale, int bf16, void *ws, size_t wsb) {
    if (bf16 && attention_bf16_active(H, Hkv, D) &&
        !attention_forward_bf16(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, ws,
                                wsb))
        return;
    const att_kernels *kt = pick(H, Hkv, D);
    if (kt && !kt->forward(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale, ws, wsb))
        return;
    attention_forward_ref(out, lse, q, k, v, seg, len, B, T, H, Hkv, D, window, scale);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *lse,
                        const int *seg, const int *len, int B, int T, int H, int Hkv, int D,
                        int window, float scale, int bf16, void *ws, size_t wsb) {
    if (bf16 && attention_bf16_active(H, Hkv, D) &&
        !attention_backward_bf16(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D,
                                 window, scale, ws, wsb))
        return;
    const att_kernels *kt = pick(H, Hkv, D);
    if (kt && !kt->backward(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                            scale, ws, wsb))
        return;
    attention_backward_ref(dq, dk, dv, dout, q, k, v, out, lse, seg, len, B, T, H, Hkv, D, window,
                           scale);
}
