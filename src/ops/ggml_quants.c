/*
 * ggml_quants.c: the GGUF tensor type table and the portable dequantization of F32, F16, BF16,
 * Q8_0, Q4_0, Q4_K and Q6_K (layouts in ggml_quants.h).
 *
 * Sources (facts taken, code written fresh): the block structs of ggml's ggml-common.h
 * (block_q4_0, block_q8_0, block_q4_K, block_q6_K), the sizes of gguf-py 0.19.0's
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
    [3] = {"Q4_1", 32, 2 + 2 + 16, NULL},
    [6] = {"Q5_0", 32, 2 + 4 + 16, NULL},
    [7] = {"Q5_1", 32, 2 + 2 + 4 + 16, NULL},
    [8] = {"Q8_0", 32, 2 + 32, dequant_q8_0},
    [9] = {"Q8_1", 32, 4 + 4 + 32, NULL},
    [10] = {"Q2_K", K, 2 + 2 + K / 16 + K / 4, NULL},
    [11] = {"Q3_K", K, 2 + K / 4 + K / 8 + 12, NULL},
    [12] = {"Q4_K", K, 2 + 2 + K / 2 + 12, dequant_q4_k},
    [13] = {"Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12, NULL},
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
