/*
 * gemm_bf16.h: matrix products of bf16 matrices with fp32 accumulation, the kernel under
 * `--dtype bf16` (qtensor.h, QC_BF16).
 *
 * bf16 here is the upper half of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa bits), rounded
 * from fp32 to nearest even (bf16_round_rows). The product of two bf16 values is exact in fp32
 * (8 x 8 significant bits fit in 24), so every implementation below computes the same sums of
 * exact products and differs from the others only in the order of the fp32 additions.
 *
 * Implementations, chosen by the ISA level of base/cpu.h (FTUNE_ISA caps it, as for every op):
 *   amx      CPUs with AMX-TILE and AMX-BF16 (Intel Sapphire Rapids on): tiles of 16 x 16
 *            outputs per TDPBF16PS (gemm_bf16_amx.h); products of fewer than 16 rows go to
 *            the avx512 kernel.
 *   avx512   CPUs with AVX512_BF16 (Intel Cooper Lake and Sapphire Rapids on, AMD Zen 4 on):
 *            ftune's own blocked kernel over VDPBF16PS, two products per fp32 lane per
 *            instruction.
 *   fallback everything else: the bf16 operands are widened to fp32 (exactly) a block at a time
 *            and multiplied by OpenBLAS's sgemm, which is the fastest fp32 product the machine
 *            has; bf16 then saves memory, not time.
 */
#ifndef FT_OPS_GEMM_BF16_H
#define FT_OPS_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

/* C (M, N) = beta * C + A (M, K) . op(B), row-major with row strides lda, ldb, ldc.
 * op(B) = B^T with B (N, K) when transB (the forward X W^T), B (K, N) otherwise (backward's
 * dY W). beta 0 ignores what C held (NaN included). fp32 accumulation. Allocates nothing: the
 * kernels work in scratch (scratch_bytes >= gemm_bf16_scratch_bytes(M, N, K)); with less, the
 * product still comes out, from the reference (slowly). */
void gemm_bf16(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
               int ldb, float beta, float *C, int ldc, void *scratch, size_t scratch_bytes);

/* Bytes of scratch gemm_bf16 needs for an (M, N, K) product with the kernel that runs at the
 * current ISA level (the fallback: fp32 copies of B and of a block of A's rows; the AVX512_BF16
 * kernel: its packing buffers); the same for either transB. For the callers and the memory plan. */
size_t gemm_bf16_scratch_bytes(int M, int N, int K);

/* The reference: same contract, plain loops, each output summed in double. Tests compare the
 * fast kernels with it; too slow for anything else. */
void gemm_bf16_ref(int transB, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc);

/* Round rows of fp32 to bf16 (nearest even; NaN stays NaN): dst (rows, cols) with stride ldd
 * from src with stride lds. Runs on all threads for large inputs. */
void bf16_round_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, int cols);

/* "amx" when the AMX kernel runs (ISA level amx, base/cpu.h), "avx512" when the AVX512_BF16 one
 * does (level avx512bf16), else "fallback". Tests switch it with cpu_set_level. */
const char *gemm_bf16_isa(void);

#endif
