/*
 * model.h: a decoder-only transformer (Llama family) with frozen fp32 weights and optional LoRA,
 * and its training step written by hand, forward and backward, per operation (src/ops/).
 *
 * Three structs, in the manner of llama2.c: model (config + frozen weights + LoRA), acts (every
 * activation the backward pass needs, sized once for B x T tokens), and batch (the ids, targets
 * and positions of one micro-batch). Nothing is allocated during a step.
 *
 * One block, with x the residual stream (N = B*T rows of C):
 *   h = rmsnorm(x); q,k,v = h Wq^T, h Wk^T, h Wv^T (+ LoRA, + biases); [q,k = rmsnorm per head];
 *   q,k = rope(q,k); a = attention(q,k,v); x = x + a Wo^T;
 *   h = rmsnorm(x); x = x + (silu(h Wg^T) * h Wu^T) Wd^T
 * then rmsnorm and the LM head, with cross-entropy over chunks of tokens.
 */
#ifndef FT_MODEL_MODEL_H
#define FT_MODEL_MODEL_H

#include "ftune.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/lora.h"

typedef struct lin_weights {
    const float *W; /* (out, in), or NULL when the architecture has no such layer */
    const float *b; /* (out) or NULL */
    int in, out;
    int col; /* first column this layer writes in its block's fused output buffer */
} lin_weights;

typedef struct block_weights {
    const float *ln1, *ln2;      /* (C) */
    const float *q_norm, *k_norm; /* (D), Qwen3 only */
    lin_weights lin[LIN_COUNT];
} block_weights;

typedef struct model {
    model_config cfg;
    const float *wte;     /* (V, C) */
    const float *lm_head; /* (V, C): wte when tied */
    const float *norm_f;  /* (C) */
    block_weights *blocks;
    float *weights; /* one allocation holding every fp32 weight */
    size_t n_weights;
    lora_set *lora; /* NULL: no adapter */
    int QKV;        /* (H + 2 Hkv) D: width of the fused q|k|v buffer */
} model;

/* Load DIR (config.json + safetensors) into fp32. */
ft_status model_load(const char *dir, model *m, ft_error *err);
void model_free(model *m);
/* Bytes of fp32 weights model_load allocates for this config. */
size_t model_weight_bytes(const model_config *c);

typedef struct batch {
    int B, T;        /* rows and padded length of this micro-batch */
    int32_t *ids;    /* (B,T), 0 at padding */
    int32_t *targets;/* (B,T): the token each position predicts (labels shifted left), -100 = none */
    int *pos;        /* (B,T) positions (restarting at 0 in each packed document) */
    int *len;        /* (B) real length of each row */
    int *seg;        /* (B,T) document id of each token in packed rows, or NULL (no packing):
                        a token attends only to earlier tokens of its own document */
} batch;

/* Activations and scratch for up to maxN = B*T tokens. */
typedef struct acts acts;
ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out, ft_error *err);
/* The same with gradient checkpointing when ckpt != 0: each layer's input is kept and the rest
 * of the layer is recomputed during backward (memory of one layer instead of L). */
ft_status acts_alloc_ckpt(const model *m, int maxB, int maxT, int xent_chunk, int ckpt,
                          acts **out, ft_error *err);
/* Bytes acts_alloc would take (for the memory plan). */
size_t acts_plan_bytes(const model_config *c, int lora_r, int lora_modules, int maxB, int maxT,
                       int ckpt);
void acts_free(acts *a);
size_t acts_bytes(const acts *a);

/* Forward; returns the summed token loss over counted targets (and their number in *count).
 * When logits != NULL, also writes the (B*T, V) logits of every position (for eval dumps).
 * train != 0 keeps what backward needs and applies LoRA dropout. */
double model_forward(const model *m, acts *a, const batch *b, int train, uint64_t drop_seed,
                     float *logits, long *count);
/* Backward of the last model_forward(train=1): LoRA grads += grad_scale * d(loss sum). */
void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t drop_seed);

#endif
