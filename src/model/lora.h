/*
 * lora.h: LoRA adapters on the linear layers of a model, as PEFT defines them.
 *
 * A LoRA module on a frozen linear layer W (out, in) adds scale * B (A (dropout(x))), with
 * A (R, in), B (out, R), scale = alpha / R (alpha / sqrt(R) with rsLoRA). All A and B matrices
 * of a model live in one float array (params), with one gradient array of the same layout, so
 * the optimizer, clipping and checkpointing are loops over a single buffer.
 */
#ifndef FT_MODEL_LORA_H
#define FT_MODEL_LORA_H

#include "ftune.h"
#include "model/config.h"

typedef struct lora_module {
    int layer;
    lin_kind kind;
    int in, out;
    size_t offA, offB; /* into params / grads: A (R, in) then B (out, R) */
} lora_module;

typedef struct lora_set {
    int R;
    double alpha;
    double dropout;
    int rslora;
    float scale;
    unsigned targets; /* bit per lin_kind, for adapter_config.json */
    int n;            /* modules */
    lora_module *mods;
    lora_module **by_layer; /* (L * LIN_COUNT) -> module or NULL */
    size_t n_params;
    float *params, *grads;
} lora_set;

typedef struct lora_options {
    int R;
    double alpha, dropout;
    int rslora;
    const char *targets; /* "q_proj,v_proj", "all-linear", ... */
} lora_options;

/* --lora-targets' default: PEFT's default target_modules for every model_type ftune supports
 * that has one (llama, mistral, qwen2, qwen3; phi3 has none: the user names them). */
#define LORA_DEFAULT_TARGETS "q_proj,v_proj"

/* Which lin_kinds a target list names, for this architecture. Errors name the option. */
ft_status lora_parse_targets(const model_config *cfg, const char *targets, unsigned *mask,
                             ft_error *err);
/* Allocate modules on every layer for the kinds in mask (layer_mask: NULL = all layers). */
ft_status lora_create(const model_config *cfg, int R, double alpha, double dropout, int rslora,
                      unsigned mask, const unsigned char *layer_mask, lora_set **out,
                      ft_error *err);
/* PEFT's default initialisation: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a=sqrt(5)),
 * B = 0. */
void lora_init(lora_set *ls, uint64_t seed);
void lora_free(lora_set *ls);
const lora_module *lora_get(const lora_set *ls, int layer, lin_kind k);

/* Forward of one LoRA module on input x (N, in): out[:, :out] (row stride ldo) += scale * B A xd,
 * where xd = dropout(x) (x itself when dropout is 0). xa (N, R) receives A xd for backward.
 * row0: x is rows row0.. of a larger input (a chunk), whose dropout mask it takes. */
void lora_forward(const lora_set *ls, const lora_module *m, float *out, int ldo, const float *x,
                  float *xa, float *xd_scratch, int N, uint64_t drop_seed, size_t row0);
/* Backward: grads of A and B accumulate; dx (N, in) += the input gradient.
 * dxa_scratch holds N*R floats, xd_scratch N*in (only used with dropout). */
void lora_backward(lora_set *ls, const lora_module *m, float *dx, const float *dout, int ldo,
                   const float *x, const float *xa, float *dxa_scratch, float *xd_scratch, int N,
                   uint64_t drop_seed, size_t row0);

/* PEFT adapter folders: adapter_config.json + adapter_model.safetensors. */
ft_status lora_load_peft(const model_config *cfg, const char *dir, lora_set **out, ft_error *err);
ft_status lora_save_peft(const lora_set *ls, const model_config *cfg, const char *dir,
                         const char *base_model, ft_error *err);
/* PEFT's tensor name of a module's A or B:
 * base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight */
void lora_tensor_name(char *buf, size_t n, const lora_module *m, int is_B);

#endif
