/*
 * model_internal.h: what the three files of the model share and nobody else: load.c (loading the
 * weights, the quantization policy), acts.c (the activation block: its parts and sizes) and
 * block.c (the transformer block forward and backward, the step). The interface is model.h.
 */
#ifndef FT_MODEL_MODEL_INTERNAL_H
#define FT_MODEL_MODEL_INTERNAL_H

#include "model/model.h"

#include <stddef.h>
#include <stdint.h>

/* Shape and place of linear layer k for this config (load.c): in and out features (out = 0: the
 * architecture has no such layer), the first column it writes in its block's fused output
 * buffer, and whether it has a bias. */
void model_lin_layout(const model_config *c, lin_kind k, int *in, int *out, int *col, int *bias);

/* fp32 floats of the norms and biases (model->weights) for this config (load.c). */
size_t model_fp32_floats(const model_config *c);
/* Set m->weight_bytes from the loaded tensors, as model_weight_bytes counts them (load.c). */
void model_count_resident(model *m);

/* The activation block (acts.c lays it out, block.c reads and writes it). Every float part is a
 * slice of one 64-byte-aligned allocation; the matmul scratch and attention's workspace follow
 * them in it. */
struct acts {
    int maxB, maxT, maxN, chunk, L;
    int C;        /* the width of the residual stream */
    int round16;  /* acts_round_inputs */
    int mlp_rows; /* the MLP runs in chunks of this many rows (maxN without checkpointing) */
    int ckpt; /* gradient checkpointing: only each layer's input is kept; layers are recomputed */
    size_t bytes;
    /* saved per layer (train; one slot when ckpt) */
    float *x; /* (L+1, N, C) residual stream: input of each layer, then the final one */
    float *ln1, *rstd1, *qkv, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
    float *xa; /* (n_lora, N, R) */
    float *hf, *rstdf, *dhf;
    float *rope_cos,
        *rope_sin; /* (maxT, rot_dim/2) each: RoPE's cos/sin by position (rope_table) */
    /* scratch */
    float *dres, *dln, *dqkv, *dq, *dk, *dv, *datt, *dgu, *dact, *dxa, *xd, *xent, *xtmp;
    uint16_t *x16;   /* CKPT_BF16: (L+1, N, C) the kept layer inputs; x is then two working slots */
    void *mm;        /* the frozen-weight matmuls' scratch (model_matmul_scratch_bytes), after */
    size_t mm_bytes; /* the float parts in the same block */
    void *attn;      /* attention's workspace (attention_workspace_bytes), after mm */
    size_t attn_bytes;
    int failed; /* a matmul found its scratch too small (a bug): losses come back NaN */
};

#endif
