/* axpy_avx2.c: axpy.c's kernel with AVX2's FMA, eight values at a time; the tail with fmaf,
 * which -mfma compiles to the same instruction (one rounding, the portable kernel's bits). */
#include "ops/axpy.h"

#include <immintrin.h>
#include <math.h>

void axpy_fma_avx2(float *out, const float *x, float a, size_t n) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i,
                         _mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, _mm256_loadu_ps(out + i)));
    for (; i < n; i++)
        out[i] = fmaf(x[i], a, out[i]);
}
