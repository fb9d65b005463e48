/*
 * block.c: the training step by hand, forward and backward per operation, in the manner of
 * llm.c's gpt2_forward / gpt2_backward (model.h: model_forward, model_backward).
 *
 * One block (layer l), N = B*T rows, x the residual stream (N, C):
 *   ln1 = rmsnorm(x)                                    (N, C)
 *   qkv = ln1 [Wq|Wk|Wv]^T (+ biases, + LoRA)           (N, (H + 2 Hkv) D)
 *   q, k, v = split, [qk-norm], rope                    (N, H, D), (N, Hkv, D), (N, Hkv, D)
 *   att = attention(q, k, v)                            (N, H, D), lse (B, H, T)
 *   xmid = x + att Wo^T                                 (N, C)
 *   ln2 = rmsnorm(xmid)                                 (N, C)
 *   gu = ln2 [Wg|Wu]^T; act = silu(g) * u               (N, 2I), (N, I)
 *   xnext = xmid + act Wd^T                             (N, C)
 * then the final rmsnorm and the LM head with cross-entropy over chunks of tokens (ops/xent.c):
 * the gradient of the final hidden states comes out of the same pass as the loss, so logits for
 * all tokens never exist at once. Backward runs the same list in reverse; frozen weights get no
 * gradient, LoRA's accumulate. Where the activations live is acts.c's business.
 */
#include "dist/dist.h"
#include "model/model_internal.h"
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The linear layers whose outputs share a block's fused buffer: q|k|v (or Phi-3's qkv_proj) and
 * gate|up (or gate_up_proj); an architecture has one set or the other (model_lin_layout). */
static const lin_kind attn_kinds[] = {LIN_Q, LIN_K, LIN_V, LIN_QKV};
static const lin_kind mlp_in_kinds[] = {LIN_GATE, LIN_UP, LIN_GATE_UP};

/* ---- one linear layer (frozen W, optional bias, optional LoRA) ----------------------- */

static uint64_t drop_seed_for(uint64_t seed, int layer, int kind) {
    return seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(layer * LIN_COUNT + kind + 1));
}

static size_t lora_index(const lora_set *ls, const lora_module *mod) {
    return (size_t)(mod - ls->mods);
}

/* out (N, ldo) [col ...] = x W^T + b + LoRA; beta 1 adds to what out holds. */
static void lin_forward(const model *m, acts *a, int l, lin_kind k, float *out, int ldo,
                        const float *x, int N, float beta, uint64_t seed, int r0) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    if (qmatmul_forward(out + lw->col, ldo, x, lw->in, &lw->W, lw->b, N, beta, a->mm, a->mm_bytes))
        a->failed = 1;
    dist_progress(); /* all-gathers (shard.c) and gradient sums in flight move on */
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        float *xa = a->xa + (lora_index(m->lora, mod) * (size_t)a->maxN + (size_t)r0) * R;
        lora_forward(m->lora, mod, out + lw->col, ldo, x, xa, a->xd, N, drop_seed_for(seed, l, k),
                     (size_t)r0);
    }
}

/* dx (N, in) += d/dx; LoRA grads accumulate. */
static void lin_backward(model *m, acts *a, int l, lin_kind k, float *dx, const float *dout,
                         int ldo, const float *x, int N, uint64_t seed, int r0) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    if (dx &&
        qmatmul_backward_input(dx, lw->in, dout + lw->col, ldo, &lw->W, N, a->mm, a->mm_bytes))
        a->failed = 1;
    dist_progress();
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        const float *xa = a->xa + (lora_index(m->lora, mod) * (size_t)a->maxN + (size_t)r0) * R;
        lora_backward(m->lora, mod, dx, dout + lw->col, ldo, x, xa, a->dxa, a->xd, N,
                      drop_seed_for(seed, l, k), (size_t)r0);
    }
}

/* ---- one block, forward and backward --------------------------------------------------- */

#define ZERO_CHUNK ((size_t)1 << 16) /* floats zeroed by one thread at a time: 256 KB */

/* Pointers to the saved activations of one layer slot. */
typedef struct slot {
    float *ln1, *rstd1, *qkv, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
} slot;

static slot slot_at(const model *m, const acts *a, size_t li) {
    const model_config *c = &m->cfg;
    const size_t sN = (size_t)a->maxN, C = c->C, HD = (size_t)c->H * c->D,
                 KD = (size_t)c->Hkv * c->D, I = c->I, QKV = m->QKV;
    slot s = {
        a->ln1 + li * sN * C,
        a->rstd1 + li * sN,
        a->qkv + (c->arch->qk_norm ? li : 0) * sN * QKV,
        a->qn_rstd + li * sN * c->H,
        a->kn_rstd + li * sN * c->Hkv,
        a->q + li * sN * HD,
        a->k + li * sN * KD,
        a->v + li * sN * KD,
        a->att + li * sN * HD,
        a->lse + li * sN * c->H,
        a->xmid + li * sN * C,
        a->ln2 + li * sN * C,
        a->rstd2 + li * sN,
        a->gu + li * sN * 2 * I,
        a->act + li * sN * I,
    };
    return s;
}

/* Rows r0 .. r0+nr-1 of the MLP's first half: gu = ln2 [Wg|Wu]^T (+ LoRA), act = silu(g) * u,
 * into the chunk's buffers (the whole batch's without checkpointing, where one chunk is all). */
static void mlp_in_forward(model *m, acts *a, int l, const slot *s, int r0, int nr, uint64_t seed) {
    const block_weights *bw = &m->blocks[l];
    const int C = m->cfg.C, I = m->cfg.I;
    /* gu (nr, 2I) = ln2 (nr, C) [Wg|Wu]^T: gate in columns [0, I), up in [I, 2I) */
    for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
        if (bw->lin[mlp_in_kinds[i]].out)
            lin_forward(m, a, l, mlp_in_kinds[i], s->gu, 2 * I, s->ln2 + (size_t)r0 * C, nr, 0,
                        seed, r0);
    /* act (nr, I) = silu(gate) * up */
    swiglu_forward(s->act, s->gu, s->gu + I, nr, I, 2 * I);
}

/* Layer l: xnext = block(x), keeping what backward needs in slot s. x and xnext may be the
 * same buffer (eval keeps one). mlp 0 stops after the attention half and the second norm
 * (backward's recompute: layer_backward recomputes the MLP a chunk at a time). */
static void layer_forward(model *m, acts *a, const batch *b, int l, const slot *s, const float *x,
                          float *xnext, uint64_t seed, int mlp) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D;
    const int QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    /* ln1 (N, C) = rmsnorm(x (N, C)) * w; rstd1 (N) kept for backward */
    rmsnorm_forward(s->ln1, s->rstd1, x, bw->ln1, N, C, c->eps);
    /* qkv (N, QKV = (H + 2 Hkv) D) = ln1 [Wq|Wk|Wv]^T (+ b, + LoRA): q, k, v side by side */
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].out)
            lin_forward(m, a, l, attn_kinds[i], s->qkv, QKV, s->ln1, N, 0, seed, 0);
    /* q (N, H, D), k, v (N, Hkv, D) = split qkv, qk-norm (Qwen3), RoPE on q and k: one pass over
     * each token's row (ops/attn_input.c) */
    const int qn = c->arch->qk_norm;
    attn_input_forward(s->q, s->k, s->v, s->qn_rstd, s->kn_rstd, s->qkv, QKV,
                       qn ? bw->q_norm : NULL, qn ? bw->k_norm : NULL, c->eps, b->pos, a->rope_cos,
                       a->rope_sin, N, H, Hkv, D, c->rot_dim);
    /* att (N, H, D) = softmax(scale q k^T + causal / window / document mask) v; lse (B, H, T) */
    attention_forward(s->att, s->lse, s->q, s->k, s->v, b->seg, b->len, b->B, b->T, H, Hkv, D,
                      c->window[l], scale, m->quant.compute == QC_BF16, a->attn, a->attn_bytes);
    /* xmid (N, C) = x + att (N, HD) Wo^T */
    memcpy(s->xmid, x, (size_t)N * C * sizeof(float));
    lin_forward(m, a, l, LIN_O, s->xmid, C, s->att, N, 1, seed, 0);
    /* ln2 (N, C) = rmsnorm(xmid) * w */
    rmsnorm_forward(s->ln2, s->rstd2, s->xmid, bw->ln2, N, C, c->eps);
    if (!mlp) return;
    /* xnext (N, C) = xmid + act (N, I) Wd^T, a chunk of nr rows at a time */
    for (int r0 = 0; r0 < N; r0 += a->mlp_rows) {
        int nr = N - r0 < a->mlp_rows ? N - r0 : a->mlp_rows;
        mlp_in_forward(m, a, l, s, r0, nr, seed);
        memcpy(xnext + (size_t)r0 * C, s->xmid + (size_t)r0 * C, (size_t)nr * C * sizeof(float));
        lin_forward(m, a, l, LIN_DOWN, xnext + (size_t)r0 * C, C, s->act, nr, 1, seed, r0);
    }
}

/* p[0, n) = 0, split across the threads when large: the gradient buffers the accumulating GEMMs
 * add into are cleared each layer (26 MB a layer at SmolLM-135M B4 T512), out of cache, where one
 * core's stores reach half the memory bandwidth two do (measured: 4.7 MB in 0.40-0.57 ms on one
 * thread, 0.25-0.29 ms on two). */
static void zero_floats(float *p, size_t n) {
    const long chunks = (long)((n + ZERO_CHUNK - 1) / ZERO_CHUNK);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (long i = 0; i < chunks; i++) {
        size_t c0 = (size_t)i * ZERO_CHUNK, m = n - c0 < ZERO_CHUNK ? n - c0 : ZERO_CHUNK;
        memset(p + c0, 0, m * sizeof(float));
    }
}

/* Backward of layer l: on entry a->dres holds d(loss)/d(layer output); on return it holds
 * d(loss)/d(layer input) (when need_dx), and LoRA gradients have accumulated. */
static void layer_backward(model *m, acts *a, const batch *b, int l, const slot *s, const float *x,
                           uint64_t seed, int need_dx) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    float *dres = a->dres;
    /* MLP: xnext = xmid + down(silu(gate) * up), a chunk of rows at a time (recomputing the
     * chunk's first half when checkpointing) */
    zero_floats(a->dln, (size_t)N * C);
    for (int r0 = 0; r0 < N; r0 += a->mlp_rows) {
        int nr = N - r0 < a->mlp_rows ? N - r0 : a->mlp_rows;
        if (a->ckpt) mlp_in_forward(m, a, l, s, r0, nr, seed);
        /* dact (nr, I) = dres (nr, C) Wd (the residual passes dres through to xmid) */
        zero_floats(a->dact, (size_t)nr * I);
        lin_backward(m, a, l, LIN_DOWN, a->dact, dres + (size_t)r0 * C, C, s->act, nr, seed, r0);
        /* dgu (nr, 2I) = d(silu(gate) * up) */
        swiglu_backward(a->dgu, a->dgu + I, a->dact, s->gu, s->gu + I, nr, I, 2 * I);
        /* dln (nr, C) += dgu [Wg|Wu] */
        for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
            if (bw->lin[mlp_in_kinds[i]].out)
                lin_backward(m, a, l, mlp_in_kinds[i], a->dln + (size_t)r0 * C, a->dgu, 2 * I,
                             s->ln2 + (size_t)r0 * C, nr, seed, r0);
    }
    /* dres (N, C) += rmsnorm backward of dln: now d(loss)/d(xmid) */
    rmsnorm_backward(dres, NULL, a->dln, s->xmid, bw->ln2, s->rstd2, N, C);
    /* attention: xmid = x + o(attention(rope(q), rope(k), v)) */
    /* datt (N, HD) = dres Wo */
    zero_floats(a->datt, (size_t)N * HD);
    lin_backward(m, a, l, LIN_O, a->datt, dres, C, s->att, N, seed, 0);
    /* dq (N, H, D), dk, dv (N, Hkv, D) from datt, recomputing the scores from lse */
    attention_backward(a->dq, a->dk, a->dv, a->datt, s->q, s->k, s->v, s->att, s->lse, b->seg,
                       b->len, b->B, b->T, H, Hkv, D, c->window[l], scale,
                       m->quant.compute == QC_BF16, a->attn, a->attn_bytes);
    /* dqkv (N, QKV): RoPE, qk-norm and the split backward, in one pass per token */
    const int qn = c->arch->qk_norm;
    attn_input_backward(a->dqkv, a->dq, a->dk, a->dv, s->qkv, QKV, s->qn_rstd, s->kn_rstd,
                        qn ? bw->q_norm : NULL, qn ? bw->k_norm : NULL, b->pos, a->rope_cos,
                        a->rope_sin, N, H, Hkv, D, c->rot_dim);
    /* dln (N, C) = dqkv [Wq|Wk|Wv] (skipped below layer 0: the embedding is frozen) */
    if (need_dx) zero_floats(a->dln, (size_t)N * C);
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].out)
            lin_backward(m, a, l, attn_kinds[i], need_dx ? a->dln : NULL, a->dqkv, QKV, s->ln1, N,
                         seed, 0);
    /* dres (N, C) += rmsnorm backward of dln: d(loss)/d(x) */
    if (need_dx) rmsnorm_backward(dres, NULL, a->dln, x, bw->ln1, s->rstd1, N, C);
}

/* ---- the model ----------------------------------------------------------------------- */

/* Where layer l's input lives during the forward: train keeps every layer's input (bf16
 * checkpoints: alternating between x and xtmp, which backward's recompute uses later, the
 * kept copy in x16); eval runs in place in slot 0. */
static float *layer_input(const acts *a, int l, int train) {
    if (train && a->ckpt == CKPT_BF16) return l & 1 ? a->xtmp : a->x;
    return a->x + (train ? (size_t)l : 0) * (size_t)a->maxN * a->C;
}

/* Elementwise loops over the residual stream (N*C values) are split across the threads from
 * this many values: below it a parallel region costs more than it saves. */
#define PAR_MIN (1L << 16)

/* Round x (N rows) to bf16 in place and keep it as layer l's input: the forward goes on from
 * the rounded values, which are what backward's recompute will start from. */
static void keep_bf16(acts *a, int l, float *x, int N) {
    const long n = (long)N * a->C;
    if (!a->x16) { /* acts_round_inputs: rounded in place, nothing kept apart */
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (long i = 0; i < n; i++)
            x[i] = bf16_to_f32(f32_to_bf16(x[i]));
        return;
    }
    uint16_t *dst = a->x16 + (size_t)l * a->maxN * a->C;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++) {
        dst[i] = f32_to_bf16(x[i]);
        x[i] = bf16_to_f32(dst[i]);
    }
}

/* Layer l's input as the forward saw it, for backward: bf16 checkpoints are widened (exactly)
 * into slot 0. */
static const float *kept_input(acts *a, int l, int N) {
    if (a->ckpt != CKPT_BF16) return a->x + (size_t)l * a->maxN * a->C;
    const uint16_t *src = a->x16 + (size_t)l * a->maxN * a->C;
    const long n = (long)N * a->C;
    float *x = a->x;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++)
        x[i] = bf16_to_f32(src[i]);
    return x;
}

/* out (C) = embedding row id. A row of a mapped table read through the mapping would map the
 * page-cache folio around it (ext4 caches files in large folios, up to 2 MB, and a fault maps a
 * folio whole), so a step of 2,048 tokens maps all of Llama 3's 1 GB table; pread() copies
 * just the row from the page cache, into raw (the row's bytes as stored, at most 4 C). */
void model_embed_row(const model *m, int id, float *out, void *raw) {
    const qtensor *w = &m->wte;
    size_t rb = qtensor_size_for(w->fmt, 1, (size_t)w->cols, 1, 0);
    if (m->wte_fd && pread(m->wte_fd - 1, raw, rb,
                           (off_t)(m->wte_offset + (long long)id * (long long)rb)) == (ssize_t)rb) {
        qtensor row = *w;
        row.rows = 1, row.data = raw, row.owned = NULL;
        qtensor_dequant_rows(&row, 0, 1, out);
        return;
    }
    qtensor_dequant_rows(w, id, 1, out);
}

/* --shard-base: the head's chunk k gathered (lmhead_xent_rows' get) */
typedef struct head_ctx {
    const model *m;
    int train;
} head_ctx;

static const qtensor *head_chunk(void *ctx, int k, int next) {
    const head_ctx *h = ctx;
    return model_shard_head_use(h->m, k, next, h->train);
}

double model_forward(const model *mc, acts *a, const batch *b, int train, uint64_t seed,
                     float *logits, long *count) {
    model *m = (model *)mc;
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    /* x (N, C) = wte[ids]: rows in parallel (each pread is a system call), each read into its
     * own row of ln1, which layer 0's norm has yet to write */
    float *raw = slot_at(m, a, 0).ln1;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        model_embed_row(m, b->ids[n], a->x + (size_t)n * C, raw + (size_t)n * C);
    /* RoPE's cos/sin for this batch's positions (all < T <= maxT: dataset.c), for every layer
     * forward and backward */
    rope_table(a->rope_cos, a->rope_sin, b->T, c->inv_freq, c->rot_dim, c->attn_scaling);
    int keep16 = train && (a->ckpt == CKPT_BF16 || a->round16);
    if (keep16) keep_bf16(a, 0, a->x, N);
    /* x = block_l(x) for each layer, each layer's input kept for backward */
    for (int l = 0; l < c->L; l++) {
        float *x = layer_input(a, l, train), *xnext = layer_input(a, l + 1, train);
        slot s = slot_at(m, a, train && !a->ckpt ? (size_t)l : 0);
        model_shard_use(m, l, l + 1); /* --shard-base: layer l whole, l + 1 (or the head) next */
        dist_poll();
        layer_forward(m, a, b, l, &s, x, xnext, seed, 1);
        if (keep16) keep_bf16(a, l + 1, xnext, N);
    }
    /* hf (N, C) = rmsnorm(x after the last layer) */
    float *xL = layer_input(a, c->L, train);
    rmsnorm_forward(a->hf, a->rstdf, xL, m->norm_f, N, C, c->eps);
    /* the head in chunks of m->head_rows rows; under --shard-base each is gathered when used */
    head_ctx hc = {m, train};
    xent_chunk_fn get = m->shard ? head_chunk : NULL;
    /* logits (N, V) = hf Wlm^T, only when asked for (eval dumps) */
    if (logits &&
        lmhead_logits(logits, a->hf, &m->lm_head, N, m->head_rows, get, &hc, a->mm, a->mm_bytes))
        a->failed = 1;
    /* loss = sum over counted targets of -log softmax(hf Wlm^T)[target], a chunk of rows at a
     * time; with train, dhf (N, C) = d(loss)/d(hf) from the same pass */
    if (train) zero_floats(a->dhf, (size_t)N * C);
    /* after the head comes the backward's last layer, or the next forward's first */
    double loss = lmhead_xent_rows(train ? a->dhf : NULL, a->hf, &m->lm_head, b->targets, N, 1.0f,
                                   a->xent, a->chunk, a->mm, a->mm_bytes, m->head_rows, get, &hc);
    /* a matmul of this or an earlier step found its scratch too small: sized by the same
     * functions, so a bug; NaN makes the trainer stop with an error instead of going on wrong */
    if (a->failed) loss = NAN;
    if (count) {
        long cnt = 0;
        for (int n = 0; n < N; n++)
            cnt += b->targets[n] >= 0;
        *count = cnt;
    }
    return loss;
}

void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t seed) {
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    const long n = (long)N * C;
    float *dhf = a->dhf, *dres = a->dres;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long i = 0; i < n; i++) { /* one pass: scale the head's gradient, clear dres */
        dhf[i] *= grad_scale;
        dres[i] = 0.0f;
    }
    /* dres (N, C) = d(loss)/d(x after the last layer) */
    rmsnorm_backward(a->dres, NULL, a->dhf, kept_input(a, c->L, N), m->norm_f, a->rstdf, N, C);
    for (int l = c->L - 1; l >= 0; l--) {
        const float *x = kept_input(a, l, N);
        slot s = slot_at(m, a, a->ckpt ? 0 : (size_t)l);
        model_shard_use(m, l, l > 0 ? l - 1 : 0); /* the next micro-batch starts at layer 0 */
        dist_poll();
        if (a->ckpt) layer_forward(m, a, b, l, &s, x, a->xtmp, seed, 0); /* recompute */
        /* the embedding is frozen: no gradient is needed below layer 0's input */
        layer_backward(m, a, b, l, &s, x, seed, l > 0);
        if (m->grads_ready) m->grads_ready(m->grads_ctx, l);
    }
}
