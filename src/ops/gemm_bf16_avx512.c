/*
 * gemm_bf16_avx512.c: the AVX512_BF16 product (gemm_bf16_dp.h), built with the AVX-512 flags
 * (Makefile: *_avx512.c). gemm_bf16.c calls it only when CPUID says the CPU and the OS run
 * AVX512_BF16.
 */
#include <immintrin.h>

#include "base/half.h"
#include "ops/gemm_bf16_dp.h"

int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc, void *ws, size_t wsb);

int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc, void *ws, size_t wsb) {
    return dp_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, wsb);
}

size_t gemm_bf16_avx512_scratch(int M, int N, int K);

size_t gemm_bf16_avx512_scratch(int M, int N, int K) { return dp_scratch_bytes(M, N, K); }

/* bf16_round_rows' row kernel, 16 lanes a step: round8 of gemm_bf16_avx2.c on zmm registers
 * (round to nearest even on the bits; a NaN stays a NaN, quieted), then each lane's low half. */
void bf16_round_avx512(uint16_t *dst, const float *src, size_t n);

void bf16_round_avx512(uint16_t *dst, const float *src, size_t n) {
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512((const void *)(src + i));
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, one))), 16);
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
        r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}
