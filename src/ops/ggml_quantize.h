/*
 * ggml_quantize.h: fp32 rows to GGUF's block-quantized types, byte for byte as llama.cpp writes
 * them (ggml's reference quantizers, which llama_model_quantize and gguf-py use).
 *
 * Q8_0 (ggml-quants.c quantize_row_q8_0_ref): per block of 32, amax = max |x|, d = amax / 127,
 * id = 1 / d (0 when d is 0), q = roundf(x * id) (half away from zero), d stored as f16
 * (rounded to nearest even).
 * Q4_0 (quantize_row_q4_0_ref): per block of 32, max = the value of largest magnitude (the first
 * one on a tie), d = max / -8, id = 1 / d (0 when d is 0), q = min(15, (int8)(x * id + 8.5))
 * (truncation toward zero), d stored as f16; value j < 16 in the low nibble of byte j, value
 * j + 16 in its high nibble.
 * F32, F16 and BF16 are converted (f16 and bf16 rounded to nearest even, base/half.h).
 */
#ifndef FT_OPS_GGML_QUANTIZE_H
#define FT_OPS_GGML_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* n values (a whole number of blocks of `type`) from src to dst, in the type's layout
 * (ops/ggml_quants.h). Returns 0, or -1 for a type not quantized here or n not whole blocks. */
int ggml_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

#endif
