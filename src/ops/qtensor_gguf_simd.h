/*
 * qtensor_gguf_simd.h: the integer unpacking of GGUF's Q4_0, Q4_K and Q6_K blocks into signed or
 * unsigned bytes, one 128/256-bit vector of values at a time, shared by qtensor_avx2.c and
 * qtensor_avx512.c (both builds have AVX2). Each ISA file turns the bytes into floats its own
 * width at a time and applies the scales as the portable reference does (ggml_quants.c), so the
 * dequantized values are bit-identical to ggml_dequant_row's.
 *
 * Layouts (ggml-common.h; ops/ggml_quants.h):
 *   Q4_0  { f16 d; uint8 qs[16] }: value j < 16 is the low nibble of qs[j], value j + 16 the
 *         high one; x = d * (nibble - 8).
 *   Q4_K  { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128] }: 32-byte group g of qs holds
 *         sub-block 2g in its low nibbles and 2g + 1 in its high ones.
 *   Q6_K  { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d }: per half of 128 values,
 *         64 bytes of ql and 32 of qh; quarter k (32 values) is the low (k < 2) or high nibble
 *         of ql[32 * (k & 1) + l] with bits 2k..2k+1 of qh[l] above them, minus 32; its values
 *         0-15 have scale 2k of the half, 16-31 scale 2k + 1.
 */
#ifndef FT_OPS_QTENSOR_GGUF_SIMD_H
#define FT_OPS_QTENSOR_GGUF_SIMD_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* The f16 at p (little-endian, unaligned) widened by F16C's vcvtph2ps: the same value as
 * base/half.h's f16_to_f32 (exact for numbers; a NaN comes back quiet in both), in one
 * instruction instead of a dozen. */
static inline float f16c_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Q4_0: the block's 32 values nibble - 8 as int8: lo holds values 0..15, hi 16..31. */
static inline void q4_0_bytes(const uint8_t *blk, __m128i *lo, __m128i *hi) {
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    *lo = _mm_sub_epi8(_mm_and_si128(q, m), eight);
    *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m), eight);
}

/* Q4_K: group g's 32 bytes as the 32 nibbles 0..15 of sub-block 2g (lo) and 2g + 1 (hi). */
static inline void q4_k_bytes(const uint8_t *qs, __m256i *lo, __m256i *hi) {
    __m256i q = _mm256_loadu_si256((const __m256i *)qs), m = _mm256_set1_epi8(15);
    *lo = _mm256_and_si256(q, m);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
}

/* Q6_K: the four quarters of one half (ql: its 64 bytes, qh: its 32) as int8 values -32..31. */
static inline void q6_k_bytes(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
    __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    /* the two high bits, masked before the shift so that no bit crosses into the next byte */
    __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(h, m2), 4);
    __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4);
    __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4);
    __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4);
    q[0] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l0, m4), h0), c32);
    q[1] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l1, m4), h1), c32);
    q[2] =
        _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2), c32);
    q[3] =
        _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3), c32);
}

#endif
