/*
 * model.c: loading a Llama-family model into fp32 and running its training step by hand.
 *
 * Weights: every tensor of the checkpoint is converted to fp32 into one allocation; a table of
 * pointers (block_weights) is laid over it. Which linear layers exist, where each writes in
 * its block's fused output buffer, and which biases it has come from the architecture row in
 * config.c, so the forward and backward below have no per-architecture branches beyond
 * "if this layer exists".
 *
 * Activations: for training, each layer keeps what its backward needs (acts, sized once for
 * maxB x maxT tokens). Eval keeps only one layer's worth. The LM head and cross-entropy run in
 * chunks of tokens (ops/xent.c), and the gradient of the final hidden states is produced in the
 * same pass as the loss, so logits for all tokens never exist at once.
 */
#include "model/model.h"
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- weights -------------------------------------------------------------------------- */

static const lin_kind attn_kinds[] = {LIN_Q, LIN_K, LIN_V, LIN_QKV};
static const lin_kind mlp_in_kinds[] = {LIN_GATE, LIN_UP, LIN_GATE_UP};

/* Shape and place of each linear layer for this config, or out = 0 if absent. */
static void lin_layout(const model_config *c, lin_kind k, int *in, int *out, int *col, int *bias) {
    int HD = c->H * c->D, KD = c->Hkv * c->D;
    int fq = c->arch->fused_qkv, fg = c->arch->fused_gate_up;
    *in = c->C, *out = 0, *col = 0, *bias = 0;
    switch (k) {
    case LIN_Q: if (!fq) *out = HD, *col = 0, *bias = c->attn_bias; break;
    case LIN_K: if (!fq) *out = KD, *col = HD, *bias = c->attn_bias; break;
    case LIN_V: if (!fq) *out = KD, *col = HD + KD, *bias = c->attn_bias; break;
    case LIN_QKV: if (fq) *out = HD + 2 * KD, *bias = c->attn_bias; break;
    case LIN_O: *in = HD, *out = c->C, *bias = c->o_bias; break;
    case LIN_GATE: if (!fg) *out = c->I, *col = 0, *bias = c->mlp_bias; break;
    case LIN_UP: if (!fg) *out = c->I, *col = c->I, *bias = c->mlp_bias; break;
    case LIN_GATE_UP: if (fg) *out = 2 * c->I, *bias = c->mlp_bias; break;
    case LIN_DOWN: *in = c->I, *out = c->C, *bias = c->mlp_bias; break;
    default: break;
    }
}

size_t model_weight_bytes(const model_config *c) {
    size_t n = (size_t)c->V * c->C * (c->tie_embeddings ? 1 : 2) + c->C;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out, col, bias;
        lin_layout(c, k, &in, &out, &col, &bias);
        n += (size_t)c->L * ((size_t)out * in + (bias ? (size_t)out : 0));
    }
    n += (size_t)c->L * (2 * (size_t)c->C + (c->arch->qk_norm ? 2 * (size_t)c->D : 0));
    return n * sizeof(float);
}

typedef struct wslot {
    char name[256];
    int ndim;
    int64_t shape[2];
    const float **dst;
    int optional; /* lm_head when tied */
} wslot;

ft_status model_load(const char *dir, model *m, ft_error *err) {
    memset(m, 0, sizeof *m);
    ft_status st = model_config_load(dir, &m->cfg, err);
    if (st) return st;
    model_config *c = &m->cfg;
    m->QKV = (c->H + 2 * c->Hkv) * c->D;
    m->blocks = calloc((size_t)c->L, sizeof *m->blocks);
    int max_slots = 4 + c->L * (4 + 2 * LIN_COUNT);
    wslot *slots = calloc((size_t)max_slots, sizeof *slots);
    if (!m->blocks || !slots) {
        free(slots);
        model_free(m);
        return ft_error_set(err, FT_ERR_RUNTIME, dir, NULL, "out of memory");
    }
    int ns = 0;
#define SLOT(dstp, nd, d0, d1, ...)                                                            \
    do {                                                                                       \
        wslot *s_ = &slots[ns++];                                                              \
        snprintf(s_->name, sizeof s_->name, __VA_ARGS__);                                      \
        s_->ndim = nd, s_->shape[0] = d0, s_->shape[1] = d1, s_->dst = dstp;                   \
    } while (0)
    SLOT(&m->wte, 2, c->V, c->C, "model.embed_tokens.weight");
    SLOT(&m->norm_f, 1, c->C, 0, "model.norm.weight");
    if (!c->tie_embeddings) SLOT(&m->lm_head, 2, c->V, c->C, "lm_head.weight");
    for (int l = 0; l < c->L; l++) {
        block_weights *bw = &m->blocks[l];
        SLOT(&bw->ln1, 1, c->C, 0, "model.layers.%d.input_layernorm.weight", l);
        SLOT(&bw->ln2, 1, c->C, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        if (c->arch->qk_norm) {
            SLOT(&bw->q_norm, 1, c->D, 0, "model.layers.%d.self_attn.q_norm.weight", l);
            SLOT(&bw->k_norm, 1, c->D, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out, col, bias;
            lin_layout(c, k, &in, &out, &col, &bias);
            lin_weights *lw = &bw->lin[k];
            lw->in = in, lw->out = out, lw->col = col;
            if (!out) continue;
            SLOT(&lw->W, 2, out, in, "%s", "");
            weight_name(slots[ns - 1].name, sizeof slots[ns - 1].name, l, k, "weight");
            if (bias) {
                SLOT(&lw->b, 1, out, 0, "%s", "");
                weight_name(slots[ns - 1].name, sizeof slots[ns - 1].name, l, k, "bias");
            }
        }
    }
#undef SLOT
    size_t total = 0;
    for (int i = 0; i < ns; i++) total += (size_t)slots[i].shape[0] * (slots[i].ndim == 2 ? (size_t)slots[i].shape[1] : 1);
    m->weights = malloc(total * sizeof(float));
    m->n_weights = total;
    st_set *sts = NULL;
    if (!m->weights) {
        st = ft_error_set(err, FT_ERR_RUNTIME, dir, "the model does not fit in memory as fp32",
                          "cannot allocate %.1f GB for the weights", total * 4.0 / 1e9);
        goto done;
    }
    st = st_open_dir(dir, &sts, err);
    if (st) goto done;
    size_t off = 0;
    for (int i = 0; i < ns; i++) {
        float *dst = m->weights + off;
        st = st_read_f32(sts, slots[i].name, slots[i].ndim, slots[i].shape, dst, err);
        if (st) goto done;
        *slots[i].dst = dst;
        off += (size_t)slots[i].shape[0] * (slots[i].ndim == 2 ? (size_t)slots[i].shape[1] : 1);
    }
    if (c->tie_embeddings) m->lm_head = m->wte;
done:
    st_close(sts);
    free(slots);
    if (st) model_free(m);
    return st;
}

void model_free(model *m) {
    free(m->weights);
    free(m->blocks);
    if (m->lora) lora_free(m->lora);
    model_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

/* ---- activations ---------------------------------------------------------------------- */

struct acts {
    int maxB, maxT, maxN, chunk, L;
    int ckpt; /* gradient checkpointing: only each layer's input is kept; layers are recomputed */
    size_t bytes;
    /* saved per layer (train; one slot when ckpt) */
    float *x;        /* (L+1, N, C) residual stream: input of each layer, then the final one */
    float *ln1, *rstd1, *qkv, *qpre, *kpre, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
    float *xa; /* (n_lora, N, R) */
    float *hf, *rstdf, *dhf;
    /* scratch */
    float *dres, *dln, *dqkv, *dq, *dk, *dv, *dq2, *dk2, *datt, *dgu, *dact, *dxa, *xd, *xent, *xtmp;
};

#define ACTS_PARTS 37

/* The size in floats of each part of acts, in the order acts_alloc lays them out. The same
 * numbers serve the memory plan (ftune plan) and the allocation. */
static int acts_sizes(const model_config *c, int QKV, size_t R, size_t nl, size_t N, int chunk,
                      int ckpt, size_t sizes[ACTS_PARTS]) {
    size_t L = ckpt ? 1 : (size_t)c->L, C = c->C, HD = (size_t)c->H * c->D,
           KD = (size_t)c->Hkv * c->D, I = c->I;
    size_t maxin = C > I ? C : I;
    if (maxin < HD) maxin = HD;
    int qn = c->arch->qk_norm;
    size_t v[ACTS_PARTS] = {
        ((size_t)c->L + 1) * N * C,                 /* x: every layer's input, always */
        L * N * C, L * N, L * N * QKV,              /* ln1 rstd1 qkv */
        qn ? L * N * HD : 0, qn ? L * N * KD : 0,   /* qpre kpre */
        qn ? L * N * c->H : 0, qn ? L * N * c->Hkv : 0,
        L * N * HD, L * N * KD, L * N * KD,         /* q k v */
        L * N * HD, L * N * c->H,                   /* att lse */
        L * N * C, L * N * C, L * N,                /* xmid ln2 rstd2 */
        L * N * 2 * I, L * N * I,                   /* gu act */
        nl * N * R,                                 /* xa */
        N * C, N, N * C,                            /* hf rstdf dhf */
        N * C, N * C, N * QKV, N * HD, N * KD, N * KD, N * HD, N * KD, N * HD, /* dres..datt */
        N * 2 * I, N * I, N * R, N * maxin,         /* dgu dact dxa xd */
        (size_t)chunk * c->V,                       /* xent */
        ckpt ? N * C : 0,                           /* xtmp: a recomputed layer's output */
    };
    memcpy(sizes, v, sizeof v);
    return ACTS_PARTS;
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

size_t acts_plan_bytes(const model_config *c, int lora_r, int lora_modules, int maxB, int maxT,
                       int ckpt) {
    size_t sizes[ACTS_PARTS], total = 0, N = (size_t)maxB * maxT;
    int n = acts_sizes(c, (c->H + 2 * c->Hkv) * c->D, (size_t)lora_r, (size_t)lora_modules, N,
                       xent_chunk_for(c, 0, N), ckpt, sizes);
    for (int i = 0; i < n; i++) total += (sizes[i] + 15) & ~(size_t)15;
    return total * sizeof(float);
}

static float *take(float **cur, size_t n) {
    float *p = *cur;
    *cur += (n + 15) & ~(size_t)15; /* keep 64-byte alignment */
    return p;
}

ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out, ft_error *err) {
    return acts_alloc_ckpt(m, maxB, maxT, xent_chunk, 0, out, err);
}

ft_status acts_alloc_ckpt(const model *m, int maxB, int maxT, int xent_chunk, int ckpt,
                          acts **out, ft_error *err) {
    const model_config *c = &m->cfg;
    acts *a = calloc(1, sizeof *a);
    if (!a) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    size_t N = (size_t)maxB * maxT;
    size_t R = m->lora ? (size_t)m->lora->R : 0, nl = m->lora ? (size_t)m->lora->n : 0;
    xent_chunk = xent_chunk_for(c, xent_chunk, N);
    size_t sizes[ACTS_PARTS];
    int np = acts_sizes(c, m->QKV, R, nl, N, xent_chunk, ckpt, sizes);
    size_t total = 0;
    for (int i = 0; i < np; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *buf = aligned_alloc(64, total * sizeof(float));
    if (!buf) {
        free(a);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL,
                            "use --grad-checkpoint, or a smaller --batch-size or --seq-len",
                            "cannot allocate %.2f GB for activations", total * 4.0 / 1e9);
    }
    memset(buf, 0, total * sizeof(float));
    float *cur = buf;
    int i = 0;
    float **parts[ACTS_PARTS] = {
        &a->x, &a->ln1, &a->rstd1, &a->qkv, &a->qpre, &a->kpre, &a->qn_rstd, &a->kn_rstd,
        &a->q, &a->k, &a->v, &a->att, &a->lse, &a->xmid, &a->ln2, &a->rstd2, &a->gu, &a->act,
        &a->xa, &a->hf, &a->rstdf, &a->dhf, &a->dres, &a->dln, &a->dqkv, &a->dq, &a->dk,
        &a->dv, &a->dq2, &a->dk2, &a->datt, &a->dgu, &a->dact, &a->dxa, &a->xd, &a->xent,
        &a->xtmp};
    for (i = 0; i < np; i++) *parts[i] = take(&cur, sizes[i]);
    a->maxB = maxB, a->maxT = maxT, a->maxN = (int)N, a->chunk = xent_chunk, a->L = c->L;
    a->ckpt = ckpt;
    a->bytes = total * sizeof(float);
    *out = a;
    return FT_OK;
}

void acts_free(acts *a) {
    if (!a) return;
    free(a->x); /* the first slice is the start of the one allocation */
    free(a);
}

size_t acts_bytes(const acts *a) { return a->bytes; }

/* ---- one linear layer (frozen W, optional bias, optional LoRA) ----------------------- */

static uint64_t drop_seed_for(uint64_t seed, int layer, int kind) {
    return seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(layer * LIN_COUNT + kind + 1));
}

static size_t lora_index(const lora_set *ls, const lora_module *mod) {
    return (size_t)(mod - ls->mods);
}

/* out (N, ldo) [col ...] = x W^T + b + LoRA; beta 1 adds to what out holds. */
static void lin_forward(const model *m, acts *a, int l, lin_kind k, float *out, int ldo,
                        const float *x, int N, float beta, uint64_t seed) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    matmul_forward(out + lw->col, ldo, x, lw->in, lw->W, lw->b, N, lw->in, lw->out, beta);
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        float *xa = a->xa + lora_index(m->lora, mod) * (size_t)a->maxN * R;
        lora_forward(m->lora, mod, out + lw->col, ldo, x, xa, a->xd, N, drop_seed_for(seed, l, k));
    }
}

/* dx (N, in) += d/dx; LoRA grads accumulate. */
static void lin_backward(model *m, acts *a, int l, lin_kind k, float *dx, const float *dout,
                         int ldo, const float *x, int N, uint64_t seed) {
    const lin_weights *lw = &m->blocks[l].lin[k];
    if (dx) matmul_backward_input(dx, lw->in, dout + lw->col, ldo, lw->W, N, lw->in, lw->out);
    const lora_module *mod = m->lora ? lora_get(m->lora, l, k) : NULL;
    if (mod) {
        size_t R = m->lora->R;
        const float *xa = a->xa + lora_index(m->lora, mod) * (size_t)a->maxN * R;
        lora_backward(m->lora, mod, dx, dout + lw->col, ldo, x, xa, a->dxa, a->xd, N,
                      drop_seed_for(seed, l, k));
    }
}

/* ---- one block, forward and backward --------------------------------------------------- */

/* Pointers to the saved activations of one layer slot. */
typedef struct slot {
    float *ln1, *rstd1, *qkv, *qpre, *kpre, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
} slot;

static slot slot_at(const model *m, const acts *a, size_t li) {
    const model_config *c = &m->cfg;
    const size_t sN = (size_t)a->maxN, C = c->C, HD = (size_t)c->H * c->D,
                 KD = (size_t)c->Hkv * c->D, I = c->I, QKV = m->QKV;
    slot s = {
        a->ln1 + li * sN * C, a->rstd1 + li * sN, a->qkv + li * sN * QKV,
        a->qpre + li * sN * HD, a->kpre + li * sN * KD, a->qn_rstd + li * sN * c->H,
        a->kn_rstd + li * sN * c->Hkv, a->q + li * sN * HD, a->k + li * sN * KD,
        a->v + li * sN * KD, a->att + li * sN * HD, a->lse + li * sN * c->H,
        a->xmid + li * sN * C, a->ln2 + li * sN * C, a->rstd2 + li * sN,
        a->gu + li * sN * 2 * I, a->act + li * sN * I,
    };
    return s;
}

/* Layer l: xnext = block(x), keeping what backward needs in slot s. x and xnext may be the
 * same buffer (eval keeps one). */
static void layer_forward(model *m, acts *a, const batch *b, int l, const slot *s,
                          const float *x, float *xnext, uint64_t seed) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, KD = Hkv * D, QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    rmsnorm_forward(s->ln1, s->rstd1, x, bw->ln1, N, C, c->eps);
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].W) lin_forward(m, a, l, attn_kinds[i], s->qkv, QKV, s->ln1, N, 0, seed);
    float *qdst = c->arch->qk_norm ? s->qpre : s->q, *kdst = c->arch->qk_norm ? s->kpre : s->k;
    for (int n = 0; n < N; n++) {
        const float *row = s->qkv + (size_t)n * QKV;
        memcpy(qdst + (size_t)n * HD, row, HD * sizeof(float));
        memcpy(kdst + (size_t)n * KD, row + HD, KD * sizeof(float));
        memcpy(s->v + (size_t)n * KD, row + HD + KD, KD * sizeof(float));
    }
    if (c->arch->qk_norm) {
        rmsnorm_forward(s->q, s->qn_rstd, s->qpre, bw->q_norm, N * H, D, c->eps);
        rmsnorm_forward(s->k, s->kn_rstd, s->kpre, bw->k_norm, N * Hkv, D, c->eps);
    }
    rope_forward(s->q, b->pos, c->inv_freq, N, H, D, c->rot_dim, c->attn_scaling);
    rope_forward(s->k, b->pos, c->inv_freq, N, Hkv, D, c->rot_dim, c->attn_scaling);
    attention_forward(s->att, s->lse, s->q, s->k, s->v, b->seg, b->len, b->B, b->T, H, Hkv, D,
                      c->window[l], scale);
    memcpy(s->xmid, x, (size_t)N * C * sizeof(float));
    lin_forward(m, a, l, LIN_O, s->xmid, C, s->att, N, 1, seed);
    rmsnorm_forward(s->ln2, s->rstd2, s->xmid, bw->ln2, N, C, c->eps);
    for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
        if (bw->lin[mlp_in_kinds[i]].W) lin_forward(m, a, l, mlp_in_kinds[i], s->gu, 2 * I, s->ln2, N, 0, seed);
    swiglu_forward(s->act, s->gu, s->gu + I, N, I, 2 * I);
    memcpy(xnext, s->xmid, (size_t)N * C * sizeof(float));
    lin_forward(m, a, l, LIN_DOWN, xnext, C, s->act, N, 1, seed);
}

/* Backward of layer l: on entry a->dres holds d(loss)/d(layer output); on return it holds
 * d(loss)/d(layer input) (when need_dx), and LoRA gradients have accumulated. */
static void layer_backward(model *m, acts *a, const batch *b, int l, const slot *s,
                           const float *x, uint64_t seed, int need_dx) {
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, KD = Hkv * D, QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    float *dres = a->dres;
    /* MLP: xnext = xmid + down(silu(gate) * up) */
    memset(a->dact, 0, (size_t)N * I * sizeof(float));
    lin_backward(m, a, l, LIN_DOWN, a->dact, dres, C, s->act, N, seed);
    swiglu_backward(a->dgu, a->dgu + I, a->dact, s->gu, s->gu + I, N, I, 2 * I);
    memset(a->dln, 0, (size_t)N * C * sizeof(float));
    for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
        if (bw->lin[mlp_in_kinds[i]].W)
            lin_backward(m, a, l, mlp_in_kinds[i], a->dln, a->dgu, 2 * I, s->ln2, N, seed);
    rmsnorm_backward(dres, NULL, a->dln, s->xmid, bw->ln2, s->rstd2, N, C);
    /* attention: xmid = x + o(attention(rope(q), rope(k), v)) */
    memset(a->datt, 0, (size_t)N * HD * sizeof(float));
    lin_backward(m, a, l, LIN_O, a->datt, dres, C, s->att, N, seed);
    attention_backward(a->dq, a->dk, a->dv, a->datt, s->q, s->k, s->v, s->att, s->lse, b->seg,
                       b->len, b->B, b->T, H, Hkv, D, c->window[l], scale);
    rope_backward(a->dq, b->pos, c->inv_freq, N, H, D, c->rot_dim, c->attn_scaling);
    rope_backward(a->dk, b->pos, c->inv_freq, N, Hkv, D, c->rot_dim, c->attn_scaling);
    float *dq = a->dq, *dk = a->dk;
    if (c->arch->qk_norm) {
        memset(a->dq2, 0, (size_t)N * HD * sizeof(float));
        memset(a->dk2, 0, (size_t)N * KD * sizeof(float));
        rmsnorm_backward(a->dq2, NULL, a->dq, s->qpre, bw->q_norm, s->qn_rstd, N * H, D);
        rmsnorm_backward(a->dk2, NULL, a->dk, s->kpre, bw->k_norm, s->kn_rstd, N * Hkv, D);
        dq = a->dq2, dk = a->dk2;
    }
    for (int n = 0; n < N; n++) {
        float *row = a->dqkv + (size_t)n * QKV;
        memcpy(row, dq + (size_t)n * HD, HD * sizeof(float));
        memcpy(row + HD, dk + (size_t)n * KD, KD * sizeof(float));
        memcpy(row + HD + KD, a->dv + (size_t)n * KD, KD * sizeof(float));
    }
    if (need_dx) memset(a->dln, 0, (size_t)N * C * sizeof(float));
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].W)
            lin_backward(m, a, l, attn_kinds[i], need_dx ? a->dln : NULL, a->dqkv, QKV, s->ln1, N, seed);
    if (need_dx) rmsnorm_backward(dres, NULL, a->dln, x, bw->ln1, s->rstd1, N, C);
}

/* ---- the model ----------------------------------------------------------------------- */

double model_forward(const model *mc, acts *a, const batch *b, int train, uint64_t seed,
                     float *logits, long *count) {
    model *m = (model *)mc;
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    const size_t sN = (size_t)a->maxN;
    for (int n = 0; n < N; n++)
        memcpy(a->x + (size_t)n * C, m->wte + (size_t)b->ids[n] * C, C * sizeof(float));
    for (int l = 0; l < c->L; l++) {
        /* train keeps every layer's input; eval (and recompute) runs in place in slot 0 */
        float *x = a->x + (train ? (size_t)l : 0) * sN * C;
        float *xnext = a->x + (train ? (size_t)(l + 1) : 0) * sN * C;
        slot s = slot_at(m, a, train && !a->ckpt ? (size_t)l : 0);
        layer_forward(m, a, b, l, &s, x, xnext, seed);
    }
    float *xL = a->x + (train ? (size_t)c->L : 0) * sN * C;
    rmsnorm_forward(a->hf, a->rstdf, xL, m->norm_f, N, C, c->eps);
    if (logits) matmul_forward(logits, c->V, a->hf, C, m->lm_head, NULL, N, C, c->V, 0);
    if (train) memset(a->dhf, 0, (size_t)N * C * sizeof(float));
    double loss = lmhead_xent(train ? a->dhf : NULL, a->hf, m->lm_head, b->targets, N, C, c->V,
                              1.0f, a->xent, a->chunk);
    if (count) {
        long cnt = 0;
        for (int n = 0; n < N; n++) cnt += b->targets[n] >= 0;
        *count = cnt;
    }
    return loss;
}

void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t seed) {
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C;
    const size_t sN = (size_t)a->maxN;
    for (size_t i = 0; i < (size_t)N * C; i++) a->dhf[i] *= grad_scale;
    memset(a->dres, 0, (size_t)N * C * sizeof(float));
    rmsnorm_backward(a->dres, NULL, a->dhf, a->x + (size_t)c->L * sN * C, m->norm_f, a->rstdf, N, C);
    for (int l = c->L - 1; l >= 0; l--) {
        const float *x = a->x + (size_t)l * sN * C;
        slot s = slot_at(m, a, a->ckpt ? 0 : (size_t)l);
        if (a->ckpt) layer_forward(m, a, b, l, &s, x, a->xtmp, seed); /* recompute */
        /* the embedding is frozen: no gradient is needed below layer 0's input */
        layer_backward(m, a, b, l, &s, x, seed, l > 0);
    }
}
