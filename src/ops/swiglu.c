/*
 * swiglu.c: the gated MLP activation out = silu(gate) * up, silu(x) = x * sigmoid(x).
 *
 * Row n of gate and up starts at n*ld_in: ld_in = I for two separate buffers, 2I for Phi-3's
 * fused gate_up_proj output whose first I columns are the gate and next I the up projection
 * (transformers' Phi3MLP: gate, up = up_states.chunk(2, dim=-1)).
 * Backward with s = sigmoid(g):  d silu/dg = s * (1 + g * (1 - s)),
 *   dgate = dout * up * s * (1 + g*(1 - s)),  dup = dout * silu(g).
 * Both gradients are overwritten, in the same strided layout as the inputs.
 * swiglu_forward/backward run swiglu_avx2.c's version at ISA level avx2 and up (base/cpu.h), the
 * portable
 * *_ref code here otherwise.
 */
#include "base/cpu.h"
#include "ops/ops.h"

#include <math.h>

void swiglu_forward_ref(float *out, const float *gate, const float *up, int N, int I, int ld_in) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gate + (size_t)n * ld_in, *u = up + (size_t)n * ld_in;
        float *o = out + (size_t)n * I;
        for (int i = 0; i < I; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void swiglu_backward_ref(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, int N, int I, int ld_in) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gate + (size_t)n * ld_in, *u = up + (size_t)n * ld_in;
        const float *d = dout + (size_t)n * I;
        float *dg = dgate + (size_t)n * ld_in, *du = dup + (size_t)n * ld_in;
        for (int i = 0; i < I; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            dg[i] = d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
            du[i] = d[i] * g[i] * s;
        }
    }
}

/* The kernels, best first, each with the ISA level it needs (base/cpu.h). */
static const struct {
    const char *name;
    cpu_isa level;
    void (*forward)(float *, const float *, const float *, int, int, int);
    void (*backward)(float *, float *, const float *, const float *, const float *, int, int, int);
} table[] = {
    {"avx2", CPU_AVX2, swiglu_forward_avx2, swiglu_backward_avx2},
    {"portable", CPU_PORTABLE, swiglu_forward_ref, swiglu_backward_ref},
};
static int pick(void) { return CPU_PICK(table); }

const char *swiglu_isa(void) { return table[pick()].name; }

void swiglu_forward(float *out, const float *gate, const float *up, int N, int I, int ld_in) {
    table[pick()].forward(out, gate, up, N, I, ld_in);
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int N, int I, int ld_in) {
    table[pick()].backward(dgate, dup, dout, gate, up, N, I, ld_in);
}
