/*
 * lora_gemm.h: the products of a LoRA layer, where one size is the rank R (4 to a few hundred)
 * and the others are the model's (hundreds to tens of thousands of rows and columns).
 *
 * A general BLAS packs both operands on every call; here one of them has R columns, so the
 * packing of the large one costs more than the multiply (OpenBLAS's copy routines were half of
 * the LoRA time in a profile, bench/README.md). These kernels read the large operand in place,
 * once, and pack only the small R-wide one, into 16-column panels:
 *
 *   lg_xw:  C (N x R)  = alpha X (N x K) W + beta C   W (K x R), or with wt W (R x K) used as W^T
 *   lg_hw:  C (N x M)  = alpha H (N x R) W + beta C   W (R x M), or with wt W (M x R) used as W^T
 *   lg_pth: G (M x R) += alpha P^T H                  P (N x M), H (N x R); with gt G is (R x M)
 *                                                     and gets the transpose
 *
 * W and G are contiguous (leading dimension their column count); X, H, P and C take a row
 * stride. beta 0 never reads C. Sums run in fp32 in an order fixed by the shapes only (not by
 * the thread count), so a run is reproducible on one machine; they differ from the reference's
 * order by rounding only (tests/lora_gemm_test.c bounds it).
 *
 * Kernels: AVX-512 and AVX2 (lora_gemm_body.h, compiled twice), chosen at run time
 * (base/cpu.h); the portable row runs OpenBLAS's sgemm. lg_*_ref are the plain loops the tests
 * hold every kernel to.
 */
#ifndef FT_OPS_LORA_GEMM_H
#define FT_OPS_LORA_GEMM_H

void lg_xw(int N, int K, int R, float alpha, const float *X, int ldx, const float *W, int wt,
           float beta, float *C, int ldc);
void lg_hw(int N, int M, int R, float alpha, const float *H, int ldh, const float *W, int wt,
           float beta, float *C, int ldc);
void lg_pth(int N, int M, int R, float alpha, const float *P, int ldp, const float *H, int ldh,
            float *G, int gt);
/* the kernel set the calls run at the current ISA level: "avx512", "avx2" or "portable" */
const char *lg_isa(void);

/* the plain loops (double sums), the tests' reference */
void lg_xw_ref(int N, int K, int R, float alpha, const float *X, int ldx, const float *W, int wt,
               float beta, float *C, int ldc);
void lg_hw_ref(int N, int M, int R, float alpha, const float *H, int ldh, const float *W, int wt,
               float beta, float *C, int ldc);
void lg_pth_ref(int N, int M, int R, float alpha, const float *P, int ldp, const float *H, int ldh,
                float *G, int gt);

/* the per-ISA kernels (lora_gemm_avx2.c, lora_gemm_avx512.c) */
void lg_xw_avx2(int, int, int, float, const float *, int, const float *, int, float, float *, int);
void lg_hw_avx2(int, int, int, float, const float *, int, const float *, int, float, float *, int);
void lg_pth_avx2(int, int, int, float, const float *, int, const float *, int, float *, int);
void lg_xw_avx512(int, int, int, float, const float *, int, const float *, int, float, float *, int);
void lg_hw_avx512(int, int, int, float, const float *, int, const float *, int, float, float *, int);
void lg_pth_avx512(int, int, int, float, const float *, int, const float *, int, float *, int);

#endif
