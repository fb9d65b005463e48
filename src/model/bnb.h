/*
 * bnb.h: read the 4-bit linear weights of a checkpoint that transformers saved with
 * BitsAndBytesConfig(load_in_4bit=True, ...) (the layout model/quantize.c writes):
 *   NAME  U8 [ceil(n/2), 1] packed codes; NAME.absmax (F32, or U8 codes when double-quantized);
 *   NAME.quant_map F32 [16]; NAME.nested_absmax F32; NAME.nested_quant_map F32 [256];
 *   NAME.quant_state.bitsandbytes__nf4|__fp4  U8 JSON {quant_type, blocksize, dtype, shape,
 *   nested_blocksize, nested_offset, ...}.
 */
#ifndef FT_MODEL_BNB_H
#define FT_MODEL_BNB_H
#include "ftune.h"
#include "io/safetensors.h"
#include "ops/qtensor.h"

/* 1 when the set holds NAME as a bitsandbytes 4-bit weight (NAME.quant_state.* present). */
int bnb_has_weight(const st_set *s, const char *name);
/* NAME -> qtensor of shape (rows, cols) in NF4/FP4, data borrowed from the mapping where it can
 * be (the qtensor must not outlive the set). Checks every part against the quant_state and the
 * expected shape; errors name the tensor and field. */
ft_status bnb_load_weight(const st_set *s, const char *name, int rows, int cols, qtensor *out,
                          ft_error *err);
/* The [rows, cols] its quant_state gives (after checking the quant_state as bnb_load_weight
 * does), for tools that do not know the model's shapes (ftune inspect --bnb). */
ft_status bnb_weight_shape(const st_set *s, const char *name, int *rows, int *cols,
                           ft_error *err);
#endif
