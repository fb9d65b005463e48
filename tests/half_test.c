/*
 * half_test.c: the fp32 <-> bf16 / f16 conversions of base/half.h, exhaustively where the domain
 * allows, against independent formulations, and the SIMD conversions against them bit for bit.
 *  - bf16 -> fp32 on all 65536 patterns: exactly the bits shifted up (NaNs included).
 *  - fp32 -> bf16 on every upper half (65536) with the lower halves that decide a rounding (0, 1,
 *    0x7fff, 0x8000, 0x8001, 0xffff, and random ones), against round-to-nearest-even computed in
 *    double from the two neighbouring bf16 values (ties to the even one; past the largest finite
 *    value the upper neighbour is infinity at the distance of 2^128); NaNs against the rule
 *    (sign and top payload kept, quiet bit set).
 *  - f16 -> fp32 on all 65536 patterns against the compiler's _Float16 -> float (an independent
 *    implementation) for numbers; NaNs against the rule; and the round trip back.
 *  - fp32 -> f16 against _Float16 at every midpoint between neighbouring f16 values and beside
 *    it, and on 200k random bit patterns.
 *  - NaN payloads: fixed fp32 NaNs (signalling, quiet, both signs, odd payloads) give the f16
 *    patterns torch 2.15's .to(torch.float16) gives (measured, scalar and vectorized agree) and
 *    the bf16 patterns of the rule.
 *  - The SIMD conversions: bf16_round_rows (gemm_bf16) at every ISA level this CPU runs, over all
 *    upper halves x the lower halves above, in rows whose lengths leave every tail of the 16-wide
 *    loop; and the qtensor BF16 / F16 dequantization kernels (F16C's VCVTPH2PS at avx2 and up) on
 *    all 65536 patterns: bit-identical to half.h.
 */
#include "base/cpu.h"
#include "base/half.h"
#include "ops/gemm_bf16.h"
#include "ops/qtensor.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int is_nan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

/* The expected bf16 of fp32 bits u: the nearer neighbour in double, ties to even; NaNs by the
 * rule. */
static uint16_t bf16_expected(uint32_t u) {
    if (is_nan_bits(u)) return (uint16_t)((u >> 16) | 0x40u);
    float f = from_bits(u);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
    if ((u & 0xffffu) == 0) return lo; /* exact (infinities included) */
    double vh = ((hi & 0x7fffu) == 0x7f80u) ? copysign(0x1p128, (double)f)
                                            : (double)from_bits((uint32_t)hi << 16);
    double dl = fabs((double)from_bits((uint32_t)lo << 16) - (double)f), dh = fabs(vh - (double)f);
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1) ? hi : lo;
}

static const uint16_t lows[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1234, 0xc0de, 0x4000};
enum { NLOWS = sizeof lows / sizeof lows[0] };

static void check_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++)
        if (bits(bf16_to_f32((uint16_t)h)) != h << 16) bad++;
    CHECK(bad == 0, "bf16 -> f32 on all 65536 patterns: %d not the bits shifted up", bad);
    bad = 0;
    int nan_bad = 0;
    for (uint32_t h = 0; h < 65536; h++)
        for (int l = 0; l < NLOWS; l++) {
            uint32_t u = h << 16 | lows[l];
            uint16_t got = f32_to_bf16(from_bits(u)), want = bf16_expected(u);
            if (got != want) *(is_nan_bits(u) ? &nan_bad : &bad) += 1;
        }
    CHECK(bad == 0, "f32 -> bf16, nearest even, %d upper halves x %d lower: %d bad", 65536, NLOWS,
          bad);
    CHECK(nan_bad == 0, "f32 -> bf16 NaNs: %d not sign|payload|quiet", nan_bad);
    /* round trips: every non-NaN bf16 comes back as itself, every NaN quieted */
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t back = f32_to_bf16(bf16_to_f32((uint16_t)h));
        if (back != (is_nan_bits(h << 16) ? (h | 0x40u) : h)) bad++;
    }
    CHECK(bad == 0, "bf16 -> f32 -> bf16: %d patterns changed", bad);
    CHECK(f32_to_bf16(3.4e38f) == 0x7f80 && f32_to_bf16(-3.4e38f) == 0xff80,
          "past the largest bf16 rounds to inf");
    CHECK(f32_to_bf16(NAN) == 0x7fc0 && f32_to_bf16(-NAN) == 0xffc0, "the default NaN: %04x %04x",
          f32_to_bf16(NAN), f32_to_bf16(-NAN));
}

static void check_f16(void) {
    int bad = 0, nan_bad = 0;
    for (uint32_t c = 0; c < 65536; c++) {
        uint16_t h = (uint16_t)c;
        _Float16 x;
        memcpy(&x, &h, 2);
        float got = f16_to_f32(h);
        int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            uint32_t want =
                (uint32_t)(h & 0x8000) << 16 | 0x7fc00000u | (uint32_t)(h & 0x3ff) << 13;
            if (bits(got) != want) nan_bad++;
            if (f32_to_f16(got) != (h | 0x200)) nan_bad++;
        } else {
            float ref = (float)x;
            if (bits(ref) != bits(got)) bad++;
            if (f32_to_f16(got) != h) bad++;
        }
    }
    CHECK(bad == 0, "f16 -> f32 -> f16 on all numbers vs _Float16: %d bad", bad);
    CHECK(nan_bad == 0, "f16 NaNs: %d not sign|payload|quiet (both ways)", nan_bad);
    bad = 0;
    for (uint32_t c = 0; c < 0x7c00; c++) {
        double lo = (double)f16_to_f32((uint16_t)c),
               hi = (c == 0x7bff) ? 65536.0 : (double)f16_to_f32((uint16_t)(c + 1));
        float mids[3];
        mids[0] = (float)((lo + hi) / 2);
        mids[1] = nextafterf(mids[0], 0);
        mids[2] = nextafterf(mids[0], 1e30f);
        for (int k = 0; k < 3; k++)
            for (int sgn = 0; sgn < 2; sgn++) {
                float f = sgn ? -mids[k] : mids[k];
                _Float16 r = (_Float16)f;
                uint16_t rb;
                memcpy(&rb, &r, 2);
                if (f32_to_f16(f) != rb) bad++;
            }
    }
    uint32_t state = 12345;
    for (int i = 0; i < 200000; i++) {
        state = state * 1664525u + 1013904223u;
        float f = from_bits(state);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &r, 2);
        if (f32_to_f16(f) != rb) bad++;
    }
    CHECK(bad == 0, "f32 -> f16 vs _Float16 (ties, neighbours, 200k random patterns): %d bad", bad);
    CHECK(f32_to_f16(INFINITY) == 0x7c00 && f32_to_f16(-1e10f) == 0xfc00 &&
              f32_to_f16(65519.99f) == 0x7bff && f32_to_f16(65520.0f) == 0x7c00,
          "f16 overflow");
}

/* fp32 NaNs and what they become: f16 as torch 2.15's .to(torch.float16) (measured on this
 * project's Zen 4, AVX512 and AVX2 capability and scalar: all the same), bf16 by the rule. */
static void check_nan_payloads(void) {
    static const struct {
        uint32_t f32;
        uint16_t f16, bf16;
    } t[] = {
        {0x7fc00000, 0x7e00, 0x7fc0}, {0x7f800001, 0x7e00, 0x7fc0}, {0x7fa00000, 0x7f00, 0x7fe0},
        {0xffc00000, 0xfe00, 0xffc0}, {0xff800001, 0xfe00, 0xffc0}, {0x7fffffff, 0x7fff, 0x7fff},
        {0xffffffff, 0xffff, 0xffff}, {0x7f812345, 0x7e09, 0x7fc1}, {0xffa54321, 0xff2a, 0xffe5},
        {0x7fc0ffff, 0x7e07, 0x7fc0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        float f = from_bits(t[i].f32);
        CHECK(f32_to_f16(f) == t[i].f16, "NaN %08x -> f16 %04x, torch gives %04x", t[i].f32,
              f32_to_f16(f), t[i].f16);
        CHECK(f32_to_bf16(f) == t[i].bf16, "NaN %08x -> bf16 %04x, want %04x", t[i].f32,
              f32_to_bf16(f), t[i].bf16);
    }
}

/* bf16_round_rows and the qtensor F16 / BF16 dequantization at level l, against half.h. */
static void check_simd_at(cpu_isa l) {
    /* every upper half with each lower half, rows of 1..40 values to cover every loop tail */
    size_t n = (size_t)65536 * NLOWS;
    float *src = malloc(n * sizeof(float));
    uint16_t *got = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++)
        src[i] = from_bits((uint32_t)(i / NLOWS) << 16 | lows[i % NLOWS]);
    int bad = 0;
    for (size_t i = 0; i < n;) {
        int len = (int)(1 + i % 40);
        if ((size_t)len > n - i) len = (int)(n - i);
        bf16_round_rows(got + i, (size_t)len, src + i, (size_t)len, 1, len);
        i += (size_t)len;
    }
    for (size_t i = 0; i < n; i++)
        if (got[i] != f32_to_bf16(src[i])) bad++;
    CHECK(bad == 0, "%s: bf16_round_rows differs from f32_to_bf16 at %d of %zu", cpu_isa_name(l),
          bad, n);
    /* dequantization of every pattern (a 256 x 256 tensor) */
    uint16_t *pat = malloc(65536 * sizeof(uint16_t));
    float *out = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++)
        pat[i] = (uint16_t)i;
    for (int fmt = 0; fmt < 2; fmt++) {
        qtensor t = {0};
        t.fmt = fmt ? QF_F16 : QF_BF16, t.rows = 256, t.cols = 256, t.blocksize = 1, t.data = pat;
        qtensor_dequant_rows(&t, 0, 256, out);
        bad = 0;
        for (uint32_t i = 0; i < 65536; i++) {
            float want = fmt ? f16_to_f32((uint16_t)i) : bf16_to_f32((uint16_t)i);
            if (bits(out[i]) != bits(want)) bad++;
        }
        CHECK(bad == 0,
              "%s: qtensor %s dequantization (%s kernels) differs from half.h at %d of 65536",
              cpu_isa_name(l), fmt ? "f16" : "bf16", qtensor_isa(), bad);
    }
    free(src), free(got), free(pat), free(out);
}

int main(void) {
    check_bf16();
    check_f16();
    check_nan_payloads();
    cpu_isa keep = cpu_level();
    for (int l = 0; l < CPU_NLEVELS; l++)
        if (cpu_set_level((cpu_isa)l)) check_simd_at((cpu_isa)l);
    cpu_set_level(keep);
    return test_summary("half");
}
