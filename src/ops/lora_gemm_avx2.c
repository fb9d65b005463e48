/* lora_gemm_avx2.c: lora_gemm_body.h with AVX2 + FMA, eight floats a vector. Tiles (12 of the
 * 16 ymm registers as accumulators): lg_xw 3 rows of X by 4 of W^T, lg_hw 4 rows by 24 columns,
 * lg_pth 4 columns of H by 24 of P. */
#include "ops/hsum_avx2.h"

#include <immintrin.h>

/* the mask of _mm256_maskload_ps for the first n (0..8) lanes */
static inline __m256i lg_mask8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

typedef __m256 vf;
#define VW 8
#define vzero() _mm256_setzero_ps()
#define vload(p) _mm256_loadu_ps(p)
#define vloadn(p, n) _mm256_maskload_ps((p), lg_mask8(n))
#define vstore(p, v) _mm256_storeu_ps((p), (v))
#define vset1(s) _mm256_set1_ps(s)
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vmul(a, b) _mm256_mul_ps((a), (b))
#define vhsum(v) avx2_hsum(v)
#define LG_NAME(f) f##_avx2
#define LG_DR 3
#define LG_DW 4
#define LG_MR2 4
#define LG_NV2 3
#define LG_PR 4
#define LG_PV 3

#include "ops/lora_gemm_body.h"
