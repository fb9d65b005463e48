/*
 * qtensor_avx512.c: the qtensor kernels (dequantize rows, fused dot of one row) for AVX-512
 * (F, BW, VL, DQ) with FMA and F16C, 16 floats at a time. qtensor.c calls them through
 * qtensor_kernels_avx512 only when the CPU has them; tests/qtensor_test.c checks them against
 * the portable kernels on machines that have AVX-512.
 *
 * As in qtensor_avx2.c: dequantization is bit-identical to the portable code (one conversion,
 * at most one multiply per value); dot products differ only in summation order.
 *
 * GGUF Q4_0 / Q4_K / Q6_K: the blocks are unpacked to bytes (qtensor_gguf_simd.h), widened to
 * floats 16 at a time, and a (sub-)block's scale multiplies its partial dot product once.
 *
 * 4-bit codes: 8 packed bytes hold 16 values, high nibble first. Each byte is doubled
 * (unpacklo_epi8(b, b)), widened to 16 dwords, shifted right by 4 in the even lanes and masked
 * to 4 bits; one permutexvar over the 16-entry code table then gives the values.
 */
#include "ops/qtensor_gguf_simd.h"
#include "ops/qtensor_kernels.h"

#include <immintrin.h>

/* ---- F32, BF16, F16 ---------------------------------------------------------------------- */

static inline __m512 load_bf16(const uint16_t *h) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)h));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

static inline __m512 load_f16(const uint16_t *h) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

static float dot_f32(const qtensor *t, int r, const float *x) {
    const float *w = (const float *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
}

static void dequant_bf16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols, i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, load_bf16(h + i));
    for (; i < n; i++)
        out[i] = bf16_to_f32(h[i]);
}

static void dequant_f16(const qtensor *t, int r0, int nrows, float *out) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r0 * t->cols;
    size_t n = (size_t)nrows * t->cols, i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, load_f16(h + i));
    for (; i < n; i++)
        out[i] = f16_to_f32(h[i]);
}

static float dot_bf16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_bf16(h + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_bf16(h + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(load_bf16(h + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++)
        s += bf16_to_f32(h[i]) * x[i];
    return s;
}

static float dot_f16(const qtensor *t, int r, const float *x) {
    const uint16_t *h = (const uint16_t *)t->data + (size_t)r * t->cols;
    int n = t->cols, i = 0;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_f16(h + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_f16(h + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(load_f16(h + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++)
        s += f16_to_f32(h[i]) * x[i];
    return s;
}

/* ---- Q8_0 -------------------------------------------------------------------------------- */

/* 16 of a block's int8 values as floats */
static inline __m512 load_q8(const uint8_t *q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
}

static inline float q8_scale(const uint8_t *blk) { return f16c_at(blk); }

static void dequant_q8_0(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / Q8_0_VALUES);
    const uint8_t *blk =
        (const uint8_t *)t->data + (size_t)r0 * (t->cols / Q8_0_VALUES) * Q8_0_BYTES;
    for (size_t b = 0; b < nb; b++, blk += Q8_0_BYTES, out += Q8_0_VALUES) {
        __m512 d = _mm512_set1_ps(q8_scale(blk));
        _mm512_storeu_ps(out, _mm512_mul_ps(d, load_q8(blk + 2)));
        _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, load_q8(blk + 18)));
    }
}

static float dot_q8_0(const qtensor *t, int r, const float *x) {
    int nb = t->cols / Q8_0_VALUES;
    const uint8_t *blk = (const uint8_t *)t->data + (size_t)r * nb * Q8_0_BYTES;
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q8_0_BYTES, x += Q8_0_VALUES) {
        __m512 s = _mm512_mul_ps(load_q8(blk + 2), _mm512_loadu_ps(x));
        s = _mm512_fmadd_ps(load_q8(blk + 18), _mm512_loadu_ps(x + 16), s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(q8_scale(blk)), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- NF4, FP4 ---------------------------------------------------------------------------- */

/* The 16 values whose codes are in the 8 bytes at p (value 2k: high nibble of byte k). */
static inline __m512 decode16(const uint8_t *p, __m512 code) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m512i v = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
    v = _mm512_srlv_epi32(v, _mm512_set_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4));
    v = _mm512_and_si512(v, _mm512_set1_epi32(15));
    return _mm512_permutexvar_ps(v, code);
}

/* Rows r0.. are the flat range [r0*cols, (r0+nrows)*cols), walked block segment by segment; a
 * segment starts on an odd value only at the start of the range. */
static void dequant_4bit(const qtensor *t, int r0, int nrows, float *out) {
    const uint8_t *p = t->data;
    const float *code = qt_dequant_code(t->fmt);
    __m512 c = _mm512_loadu_ps(code);
    size_t bs = (size_t)t->blocksize, lo = (size_t)r0 * t->cols, hi = lo + (size_t)nrows * t->cols;
    float *o = out - lo;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float a = qt_block_absmax(t, b);
        __m512 va = _mm512_set1_ps(a);
        if (i % 2 && i < end) o[i] = code[qt_nibble(p, i)] * a, i++;
        for (; i + 16 <= end; i += 16)
            _mm512_storeu_ps(o + i, _mm512_mul_ps(decode16(p + i / 2, c), va));
        for (; i < end; i++)
            o[i] = code[qt_nibble(p, i)] * a;
    }
}

static float dot_4bit(const qtensor *t, int r, const float *x) {
    const uint8_t *p = t->data;
    const float *code = qt_dequant_code(t->fmt);
    __m512 c = _mm512_loadu_ps(code);
    size_t bs = (size_t)t->blocksize, lo = (size_t)r * t->cols, hi = lo + (size_t)t->cols;
    const float *xx = x - lo;
    __m512 acc = _mm512_setzero_ps();
    float s = 0;
    for (size_t i = lo; i < hi;) {
        size_t b = i / bs, end = (b + 1) * bs < hi ? (b + 1) * bs : hi;
        float a = qt_block_absmax(t, b),
              edge = 0; /* edge: the values outside whole 8-byte groups */
        __m512 bsum = _mm512_setzero_ps();
        if (i % 2 && i < end) edge += code[qt_nibble(p, i)] * xx[i], i++;
        for (; i + 16 <= end; i += 16)
            bsum = _mm512_fmadd_ps(decode16(p + i / 2, c), _mm512_loadu_ps(xx + i), bsum);
        for (; i < end; i++)
            edge += code[qt_nibble(p, i)] * xx[i];
        acc = _mm512_fmadd_ps(_mm512_set1_ps(a), bsum, acc);
        s += a * edge;
    }
    return s + _mm512_reduce_add_ps(acc);
}

/* ---- GGUF Q4_0, Q4_K, Q6_K (qtensor_gguf_simd.h unpacks the blocks) ----------------------- */

/* 16 signed / unsigned bytes as floats */
static inline __m512 i8x16_ps(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }
static inline __m512 u8x16_ps(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }

static void dequant_q4_0(const qtensor *t, int r0, int nrows, float *out) {
    size_t nb = (size_t)nrows * (t->cols / Q4_0_VALUES);
    const uint8_t *blk = qt_row(t, r0);
    for (size_t b = 0; b < nb; b++, blk += Q4_0_BYTES, out += Q4_0_VALUES) {
        __m512 d = _mm512_set1_ps(f16c_at(blk));
        __m128i lo, hi;
        q4_0_bytes(blk, &lo, &hi);
        _mm512_storeu_ps(out, _mm512_mul_ps(d, i8x16_ps(lo)));
        _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, i8x16_ps(hi)));
    }
}

/* sum over the block of (nibble - 8) * x, unscaled */
static inline __m512 q4_0_block_dot(const uint8_t *blk, const float *x) {
    __m128i lo, hi;
    q4_0_bytes(blk, &lo, &hi);
    return _mm512_fmadd_ps(i8x16_ps(hi), _mm512_loadu_ps(x + 16),
                           _mm512_mul_ps(i8x16_ps(lo), _mm512_loadu_ps(x)));
}

/* Two blocks per step into two accumulators (one block's chain of a convert, an fma and a scale
 * fma is short; two independent ones keep both FMA ports busy). */
static float dot_q4_0(const qtensor *t, int r, const float *x) {
    int nb = t->cols / Q4_0_VALUES, b = 0;
    const uint8_t *blk = qt_row(t, r);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (; b + 2 <= nb; b += 2, blk += 2 * Q4_0_BYTES, x += 2 * Q4_0_VALUES) {
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(f16c_at(blk)), q4_0_block_dot(blk, x), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(f16c_at(blk + Q4_0_BYTES)),
                               q4_0_block_dot(blk + Q4_0_BYTES, x + Q4_0_VALUES), acc1);
    }
    if (b < nb) acc0 = _mm512_fmadd_ps(_mm512_set1_ps(f16c_at(blk)), q4_0_block_dot(blk, x), acc0);
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
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
                __m512 vs = _mm512_set1_ps(ds[2 * g + h]), vm = _mm512_set1_ps(dm[2 * g + h]);
                __m512 f0 = u8x16_ps(_mm256_castsi256_si128(q[h]));
                __m512 f1 = u8x16_ps(_mm256_extracti128_si256(q[h], 1));
                _mm512_storeu_ps(out, _mm512_sub_ps(_mm512_mul_ps(vs, f0), vm));
                _mm512_storeu_ps(out + 16, _mm512_sub_ps(_mm512_mul_ps(vs, f1), vm));
            }
        }
    }
}

/* sum over sub-blocks s of ds[s] * (q . x) - dm[s] * sum(x) */
static float dot_q4_k(const qtensor *t, int r, const float *x) {
    int nb = t->cols / GGML_QK_K;
    const uint8_t *blk = qt_row(t, r);
    __m512 accq = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q4_K_BYTES) {
        float ds[8], dm[8];
        q4_k_scales(blk, ds, dm);
        for (int g = 0; g < 4; g++) {
            __m256i q[2];
            q4_k_bytes(blk + 16 + 32 * g, &q[0], &q[1]);
            for (int h = 0; h < 2; h++, x += 32) {
                __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
                __m512 s =
                    _mm512_fmadd_ps(u8x16_ps(_mm256_extracti128_si256(q[h], 1)), x1,
                                    _mm512_mul_ps(u8x16_ps(_mm256_castsi256_si128(q[h])), x0));
                accq = _mm512_fmadd_ps(_mm512_set1_ps(ds[2 * g + h]), s, accq);
                accm = _mm512_fmadd_ps(_mm512_set1_ps(dm[2 * g + h]), _mm512_add_ps(x0, x1), accm);
            }
        }
    }
    return _mm512_reduce_add_ps(_mm512_sub_ps(accq, accm));
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
                __m512 f0 = i8x16_ps(_mm256_castsi256_si128(q[k]));
                __m512 f1 = i8x16_ps(_mm256_extracti128_si256(q[k], 1));
                _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[2 * k]), f0));
                _mm512_storeu_ps(out + 16,
                                 _mm512_mul_ps(_mm512_set1_ps(d * (float)sc[2 * k + 1]), f1));
            }
        }
    }
}

static float dot_q6_k(const qtensor *t, int r, const float *x) {
    int nb = t->cols / GGML_QK_K;
    const uint8_t *blk = qt_row(t, r);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, blk += Q6_K_BYTES) {
        float d = f16c_at(blk + 208);
        const int8_t *sc = (const int8_t *)(blk + 192);
        for (int half = 0; half < 2; half++, sc += 8) {
            __m256i q[4];
            q6_k_bytes(blk + 64 * half, blk + 128 + 32 * half, q);
            for (int k = 0; k < 4; k++, x += 32) {
                __m512 sa =
                    _mm512_mul_ps(i8x16_ps(_mm256_castsi256_si128(q[k])), _mm512_loadu_ps(x));
                __m512 sb = _mm512_mul_ps(i8x16_ps(_mm256_extracti128_si256(q[k], 1)),
                                          _mm512_loadu_ps(x + 16));
                acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[2 * k]), sa, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[2 * k + 1]), sb, acc1);
            }
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

const qkernels qtensor_kernels_avx512 = {
    "avx512",
    CPU_AVX512,
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
