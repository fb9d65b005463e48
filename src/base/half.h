/*
 * half.h: the one fp32 <-> bf16 and fp32 <-> f16 (IEEE binary16) conversion of the project.
 *
 * Rounding: round to nearest, ties to even, as IEEE 754's default, PyTorch's .to(), numpy's
 * astype(float16), F16C's VCVTPS2PH (imm 0) and AVX512_BF16's VCVTNEPS2BF16 do. Values beyond
 * the largest finite one plus half its last step become infinity; a float below half the
 * smallest f16 subnormal becomes a signed zero (no flush of bf16 subnormals: bf16 is the upper
 * half of an fp32, so every fp32 subnormal rounds like any other value).
 *
 * NaN: the sign and the payload's upper bits are kept and the result is quiet (the quiet bit,
 * the payload's top bit, set), in every direction: fp32 -> bf16 keeps the sign and the top 7
 * payload bits, fp32 -> f16 the top 10, f16 -> fp32 shifts the 10 back up (a signalling f16 NaN
 * comes back quiet), bf16 -> fp32 is exact (the bits shifted up; it never changes a value).
 * This is what the hardware does (VCVTNEPS2BF16; F16C's VCVTPS2PH / VCVTPH2PS), so the SIMD
 * kernels that use those instructions agree with these scalars bit for bit.
 * PyTorch has no single rule (torch 2.15, measured): fp32 -> f16 keeps sign and payload as here,
 * in its scalar and vectorized paths; fp32 -> bf16 gives 0x7FC0 for every NaN in its scalar path
 * (c10::BFloat16) and with ATEN_CPU_CAPABILITY=default, but 0xFFFF in its AVX2 / AVX-512
 * vectorized path; f16 -> fp32 gives 0x7FFFFFFF in its scalar path and keeps sign and payload,
 * quieted, in its vectorized one. No NaN is a number, so none of this moves a loss or a
 * gradient; the rule is stated so that a NaN's sign and origin survive a round trip.
 *
 * Every bf16 and f16 pattern, and every rounding case, is tested in tests/half_test.c.
 */
#ifndef FT_BASE_HALF_H
#define FT_BASE_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t half_bits_(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float half_float_(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* bf16 -> fp32: exact (the bf16 is the upper half of the fp32). */
static inline float bf16_to_f32(uint16_t h) { return half_float_((uint32_t)h << 16); }

/* fp32 -> bf16, round to nearest even; NaN: sign and top payload bits kept, quiet. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = half_bits_(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* add just under half the dropped step, plus the kept lsb */
    return (uint16_t)(u >> 16);
}

/* f16 -> fp32: exact for numbers; NaN: sign and payload kept, quiet. */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 0x3ffu, u;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in fp32 */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        u = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);
    else
        u = sign | ((e + 112u) << 23) | (m << 13);
    return half_float_(u);
}

/* fp32 -> f16, round to nearest even; NaN: sign and top 10 payload bits kept, quiet. */
static inline uint16_t f32_to_f16(float f) {
    uint32_t u = half_bits_(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (or inf): inf */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        int e = (int)(a >> 23);
        if (e < 102) return sign; /* below 2^-25: zero (2^-25 itself ties to 0 below) */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - e; /* value = m * 2^(e-150) = (m >> shift) units of 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias the exponent (127 -> 15), round the 13 dropped bits to even; a carry moves
     * into the exponent */
    uint32_t r = a - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

#endif
