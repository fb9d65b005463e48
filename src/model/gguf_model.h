/*
 * gguf_model.h: a GGUF file as a model (`--model FILE.gguf`): its config from the metadata and
 * its weights by GGUF tensor name, in the same model / model_config / model_quant structs a
 * Hugging Face folder fills (gguf_model.c says how names, shapes and RoPE rows are mapped).
 */
#ifndef FT_MODEL_GGUF_MODEL_H
#define FT_MODEL_GGUF_MODEL_H

#include "model/model.h"

/* 1 when path is a regular file named *.gguf or starting with the GGUF magic. */
int gguf_model_is(const char *path);
/* The model_config of a GGUF file (architectures llama, qwen2, qwen3). FT_ERR_INPUT naming the
 * file and the key for an unknown architecture, a missing key or a value out of range. */
ft_status gguf_config_load(const char *path, model_config *cfg, ft_error *err);
/* model_quant_resolve for a GGUF file: the linear layers keep their stored type when qtensor
 * has it (F32, F16, BF16, Q8_0, the same in every linear layer), else fp32; --quant / --dtype
 * as for a folder. */
ft_status gguf_quant_resolve(const char *path, const model_config *c, const model_load_options *opt,
                             model_quant *q, ft_error *err);
/* model_load_with for a GGUF file. */
ft_status gguf_model_load(const char *path, const model_load_options *opt, model *m, ft_error *err);

#endif
