/* axpy.h: out[i] = fma(x[i], a, out[i]) over a row of floats, rounded once (axpy.c). */
#ifndef FT_OPS_AXPY_H
#define FT_OPS_AXPY_H

#include <stddef.h>

/* out (n) = x * a + out with one rounding per element (C's fmaf): PyTorch's CPU addcmul_ and
 * mergekit's linear merge round this way. Every kernel gives the same bits. */
void axpy_fma(float *out, const float *x, float a, size_t n);
/* the kernel axpy_fma runs at the current ISA level: "avx512", "avx2" or "portable" */
const char *axpy_isa(void);

void axpy_fma_ref(float *out, const float *x, float a, size_t n);
void axpy_fma_avx2(float *out, const float *x, float a, size_t n);
void axpy_fma_avx512(float *out, const float *x, float a, size_t n);

#endif
