/*
 * gemm_bf16_avx2.c: the conversions between fp32 and bf16 that the fallback product and
 * bf16_round_rows run, 16 values at a time (gemm_bf16.c chooses them at ISA level avx2 and up;
 * base/half.h's scalar conversions are the definition and half_test.c compares the two bit for
 * bit).
 *   widen  bf16 -> fp32: the 16 bits become the upper half of the fp32 (exact).
 *   round  fp32 -> bf16, nearest even: add 0x7fff plus the lowest kept bit, keep the upper half;
 *          a NaN keeps its upper half with the quiet bit (0x40) set, so it cannot round to inf.
 */
#include "base/half.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

void bf16_widen_avx2(float *dst, const uint16_t *src, size_t n);
void bf16_round_avx2(uint16_t *dst, const float *src, size_t n);

void bf16_widen_avx2(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
        __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
        _mm256_storeu_si256((__m256i *)(dst + i), lo);
        _mm256_storeu_si256((__m256i *)(dst + i + 8), hi);
    }
    for (; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

/* 8 fp32 (as bits) to 8 bf16 in the low 16 bits of each lane */
static inline __m256i round8(__m256i u) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    __m256i r = _mm256_add_epi32(
        u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
    r = _mm256_srli_epi32(r, 16);
    __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000)); /* both non-negative */
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

void bf16_round_avx2(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i b = round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* packus works within 128-bit lanes: a0-3 b0-3 a4-7 b4-7; the permute restores order */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}
