/*
 * axpy.c: out[i] = fma(x[i], a, out[i]), one rounding per element (axpy.h).
 *
 * The portable kernel is the specification: C's fmaf. Without -mfma the compiler cannot inline
 * fmaf and calls libm's software fused multiply-add for every element (tens of cycles each:
 * perf showed it as most of `ftune merge-models --method linear`); axpy_avx2.c / axpy_avx512.c do
 * the same with the hardware's VFMADD, which rounds once too, so every kernel gives the same
 * bits (tests/axpy_test.c). The kernel is chosen at run time from the table (base/cpu.h).
 */
#include "ops/axpy.h"
#include "base/cpu.h"

#include <math.h>

void axpy_fma_ref(float *out, const float *x, float a, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = fmaf(x[i], a, out[i]);
}

/* The kernels, best first, each with the ISA level it needs. */
static const struct {
    const char *name;
    cpu_isa level;
    void (*run)(float *, const float *, float, size_t);
} table[] = {
    {"avx512", CPU_AVX512, axpy_fma_avx512},
    {"avx2", CPU_AVX2, axpy_fma_avx2},
    {"portable", CPU_PORTABLE, axpy_fma_ref},
};
static int pick(void) { return CPU_PICK(table); }

const char *axpy_isa(void) { return table[pick()].name; }

void axpy_fma(float *out, const float *x, float a, size_t n) { table[pick()].run(out, x, a, n); }
