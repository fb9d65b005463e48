/*
 * acts.c: the activations of a training step, in one allocation sized before the first step
 * (model.h: acts_alloc, acts_plan_bytes, model_matmul_scratch_bytes).
 *
 * For training each layer keeps what its backward needs (without checkpointing: every layer;
 * with it: each layer's input, and one layer's worth that backward's recompute refills). Eval
 * keeps one layer's worth. acts_sizes is the one table of part sizes: the memory plan (ftune
 * plan) and the allocation both read it, so the plan cannot drift from what is allocated. The
 * frozen-weight matmuls' scratch and attention's workspace are carved from the same block, so
 * nothing is allocated during a step (tests/step_alloc_test.c).
 */
#include "model/model_internal.h"
#include "ops/ops.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- activations ---------------------------------------------------------------------- */

#define ACTS_PARTS 36

/* The size in floats of each part of acts, in the order acts_alloc lays them out. The same
 * numbers serve the memory plan (ftune plan) and the allocation. */
static int acts_sizes(const model_config *c, int QKV, size_t R, size_t nl, size_t N, size_t T,
                      int chunk, int ckpt, size_t M, size_t sizes[ACTS_PARTS]) {
    size_t L = ckpt ? 1 : (size_t)c->L, C = c->C, HD = (size_t)c->H * c->D,
           KD = (size_t)c->Hkv * c->D, I = c->I;
    /* M: rows of an MLP chunk; xd holds an attention layer's input or a chunk's down input */
    size_t xd = N * (C > HD ? C : HD);
    if (xd < M * I) xd = M * I;
    int qn = c->arch->qk_norm;
    size_t v[ACTS_PARTS] = {
        /* x: every layer's input (bf16 checkpoints: one working slot, the inputs in x16) */
        (ckpt == CKPT_BF16 ? 1 : (size_t)c->L + 1) * N * C,
        /* qkv: kept per layer only with qk-norm, whose backward reads the pre-norm q and k there
         * (attn_input_backward); otherwise backward needs only q, k, v and one slot serves */
        L * N * C, L * N, (qn ? L : 1) * N * QKV, /* ln1 rstd1 qkv */
        qn ? L * N * c->H : 0, qn ? L * N * c->Hkv : 0, L * N * HD, L * N * KD,
        L * N * KD,                                            /* q k v */
        L * N * HD, L * N * c->H,                              /* att lse */
        L * N * C, L * N * C, L * N,                           /* xmid ln2 rstd2 */
        L * M * 2 * I, L * M * I,                              /* gu act */
        nl * N * R,                                            /* xa */
        N * C, N, N * C,                                       /* hf rstdf dhf */
        N * C, N * C, N * QKV, N * HD, N * KD, N * KD, N * HD, /* dres..datt */
        M * 2 * I, M * I, N * R, xd,                           /* dgu dact dxa xd */
        (size_t)chunk * c->V,                                  /* xent */
        ckpt ? N * C : 0, /* xtmp: a recomputed layer's output */
        ckpt == CKPT_BF16 ? (((size_t)c->L + 1) * N * C + 1) / 2 : 0, /* x16, 2 per float */
        T * (size_t)(c->rot_dim / 2), T * (size_t)(c->rot_dim / 2),   /* rope_cos rope_sin */
    };
    memcpy(sizes, v, sizeof v);
    return ACTS_PARTS;
}

/* With checkpointing the MLP (row-independent) runs in chunks of rows, so its buffers (gate|up,
 * SwiGLU and their gradients: 9 I floats a row, 820 MB at Llama-3-8B's shape and 2,048 tokens)
 * hold a chunk, not the batch. MLP_ROWS by measurement: at SmolLM-135M's shape, B 4 T 512,
 * a step is as fast as unchunked (see the commit). */
#define MLP_ROWS 256

static size_t mlp_rows_for(int ckpt, int rows, size_t N) {
    size_t M = !ckpt ? N : rows > 0 ? (size_t)rows : MLP_ROWS;
    if (ckpt && !rows) {
        const char *e = getenv("FTUNE_MLP_ROWS"); /* for benchmarks; the plan assumes MLP_ROWS */
        if (e && atoi(e) > 0) M = (size_t)atoi(e);
    }
    return M < N ? M : N;
}

static int xent_chunk_for(const model_config *c, int chunk, size_t N) {
    if (chunk <= 0) {
        chunk = (int)((16u << 20) / (size_t)c->V);
        if (chunk < 1) chunk = 1;
        if (chunk > 512) chunk = 512;
    }
    if ((size_t)chunk > N) chunk = (int)N;
    return chunk;
}

size_t model_matmul_scratch_bytes(const model_config *c, const model_quant *q, int N) {
    size_t most = 0;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        model_lin_layout(c, k, &in, &out, &col, &bias);
        if (!out) continue;
        qtensor w = {.fmt = q->linear, .rows = out, .cols = in, .compute = q->compute};
        size_t b = qmatmul_scratch_bytes(&w, N);
        if (b > most) most = b;
    }
    /* the LM head multiplies a chunk of the loss's rows at a time (lmhead_xent_q), and all N
     * rows at once when an eval asks for the logits (model_forward); the scratch for N rows is
     * the larger only under --dtype bf16 (a longer chunk of bf16 input rows: at most 4 MB or 256
     * rows), and sizing for it keeps those logits the same bits as a full-size scratch gives */
    qtensor h = {.fmt = q->lm_head, .rows = c->V, .cols = c->C, .compute = q->compute};
    size_t chunk = qmatmul_scratch_bytes(&h, xent_chunk_for(c, 0, (size_t)N)),
           all = qmatmul_scratch_bytes(&h, N);
    size_t b = chunk > all ? chunk : all;
    /* and the head's chunks of rows the loss takes (model_head_chunk_rows): a narrower matrix
     * can take longer runs of rows at once under --dtype bf16 */
    int R = model_head_chunk_rows(c, q);
    for (int last = 0; last < 2 && R < c->V; last++) {
        h.rows = last ? c->V - (model_head_chunks(c, q) - 1) * R : R;
        size_t hc = qmatmul_scratch_bytes(&h, xent_chunk_for(c, 0, (size_t)N)),
               ha = qmatmul_scratch_bytes(&h, N);
        if (hc > b) b = hc;
        if (ha > b) b = ha;
    }
    b = b > most ? b : most;
    /* and, at its end, the loss's per-row state (lmhead_xent_rows takes it from there) */
    return ((b + 63) & ~(size_t)63) +
           lmhead_xent_state_bytes(N, xent_chunk_for(c, 0, (size_t)N), c->V, R, 1);
}

size_t acts_plan_bytes(const model_config *c, int lora_r, int lora_modules, int maxB, int maxT,
                       int ckpt, int bf16) {
    size_t sizes[ACTS_PARTS], total = 0, N = (size_t)maxB * maxT;
    int n =
        acts_sizes(c, (c->H + 2 * c->Hkv) * c->D, (size_t)lora_r, (size_t)lora_modules, N,
                   (size_t)maxT, xent_chunk_for(c, 0, N), ckpt, mlp_rows_for(ckpt, 0, N), sizes);
    for (int i = 0; i < n; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    /* and attention's workspace, which acts_alloc puts in the same block (the matmul scratch
     * there too is model_matmul_scratch_bytes, which the plan counts on its own) */
    return total * sizeof(float) +
           ((attention_workspace_bytes(maxB, maxT, c->H, c->Hkv, c->D, bf16) + 63) & ~(size_t)63);
}

static float *take(float **cur, size_t n) {
    float *p = *cur;
    *cur += (n + 15) & ~(size_t)15; /* keep 64-byte alignment */
    return p;
}

ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out,
                     ft_error *err) {
    return acts_alloc_ckpt(m, maxB, maxT, xent_chunk, 0, out, err);
}

ft_status acts_alloc_ckpt(const model *m, int maxB, int maxT, int xent_chunk, int ckpt, acts **out,
                          ft_error *err) {
    return acts_alloc_rows(m, maxB, maxT, xent_chunk, ckpt, 0, out, err);
}

ft_status acts_alloc_rows(const model *m, int maxB, int maxT, int xent_chunk, int ckpt,
                          int mlp_rows, acts **out, ft_error *err) {
    const model_config *c = &m->cfg;
    acts *a = calloc(1, sizeof *a);
    if (!a) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    size_t N = (size_t)maxB * maxT;
    size_t R = m->lora ? (size_t)m->lora->R : 0, nl = m->lora ? (size_t)m->lora->n : 0;
    xent_chunk = xent_chunk_for(c, xent_chunk, N);
    size_t sizes[ACTS_PARTS];
    size_t M = mlp_rows_for(ckpt, mlp_rows, N);
    int np = acts_sizes(c, m->QKV, R, nl, N, (size_t)maxT, xent_chunk, ckpt, M, sizes);
    size_t total = 0;
    for (int i = 0; i < np; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    /* the matmul scratch and attention's workspace after the float parts, so that nothing
     * allocates during a step */
    size_t mmb = (model_matmul_scratch_bytes(c, &m->quant, (int)N) + 63) & ~(size_t)63;
    if (xent_chunk != xent_chunk_for(c, 0, N)) /* the loss's state for a chunk of the caller's */
        mmb += lmhead_xent_state_bytes((int)N, xent_chunk, c->V,
                                       model_head_chunk_rows(c, &m->quant), 1);
    size_t awb =
        (attention_workspace_bytes(maxB, maxT, c->H, c->Hkv, c->D, m->quant.compute == QC_BF16) +
         63) &
        ~(size_t)63;
    float *buf = aligned_alloc(64, total * sizeof(float) + mmb + awb);
    if (!buf) {
        free(a);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL,
                            "use --grad-checkpoint, or a smaller --batch-size or --seq-len",
                            "cannot allocate %.2f GB for activations",
                            (total * 4.0 + (double)(mmb + awb)) / 1e9);
    }
    memset(buf, 0, total * sizeof(float));
    a->mm = mmb ? (char *)buf + total * sizeof(float) : NULL, a->mm_bytes = mmb;
    a->attn = awb ? (char *)buf + total * sizeof(float) + mmb : NULL, a->attn_bytes = awb;
    float *cur = buf;
    int i = 0;
    float **parts[ACTS_PARTS] = {
        &a->x,    &a->ln1, &a->rstd1,    &a->qkv,     &a->qn_rstd, &a->kn_rstd, &a->q,    &a->k,
        &a->v,    &a->att, &a->lse,      &a->xmid,    &a->ln2,     &a->rstd2,   &a->gu,   &a->act,
        &a->xa,   &a->hf,  &a->rstdf,    &a->dhf,     &a->dres,    &a->dln,     &a->dqkv, &a->dq,
        &a->dk,   &a->dv,  &a->datt,     &a->dgu,     &a->dact,    &a->dxa,     &a->xd,   &a->xent,
        &a->xtmp, NULL,    &a->rope_cos, &a->rope_sin};
    float *x16 = NULL;
    for (i = 0; i < np; i++)
        *(parts[i] ? parts[i] : &x16) = take(&cur, sizes[i]);
    a->x16 = ckpt == CKPT_BF16 ? (uint16_t *)x16 : NULL;
    a->maxB = maxB, a->maxT = maxT, a->maxN = (int)N, a->chunk = xent_chunk, a->L = c->L;
    a->ckpt = ckpt, a->C = c->C, a->mlp_rows = (int)M;
    a->bytes = total * sizeof(float) + mmb + awb;
    *out = a;
    return FT_OK;
}

void acts_free(acts *a) {
    if (!a) return;
    free(a->x); /* the first slice is the start of the one allocation */
    free(a);
}

size_t acts_bytes(const acts *a) { return a->bytes; }

void acts_round_inputs(acts *a) { a->round16 = 1; }

int ckpt_dtype_parse(const char *dtype) {
    if (!dtype || !strcmp(dtype, "fp32")) return CKPT_FP32;
    return !strcmp(dtype, "bf16") ? CKPT_BF16 : -1;
}
