/*
 * qtensor_kernels.h: what qtensor.c shares with its SIMD files (qtensor_avx2.c,
 * qtensor_avx512.c) and nobody else: the kernel-set table one ISA fills, and the scalar helpers
 * every version must compute the same way (so that dequantization is bit-identical across ISAs;
 * the f16 / bf16 conversions are base/half.h's).
 */
#ifndef FT_OPS_QTENSOR_KERNELS_H
#define FT_OPS_QTENSOR_KERNELS_H

#include "base/cpu.h"
#include "base/half.h"
#include "ops/ggml_quants.h"
#include "ops/qtensor.h"

#include <string.h>

/* Dot products of rows r .. r+3 with x into out[0..3]: bit for bit what four qdot_fn calls of
 * the same ISA give (the rows only share the loads of x). */
typedef void (*qdot4_fn)(const qtensor *t, int r, const float *x, float out[4]);

/* One ISA's kernels, one entry per format; NULL means "use the portable one" (for dot4: four
 * calls of this set's dot). */
typedef struct qkernels {
    const char *isa;
    cpu_isa level; /* what the CPU must run (cpu.h) */
    qdequant_fn dequant[QF_COUNT];
    qdot_fn dot[QF_COUNT];
    qdot4_fn dot4[QF_COUNT];
} qkernels;

extern const qkernels qtensor_kernels_avx2;   /* qtensor_avx2.c */
extern const qkernels qtensor_kernels_avx512; /* qtensor_avx512.c */

/* The 16 values a 4-bit code dequantizes to (NF4 or FP4): quant4_code's, except FP4 code 8 is
 * -0.0, as quant4_dequantize (and bitsandbytes' CPU kernel) gives it. */
const float *qt_dequant_code(qformat f);

/* GGUF block_q8_0: { f16 d; int8 q[32] }, packed, 34 bytes; block_q4_0 (32 values, 18 bytes),
 * block_q4_K and block_q6_K (256 values, 144 and 210 bytes): layouts in ops/ggml_quants.h. */
enum { Q8_0_VALUES = 32, Q8_0_BYTES = 34, Q4_0_VALUES = 32, Q4_0_BYTES = 18 };
enum { Q4_K_BYTES = 144, Q6_K_BYTES = 210 };

/* The GGUF type id of a GGUF block format (ggml_quants.h's GGML_TYPE_*). */
static inline uint32_t qt_ggml_type(qformat f) {
    return f == QF_Q4_0   ? GGML_TYPE_Q4_0
           : f == QF_Q4_K ? GGML_TYPE_Q4_K
           : f == QF_Q6_K ? GGML_TYPE_Q6_K
                          : GGML_TYPE_Q8_0;
}

/* The first block of row r of a tensor in a GGUF block format (Q8_0, Q4_0, Q4_K, Q6_K). */
static inline const uint8_t *qt_row(const qtensor *t, int r) {
    size_t bv = t->fmt == QF_Q4_K || t->fmt == QF_Q6_K ? 256 : 32;
    size_t bb = t->fmt == QF_Q4_0   ? Q4_0_BYTES
                : t->fmt == QF_Q4_K ? Q4_K_BYTES
                : t->fmt == QF_Q6_K ? Q6_K_BYTES
                                    : Q8_0_BYTES;
    return (const uint8_t *)t->data + (size_t)r * ((size_t)t->cols / bv) * bb;
}

/* An f16 stored (little-endian, unaligned) at p, widened. */
static inline float qt_f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return f16_to_f32(h);
}

/* The absmax of 4-bit block b: stored, or rebuilt from double quantization as bitsandbytes'
 * dequantize_blockwise + offset does it (code * nested absmax rounded to fp32, then + offset).
 * Two statements so that no compiler contracts them into one fma. */
static inline float qt_block_absmax(const qtensor *t, size_t b) {
    if (t->absmax) return t->absmax[b];
    float scaled =
        t->nested_code[t->absmax_q[b]] * t->nested_absmax[b / (size_t)t->nested_blocksize];
    return scaled + t->offset;
}

/* Byte i/2 of packed 4-bit codes holds value i in its high nibble when i is even. */
static inline int qt_nibble(const uint8_t *p, size_t i) {
    return i % 2 == 0 ? p[i / 2] >> 4 : p[i / 2] & 15;
}

#endif
