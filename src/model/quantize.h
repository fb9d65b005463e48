/* quantize.h: write a bitsandbytes 4-bit checkpoint of a model folder (see quantize.c). */
#ifndef FT_MODEL_QUANTIZE_H
#define FT_MODEL_QUANTIZE_H
#include "ftune.h"
#include "ops/quant.h"

#include <stddef.h>
#include <stdint.h>
ft_status model_quantize_bnb4(const char *in_dir, const char *out_dir, quant4_type type,
                              int blocksize, int double_quant, int overwrite, ft_error *err);
/* The quant_state JSON of one 4-bit weight, as bitsandbytes writes it (also for fold.c's
 * re-quantized merge); returns its length. */
int bnb4_state_json(char *buf, size_t size, quant4_type type, int blocksize, const char *dtype,
                    int64_t rows, int64_t cols, int double_quant, float offset);
#endif
