/* quant_test.c: properties of NF4/FP4 block quantization that hold whatever bitsandbytes does
 * (bit-exactness against bitsandbytes itself is tests/peers/test_quantize_bnb.py):
 * every value dequantizes to the code value nearest to its scaled value (times absmax), the
 * block's absmax value is represented exactly, and quantizing a dequantized tensor again gives the
 * same bytes. */
#include "ops/quant.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

int main(void) {
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
            for (int c = 0; c < 16; c++) best = fminf(best, fabsf(code[c] - sc));
            if (fabsf(y[i] / a - sc) > best + 1e-6f) nearest = 0;
            if (fabsf(x[i]) == a && y[i] != x[i]) exact_max = 0;
        }
        CHECK(nearest, "%s: a value did not get its nearest code", quant4_name(t));
        CHECK(exact_max, "%s: the block maximum is not exact", quant4_name(t));
        float absmax2[6];
        quant4_quantize(t, y, n, bs, p2, absmax2);
        CHECK(!memcmp(p, p2, sizeof p), "%s: requantizing changes the codes", quant4_name(t));
        CHECK(!memcmp(absmax, absmax2, sizeof absmax), "%s: requantizing changes absmax", quant4_name(t));
    }
    return test_summary("quant");
}
