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
    size_t bytes;
    /* saved per layer (train) */
    float *x;        /* (L+1, N, C) residual stream: input of each layer, then the final one */
    float *ln1, *rstd1, *qkv, *qpre, *kpre, *qn_rstd, *kn_rstd, *q, *k, *v, *att, *lse;
    float *xmid, *ln2, *rstd2, *gu, *act;
    float *xa; /* (n_lora, N, R) */
    float *hf, *rstdf, *dhf;
    /* scratch */
    float *dres, *dln, *dqkv, *dq, *dk, *dv, *dq2, *dk2, *datt, *dgu, *dact, *dxa, *xd, *xent;
};

static float *take(float **cur, size_t n) {
    float *p = *cur;
    *cur += (n + 15) & ~(size_t)15; /* keep 64-byte alignment */
    return p;
}

ft_status acts_alloc(const model *m, int maxB, int maxT, int xent_chunk, acts **out,
                     ft_error *err) {
    const model_config *c = &m->cfg;
    acts *a = calloc(1, sizeof *a);
    if (!a) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    size_t N = (size_t)maxB * maxT, L = (size_t)c->L, C = c->C, HD = (size_t)c->H * c->D,
           KD = (size_t)c->Hkv * c->D, I = c->I, QKV = m->QKV;
    size_t R = m->lora ? (size_t)m->lora->R : 0, nl = m->lora ? (size_t)m->lora->n : 0;
    size_t maxin = C > I ? C : I;
    if (maxin < HD) maxin = HD;
    if (xent_chunk <= 0) {
        xent_chunk = (int)((16u << 20) / (size_t)c->V);
        if (xent_chunk < 1) xent_chunk = 1;
        if (xent_chunk > 512) xent_chunk = 512;
    }
    if ((size_t)xent_chunk > N) xent_chunk = (int)N;
    int qn = c->arch->qk_norm;
    size_t sizes[] = {
        (L + 1) * N * C,                            /* x */
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
        (size_t)xent_chunk * c->V,                  /* xent */
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *buf = aligned_alloc(64, total * sizeof(float));
    if (!buf) {
        free(a);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL,
                            "use a smaller --batch-size or --seq-len",
                            "cannot allocate %.2f GB for activations", total * 4.0 / 1e9);
    }
    memset(buf, 0, total * sizeof(float));
    float *cur = buf;
    int i = 0;
    a->x = take(&cur, sizes[i++]);
    a->ln1 = take(&cur, sizes[i++]), a->rstd1 = take(&cur, sizes[i++]), a->qkv = take(&cur, sizes[i++]);
    a->qpre = take(&cur, sizes[i++]), a->kpre = take(&cur, sizes[i++]);
    a->qn_rstd = take(&cur, sizes[i++]), a->kn_rstd = take(&cur, sizes[i++]);
    a->q = take(&cur, sizes[i++]), a->k = take(&cur, sizes[i++]), a->v = take(&cur, sizes[i++]);
    a->att = take(&cur, sizes[i++]), a->lse = take(&cur, sizes[i++]);
    a->xmid = take(&cur, sizes[i++]), a->ln2 = take(&cur, sizes[i++]), a->rstd2 = take(&cur, sizes[i++]);
    a->gu = take(&cur, sizes[i++]), a->act = take(&cur, sizes[i++]);
    a->xa = take(&cur, sizes[i++]);
    a->hf = take(&cur, sizes[i++]), a->rstdf = take(&cur, sizes[i++]), a->dhf = take(&cur, sizes[i++]);
    a->dres = take(&cur, sizes[i++]), a->dln = take(&cur, sizes[i++]), a->dqkv = take(&cur, sizes[i++]);
    a->dq = take(&cur, sizes[i++]), a->dk = take(&cur, sizes[i++]), a->dv = take(&cur, sizes[i++]);
    a->dq2 = take(&cur, sizes[i++]), a->dk2 = take(&cur, sizes[i++]), a->datt = take(&cur, sizes[i++]);
    a->dgu = take(&cur, sizes[i++]), a->dact = take(&cur, sizes[i++]), a->dxa = take(&cur, sizes[i++]);
    a->xd = take(&cur, sizes[i++]);
    a->xent = take(&cur, sizes[i++]);
    a->maxB = maxB, a->maxT = maxT, a->maxN = (int)N, a->chunk = xent_chunk, a->L = c->L;
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

/* ---- forward -------------------------------------------------------------------------- */

double model_forward(const model *mc, acts *a, const batch *b, int train, uint64_t seed,
                     float *logits, long *count) {
    model *m = (model *)mc;
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, KD = Hkv * D, QKV = m->QKV;
    const size_t sN = (size_t)a->maxN;
    const float scale = 1.0f / sqrtf((float)D);
    /* embedding */
    for (int n = 0; n < N; n++) {
        int32_t id = b->ids[n];
        memcpy(a->x + (size_t)n * C, m->wte + (size_t)id * C, C * sizeof(float));
    }
    for (int l = 0; l < c->L; l++) {
        const block_weights *bw = &m->blocks[l];
        size_t li = train ? (size_t)l : 0;
        float *x = a->x + (train ? (size_t)l : 0) * sN * C;
        float *xnext = a->x + (train ? (size_t)(l + 1) : 0) * sN * C;
        float *ln1 = a->ln1 + li * sN * C, *rstd1 = a->rstd1 + li * sN;
        float *qkv = a->qkv + li * sN * QKV;
        float *q = a->q + li * sN * HD, *k = a->k + li * sN * KD, *v = a->v + li * sN * KD;
        float *att = a->att + li * sN * HD, *lse = a->lse + li * sN * H;
        float *xmid = a->xmid + li * sN * C, *ln2 = a->ln2 + li * sN * C, *rstd2 = a->rstd2 + li * sN;
        float *gu = a->gu + li * sN * 2 * I, *act = a->act + li * sN * I;

        rmsnorm_forward(ln1, rstd1, x, bw->ln1, N, C, c->eps);
        for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
            if (bw->lin[attn_kinds[i]].W) lin_forward(m, a, l, attn_kinds[i], qkv, QKV, ln1, N, 0, seed);
        for (int n = 0; n < N; n++) {
            const float *row = qkv + (size_t)n * QKV;
            memcpy(q + (size_t)n * HD, row, HD * sizeof(float));
            memcpy(k + (size_t)n * KD, row + HD, KD * sizeof(float));
            memcpy(v + (size_t)n * KD, row + HD + KD, KD * sizeof(float));
        }
        if (c->arch->qk_norm) {
            float *qpre = a->qpre + li * sN * HD, *kpre = a->kpre + li * sN * KD;
            memcpy(qpre, q, (size_t)N * HD * sizeof(float));
            memcpy(kpre, k, (size_t)N * KD * sizeof(float));
            rmsnorm_forward(q, a->qn_rstd + li * sN * H, qpre, bw->q_norm, N * H, D, c->eps);
            rmsnorm_forward(k, a->kn_rstd + li * sN * Hkv, kpre, bw->k_norm, N * Hkv, D, c->eps);
        }
        rope_forward(q, b->pos, c->inv_freq, N, H, D, c->rot_dim, c->attn_scaling);
        rope_forward(k, b->pos, c->inv_freq, N, Hkv, D, c->rot_dim, c->attn_scaling);
        attention_forward(att, lse, q, k, v, b->seg, b->len, b->B, b->T, H, Hkv, D, c->window[l], scale);
        memcpy(xmid, x, (size_t)N * C * sizeof(float));
        lin_forward(m, a, l, LIN_O, xmid, C, att, N, 1, seed);
        rmsnorm_forward(ln2, rstd2, xmid, bw->ln2, N, C, c->eps);
        for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
            if (bw->lin[mlp_in_kinds[i]].W) lin_forward(m, a, l, mlp_in_kinds[i], gu, 2 * I, ln2, N, 0, seed);
        swiglu_forward(act, gu, gu + I, N, I, 2 * I);
        if (xnext != xmid) memcpy(xnext, xmid, (size_t)N * C * sizeof(float));
        lin_forward(m, a, l, LIN_DOWN, xnext, C, act, N, 1, seed);
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

/* ---- backward ------------------------------------------------------------------------- */

void model_backward(model *m, acts *a, const batch *b, float grad_scale, uint64_t seed) {
    const model_config *c = &m->cfg;
    const int N = b->B * b->T, C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I;
    const int HD = H * D, KD = Hkv * D, QKV = m->QKV;
    const size_t sN = (size_t)a->maxN;
    const float scale = 1.0f / sqrtf((float)D);
    float *dres = a->dres;
    for (size_t i = 0; i < (size_t)N * C; i++) a->dhf[i] *= grad_scale;
    memset(dres, 0, (size_t)N * C * sizeof(float));
    rmsnorm_backward(dres, NULL, a->dhf, a->x + (size_t)c->L * sN * C, m->norm_f, a->rstdf, N, C);
    for (int l = c->L - 1; l >= 0; l--) {
        const block_weights *bw = &m->blocks[l];
        size_t li = (size_t)l;
        float *x = a->x + li * sN * C;
        float *ln1 = a->ln1 + li * sN * C, *rstd1 = a->rstd1 + li * sN;
        float *q = a->q + li * sN * HD, *k = a->k + li * sN * KD, *v = a->v + li * sN * KD;
        float *att = a->att + li * sN * HD, *lse = a->lse + li * sN * H;
        float *xmid = a->xmid + li * sN * C, *ln2 = a->ln2 + li * sN * C, *rstd2 = a->rstd2 + li * sN;
        float *gu = a->gu + li * sN * 2 * I, *act = a->act + li * sN * I;
        int need_dx = l > 0; /* the embedding is frozen: no gradient below layer 0's input */

        /* MLP: xnext = xmid + down(silu(gate) * up) */
        memset(a->dact, 0, (size_t)N * I * sizeof(float));
        lin_backward(m, a, l, LIN_DOWN, a->dact, dres, C, act, N, seed);
        swiglu_backward(a->dgu, a->dgu + I, a->dact, gu, gu + I, N, I, 2 * I);
        memset(a->dln, 0, (size_t)N * C * sizeof(float));
        for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
            if (bw->lin[mlp_in_kinds[i]].W)
                lin_backward(m, a, l, mlp_in_kinds[i], a->dln, a->dgu, 2 * I, ln2, N, seed);
        rmsnorm_backward(dres, NULL, a->dln, xmid, bw->ln2, rstd2, N, C);

        /* attention: xmid = x + o(attention(rope(q), rope(k), v)) */
        memset(a->datt, 0, (size_t)N * HD * sizeof(float));
        lin_backward(m, a, l, LIN_O, a->datt, dres, C, att, N, seed);
        attention_backward(a->dq, a->dk, a->dv, a->datt, q, k, v, att, lse, b->seg, b->len, b->B,
                           b->T, H, Hkv, D, c->window[l], scale);
        rope_backward(a->dq, b->pos, c->inv_freq, N, H, D, c->rot_dim, c->attn_scaling);
        rope_backward(a->dk, b->pos, c->inv_freq, N, Hkv, D, c->rot_dim, c->attn_scaling);
        float *dq = a->dq, *dk = a->dk;
        if (c->arch->qk_norm) {
            memset(a->dq2, 0, (size_t)N * HD * sizeof(float));
            memset(a->dk2, 0, (size_t)N * KD * sizeof(float));
            rmsnorm_backward(a->dq2, NULL, a->dq, a->qpre + li * sN * HD, bw->q_norm,
                             a->qn_rstd + li * sN * H, N * H, D);
            rmsnorm_backward(a->dk2, NULL, a->dk, a->kpre + li * sN * KD, bw->k_norm,
                             a->kn_rstd + li * sN * Hkv, N * Hkv, D);
            dq = a->dq2, dk = a->dk2;
        }
        for (int n = 0; n < N; n++) {
            float *row = a->dqkv + (size_t)n * QKV;
            memcpy(row, dq + (size_t)n * HD, HD * sizeof(float));
            memcpy(row + HD, dk + (size_t)n * KD, KD * sizeof(float));
            memcpy(row + HD + KD, a->dv + (size_t)n * KD, KD * sizeof(float));
        }
        memset(a->dln, 0, (size_t)N * C * sizeof(float));
        for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
            if (bw->lin[attn_kinds[i]].W)
                lin_backward(m, a, l, attn_kinds[i], need_dx ? a->dln : NULL, a->dqkv, QKV, ln1, N, seed);
        if (need_dx) rmsnorm_backward(dres, NULL, a->dln, x, bw->ln1, rstd1, N, C);
    }
}
