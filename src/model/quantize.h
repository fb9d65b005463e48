/* quantize.h: write a bitsandbytes 4-bit checkpoint of a model folder (see quantize.c). */
#ifndef FT_MODEL_QUANTIZE_H
#define FT_MODEL_QUANTIZE_H
#include "ftune.h"
#include "ops/quant.h"
ft_status model_quantize_bnb4(const char *in_dir, const char *out_dir, quant4_type type,
                              int blocksize, int double_quant, int overwrite, ft_error *err);
#endif
