/*
 * qtensor_simd_body.h: the qtensor kernels that are the same at every SIMD width, written once
 * and included by qtensor_avx2.c (8 floats a vector) and qtensor_avx512.c (16). The including
 * file defines, before the #include:
 *   vf, VW                 the float vector type and its lanes;
 *   vzero() vload(p) vstore(p, v) vset1(s) vadd vsub vmul vfma(a, b, c) vhsum(v);
 *   vload_bf16(h) vload_f16(h)   VW bf16 / f16 values widened;
 *   vbytes32(v, sgn, f)    the 32 bytes of a __m256i as 32 / VW float vectors f[], signed or not.
 * It gets: dequant_{bf16,f16,q8_0,q4_0,q4_k,q6_k}, dot_{f32,bf16,f16,q8_0,q4_0,q4_k,q6_k} (one
 * row) and dot4_{q8_0,q4_0,q4_k} (four consecutive rows), and SB_DEQUANT_ENTRIES / _DOT_ / _DOT4_,
 * the entries of its qkernels table for these formats.
 *
 * Dequantization computes each value exactly as the portable reference does (one conversion, at
 * most one multiply, Q4_K's product rounded before the min is subtracted), so it is
 * bit-identical on every ISA. A dot product sums in VW lanes, a (sub-)block's scale multiplying
 * its partial sum once, so it differs from the portable one by rounding only.
 *
 * Several rows per call: each dot kernel is one always-inlined body over NR rows (1 or 4, a
 * constant after inlining, so the per-row arrays live in registers). The rows share the loads
 * of x (and Q4_K's sums of x); each row keeps its own accumulators and does exactly the
 * operations the one-row kernel does, so dot4 gives bit for bit what four dot calls give.
 * Four rows are four short interleaved streams, which the hardware prefetchers miss, so a
 * four-row call prefetches the next four rows itself (sb_prefetch_next).
 *
 * GGUF blocks are unpacked to bytes by qtensor_gguf_simd.h (layouts there).
 */
#ifndef FT_OPS_QTENSOR_SIMD_BODY_H
#define FT_OPS_QTENSOR_SIMD_BODY_H

#include "ops/qtensor_gguf_simd.h"
#include "ops/qtensor_kernels.h"

#define SB_INLINE static inline __attribute__((always_inline))
/* Loops over the rows of a call and the vectors of a block: unrolled whole, so that their arrays
 * are registers (GCC's -O2 does not unroll bodies this large on its own). */
#define SB_UNROLL _Pragma("GCC unroll 8")
enum { SB_NV = 32 / VW }; /* vectors per 32 values */

/* The four rows of a call are one contiguous span of memory, read as four interleaved streams
 * that are short at decode's widths (a few hundred bytes to a few KB each), too short for the
 * hardware prefetchers to pick up. So a four-row call prefetches the next four rows' span, in
 * step with its own progress: after `done` of its `span` bytes, the next span's bytes
 * [done, done + step) (at most 8 lines a step). Prefetches never fault, past the matrix too. */
SB_INLINE void sb_prefetch_next(const void *start, size_t span, size_t done, size_t step) {
    const char *p = (const char *)start + span + done;
    for (size_t o = 0; o < step && o < 8 * 64; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

/* ---- F32, BF16, F16 ---------------------------------------------------------------------- */

enum { SB_F32, SB_BF16, SB_F16 };

SB_INLINE vf sb_wload(const void *w, int i, int kind) {
    if (kind == SB_F32) return vload((const float *)w + i);
    if (kind == SB_BF16) return vload_bf16((const uint16_t *)w + i);
    return vload_f16((const uint16_t *)w + i);
}

SB_INLINE float sb_wscalar(const void *w, int i, int kind) {
    if (kind == SB_F32) return ((const float *)w)[i];
    if (kind == SB_BF16) return bf16_to_f32(((const uint16_t *)w)[i]);
    return f16_to_f32(((const uint16_t *)w)[i]);
}

/* one row: two accumulators over 2 * VW values a step, then VW, then a scalar tail */
SB_INLINE float sb_dot_dense(const qtensor *t, int r, const float *x, const int kind) {
    const int n = t->cols;
    const void *w = (const char *)t->data + (size_t)r * n * (kind == SB_F32 ? 4 : 2);
    vf a0 = vzero(), a1 = vzero();
    int i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        a0 = vfma(sb_wload(w, i, kind), vload(x + i), a0);
        a1 = vfma(sb_wload(w, i + VW, kind), vload(x + i + VW), a1);
    }
    for (; i + VW <= n; i += VW)
        a0 = vfma(sb_wload(w, i, kind), vload(x + i), a0);
    float s = vhsum(vadd(a0, a1));
    for (; i < n; i++)
        s += sb_wscalar(w, i, kind) * x[i];
    return s;
}

static void sb_dequant_half(const qtensor *t, int r0, int nrows, float *out, int kind) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols, i = 0;
    for (; i + VW <= n; i += VW)
        vstore(out + i, sb_wload(h + i, 0, kind));
    for (; i < n; i++)
        out[i] = sb_wscalar(h + i, 0, kind);
}

static void dequant_bf16(const qtensor *t, int r0, int nrows, float *out) {
    sb_dequant_half(t, r0, nrows, out, SB_BF16);
}
static void dequant_f16(const qtensor *t, int r0, int nrows, float *out) {
    sb_dequant_half(t, r0, nrows, out, SB_F16);
}

/* ---- Q8_0, Q4_0: blocks of 32 values, one f16 scale --------------------------------------- */

/* A 32-value block's values as bytes (Q4_0's nibble - 8, Q8_0's int8). */
SB_INLINE __m256i sb_block32_bytes(const uint8_t *blk, int q4) {
    if (!q4) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    __m128i lo, hi;
    q4_0_bytes(blk, &lo, &hi);
    return _mm256_set_m128i(hi, lo);
}

static void sb_dequant_block32(const qtensor *t, int r0, int nrows, float *out, int q4) {
    size_t nb = (size_t)nrows * (t->cols / 32), bb = q4 ? Q4_0_BYTES : Q8_0_BYTES;
    const uint8_t *blk = qt_row(t, r0);
    for (size_t b = 0; b < nb; b++, blk += bb, out += 32) {
        vf d = vset1(f16c_at(blk)), f[SB_NV];
        vbytes32(sb_block32_bytes(blk, q4), 1, f);
        SB_UNROLL
        for (int j = 0; j < SB_NV; j++)
            vstore(out + VW * j, vmul(d, f[j]));
    }
}

/* per row: sum over blocks of d * (q . x) */
SB_INLINE void sb_dot_block32(const qtensor *t, int r, const float *x, float *out, const int NR,
                              const int q4) {
    const int nb = t->cols / 32;
    const size_t bb = q4 ? Q4_0_BYTES : Q8_0_BYTES, row = (size_t)nb * bb;
    const uint8_t *blk = qt_row(t, r);
    vf acc[4];
    SB_UNROLL
    for (int k = 0; k < NR; k++)
        acc[k] = vzero();
    for (int b = 0; b < nb; b++, blk += bb, x += 32) {
        if (NR > 1) sb_prefetch_next(qt_row(t, r), NR * row, (size_t)NR * b * bb, NR * bb);
        vf xv[SB_NV];
        SB_UNROLL
        for (int j = 0; j < SB_NV; j++)
            xv[j] = vload(x + VW * j);
        SB_UNROLL
        for (int k = 0; k < NR; k++) {
            const uint8_t *p = blk + k * row;
            vf f[SB_NV];
            vbytes32(sb_block32_bytes(p, q4), 1, f);
            vf s = vmul(f[0], xv[0]);
            SB_UNROLL
            for (int j = 1; j < SB_NV; j++)
                s = vfma(f[j], xv[j], s);
            acc[k] = vfma(vset1(f16c_at(p)), s, acc[k]);
        }
    }
    SB_UNROLL
    for (int k = 0; k < NR; k++)
        out[k] = vhsum(acc[k]);
}

static void dequant_q8_0(const qtensor *t, int r0, int nrows, float *out) {
    sb_dequant_block32(t, r0, nrows, out, 0);
}
static void dequant_q4_0(const qtensor *t, int r0, int nrows, float *out) {
    sb_dequant_block32(t, r0, nrows, out, 1);
}

/* ---- Q4_K -------------------------------------------------------------------------------- */

/* A Q4_K block's 8 sub-block scales d * sc and mins dmin * m, rounded as the reference does. */
SB_INLINE void sb_q4_k_scales(const uint8_t *blk, float ds[8], float dm[8]) {
    float d = f16c_at(blk), dmin = f16c_at(blk + 2);
    for (int s = 0; s < 8; s++) {
        int sc, m;
        ggml_q4_k_scale_min(blk + 4, s, &sc, &m);
        ds[s] = d * (float)sc, dm[s] = dmin * (float)m;
    }
}

/* value = ds * q - dm, the product rounded before the difference (no fma), as the reference */
static void dequant_q4_k(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / GGML_QK_K);
    const uint8_t *blk = qt_row(t, r0);
    for (size_t b = 0; b < nb; b++, blk += Q4_K_BYTES) {
        float ds[8], dm[8];
        sb_q4_k_scales(blk, ds, dm);
        for (int g = 0; g < 4; g++) {
            __m256i q[2];
            q4_k_bytes(blk + 16 + 32 * g, &q[0], &q[1]);
            for (int h = 0; h < 2; h++, out += 32) {
                vf f[SB_NV], vs = vset1(ds[2 * g + h]), vm = vset1(dm[2 * g + h]);
                vbytes32(q[h], 0, f);
                SB_UNROLL
                for (int j = 0; j < SB_NV; j++)
                    vstore(out + VW * j, vsub(vmul(vs, f[j]), vm));
            }
        }
    }
}

/* per row: sum over sub-blocks s of ds[s] * (q . x) - dm[s] * sum(x); sum(x) is shared */
SB_INLINE void sb_dot_q4_k(const qtensor *t, int r, const float *x, float *out, const int NR) {
    const int nb = t->cols / GGML_QK_K;
    const size_t row = (size_t)nb * Q4_K_BYTES;
    const uint8_t *blk = qt_row(t, r);
    vf accq[4], accm[4];
    SB_UNROLL
    for (int k = 0; k < NR; k++)
        accq[k] = vzero(), accm[k] = vzero();
    for (int b = 0; b < nb; b++, blk += Q4_K_BYTES) {
        if (NR > 1)
            sb_prefetch_next(qt_row(t, r), NR * row, (size_t)NR * b * Q4_K_BYTES, NR * Q4_K_BYTES);
        float ds[4][8], dm[4][8];
        SB_UNROLL
        for (int k = 0; k < NR; k++)
            sb_q4_k_scales(blk + k * row, ds[k], dm[k]);
        for (int g = 0; g < 4; g++)
            for (int h = 0; h < 2; h++, x += 32) {
                vf xv[SB_NV];
                SB_UNROLL
                for (int j = 0; j < SB_NV; j++)
                    xv[j] = vload(x + VW * j);
                vf xs = xv[0];
                SB_UNROLL
                for (int j = 1; j < SB_NV; j++)
                    xs = vadd(xs, xv[j]);
                SB_UNROLL
                for (int k = 0; k < NR; k++) {
                    __m256i q[2];
                    q4_k_bytes(blk + k * row + 16 + 32 * g, &q[0], &q[1]);
                    vf f[SB_NV];
                    vbytes32(q[h], 0, f);
                    vf s = vmul(f[0], xv[0]);
                    SB_UNROLL
                    for (int j = 1; j < SB_NV; j++)
                        s = vfma(f[j], xv[j], s);
                    accq[k] = vfma(vset1(ds[k][2 * g + h]), s, accq[k]);
                    accm[k] = vfma(vset1(dm[k][2 * g + h]), xs, accm[k]);
                }
            }
    }
    SB_UNROLL
    for (int k = 0; k < NR; k++)
        out[k] = vhsum(vsub(accq[k], accm[k]));
}

/* ---- Q6_K -------------------------------------------------------------------------------- */

/* Half `half` of a Q6_K block (128 values) as floats, f[k] its quarter k (32 values), and the
 * 8 scales d * sc of its 16-value groups: quarter k's values 0-15 take scale[2k], 16-31
 * scale[2k + 1], so vector j of a quarter (VW values) takes scale[2k + j * VW / 16]. */
SB_INLINE void sb_q6_k_half(const uint8_t *blk, int half, vf f[4][SB_NV], float scale[8]) {
    float d = f16c_at(blk + 208);
    const int8_t *sc = (const int8_t *)(blk + 192) + 8 * half;
    for (int i = 0; i < 8; i++)
        scale[i] = d * (float)sc[i];
    __m256i q[4];
    q6_k_bytes(blk + 64 * half, blk + 128 + 32 * half, q);
    SB_UNROLL
    for (int k = 0; k < 4; k++)
        vbytes32(q[k], 1, f[k]);
}

/* the rows' halves in order: half h is half h % 2 of block h / 2 */
static void dequant_q6_k(const qtensor *t, int r0, int nrows, float *out) {
    size_t halves = 2 * (size_t)nrows * (t->cols / GGML_QK_K);
    const uint8_t *blk0 = qt_row(t, r0);
    for (size_t h = 0; h < halves; h++) {
        vf f[4][SB_NV];
        float scale[8];
        sb_q6_k_half(blk0 + h / 2 * Q6_K_BYTES, (int)(h % 2), f, scale);
        SB_UNROLL
        for (int k = 0; k < 4; k++, out += 32) {
            SB_UNROLL
            for (int j = 0; j < SB_NV; j++)
                vstore(out + VW * j, vmul(vset1(scale[2 * k + j * VW / 16]), f[k][j]));
        }
    }
}

/* sum over 16-value groups of (d * sc) * (q . x) */
static float dot_q6_k(const qtensor *t, int r, const float *x) {
    const int nb = t->cols / GGML_QK_K;
    const uint8_t *blk = qt_row(t, r);
    enum { PER16 = VW >= 16 ? 1 : 16 / VW }; /* vectors per 16 values */
    vf acc = vzero();
    for (int b = 0; b < nb; b++, blk += Q6_K_BYTES)
        for (int half = 0; half < 2; half++) {
            vf f[4][SB_NV];
            float scale[8];
            sb_q6_k_half(blk, half, f, scale);
            SB_UNROLL
            for (int k = 0; k < 4; k++, x += 32) {
                SB_UNROLL
                for (int j0 = 0; j0 < SB_NV; j0 += PER16) {
                    vf s = vmul(f[k][j0], vload(x + VW * j0));
                    SB_UNROLL
                    for (int j = j0 + 1; j < j0 + PER16; j++)
                        s = vfma(f[k][j], vload(x + VW * j), s);
                    acc = vfma(vset1(scale[2 * k + j0 * VW / 16]), s, acc);
                }
            }
        }
    return vhsum(acc);
}

/* ---- one-row and four-row entry points --------------------------------------------------- */

#define SB_DOT(name, body)                                                                         \
    static float dot_##name(const qtensor *t, int r, const float *x) {                             \
        float s;                                                                                   \
        body(t, r, x, &s, 1);                                                                      \
        return s;                                                                                  \
    }
#define SB_DOT4(name, body)                                                                        \
    static void dot4_##name(const qtensor *t, int r, const float *x, float out[4]) {               \
        body(t, r, x, out, 4);                                                                     \
    }

SB_INLINE void sb_q8_0(const qtensor *t, int r, const float *x, float *out, const int NR) {
    sb_dot_block32(t, r, x, out, NR, 0);
}
SB_INLINE void sb_q4_0(const qtensor *t, int r, const float *x, float *out, const int NR) {
    sb_dot_block32(t, r, x, out, NR, 1);
}

static float dot_f32(const qtensor *t, int r, const float *x) {
    return sb_dot_dense(t, r, x, SB_F32);
}
static float dot_bf16(const qtensor *t, int r, const float *x) {
    return sb_dot_dense(t, r, x, SB_BF16);
}
static float dot_f16(const qtensor *t, int r, const float *x) {
    return sb_dot_dense(t, r, x, SB_F16);
}
SB_DOT(q8_0, sb_q8_0)
SB_DOT(q4_0, sb_q4_0)
SB_DOT(q4_k, sb_dot_q4_k)
/* Four-row calls only where they measured faster (bench/matvec.c, README "Speed and memory"):
 * the one-row F32 / F16 / BF16 loop is already one long sequential stream the hardware
 * prefetches well, and four-row Q6_K was no faster. */
SB_DOT4(q8_0, sb_q8_0)
SB_DOT4(q4_0, sb_q4_0)
SB_DOT4(q4_k, sb_dot_q4_k)

#define SB_DEQUANT_ENTRIES                                                                         \
    [QF_BF16] = dequant_bf16, [QF_F16] = dequant_f16, [QF_Q8_0] = dequant_q8_0,                    \
    [QF_Q4_0] = dequant_q4_0, [QF_Q4_K] = dequant_q4_k, [QF_Q6_K] = dequant_q6_k
#define SB_DOT_ENTRIES                                                                             \
    [QF_F32] = dot_f32, [QF_BF16] = dot_bf16, [QF_F16] = dot_f16, [QF_Q8_0] = dot_q8_0,            \
    [QF_Q4_0] = dot_q4_0, [QF_Q4_K] = dot_q4_k, [QF_Q6_K] = dot_q6_k
#define SB_DOT4_ENTRIES [QF_Q8_0] = dot4_q8_0, [QF_Q4_0] = dot4_q4_0, [QF_Q4_K] = dot4_q4_k

#endif
