/* axpy_avx512.c: axpy.c's kernel with AVX-512's FMA, sixteen values at a time; the tail with
 * fmaf, which -mfma compiles to one rounding, the portable kernel's bits. */
#include "ops/axpy.h"

#include <immintrin.h>
#include <math.h>

void axpy_fma_avx512(float *out, const float *x, float a, size_t n) {
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i,
                         _mm512_fmadd_ps(_mm512_loadu_ps(x + i), va, _mm512_loadu_ps(out + i)));
    for (; i < n; i++)
        out[i] = fmaf(x[i], a, out[i]);
}
