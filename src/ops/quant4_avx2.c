/*
 * quant4_avx2.c: one full block of quant4_quantize (quant4.c) with AVX2, eight values a step:
 * the absmax as fmaxf takes it (a NaN value is skipped: VMAXPS returns its second operand when
 * one is NaN, and the running maximum is that operand), scaled = x * (1 / max(absmax, 1e-38)),
 * clamped to [-1, 1] by compares (a NaN stays NaN), the bucket as the count of midpoints below
 * it (the bounds ascend, so that count is where quant4.c's scan stops; a NaN counts none), the
 * code by the table's order. The same bytes as the scalar loop (tests/quant_test.c).
 */
#include "ops/quant4_block.h"

#include <immintrin.h>

float quant4_block_avx2(const float *x, int n, const float *bounds, const int *order,
                        uint8_t *packed) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mv = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        mv = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), mv);
    float lanes[8], am = 0.0f;
    _mm256_storeu_ps(lanes, mv);
    for (int k = 0; k < 8; k++)
        am = lanes[k] > am ? lanes[k] : am;
    float clamped = am < 1e-38f ? 1e-38f : am;
    const __m256 inv = _mm256_set1_ps(1.0f / clamped), one = _mm256_set1_ps(1.0f),
                 mone = _mm256_set1_ps(-1.0f);
    __m256 b[15];
    for (int k = 0; k < 15; k++)
        b[k] = _mm256_set1_ps(bounds[k]);
    for (int i = 0; i < n; i += 8) {
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
        s = _mm256_blendv_ps(s, mone, _mm256_cmp_ps(s, mone, _CMP_LT_OQ));
        s = _mm256_blendv_ps(s, one, _mm256_cmp_ps(s, one, _CMP_GT_OQ));
        __m256i idx = _mm256_setzero_si256();
        for (int k = 0; k < 15; k++) /* each compare is all ones (-1) where bounds[k] < s */
            idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(b[k], s, _CMP_LT_OQ)));
        int c[8];
        _mm256_storeu_si256((__m256i *)c, idx);
        for (int k = 0; k < 8; k += 2)
            packed[(i + k) / 2] = (uint8_t)(order[c[k]] << 4 | order[c[k + 1]]);
    }
    return am;
}
