/*
 * gemm_bf16_amx.c: the AMX product (gemm_bf16_amx.h), built with the AVX-512 and AMX flags
 * (Makefile: *_amx.c). gemm_bf16.c calls it only at ISA level amx (base/cpu.h), which the probe
 * reports only when the CPU has AMX-TILE and AMX-BF16 and Linux granted this process the tile
 * data state.
 */
#include <immintrin.h>

#include "ops/gemm_bf16_dp.h"

#include "ops/gemm_bf16_amx.h"

int gemm_bf16_amx(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc, void *ws, size_t wsb);

int gemm_bf16_amx(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                  int ldb, float beta, float *C, int ldc, void *ws, size_t wsb) {
    return amx_gemm(transB, M, N, K, A, lda, B, ldb, beta, C, ldc, ws, wsb);
}

size_t gemm_bf16_amx_scratch(int M, int N, int K);

size_t gemm_bf16_amx_scratch(int M, int N, int K) { return amx_scratch_bytes(M, N, K); }
