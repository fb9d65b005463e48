/* lora_gemm_avx512.c: lora_gemm_body.h with AVX-512, sixteen floats a vector. Tiles (16 of the
 * 32 zmm registers as accumulators): lg_xw 4 rows of X by 4 of W^T, lg_hw 4 rows by 64
 * columns, lg_pth 8 columns of H by 32 of P. */
#include <immintrin.h>

typedef __m512 vf;
#define VW 16
#define vzero() _mm512_setzero_ps()
#define vload(p) _mm512_loadu_ps(p)
#define vloadn(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), (p))
#define vstore(p, v) _mm512_storeu_ps((p), (v))
#define vset1(s) _mm512_set1_ps(s)
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vmul(a, b) _mm512_mul_ps((a), (b))
#define vhsum(v) _mm512_reduce_add_ps(v)
#define LG_NAME(f) f##_avx512
#define LG_DR 4
#define LG_DW 4
#define LG_MR2 4
#define LG_NV2 4
#define LG_PR 8
#define LG_PV 2

#include "ops/lora_gemm_body.h"
