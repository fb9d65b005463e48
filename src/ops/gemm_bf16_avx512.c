/*
 * gemm_bf16_avx512.c: the AVX512_BF16 product (gemm_bf16_dp.h), built with the AVX-512 flags
 * (Makefile: *_avx512.c). gemm_bf16.c calls it only when CPUID says the CPU and the OS run
 * AVX512_BF16.
 */
#include <immintrin.h>

#include "ops/gemm_bf16_dp.h"

int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc, void *ws, size_t wsb);

int gemm_bf16_avx512(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                     int ldb, float beta, float *C, int ldc, void *ws, size_t wsb) {
    return dp_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, wsb);
}

size_t gemm_bf16_avx512_scratch(int M, int N, int K);

size_t gemm_bf16_avx512_scratch(int M, int N, int K) { return dp_scratch_bytes(M, N, K); }
