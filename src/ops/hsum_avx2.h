/* hsum_avx2.h: horizontal sum and maximum of the 8 lanes of an AVX2 register, shared by the
 * AVX2 kernels (include only from files compiled with AVX2). */
#ifndef FT_OPS_HSUM_AVX2_H
#define FT_OPS_HSUM_AVX2_H

#include <immintrin.h>

static inline float avx2_hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

static inline float avx2_hmax(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

#endif
