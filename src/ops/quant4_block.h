/*
 * quant4_block.h: the SIMD kernels of quant4_quantize's full blocks (quant4.c). A kernel takes one
 * block x (n values, a multiple of 8) and the type's table (bounds: the 15 ascending midpoints;
 * order: the code index of each bucket), writes the block's n / 2 bytes to packed (which starts
 * on an even value) and returns its absmax (max |x|, NaN skipped), as the scalar loop does.
 */
#ifndef FT_OPS_QUANT4_BLOCK_H
#define FT_OPS_QUANT4_BLOCK_H

#include <stdint.h>

float quant4_block_avx2(const float *x, int n, const float *bounds, const int *order,
                        uint8_t *packed);

#endif
