/*
 * qtensor_avx512.c: the qtensor kernels (dequantize rows, fused dot of one row and of four) for
 * AVX-512 (F, BW, VL, DQ) with FMA and F16C, 16 floats at a time. qtensor.c calls them through
 * qtensor_kernels_avx512 only when the CPU has them; tests/qtensor_test.c and
 * tests/gguf_quant_kernels_test.c check them against the portable kernels on machines that have
 * AVX-512.
 *
 * F32, BF16, F16, Q8_0, Q4_0, Q4_K and Q6_K are qtensor_simd_body.h's width-generic kernels,
 * given the 16-lane operations below; NF4 / FP4 (blocks that may cross rows, a code-table
 * lookup) are this file's own.
 *
 * 4-bit codes: 8 packed bytes hold 16 values, high nibble first. Each byte is doubled
 * (unpacklo_epi8(b, b)), widened to 16 dwords, shifted right by 4 in the even lanes and masked
 * to 4 bits; one permutexvar over the 16-entry code table then gives the values.
 */
#include "ops/qtensor_kernels.h"

#include <immintrin.h>

typedef __m512 vf;
enum { VW = 16 };
#define vzero _mm512_setzero_ps
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vset1 _mm512_set1_ps
#define vadd _mm512_add_ps
#define vsub _mm512_sub_ps
#define vmul _mm512_mul_ps
#define vfma _mm512_fmadd_ps
#define vhsum _mm512_reduce_add_ps

static inline __m512 vload_bf16(const uint16_t *h) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)h));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

static inline __m512 vload_f16(const uint16_t *h) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

/* The 32 bytes of v as 2 x 16 floats (signed or not). */
static inline void vbytes32(__m256i v, int is_signed, __m512 f[2]) {
    __m128i p[2] = {_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)};
    for (int j = 0; j < 2; j++)
        f[j] =
            _mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(p[j]) : _mm512_cvtepu8_epi32(p[j]));
}

#include "ops/qtensor_simd_body.h"

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

const qkernels qtensor_kernels_avx512 = {
    "avx512",
    CPU_AVX512,
    {SB_DEQUANT_ENTRIES, [QF_NF4] = dequant_4bit, [QF_FP4] = dequant_4bit},
    {SB_DOT_ENTRIES, [QF_NF4] = dot_4bit, [QF_FP4] = dot_4bit},
    {SB_DOT4_ENTRIES},
};
