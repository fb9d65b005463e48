/*
 * adapter.h: a PEFT LoRA adapter folder read for merging, whatever model it belongs to.
 *
 * Training reads adapters through model/lora.h, which knows ftune's architectures. Merging needs
 * less and takes more: the pairs NAME.lora_A.weight (r, in) / NAME.lora_B.weight (out, r) of
 * adapter_model.safetensors, each with its own rank (rank_pattern) and alpha (alpha_pattern),
 * and the scaling PEFT gives it: alpha / r, or alpha / sqrt(r) with use_rslora (a double, as
 * PEFT keeps it in LoraLayer.scaling). No base model is needed to read one, so
 * `ftune merge-adapters` works on adapters of any model and `ftune merge` on any model whose
 * targeted modules are linear layers.
 */
#ifndef FT_MERGE_ADAPTER_H
#define FT_MERGE_ADAPTER_H

#include "ftune.h"
#include "io/json.h"

typedef struct adapter_module {
    char *name;       /* PEFT's module path: "base_model.model.model.layers.0.self_attn.q_proj" */
    const char *path; /* the model's module path (name without "base_model.model.") */
    int r, in, out;
    double alpha;   /* lora_alpha, or the alpha_pattern entry that matches the module */
    double scaling; /* alpha / r, or alpha / sqrt(r) with use_rslora */
    float *A, *B;   /* (r, in) and (out, r), fp32 */
} adapter_module;

typedef struct adapter {
    char dir[4096];
    cJSON *config;          /* adapter_config.json */
    int rslora;             /* use_rslora */
    int fan_in_fan_out;     /* as written; PEFT ignores it for nn.Linear (see fold.c) */
    const char *base_model; /* base_model_name_or_path, or NULL (points into config) */
    int n;
    adapter_module *mods; /* sorted by name */
} adapter;

/* Read DIR/adapter_config.json and DIR/adapter_model.safetensors. Refused, naming the file,
 * tensor and field: another peft_type, DoRA, trained biases, modules_to_save and trainable
 * tokens (tensors that are not LoRA pairs), a lora_A without its lora_B, ranks that disagree
 * between A and B, non-float tensors. */
ft_status adapter_load(const char *dir, adapter **out, ft_error *err);
void adapter_free(adapter *a);
/* Rows [r0, r0 + n) (cols values each) of m's delta B @ A (its transpose for a Conv1D weight,
 * transposed set) into d, times m->scaling when scale is set (rounded to fp32 first, as PEFT
 * multiplies by the Python float): the fp32 delta `ftune merge` adds to W (fold.c), merge-models
 * (models.c) and `ftune export` (gguf_export.c). */
void merge_delta_rows(const adapter_module *m, int transposed, size_t r0, size_t n, size_t cols,
                      float *d, int scale);
/* The module named name (PEFT's path), or NULL. */
const adapter_module *adapter_find(const adapter *a, const char *name);

#endif
