/*
 * qtensor_avx2.c: the qtensor kernels (dequantize rows, fused dot of one row and of four) for
 * AVX2 + FMA + F16C, 8 floats at a time. qtensor.c calls them through qtensor_kernels_avx2 only
 * when the CPU has all three; tests/qtensor_test.c and tests/gguf_quant_kernels_test.c check
 * them against the portable kernels.
 *
 * F32, BF16, F16, Q8_0, Q4_0, Q4_K and Q6_K are qtensor_simd_body.h's width-generic kernels,
 * given the 8-lane operations below; NF4 / FP4 (blocks that may cross rows, a code-table
 * lookup) are this file's own.
 *
 * 4-bit codes: 4 packed bytes hold 8 values, high nibble first. Each byte is doubled
 * (unpacklo_epi8(b, b)), widened to 8 dwords, and shifted right by 4 in the even lanes; the
 * nibble then indexes the 16-entry code table as two 8-entry permutes, bit 3 choosing between
 * them.
 */
#include "ops/qtensor_kernels.h"

#include "ops/hsum_avx2.h"
#include <immintrin.h>

typedef __m256 vf;
enum { VW = 8 };
#define vzero _mm256_setzero_ps
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vset1 _mm256_set1_ps
#define vadd _mm256_add_ps
#define vsub _mm256_sub_ps
#define vmul _mm256_mul_ps
#define vfma _mm256_fmadd_ps
#define vhsum avx2_hsum

static inline __m256 vload_bf16(const uint16_t *h) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static inline __m256 vload_f16(const uint16_t *h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* The 32 bytes of v as 4 x 8 floats (signed or not). */
static inline void vbytes32(__m256i v, int is_signed, __m256 f[4]) {
    __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
    __m128i p[4] = {a, _mm_srli_si128(a, 8), b, _mm_srli_si128(b, 8)};
    for (int j = 0; j < 4; j++)
        f[j] =
            _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(p[j]) : _mm256_cvtepu8_epi32(p[j]));
}

#include "ops/qtensor_simd_body.h"

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

const qkernels qtensor_kernels_avx2 = {
    "avx2",
    CPU_AVX2,
    {SB_DEQUANT_ENTRIES, [QF_NF4] = dequant_4bit, [QF_FP4] = dequant_4bit},
    {SB_DOT_ENTRIES, [QF_NF4] = dot_4bit, [QF_FP4] = dot_4bit},
    {SB_DOT4_ENTRIES},
};
