/*
 * quant.h: 4-bit block quantization of frozen weights, bit-compatible with bitsandbytes.
 *
 * NF4 and FP4 as bitsandbytes 0.50 quantizes them (its "default" torch kernel, which the CPU
 * backend uses): per block of `blocksize` values, absmax = max |x|; scaled = clamp(x * (1/absmax),
 * -1, 1) in fp32; the code index is the number of midpoints between sorted code values that are
 * below `scaled` (torch.bucketize, right=False), mapped back to the code's own order; two codes per
 * byte, the first in the high nibble. Dequantization is code[q] * absmax in fp32.
 * The code values are the ones bitsandbytes.functional.get_4bit_type returns (NF4: the QLoRA
 * paper's normal-float levels).
 */
#ifndef FT_OPS_QUANT_H
#define FT_OPS_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum quant4_type { QUANT_NF4, QUANT_FP4 } quant4_type;

/* The 16 code values of a type, in index order. */
const float *quant4_code(quant4_type t);
const char *quant4_name(quant4_type t);

/* Bytes of packed codes for n values: ceil(n / 2). Blocks: ceil(n / blocksize). */
static inline size_t quant4_packed_bytes(size_t n) { return (n + 1) / 2; }
static inline size_t quant4_blocks(size_t n, int blocksize) {
    return (n + (size_t)blocksize - 1) / (size_t)blocksize;
}

/* x (n) -> packed (quant4_packed_bytes(n)), absmax (quant4_blocks(n, blocksize)). */
void quant4_quantize(quant4_type t, const float *x, size_t n, int blocksize, uint8_t *packed,
                     float *absmax);
/* The kernel quant4_quantize runs for full blocks at the current ISA level: "avx2" or
 * "portable" (the scalar loop, the reference; blocks not a multiple of 8 values always take it). */
const char *quant4_isa(void);
/* packed, absmax -> out (n), bit for bit as bitsandbytes' CPU dequantize_4bit (FP4 code 8 gives
 * -0.0 there, though quant4_code(QUANT_FP4)[8] is +0.0 as in its quant_map). */
void quant4_dequantize(quant4_type t, const uint8_t *packed, const float *absmax, size_t n,
                       int blocksize, float *out);

/* ---- double quantization (bitsandbytes compress_statistics=True) ----------------------
 * The absmax values of n blocks, as quantize_4bit(compress_statistics=True) stores them:
 * offset = absmax.mean() (as torch computes it in fp32), then quantize_blockwise(absmax - offset,
 * blocksize=256) with the signed dynamic 8-bit map: codes (n), nested_absmax (ceil(n/256)). */
const float *quant8_dynamic_code(void); /* the 256 values of bitsandbytes' create_dynamic_map() */
void quant4_double_quant(const float *absmax, size_t n, uint8_t *codes, float *nested_absmax,
                         float *offset);
/* absmax (n) = code[codes[i]] * nested_absmax[i / 256] + offset, as dequantize_blockwise does. */
void quant4_double_dequant(const uint8_t *codes, const float *nested_absmax, float offset, size_t n,
                           float *absmax);

/* bitsandbytes' default 4-bit block size (Linear4bit / quantize_4bit blocksize=64): the one
 * place ftune writes it (train --quant-blocksize, quantize, a checkpoint's missing field). */
#define FT_QUANT_BLOCKSIZE_DEFAULT 64
/* Values per nested block of double quantization (bitsandbytes' fixed 256). */
enum { QUANT8_BLOCK = 256 };
/* torch's fp32 CPU sum and mean of x (n), bit for bit, for T intra-op threads (torch 2.15, any
 * x86-64 CPU); quant4_double_quant takes the mean as its offset, as bitsandbytes does. */
float quant4_torch_sum(const float *x, size_t n, int T);
float quant4_torch_mean(const float *x, size_t n, int T);

#endif
