/*
 * qtensor_avx2.c: the qtensor kernels (dequantize rows, fused dot of one row) for AVX2 + FMA +
 * F16C, 8 floats at a time. qtensor.c calls them through qtensor_kernels_avx2 only when the CPU
 * has all three; tests/qtensor_test.c checks them against the portable kernels.
 *
 * Dequantization computes each value exactly as the portable code does (one conversion, at most
 * one multiply), so the results are bit-identical. The dot products sum in another order (8
 * lanes, the block scale applied to a block's partial sum), so they differ by rounding only.
 *
 * GGUF Q4_0 / Q4_K / Q6_K: the blocks are unpacked to bytes (qtensor_gguf_simd.h), widened to
 * floats 8 at a time, and a (sub-)block's scale multiplies its partial dot product once.
 *
 * 4-bit codes: 4 packed bytes hold 8 values, high nibble first. Each byte is doubled
 * (unpacklo_epi8(b, b)), widened to 8 dwords, and shifted right by 4 in the even lanes; the
 * nibble then indexes the 16-entry code table as two 8-entry permutes, bit 3 choosing between
 * them.
 */
#include "ops/qtensor_kernels.h"

#include "ops/hsum_avx2.h"
#include "ops/qtensor_gguf_simd.h"
#include <immintrin.h>

/* ---- F32, BF16, F16 ---------------------------------------------------------------------------
 */

static inline __m256 load_bf16(const uint16_t *h) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static inline __m256 load_f16(const uint16_t *h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

static float dot_f32(const qtensor *t, int r, const float *x) {
    const float *w = (const float *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = avx2_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
}

static void dequant_bf16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols, i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load_bf16(h + i));
    for (; i < n; i++)
        out[i] = bf16_to_f32(h[i]);
}

static void dequant_f16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols, i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load_f16(h + i));
    for (; i < n; i++)
        out[i] = f16_to_f32(h[i]);
}

static float dot_bf16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load_bf16(h + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_bf16(h + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(load_bf16(h + i), _mm256_loadu_ps(x + i), a0);
    float s = avx2_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += bf16_to_f32(h[i]) * x[i];
    return s;
}

static float dot_f16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load_f16(h + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_f16(h + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(load_f16(h + i), _mm256_loadu_ps(x + i), a0);
    float s = avx2_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += f16_to_f32(h[i]) * x[i];
    return s;
}

/* ---- Q8_0 -------------------------------------------------------------------------------- */

/* 8 of a block's int8 values as floats */
static inline __m256 load_q8(const uint8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static inline float q8_scale(const uint8_t *blk) { return f16c_at(blk); }

static void dequant_q8_0(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / Q8_0_VALUES);
    const uint8_t *blk =
        (const uint8_t *)t->data + (size_t)r0 * (t->cols / Q8_0_VALUES) * Q8_0_BYTES;
    for (size_t b = 0; b < nb; b++, blk += Q8_0_BYTES, out += Q8_0_VALUES) {
        __m256 d = _mm256_set1_ps(q8_scale(blk));
        for (int j = 0; j < Q8_0_VALUES; j += 8)
            _mm256_storeu_ps(out + j, _mm256_mul_ps(d, load_q8(blk + 2 + j)));
    }
}

static float dot_q8_0(const qtensor *t, int r, const float *x) {
    int nb = t->cols / Q8_0_VALUES;
    const uint8_t *blk = (const uint8_t *)t->data + (size_t)r * nb * Q8_0_BYTES;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q8_0_BYTES, x += Q8_0_VALUES) {
        const uint8_t *q = blk + 2;
        __m256 s0 = _mm256_mul_ps(load_q8(q), _mm256_loadu_ps(x));
        __m256 s1 = _mm256_mul_ps(load_q8(q + 8), _mm256_loadu_ps(x + 8));
        s0 = _mm256_fmadd_ps(load_q8(q + 16), _mm256_loadu_ps(x + 16), s0);
        s1 = _mm256_fmadd_ps(load_q8(q + 24), _mm256_loadu_ps(x + 24), s1);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(q8_scale(blk)), _mm256_add_ps(s0, s1), acc);
    }
    return avx2_hsum(acc);
}

/* ---- NF4, FP4 ---------------------------------------------------------------------------- */

typedef struct code16 {
    __m256 lo, hi; /* code values 0..7 and 8..15 */
} code16;

static inline code16 load_code(qformat f) {
    const float *c = qt_dequant_code(f);
    return (code16){_mm256_loadu_ps(c), _mm256_loadu_ps(c + 8)};
}

/* The 8 values whose codes are in the 4 bytes at p (value 2k: high nibble of byte k). */
static inline __m256 decode8(const uint8_t *p, code16 c) {
    int32_t w;
    memcpy(&w, p, 4);
    __m128i b = _mm_cvtsi32_si128(w);
    __m256i v = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0));
    v = _mm256_and_si256(v, _mm256_set1_epi32(15));
    __m256 lo = _mm256_permutevar8x32_ps(c.lo, v), hi = _mm256_permutevar8x32_ps(c.hi, v);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(v, 28)));
}

/* Rows r0.. are the flat range [r0*cols, (r0+nrows)*cols), walked block segment by segment; a
 * segment starts on an odd value only at the start of the range. */
static void dequant_4bit(const qtensor *t, int r0, int nrows, float *out) {
    const uint8_t *p = t->data;
    const float *code = qt_dequant_code(t->fmt);
    code16 c = load_code(t->fmt);
    size_t bs = (size_t)t->blocksize, lo = (size_t)r0 * t->cols, hi = lo + (size_t)nrows * t->cols;
    float *o = out - lo;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float a = qt_block_absmax(t, b);
        __m256 va = _mm256_set1_ps(a);
        if (i % 2 && i < end) o[i] = code[qt_nibble(p, i)] * a, i++;
        for (; i + 8 <= end; i += 8)
            _mm256_storeu_ps(o + i, _mm256_mul_ps(decode8(p + i / 2, c), va));
        for (; i < end; i++)
            o[i] = code[qt_nibble(p, i)] * a;
    }
}

static float dot_4bit(const qtensor *t, int r, const float *x) {
    const uint8_t *p = t->data;
    const float *code = qt_dequant_code(t->fmt);
    code16 c = load_code(t->fmt);
    size_t bs = (size_t)t->blocksize, lo = (size_t)r * t->cols, hi = lo + (size_t)t->cols;
    const float *xx = x - lo;
    __m256 acc = _mm256_setzero_ps();
    float s = 0;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float a = qt_block_absmax(t, b), edge = 0; /* edge: the values outside whole bytes */
        __m256 bsum = _mm256_setzero_ps();
        if (i % 2 && i < end) edge += code[qt_nibble(p, i)] * xx[i], i++;
        for (; i + 8 <= end; i += 8)
            bsum = _mm256_fmadd_ps(decode8(p + i / 2, c), _mm256_loadu_ps(xx + i), bsum);
        for (; i < end; i++)
            edge += code[qt_nibble(p, i)] * xx[i];
        acc = _mm256_fmadd_ps(_mm256_set1_ps(a), bsum, acc);
        s += a * edge;
    }
    return s + avx2_hsum(acc);
}

/* ---- GGUF Q4_0, Q4_K, Q6_K (qtensor_gguf_simd.h unpacks the blocks) ----------------------- */

/* 8 signed / unsigned bytes (the low 8 of b) as floats */
static inline __m256 i8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }
static inline __m256 u8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }

/* The 32 bytes of v as 4 x 8 floats (signed or not). */
static inline void bytes32_ps(__m256i v, int is_signed, __m256 f[4]) {
    __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
    __m128i p[4] = {a, _mm_srli_si128(a, 8), b, _mm_srli_si128(b, 8)};
    for (int j = 0; j < 4; j++)
        f[j] = is_signed ? i8_ps(p[j]) : u8_ps(p[j]);
}

static void dequant_q4_0(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / Q4_0_VALUES);
    const uint8_t *blk = qt_row(t, r0);
    for (size_t b = 0; b < nb; b++, blk += Q4_0_BYTES, out += Q4_0_VALUES) {
        __m256 d = _mm256_set1_ps(f16c_at(blk));
        __m128i lo, hi;
        q4_0_bytes(blk, &lo, &hi);
        _mm256_storeu_ps(out, _mm256_mul_ps(d, i8_ps(lo)));
        _mm256_storeu_ps(out + 8, _mm256_mul_ps(d, i8_ps(_mm_srli_si128(lo, 8))));
        _mm256_storeu_ps(out + 16, _mm256_mul_ps(d, i8_ps(hi)));
        _mm256_storeu_ps(out + 24, _mm256_mul_ps(d, i8_ps(_mm_srli_si128(hi, 8))));
    }
}

static float dot_q4_0(const qtensor *t, int r, const float *x) {
    int nb = t->cols / Q4_0_VALUES;
    const uint8_t *blk = qt_row(t, r);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q4_0_BYTES, x += Q4_0_VALUES) {
        __m128i lo, hi;
        q4_0_bytes(blk, &lo, &hi);
        __m256 s0 = _mm256_mul_ps(i8_ps(lo), _mm256_loadu_ps(x));
        __m256 s1 = _mm256_mul_ps(i8_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8));
        s0 = _mm256_fmadd_ps(i8_ps(hi), _mm256_loadu_ps(x + 16), s0);
        s1 = _mm256_fmadd_ps(i8_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s1);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16c_at(blk)), _mm256_add_ps(s0, s1), acc);
    }
    return avx2_hsum(acc);
}

/* A Q4_K block's 8 sub-block scales d * sc and mins dmin * m, rounded as the reference does. */
static inline void q4_k_scales(const uint8_t *blk, float ds[8], float dm[8]) {
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
        q4_k_scales(blk, ds, dm);
        for (int g = 0; g < 4; g++) {
            __m256i q[2];
            q4_k_bytes(blk + 16 + 32 * g, &q[0], &q[1]);
            for (int h = 0; h < 2; h++, out += 32) {
                __m256 f[4], vs = _mm256_set1_ps(ds[2 * g + h]), vm = _mm256_set1_ps(dm[2 * g + h]);
                bytes32_ps(q[h], 0, f);
                for (int j = 0; j < 4; j++)
                    _mm256_storeu_ps(out + 8 * j, _mm256_sub_ps(_mm256_mul_ps(vs, f[j]), vm));
            }
        }
    }
}

/* sum over sub-blocks s of ds[s] * (q . x) - dm[s] * sum(x) */
static float dot_q4_k(const qtensor *t, int r, const float *x) {
    int nb = t->cols / GGML_QK_K;
    const uint8_t *blk = qt_row(t, r);
    __m256 accq = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q4_K_BYTES) {
        float ds[8], dm[8];
        q4_k_scales(blk, ds, dm);
        for (int g = 0; g < 4; g++) {
            __m256i q[2];
            q4_k_bytes(blk + 16 + 32 * g, &q[0], &q[1]);
            for (int h = 0; h < 2; h++, x += 32) {
                __m256 f[4];
                bytes32_ps(q[h], 0, f);
                __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
                __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
                __m256 s0 = _mm256_fmadd_ps(f[2], x2, _mm256_mul_ps(f[0], x0));
                __m256 s1 = _mm256_fmadd_ps(f[3], x3, _mm256_mul_ps(f[1], x1));
                __m256 xs = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
                accq = _mm256_fmadd_ps(_mm256_set1_ps(ds[2 * g + h]), _mm256_add_ps(s0, s1), accq);
                accm = _mm256_fmadd_ps(_mm256_set1_ps(dm[2 * g + h]), xs, accm);
            }
        }
    }
    return avx2_hsum(_mm256_sub_ps(accq, accm));
}

static void dequant_q6_k(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / GGML_QK_K);
    const uint8_t *blk = qt_row(t, r0);
    for (size_t b = 0; b < nb; b++, blk += Q6_K_BYTES) {
        float d = f16c_at(blk + 208);
        const int8_t *sc = (const int8_t *)(blk + 192);
        for (int half = 0; half < 2; half++, sc += 8) {
            __m256i q[4];
            q6_k_bytes(blk + 64 * half, blk + 128 + 32 * half, q);
            for (int k = 0; k < 4; k++, out += 32) {
                __m256 f[4];
                bytes32_ps(q[k], 1, f);
                for (int j = 0; j < 4; j++)
                    _mm256_storeu_ps(
                        out + 8 * j,
                        _mm256_mul_ps(_mm256_set1_ps(d * (float)sc[2 * k + j / 2]), f[j]));
            }
        }
    }
}

static float dot_q6_k(const qtensor *t, int r, const float *x) {
    int nb = t->cols / GGML_QK_K;
    const uint8_t *blk = qt_row(t, r);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q6_K_BYTES) {
        float d = f16c_at(blk + 208);
        const int8_t *sc = (const int8_t *)(blk + 192);
        for (int half = 0; half < 2; half++, sc += 8) {
            __m256i q[4];
            q6_k_bytes(blk + 64 * half, blk + 128 + 32 * half, q);
            for (int k = 0; k < 4; k++, x += 32) {
                __m256 f[4];
                bytes32_ps(q[k], 1, f);
                __m256 sa = _mm256_fmadd_ps(f[1], _mm256_loadu_ps(x + 8),
                                            _mm256_mul_ps(f[0], _mm256_loadu_ps(x)));
                __m256 sb = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(x + 24),
                                            _mm256_mul_ps(f[2], _mm256_loadu_ps(x + 16)));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k]), sa, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k + 1]), sb, acc);
            }
        }
    }
    return avx2_hsum(acc);
}

const qkernels qtensor_kernels_avx2 = {
    "avx2",
    CPU_AVX2,
    {[QF_BF16] = dequant_bf16,
     [QF_F16] = dequant_f16,
     [QF_Q8_0] = dequant_q8_0,
     [QF_NF4] = dequant_4bit,
     [QF_FP4] = dequant_4bit,
     [QF_Q4_0] = dequant_q4_0,
     [QF_Q4_K] = dequant_q4_k,
     [QF_Q6_K] = dequant_q6_k},
    {[QF_F32] = dot_f32,
     [QF_BF16] = dot_bf16,
     [QF_F16] = dot_f16,
     [QF_Q8_0] = dot_q8_0,
     [QF_NF4] = dot_4bit,
     [QF_FP4] = dot_4bit,
     [QF_Q4_0] = dot_q4_0,
     [QF_Q4_K] = dot_q4_k,
     [QF_Q6_K] = dot_q6_k},
};
