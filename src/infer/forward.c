/*
 * forward.c: one forward step of generation over the KV cache (forward.h).
 *
 * The block is block.c's forward for N = n new tokens of one sequence, with the cache in place
 * of the sequence's earlier keys and values:
 *   x = embedding rows of ids                              (n, C)
 *   per layer: ln = rmsnorm(x); qkv = ln [Wq|Wk|Wv]^T (+ b, + adapters)   (n, QKV)
 *              q, k, v = split, qk-norm, RoPE at positions p0 ..         (attn_input_forward)
 *              cache[p0 ..] = k, v; att = attention(q, cache)            (n, H, D)
 *              x += att Wo^T; ln = rmsnorm(x); gu = ln [Wg|Wu]^T; x += (silu(g) * u) Wd^T
 *   logits = rmsnorm(x) Wlm^T (of the last row, or of every row)
 * A prompt that starts an empty fp32 cache is attended by attention_forward over the cache's own
 * rows (the training kernel: keys 0 .. n-1 are exactly that chunk); everything else goes through
 * kv_attention. Scratch sizes follow the chunk; the matmul scratch is the model's own rule
 * (model_matmul_scratch_bytes), so the matmuls never allocate.
 */
#include "infer/forward.h"
#include "ops/ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The linear layers that write a block's fused buffers (model_lin_layout). */
static const lin_kind attn_kinds[] = {LIN_Q, LIN_K, LIN_V, LIN_QKV};
static const lin_kind mlp_in_kinds[] = {LIN_GATE, LIN_UP, LIN_GATE_UP};

#define CHUNK_DEFAULT 256

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

static int max_rank(const infer_adapter *ad, int n_ad) {
    int R = 0;
    for (int i = 0; i < n_ad; i++)
        R = ad[i].ls->R > R ? ad[i].ls->R : R;
    return R;
}

ft_status infer_init(infer_model *im, model *m, const infer_adapter *ad, int n_ad, int ctx,
                     kv_format kvf, int chunk, ft_error *err) {
    memset(im, 0, sizeof *im);
    const model_config *c = &m->cfg;
    im->m = m, im->ad = ad, im->n_ad = n_ad;
    if (chunk <= 0) chunk = CHUNK_DEFAULT;
    if (chunk > ctx) chunk = ctx;
    im->chunk = chunk;
    im->nthreads = omp_get_max_threads();
    ft_status st = kv_cache_alloc(&im->kv, kvf, c->L, c->Hkv, c->D, ctx, err);
    if (st) return st;
    const size_t n = (size_t)chunk, C = c->C, HD = (size_t)c->H * c->D, KD = (size_t)c->Hkv * c->D;
    const size_t I = c->I, QKV = (size_t)m->QKV, R = (size_t)max_rank(ad, n_ad),
                 half = c->rot_dim / 2;
    size_t parts[] = {
        n * C,
        n * C,
        n * QKV,
        n * HD,
        n * KD,
        n * KD,
        n * HD,
        n * 2 * I,
        n * I, /* x .. act */
        n * R,
        n * c->H,
        n * c->Hkv,
        n * c->H,
        C, /* xa .. hf */
        (size_t)ctx * half,
        (size_t)ctx * half,                                          /* rope */
        (size_t)im->nthreads * kv_attention_scratch_floats(&im->kv), /* attention */
        n * C, /* raw: the embedding rows as stored (at most 4 bytes a value) */
    };
    float **dst[] = {&im->x,        &im->ln,          &im->qkv, &im->q,   &im->k,
                     &im->v,        &im->att,         &im->gu,  &im->act, &im->xa,
                     &im->qn_rstd,  &im->kn_rstd,     &im->lse, &im->hf,  &im->rope_cos,
                     &im->rope_sin, &im->att_scratch, &im->raw};
    enum { NP = sizeof parts / sizeof parts[0] };
    size_t floats = 0;
    for (int i = 0; i < NP; i++)
        floats += up16(parts[i]);
    im->mm_bytes = (model_matmul_scratch_bytes(c, &m->quant, chunk) + 63) & ~(size_t)63;
    im->attn_ws_bytes =
        (attention_workspace_bytes(1, chunk, c->H, c->Hkv, c->D, 0) + 63) & ~(size_t)63;
    size_t total = floats * sizeof(float) + im->mm_bytes + im->attn_ws_bytes;
    float *buf = aligned_alloc(64, total);
    im->pos = malloc(sizeof(int) * n);
    im->tokens = malloc(sizeof(int32_t) * (size_t)ctx);
    if (!buf || !im->pos || !im->tokens) {
        free(buf);
        infer_free(im);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, "use a smaller --ctx",
                            "cannot allocate %.1f MB of scratch for generation", total / 1048576.0);
    }
    memset(buf, 0, floats * sizeof(float));
    float *cur = buf;
    for (int i = 0; i < NP; i++) {
        *dst[i] = cur;
        cur += up16(parts[i]);
    }
    im->mm = im->mm_bytes ? (char *)buf + floats * sizeof(float) : NULL;
    im->attn_ws = im->attn_ws_bytes ? (char *)buf + floats * sizeof(float) + im->mm_bytes : NULL;
    im->bytes = total;
    /* RoPE's cos and sin for every position of the context, as training's rope_table */
    rope_table(im->rope_cos, im->rope_sin, ctx, c->inv_freq, c->rot_dim, c->attn_scaling);
    return FT_OK;
}

void infer_free(infer_model *im) {
    free(im->x); /* the first part is the start of the one allocation */
    free(im->pos);
    free(im->tokens);
    kv_cache_free(&im->kv);
    memset(im, 0, sizeof *im);
}

size_t infer_bytes(const infer_model *im) {
    return im->bytes + 2 * (size_t)im->kv.L * im->kv.maxT * im->kv.row_bytes;
}

void infer_truncate(infer_model *im, int len) {
    if (len >= 0 && len < im->kv.len) im->kv.len = len;
}

/* out (n, ldo)[col ..] = x W^T + b + the adapters' LoRA terms; beta 1 adds to out. */
static void lin(infer_model *im, int l, lin_kind k, float *out, int ldo, const float *x, int n,
                float beta) {
    const lin_weights *lw = &im->m->blocks[l].lin[k];
    /* one row: fused dot products, each weight read once as stored (a one-row GEMM through
     * fp32 weights would pack the panels it reads, touching each weight twice) */
    if (n == 1 && lw->W.compute == QC_F32)
        qmatvec(out + lw->col, x, &lw->W, lw->b, beta);
    else if (qmatmul_forward(out + lw->col, ldo, x, lw->in, &lw->W, lw->b, n, beta, im->mm,
                             im->mm_bytes))
        im->failed = 1;
    for (int a = 0; a < im->n_ad; a++) {
        const lora_set *ls = im->ad[a].ls;
        const lora_module *mod = lora_get(ls, l, k);
        if (!mod) continue;
        const int R = ls->R;
        /* xa (n, R) = x A^T; out += (w * scale) xa B^T */
        gemm(0, 1, n, R, mod->in, 1.0f, x, mod->in, ls->params + mod->offA, mod->in, 0.0f, im->xa,
             R);
        gemm(0, 1, n, mod->out, R, im->ad[a].weight * ls->scale, im->xa, R, ls->params + mod->offB,
             R, 1.0f, out + lw->col, ldo);
    }
}

/* Layer l over the n rows of im->x (positions p0 ..), in place. */
static void layer(infer_model *im, int l, int n, int p0) {
    const model *m = im->m;
    const model_config *c = &m->cfg;
    const block_weights *bw = &m->blocks[l];
    const int C = c->C, H = c->H, Hkv = c->Hkv, D = c->D, I = c->I, QKV = m->QKV;
    const float scale = 1.0f / sqrtf((float)D);
    rmsnorm_forward(im->ln, im->lse, im->x, bw->ln1, n, C, c->eps);
    for (size_t i = 0; i < sizeof attn_kinds / sizeof attn_kinds[0]; i++)
        if (bw->lin[attn_kinds[i]].out) lin(im, l, attn_kinds[i], im->qkv, QKV, im->ln, n, 0);
    const int qn = c->arch->qk_norm;
    attn_input_forward(im->q, im->k, im->v, im->qn_rstd, im->kn_rstd, im->qkv, QKV,
                       qn ? bw->q_norm : NULL, qn ? bw->k_norm : NULL, c->eps, im->pos,
                       im->rope_cos, im->rope_sin, n, H, Hkv, D, c->rot_dim);
    kv_cache_store(&im->kv, l, p0, n, im->k, im->v);
    const float *kf = kv_cache_k_f32(&im->kv, l), *vf = kv_cache_v_f32(&im->kv, l);
    if (p0 == 0 && kf && n > 1)
        attention_forward(im->att, im->lse, im->q, kf, vf, NULL, NULL, 1, n, H, Hkv, D,
                          c->window[l], scale, 0, im->attn_ws, im->attn_ws_bytes);
    else
        kv_attention(&im->kv, l, im->att, im->q, n, p0, H, c->window[l], scale, im->att_scratch,
                     im->nthreads);
    lin(im, l, LIN_O, im->x, C, im->att, n, 1);
    rmsnorm_forward(im->ln, im->lse, im->x, bw->ln2, n, C, c->eps);
    for (size_t i = 0; i < sizeof mlp_in_kinds / sizeof mlp_in_kinds[0]; i++)
        if (bw->lin[mlp_in_kinds[i]].out) lin(im, l, mlp_in_kinds[i], im->gu, 2 * I, im->ln, n, 0);
    swiglu_forward(im->act, im->gu, im->gu + I, n, I, 2 * I);
    lin(im, l, LIN_DOWN, im->x, C, im->act, n, 1);
}

/* One chunk of at most im->chunk tokens. */
static void step(infer_model *im, const int32_t *ids, int n, float *logits, int all) {
    const model *m = im->m;
    const model_config *c = &m->cfg;
    const int C = c->C, p0 = im->kv.len;
    for (int i = 0; i < n; i++) {
        im->pos[i] = p0 + i;
        model_embed_row(m, ids[i], im->x + (size_t)i * C, im->raw + (size_t)i * C);
        im->tokens[p0 + i] = ids[i];
    }
    for (int l = 0; l < c->L; l++)
        layer(im, l, n, p0);
    im->kv.len = p0 + n;
    if (!logits) return;
    /* logits = rmsnorm(x) Wlm^T: every row into logits (n, V), or the last row */
    int rows = all ? n : 1;
    const float *xr = im->x + (size_t)(n - rows) * C;
    rmsnorm_forward(im->ln, im->lse, xr, m->norm_f, rows, C, c->eps);
    if (rows == 1 && m->lm_head.compute == QC_F32)
        qmatvec(logits, im->ln, &m->lm_head, NULL, 0);
    else if (qmatmul_forward(logits, c->V, im->ln, C, &m->lm_head, NULL, rows, 0, im->mm,
                             im->mm_bytes))
        im->failed = 1;
}

ft_status infer_forward(infer_model *im, const int32_t *ids, int n, float *logits, int all,
                        ft_error *err) {
    const model_config *c = &im->m->cfg;
    if (im->kv.len + n > im->kv.maxT)
        return ft_error_set(err, FT_ERR_INPUT, "context",
                            "shorten the prompt, or raise --ctx (up to max_position_embeddings)",
                            "%d tokens do not fit the context of %d positions (%d in use)", n,
                            im->kv.maxT, im->kv.len);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->V)
            return ft_error_set(err, FT_ERR_INPUT, "prompt",
                                "the tokenizer and the model do not match",
                                "token id %d at position %d is outside the vocabulary (%d ids)",
                                (int)ids[i], i, c->V);
    for (int done = 0; done < n; done += im->chunk) {
        int k = n - done < im->chunk ? n - done : im->chunk, last = done + k == n;
        /* logits of every chunk's rows (all), or of the last chunk's last row */
        float *out = !logits ? NULL : all ? logits + (size_t)done * c->V : last ? logits : NULL;
        step(im, ids + done, k, out, all);
    }
    if (im->failed)
        return ft_error_set(err, FT_ERR_RUNTIME, "generation", "please report this",
                            "a matmul found its scratch too small");
    return FT_OK;
}
