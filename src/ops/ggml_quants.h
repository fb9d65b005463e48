/*
 * ggml_quants.h: the tensor types of GGUF files (ggml's `ggml_type`) and their dequantization
 * to fp32, one row of blocks at a time.
 *
 * One table (ggml_quants.c) has a row per type id: name, values per block, bytes per block, and
 * the portable dequantization, or NULL where ftune does not dequantize that type yet. The ids,
 * names and sizes are those of gguf-py 0.19.0 (`GGMLQuantizationType`, `GGML_QUANT_SIZES` in
 * gguf/constants.py), which mirror ggml's ggml.h / ggml.c type traits.
 *
 * Layouts of the types ftune dequantizes (ggml's ggml-common.h; QK_K = 256; f16 is IEEE half):
 *   F32, F16, BF16  one value per "block".
 *   Q8_0   32 values: { f16 d; int8 q[32] } (34 bytes); x = d * q.
 *   Q4_0   32 values: { f16 d; uint8 qs[16] } (18 bytes); value j < 16 is the low nibble of
 *          qs[j], value j + 16 its high nibble; x = d * (nibble - 8).
 *   Q4_K   256 values in 8 sub-blocks of 32: { f16 d; f16 dmin; uint8 scales[12];
 *          uint8 qs[128] } (144 bytes). Each sub-block s has a 6-bit scale sc[s] and a 6-bit min
 *          m[s] packed into scales[] (see ggml_quants.c); qs holds 4 groups of 32 bytes, group g
 *          giving sub-block 2g in its low nibbles and 2g+1 in its high ones;
 *          x = (d * sc[s]) * q - (dmin * m[s]).
 *   Q6_K   256 values in 16 sub-blocks of 16: { uint8 ql[128]; uint8 qh[64]; int8 scales[16];
 *          f16 d } (210 bytes); q = (4 low bits from ql) | (2 high bits from qh) << 4, minus 32;
 *          x = (d * scales[i / 16]) * q.
 *   Q4_1   32 values: { f16 d; f16 m; uint8 qs[16] } (20 bytes); nibbles as Q4_0; x = d * q + m.
 *   Q5_0   32 values: { f16 d; uint8 qh[4]; uint8 qs[16] } (22 bytes); nibbles as Q4_0, bit j of
 *          the little-endian u32 qh the 5th bit of value j; x = d * (q - 16).
 *   Q5_1   32 values: { f16 d; f16 m; uint8 qh[4]; uint8 qs[16] } (24 bytes); x = d * q + m.
 *   Q2_K   256 values in 16 sub-blocks of 16: { uint8 scales[16]; uint8 qs[64]; f16 d;
 *          f16 dmin } (84 bytes); scales[s]: 4-bit scale (low nibble), 4-bit min (high); value
 *          128h + 32k + l is bits 2k..2k+1 of qs[32h + l]; x = (d * sc) * q - (dmin * m).
 *   Q3_K   256 values in 16 sub-blocks of 16: { uint8 hmask[32]; uint8 qs[64]; uint8
 *          scales[12]; f16 d } (110 bytes); 6-bit scales minus 32 (low 4 bits: nibble s / 8 of
 *          byte s % 8; high 2: bits 2(s / 4) of byte 8 + s % 4); q = Q2_K's 2 bits, minus 4 where
 *          bit 4h + k of hmask[l] is clear; x = (d * sc) * q.
 *   Q5_K   256 values: { f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128] } (176
 *          bytes): Q4_K with a 5th bit, bit s of qh[l] for value l of sub-block s.
 * Every product and difference is rounded to fp32 separately, as gguf-py's numpy code and ggml's
 * dequantize_row_* reference functions compute them, so the results are bit-identical to
 * gguf.quants.dequantize (tests/peers/test_gguf.py checks this).
 */
#ifndef FT_OPS_GGML_QUANTS_H
#define FT_OPS_GGML_QUANTS_H

#include <stddef.h>
#include <stdint.h>

/* Type ids as stored in a GGUF tensor info (gguf-py GGMLQuantizationType). Ids 4 and 5 were
 * Q4_2 / Q4_3, removed from ggml; 31-33 and 36-38 were never used in files. */
enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_ID_LIMIT = 42 /* every known id is below this */
};

#define GGML_QK_K 256

/* n values (a whole number of blocks) from the blocks at src to dst. */
typedef void (*ggml_dequant_fn)(const void *src, float *dst, size_t n);

typedef struct ggml_type_traits {
    const char *name;            /* "F32", "Q4_K", ... as gguf-py names them */
    int block_values;            /* values per block (1 for F32 / F16 / BF16) */
    size_t block_bytes;          /* bytes per block */
    ggml_dequant_fn dequant_row; /* NULL: ftune cannot dequantize this type */
} ggml_type_traits;

/* The 6-bit scale and min of Q4_K sub-block s (0..7) from the block's 12 packed scale bytes:
 * bytes 0-3 hold the low 6 bits of scales 0-3 (their top 2 bits: the high bits of scales 4-7),
 * bytes 4-7 the same for mins, bytes 8-11 the low 4 bits of scale (low nibble) and min (high
 * nibble) 4-7 (ggml-common.h's block_q4_K, get_scale_min_k4 in ggml-quants.c). */
static inline void ggml_q4_k_scale_min(const uint8_t *sc, int s, int *scale, int *min) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *min = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

/* The traits of type id `type`, or NULL for an id no ggml version has used. */
const ggml_type_traits *ggml_type_info(uint32_t type);

/* Dequantize n values (n a multiple of the type's block_values; src at a block boundary) of
 * type `type` to fp32. Returns 0, or -1 when the type is unknown or not dequantized by ftune or
 * n is not a whole number of blocks (dst untouched). */
int ggml_dequant_row(uint32_t type, const void *src, float *dst, size_t n);

/* The names of the types ggml_dequant_row handles, in id order, for messages:
 * "F32, F16, Q4_0, ..." written into buf (n bytes; 64 is enough); returns buf. */
const char *ggml_dequant_types(char *buf, size_t n);

#endif
