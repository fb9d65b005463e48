/*
 * axpy_test.c: ops/axpy's kernels against the portable one (C's fmaf), bit for bit, at every ISA
 * level this CPU runs: random rows of every length up to 70 (every tail of the 8- and 16-wide
 * loops) and values chosen so that a separate multiply and add would round differently (x * a
 * with low bits that an unfused product loses), plus zeros, signed zeros, infinities and NaN.
 */
#include "base/cpu.h"
#include "ops/axpy.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void check_at(cpu_isa l) {
    enum { N = 70 };
    float x[N], o0[N], ref[N], got[N];
    int bad = 0, fused = 0;
    for (int n = 0; n <= N; n++)
        for (int rep = 0; rep < 20; rep++) {
            float a = rnd() * 3.0f;
            for (int i = 0; i < n; i++)
                x[i] = rnd(), o0[i] = rnd();
            if (rep == 0 && n >= 6) {
                x[0] = 0.0f, o0[0] = -0.0f;
                x[1] = INFINITY, x[2] = NAN, o0[3] = -INFINITY;
                x[4] = 1.0f + 0x1p-23f, o0[4] = -(1.0f + 0x1p-22f); /* the exact product matters */
                a = 1.0f + 0x1p-23f;
            }
            memcpy(ref, o0, sizeof ref);
            memcpy(got, o0, sizeof got);
            axpy_fma_ref(ref, x, a, (size_t)n);
            axpy_fma(got, x, a, (size_t)n);
            for (int i = 0; i < n; i++) {
                if (bits(ref[i]) != bits(got[i]) && !(isnan(ref[i]) && isnan(got[i]))) bad++;
                volatile float p = x[i] * a;
                if (ref[i] != p + o0[i]) fused++;
            }
        }
    CHECK(bad == 0, "%s (%s kernel): %d values differ from fmaf", cpu_isa_name(l), axpy_isa(), bad);
    /* the test would see an unfused kernel: some sums differ from multiply-then-add */
    CHECK(fused > 0, "no value where fused and unfused differ: the test proves nothing");
}

int main(void) {
    cpu_isa keep = cpu_level();
    for (int l = 0; l < CPU_NLEVELS; l++)
        if (cpu_set_level((cpu_isa)l)) check_at((cpu_isa)l);
    cpu_set_level(keep);
    return test_summary("axpy");
}
