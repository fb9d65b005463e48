/*
 * ggml_quants.c: the GGUF tensor type table and the portable dequantization of F32, F16, BF16,
 * Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (layouts in ggml_quants.h).
 *
 * Sources (facts taken, code written fresh): the block structs of ggml's ggml-common.h
 * (block_q4_0 ... block_q6_K), the sizes of gguf-py 0.19.0's
 * GGML_QUANT_SIZES, and the dequantize_blocks methods of gguf-py's gguf/quants.py, which are the
 * definition the peer tests compare with bit for bit. These functions are the reference that any
 * faster kernel for these types is to be tested against.
 *
 * Rounding: each product and difference is its own fp32 operation (gguf-py computes them as
 * separate numpy operations). GCC does not contract a*b - c into an fma under -std=c11, and this
 * file is compiled without -mfma; clang contracts within an expression by default, hence the
 * pragma. f16 and bf16 values are widened by base/half.h, ftune's one conversion: exact for
 * numbers; a signalling NaN comes back quiet (as F16C's vcvtph2ps does), where numpy keeps the
 * payload as it is, so only NaN bit patterns can differ from gguf-py.
 */
#include "ops/ggml_quants.h"
#include "base/half.h"

#include <stdio.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

static uint16_t load16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* ---- one function per type: n values from whole blocks ----------------------------------- */

static void dequant_f32(const void *src, float *dst, size_t n) { memcpy(dst, src, n * 4); }

static void dequant_f16(const void *src, float *dst, size_t n) {
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_to_f32(load16(p + 2 * i));
}

static void dequant_bf16(const void *src, float *dst, size_t n) {
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(load16(p + 2 * i));
}

/* block_q8_0: f16 d, int8 q[32] */
static void dequant_q8_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += 32, b += 34, dst += 32) {
        float d = f16_to_f32(load16(b));
        const int8_t *q = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++)
            dst[j] = d * (float)q[j];
    }
}

/* block_q4_0: f16 d, uint8 qs[16]; values 0..15 in the low nibbles, 16..31 in the high ones */
static void dequant_q4_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += 32, b += 18, dst += 32) {
        float d = f16_to_f32(load16(b));
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((qs[j] & 0x0F) - 8);
            dst[j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

/* The 32 values of a Q4_1 / Q5_0 / Q5_1 block: value j < 16 from the low nibble of qs[j], value
 * j + 16 from its high nibble; the 5-bit types add bit j of the little-endian u32 qh as bit 4.
 * x = d * (q - off) for Q5_0 (off 16); x = d * q + m for Q4_1 and Q5_1 (m: the block's f16 min). */
static void dequant_32(const uint8_t *qs, uint32_t qh, int bits5, float d, int off, float *dst) {
    for (int j = 0; j < 16; j++) {
        int lo = qs[j] & 0x0F, hi = qs[j] >> 4;
        if (bits5) lo |= (int)(qh >> j & 1) << 4, hi |= (int)(qh >> (j + 16) & 1) << 4;
        dst[j] = d * (float)(lo - off);
        dst[j + 16] = d * (float)(hi - off);
    }
}

static uint32_t load32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* block_q4_1: f16 d, f16 m, uint8 qs[16] */
static void dequant_q4_1(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += 32, b += 20, dst += 32) {
        float m = f16_to_f32(load16(b + 2));
        dequant_32(b + 4, 0, 0, f16_to_f32(load16(b)), 0, dst);
        for (int j = 0; j < 32; j++)
            dst[j] = dst[j] + m;
    }
}

/* block_q5_0: f16 d, uint8 qh[4], uint8 qs[16] */
static void dequant_q5_0(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += 32, b += 22, dst += 32)
        dequant_32(b + 6, load32(b + 2), 1, f16_to_f32(load16(b)), 16, dst);
}

/* block_q5_1: f16 d, f16 m, uint8 qh[4], uint8 qs[16] */
static void dequant_q5_1(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += 32, b += 24, dst += 32) {
        float m = f16_to_f32(load16(b + 2));
        dequant_32(b + 8, load32(b + 4), 1, f16_to_f32(load16(b)), 0, dst);
        for (int j = 0; j < 32; j++)
            dst[j] = dst[j] + m;
    }
}

/* block_q2_K: uint8 scales[16], uint8 qs[64], f16 d, f16 dmin. 16 sub-blocks of 16; scales[s]
 * holds sub-block s's 4-bit scale (low nibble) and 4-bit min (high). Two halves of 128 values,
 * each from 32 bytes of qs: value l (0..31) of quarter k is bits 2k..2k+1 of qs[l];
 * x = (d * scale) * q - (dmin * min). */
static void dequant_q2_k(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += GGML_QK_K, b += 84) {
        const uint8_t *sc = b, *qs = b + 16;
        float d = f16_to_f32(load16(b + 80)), dmin = f16_to_f32(load16(b + 82));
        for (int half = 0; half < 2; half++, qs += 32)
            for (int k = 0; k < 4; k++, dst += 32)
                for (int l = 0; l < 32; l++) {
                    int s = sc[half * 8 + k * 2 + l / 16];
                    float dl = d * (float)(s & 0x0F), ml = dmin * (float)(s >> 4);
                    float dq = dl * (float)(qs[l] >> (2 * k) & 3);
                    dst[l] = dq - ml;
                }
    }
}

/* block_q3_K: uint8 hmask[32], uint8 qs[64], uint8 scales[12], f16 d. 16 sub-blocks of 16 with
 * 6-bit scales (minus 32): the low 4 bits of scale s are the low (s < 8) or high (s >= 8) nibble
 * of scales[s % 8], its top 2 bits bits 2(s/4)..2(s/4)+1 of scales[8 + s % 4]. Value l (0..31) of
 * quarter k of half h: 2 low bits as Q2_K's (bits 2k.. of qs[32h + l]); minus 4 where bit 4h+k of
 * hmask[l] is clear. x = (d * scale) * q. */
static void dequant_q3_k(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += GGML_QK_K, b += 110) {
        const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
        float d = f16_to_f32(load16(b + 108));
        for (int half = 0; half < 2; half++, qs += 32)
            for (int k = 0; k < 4; k++, dst += 32)
                for (int l = 0; l < 32; l++) {
                    int s = half * 8 + k * 2 + l / 16;
                    int lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0F;
                    int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
                    float dl = d * (float)((lo | hi << 4) - 32);
                    int q = (qs[l] >> (2 * k) & 3) - ((hm[l] >> (4 * half + k) & 1) ? 0 : 4);
                    dst[l] = dl * (float)q;
                }
    }
}

/* block_q4_K: f16 d, f16 dmin, uint8 scales[12], uint8 qs[128] */
static void dequant_q4_k(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += GGML_QK_K, b += 144) {
        float d = f16_to_f32(load16(b)), dmin = f16_to_f32(load16(b + 2));
        const uint8_t *scales = b + 4, *qs = b + 16;
        for (int g = 0; g < 4; g++, qs += 32) { /* sub-blocks 2g (low nibbles), 2g+1 (high) */
            for (int h = 0; h < 2; h++, dst += 32) {
                int sc, m;
                ggml_q4_k_scale_min(scales, 2 * g + h, &sc, &m);
                float ds = d * (float)sc, dm = dmin * (float)m;
                for (int l = 0; l < 32; l++) {
                    float q = (float)((qs[l] >> (4 * h)) & 0x0F);
                    float dq = ds * q;
                    dst[l] = dq - dm;
                }
            }
        }
    }
}

/* block_q5_K: f16 d, f16 dmin, uint8 scales[12] (as Q4_K's), uint8 qh[32], uint8 qs[128]: Q4_K
 * with a fifth bit, bit s of qh[l] for value l of sub-block s */
static void dequant_q5_k(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += GGML_QK_K, b += 176) {
        float d = f16_to_f32(load16(b)), dmin = f16_to_f32(load16(b + 2));
        const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
        for (int s = 0; s < 8; s++, dst += 32) {
            int sc, m;
            ggml_q4_k_scale_min(scales, s, &sc, &m);
            float ds = d * (float)sc, dm = dmin * (float)m;
            const uint8_t *q = qs + 32 * (s / 2);
            for (int l = 0; l < 32; l++) {
                int v = (q[l] >> (4 * (s & 1)) & 0x0F) | (qh[l] >> s & 1) << 4;
                float dq = ds * (float)v;
                dst[l] = dq - dm;
            }
        }
    }
}

/* block_q6_K: uint8 ql[128], uint8 qh[64], int8 scales[16], f16 d. Two halves of 128 values,
 * each from 64 bytes of ql and 32 of qh: value l (0..31) of quarter k takes the low (k = 0, 1)
 * or high (k = 2, 3) nibble of ql[l + 32 * (k & 1)] and bits 2k..2k+1 of qh[l]. */
static void dequant_q6_k(const void *src, float *dst, size_t n) {
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i += GGML_QK_K, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *scales = (const int8_t *)(b + 192);
        float d = f16_to_f32(load16(b + 208));
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, scales += 8, dst += 128) {
            for (int k = 0; k < 4; k++) {
                for (int l = 0; l < 32; l++) {
                    int lo = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0x0F;
                    int hi = (qh[l] >> (2 * k)) & 3;
                    float ds = d * (float)scales[2 * k + l / 16];
                    dst[32 * k + l] = ds * (float)((lo | hi << 4) - 32);
                }
            }
        }
    }
}

/* ---- the table ----------------------------------------------------------------------------- */

#define K GGML_QK_K
static const ggml_type_traits types[GGML_TYPE_ID_LIMIT] = {
    [0] = {"F32", 1, 4, dequant_f32},
    [1] = {"F16", 1, 2, dequant_f16},
    [2] = {"Q4_0", 32, 2 + 16, dequant_q4_0},
    [3] = {"Q4_1", 32, 2 + 2 + 16, dequant_q4_1},
    [6] = {"Q5_0", 32, 2 + 4 + 16, dequant_q5_0},
    [7] = {"Q5_1", 32, 2 + 2 + 4 + 16, dequant_q5_1},
    [8] = {"Q8_0", 32, 2 + 32, dequant_q8_0},
    [9] = {"Q8_1", 32, 4 + 4 + 32, NULL},
    [10] = {"Q2_K", K, 2 + 2 + K / 16 + K / 4, dequant_q2_k},
    [11] = {"Q3_K", K, 2 + K / 4 + K / 8 + 12, dequant_q3_k},
    [12] = {"Q4_K", K, 2 + 2 + K / 2 + 12, dequant_q4_k},
    [13] = {"Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12, dequant_q5_k},
    [14] = {"Q6_K", K, 2 + K / 2 + K / 4 + K / 16, dequant_q6_k},
    [15] = {"Q8_K", K, 4 + K + K / 8, NULL},
    [16] = {"IQ2_XXS", K, 2 + K / 4, NULL},
    [17] = {"IQ2_XS", K, 2 + K / 4 + K / 32, NULL},
    [18] = {"IQ3_XXS", K, 2 + K / 4 + K / 8, NULL},
    [19] = {"IQ1_S", K, 2 + K / 8 + K / 16, NULL},
    [20] = {"IQ4_NL", 32, 2 + 16, NULL},
    [21] = {"IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4, NULL},
    [22] = {"IQ2_S", K, 2 + K / 4 + K / 16, NULL},
    [23] = {"IQ4_XS", K, 2 + 2 + K / 2 + K / 64, NULL},
    [24] = {"I8", 1, 1, NULL},
    [25] = {"I16", 1, 2, NULL},
    [26] = {"I32", 1, 4, NULL},
    [27] = {"I64", 1, 8, NULL},
    [28] = {"F64", 1, 8, NULL},
    [29] = {"IQ1_M", K, K / 8 + K / 16 + K / 32, NULL},
    [30] = {"BF16", 1, 2, dequant_bf16},
    [34] = {"TQ1_0", K, 2 + 4 * 13, NULL},
    [35] = {"TQ2_0", K, 2 + 64, NULL},
    [39] = {"MXFP4", 32, 1 + 16, NULL},
    [40] = {"NVFP4", 64, 4 + 32, NULL},
    [41] = {"Q1_0", 128, 2 + 16, NULL},
};
#undef K

const ggml_type_traits *ggml_type_info(uint32_t type) {
    return type < GGML_TYPE_ID_LIMIT && types[type].name ? &types[type] : NULL;
}

int ggml_dequant_row(uint32_t type, const void *src, float *dst, size_t n) {
    const ggml_type_traits *t = ggml_type_info(type);
    if (!t || !t->dequant_row || n % (size_t)t->block_values) return -1;
    t->dequant_row(src, dst, n);
    return 0;
}

const char *ggml_dequant_types(char *buf, size_t n) {
    size_t k = 0;
    if (n) buf[0] = 0;
    for (unsigned t = 0; t < GGML_TYPE_ID_LIMIT; t++)
        if (types[t].dequant_row && k < n)
            k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? ", " : "", types[t].name);
    return buf;
}
