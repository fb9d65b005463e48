/*
 * forward.h: the model's forward pass for generation: new tokens at the end of what the KV cache
 * holds, with the frozen weights in their stored format and LoRA adapters applied unmerged.
 *
 * A call runs n tokens (a prompt, in chunks of at most `chunk` tokens, or one token of a
 * decode) through every layer: the projections are qmatmul_forward over the stored weights (a
 * matrix-vector product per weight when n is small: qtensor.c's fused dot products for the
 * quantized formats, one GEMV-shaped GEMM for fp32), q and k get qk-norm and RoPE at their
 * absolute positions (attn_input_forward, as training does), k and v go into the cache, and
 * attention reads the cache. Every buffer is sized at infer_init; a call allocates nothing.
 *
 * Adapters: each is a PEFT LoRA set (model/lora.c loads it) with a weight w; on a linear layer
 * with modules from several adapters the output is W x + b + sum_a w_a * scale_a * B_a A_a x,
 * which is what PEFT computes with several active adapters whose scalings are multiplied by
 * their weights (and what add_weighted_adapter(..., combination_type="cat") builds).
 */
#ifndef FT_INFER_FORWARD_H
#define FT_INFER_FORWARD_H

#include "infer/kv_cache.h"
#include "model/model.h"

typedef struct infer_adapter {
    lora_set *ls; /* owned by the caller */
    float weight;
} infer_adapter;

typedef struct infer_model {
    model *m; /* borrowed */
    const infer_adapter *ad;
    int n_ad;
    kv_cache kv;
    int32_t *tokens; /* (kv.maxT) the ids whose keys and values the cache holds (kv.len of them) */
    int chunk;       /* most tokens one forward step runs */
    int nthreads;
    /* scratch, cut from one allocation */
    float *x, *ln, *qkv, *q, *k, *v, *att, *gu, *act, *xa, *qn_rstd, *kn_rstd, *lse, *hf;
    float *rope_cos, *rope_sin, *att_scratch, *raw;
    int *pos;
    void *mm, *attn_ws;
    size_t mm_bytes, attn_ws_bytes, bytes;
    int failed; /* a matmul found its scratch too small (a bug) */
} infer_model;

/* Set up generation over m with a cache of ctx positions in format kvf; chunk: the most prompt
 * tokens one step runs (0: 256). ad (n_ad adapters, borrowed) may be NULL. */
ft_status infer_init(infer_model *im, model *m, const infer_adapter *ad, int n_ad, int ctx,
                     kv_format kvf, int chunk, ft_error *err);
void infer_free(infer_model *im);
/* Bytes of the scratch and the cache infer_init allocates (for the statistics). */
size_t infer_bytes(const infer_model *im);

/* Run ids (n tokens) at positions kv.len .. kv.len+n-1 and append them to the cache. logits:
 * the (V) logits of the last token, or with all != 0 the (n, V) logits of every token; NULL for
 * none. Errors: the cache is full (FT_ERR_INPUT, naming the context), an id outside the
 * vocabulary (FT_ERR_INPUT). */
ft_status infer_forward(infer_model *im, const int32_t *ids, int n, float *logits, int all,
                        ft_error *err);
/* Forget the cached positions from len on (len <= kv.len): the next forward continues there. */
void infer_truncate(infer_model *im, int len);

#endif
