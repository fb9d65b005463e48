/*
 * gguf_export.h: `ftune export`: a Hugging Face model folder (with a LoRA adapter merged in, or
 * not) as one GGUF file llama.cpp loads, and a LoRA adapter as a GGUF adapter file llama.cpp
 * applies with --lora. docs/merge.md ("Export to GGUF") says what is written and against what
 * it is tested.
 */
#ifndef FT_MERGE_GGUF_EXPORT_H
#define FT_MERGE_GGUF_EXPORT_H

#include "ftune.h"
#include "merge/merge.h"

typedef struct gguf_export_options {
    const char *model;   /* Hugging Face model folder, or a GGUF model file */
    const char *adapter; /* NULL, or a PEFT LoRA folder merged first (full) / exported (lora) */
    const char *out;     /* the .gguf file */
    const char *quant;   /* f32 (default), f16, bf16, q8_0 (q8), q4_0, q4_k_m */
    int lora;            /* write the adapter as a GGUF LoRA adapter instead */
    int overwrite;
    merge_progress_fn progress;
    void *user;
} gguf_export_options;

typedef struct gguf_export_result {
    int tensors;
    int merged; /* weights the adapter changed */
    unsigned long long bytes;
} gguf_export_result;

ft_status gguf_export(const gguf_export_options *o, gguf_export_result *res, ft_error *err);

#endif
