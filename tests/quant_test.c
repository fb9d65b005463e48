/* quant_test.c: properties of NF4/FP4 block quantization that hold whatever bitsandbytes does
 * (bit-exactness against bitsandbytes itself is tests/peers/test_quantize_bnb.py):
 * every value dequantizes to the code value nearest to its scaled value (times absmax), the
 * block's absmax value is represented exactly, and quantizing a dequantized tensor again gives the
 * same bytes. Double quantization: torch's cascade sum is an exact sum wherever float addition is
 * exact (integers), whatever the width and thread count; equal absmax values come back exactly
 * (all offset); others within half the widest gap of the dynamic code times the nested absmax
 * (plus the 1/32767.5 grid of bitsandbytes' table). Bit-exactness against torch and bitsandbytes
 * is tests/peers/test_quantize_bnb.py. */
#include "base/cpu.h"
#include "ops/quant.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

/* The SIMD block kernels against the scalar loop (the portable level): the same bytes and absmax
 * for NF4 and FP4, block sizes 64 and 128 and a partial last block, on values that hit every
 * case: random of several scales, each type's midpoints exactly (scaled by a block maximum of 1),
 * +-1 and beyond (clamped), zeros and -0, a NaN and an infinity (whose blocks scale to NaN or 0),
 * an all-zero block (absmax 0, scaled by 1e-38) and tiny values. */
static void check_kernels(void) {
    enum { N = 128 * 12 + 40 };
    static float x[N], absmax[2][N / 64 + 1];
    static uint8_t p[2][N / 2 + 1];
    uint32_t s = 99;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (float)(1 << (i / 128 % 6)) * 0.1f;
    }
    for (int t = 0; t < 2; t++) {
        const float *code = quant4_code(t);
        x[128] = 1.0f; /* block 2 (of 64): max 1, so its values scale to themselves */
        for (int c = 0; c < 15; c++) { /* near midpoints of this type */
            float a = code[c], b = code[c + 1];
            x[129 + c] = (a + b) / 2.0f;
            x[144 + c] = nextafterf((a + b) / 2.0f, 2.0f);
        }
        x[160] = -1.0f, x[161] = 1.0f, x[162] = 0.0f, x[163] = -0.0f;
        x[256] = 5.0f, x[257] = -7.0f; /* blocks 4: clamped values */
        x[320] = NAN;                  /* block 5 holds a NaN */
        x[384] = INFINITY;             /* block 6 an infinity: the others scale to 0 */
        for (int i = 448; i < 512; i++)
            x[i] = 0.0f; /* block 7 all zero */
        for (int i = 512; i < 576; i++)
            x[i] *= 1e-39f; /* block 8 tiny */
        for (int bs = 64; bs <= 128; bs *= 2) {
            cpu_isa keep = cpu_level();
            cpu_set_level(CPU_PORTABLE);
            quant4_quantize(t, x, N, bs, p[0], absmax[0]);
            cpu_set_level(keep);
            quant4_quantize(t, x, N, bs, p[1], absmax[1]);
            int nb = (N + bs - 1) / bs;
            CHECK(!memcmp(p[0], p[1], (N + 1) / 2),
                  "%s bs %d: %s codes differ from the scalar loop", quant4_name(t), bs,
                  quant4_isa());
            int am_same = 1;
            for (int b = 0; b < nb; b++)
                am_same &= !memcmp(&absmax[0][b], &absmax[1][b], sizeof(float));
            CHECK(am_same, "%s bs %d: %s absmax differs from the scalar loop", quant4_name(t), bs,
                  quant4_isa());
        }
    }
    printf("quant4 kernels: %s checked against the scalar loop\n", quant4_isa());
}

int main(void) {
    check_kernels();
    const int n = 64 * 5 + 17, bs = 64; /* a partial last block and an odd count */
    float x[64 * 5 + 17], y[64 * 5 + 17], absmax[6];
    uint8_t p[(64 * 5 + 18) / 2], p2[(64 * 5 + 18) / 2];
    uint32_t s = 7;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1 + i / 64);
    }
    for (int t = 0; t < 2; t++) {
        const float *code = quant4_code(t);
        quant4_quantize(t, x, n, bs, p, absmax);
        quant4_dequantize(t, p, absmax, n, bs, y);
        int nearest = 1, exact_max = 1;
        for (int i = 0; i < n; i++) {
            float a = absmax[i / bs], sc = x[i] / a, best = 1e30f;
            for (int c = 0; c < 16; c++)
                best = fminf(best, fabsf(code[c] - sc));
            if (fabsf(y[i] / a - sc) > best + 1e-6f) nearest = 0;
            if (fabsf(x[i]) == a && y[i] != x[i]) exact_max = 0;
        }
        CHECK(nearest, "%s: a value did not get its nearest code", quant4_name(t));
        CHECK(exact_max, "%s: the block maximum is not exact", quant4_name(t));
        float absmax2[6];
        quant4_quantize(t, y, n, bs, p2, absmax2);
        CHECK(!memcmp(p, p2, sizeof p), "%s: requantizing changes the codes", quant4_name(t));
        CHECK(!memcmp(absmax, absmax2, sizeof absmax), "%s: requantizing changes absmax",
              quant4_name(t));
    }
    /* torch-style sums of small integers are exact in any order */
    static float ints[100003];
    for (int i = 0; i < 100003; i++)
        ints[i] = (float)(i % 13);
    const int lens[] = {1, 3, 7, 8, 9, 63, 64, 65, 1000, 32768, 32769, 100003};
    for (int k = 0; k < (int)(sizeof lens / sizeof *lens); k++) {
        double e = 0;
        for (int i = 0; i < lens[k]; i++)
            e += ints[i];
        for (int T = 1; T <= 3; T++)
            CHECK(quant4_torch_sum(ints, (size_t)lens[k], T) == (float)e,
                  "torch sum of %d integers (T %d)", lens[k], T);
    }
    /* double quantization round trip */
    const float *dyn = quant8_dynamic_code();
    float gap = 0;
    for (int i = 0; i < 255; i++)
        gap = fmaxf(gap, dyn[i + 1] - dyn[i]);
    CHECK(dyn[0] < 0 && dyn[255] == 1.0f && dyn[127] == 0.0f, "dynamic map ends");
    enum { NA = 1000 };
    static float am[NA], back[NA];
    static uint8_t codes[NA];
    float nested[4], off;
    for (int i = 0; i < NA; i++)
        am[i] = 0.25f;
    quant4_double_quant(am, NA, codes, nested, &off);
    quant4_double_dequant(codes, nested, off, NA, back);
    CHECK(off == 0.25f && !memcmp(am, back, sizeof am), "equal absmax values are not exact");
    for (int i = 0; i < NA; i++) {
        s = s * 1664525u + 1013904223u;
        am[i] = (float)(s >> 8) / 16777216.0f * (i < 256 ? 0.01f : 3.0f);
    }
    quant4_double_quant(am, NA, codes, nested, &off);
    quant4_double_dequant(codes, nested, off, NA, back);
    int within = 1;
    for (int i = 0; i < NA; i++)
        if (fabsf(back[i] - am[i]) > (gap / 2 + 1.0f / 32767.5f) * nested[i / 256] * 1.0001f)
            within = 0;
    CHECK(within, "a double-quantized absmax is further than half a code gap from the original");
    return test_summary("quant");
}
