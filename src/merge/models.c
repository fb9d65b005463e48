/*
 * models.c: `ftune merge-models`: whole models combined with mergekit 0.1.5's methods, tensor by
 * tensor, as mergekit computes them (mergekit/merge_methods/linear.py, slerp.py,
 * generalized_task_arithmetic.py and sparsify.py; docs/merge.md gives the formulas), in fp32:
 *
 *   linear           sum_k w_k M_k  (/ sum_k w_k with normalize, its default); the base unused
 *   task_arithmetic  B + lambda * sum_k w_k d_k,  d_k = M_k - B
 *   ties             d_k trimmed to its int(density n) largest |values|, weighted, signs elected
 *                    by the sign of sum_k w_k d_k, the agreeing ones summed and (normalize)
 *                    divided by the sum of their weights
 *   dare_linear      d_k * Bernoulli(density) mask, rescaled to d_k's L1 norm (rescale), summed
 *   dare_ties        the same masks, then TIES' election and disjoint sum
 *   slerp            spherical interpolation of the base and one model at t, per tensor (its
 *                    norms and the angle over the whole tensor), linear where they are
 *                    (anti)parallel
 *
 * Streaming: every method but the pruning ones needs only the values at hand, so each tensor is
 * read a chunk of whole rows at a time from each model (slerp's norms and angle take two passes
 * more). TIES' threshold (the k-th largest |d_k|) is found without holding the tensor: two
 * histogram passes over the bit patterns of |d_k| (monotonic for non-negative floats: top 16 bits,
 * then the low 16 within the bucket that holds the k-th), and the L1 norms of rescaling take one
 * pass more; peak memory is a few chunks per model whatever the model size.
 *
 * A model may be a LoRA adapter of --base: its tensors are then what `ftune merge` writes (fold.c:
 * W + scaling * B @ A in W's dtype), computed per chunk and never stored.
 */
#include "base/half.h"
#include "base/hash.h"
#include "base/rand.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "merge/adapter.h"
#include "merge/merge.h"
#include "merge/outdir.h"
#include "merge/shards.h"
#include "model/config.h"
#include "model/init.h"
#include "ops/axpy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const models_method_names[MK_COUNT] = {"linear",      "task_arithmetic", "ties",
                                                   "dare_linear", "dare_ties",       "slerp"};

/* Values per chunk of each model: 1 MB of fp32 (at least one row). */
#define CHUNK ((size_t)1 << 18)
#define MAXK MERGE_MAX_ADAPTERS

typedef struct source {
    const char *dir;
    st_set *set; /* a model folder */
    adapter *ad; /* or an adapter of --base */
    cJSON *cfg;  /* config.json of a model folder */
    char file[4200];
} source;

typedef struct item {
    const st_tensor *t; /* the layout model's tensor (--base, or the first model for linear) */
    const st_tensor *src[MAXK];
    const adapter_module *mod[MAXK];
    size_t rows, cols, n;
    st_dtype od;
    int merged; /* a float tensor, combined; others are copied */
} item;

/* Per model, per tensor: how its task vector is sparsified. */
typedef struct prune {
    int kind;         /* 0 none, 1 magnitude (top-k), 2 random (Bernoulli), 3 all zero */
    uint32_t thr;     /* magnitude: bits of the k-th largest |d| */
    uint64_t eq_keep; /* values equal to thr kept (the first ones in index order) */
    uint64_t eq_seen; /* running, in the final pass */
    uint64_t stream;  /* random: the mask's stream */
    int scaled;       /* rescale applies (both L1 norms >= eps) */
    float scale;      /* before / after */
} prune;

typedef struct ctx {
    const merge_models_options *o;
    source base, models[MAXK];
    int have_base, conv1d, K;
    const st_set *layout;
    float *b, *x[MAXK], *tmp, *out;
    void *obuf;
    size_t cap; /* floats per buffer */
    prune pr[MAXK];
    float w[MAXK];
    int normalize, rescale, consensus, sparsify; /* sparsify: 1 magnitude, 2 random */
    /* --dump-masks */
    int nmask, capmask;
    char **mask_names;
    uint8_t **mask_data;
    const st_tensor **mask_t;
} ctx;

static ft_status oom(ft_error *err, const char *where) {
    return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
}

static int is_dir_with(const char *dir, const char *name) {
    char p[4400];
    struct stat s;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &s) == 0;
}

/* Rows [r0, r0 + nr) of model k's tensor as fp32 into dst. base_rows: the base's rows, needed
 * for an adapter model (W + scaling * B @ A, rounded to W's dtype as fold.c writes it). */
static ft_status read_model(ctx *c, const item *it, int k, size_t r0, size_t nr,
                            const float *base_rows, float *dst, ft_error *err) {
    size_t first = r0 * it->cols, cnt = nr * it->cols;
    if (it->src[k]) {
        if (st_read_range_f32(it->src[k], first, cnt, dst))
            return ft_error_set(err, FT_ERR_INPUT, it->src[k]->name, NULL, "not F32, F16 or BF16");
        return FT_OK;
    }
    memcpy(dst, base_rows, cnt * sizeof *dst);
    const adapter_module *m = it->mod[k];
    if (!m) return FT_OK;
    merge_delta_rows(m, c->conv1d, r0, nr, it->cols, c->tmp, 0);
    const float s = (float)m->scaling;
    st_dtype wd = it->t->dtype;
    for (size_t i = 0; i < cnt; i++)
        dst[i] = shard_round_to(wd, dst[i] + c->tmp[i] * s);
    return FT_OK;
}

static ft_status read_base(ctx *c, const item *it, size_t r0, size_t nr, ft_error *err) {
    if (st_read_range_f32(it->t, r0 * it->cols, nr * it->cols, c->b))
        return ft_error_set(err, FT_ERR_INPUT, it->t->name, NULL, "not F32, F16 or BF16");
    return FT_OK;
}

/* d = model k - base over rows [r0, r0 + nr) (the base already in c->b). */
static ft_status read_delta(ctx *c, const item *it, int k, size_t r0, size_t nr, float *d,
                            ft_error *err) {
    ft_status st = read_model(c, it, k, r0, nr, c->b, d, err);
    if (st) return st;
    size_t cnt = nr * it->cols;
    for (size_t i = 0; i < cnt; i++)
        d[i] = d[i] - c->b[i];
    return FT_OK;
}

static size_t rows_per_chunk(const ctx *c, const item *it) {
    size_t rc = c->cap / it->cols;
    return rc ? rc : 1;
}

static inline uint32_t abs_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return u & 0x7fffffffu;
}

/* mergekit's magnitude(): the k = max(1, int(density * n)) values of largest |d| kept, found by
 * radix selection over |d|'s bits in two histogram passes. Equal magnitudes at the threshold are
 * kept in index order (torch.argsort leaves their order unspecified; with random weights only
 * zeros tie, and a zero is zero kept or not). */
static ft_status magnitude_select(ctx *c, const item *it, int k, prune *p, ft_error *err) {
    double dn = c->o->density * (double)it->n;
    uint64_t kk = (uint64_t)dn;
    if (kk < 1) kk = 1;
    uint64_t *h = calloc(65536, sizeof *h);
    if (!h) return oom(err, it->t->name);
    size_t rc = rows_per_chunk(c, it);
    ft_status st = FT_OK;
    uint32_t hi = 0, lo = 0;
    uint64_t above = 0;
    for (int pass = 0; pass < 2 && !st; pass++) {
        memset(h, 0, 65536 * sizeof *h);
        for (size_t r0 = 0; r0 < it->rows && !st; r0 += rc) {
            size_t nr = it->rows - r0 < rc ? it->rows - r0 : rc, cnt = nr * it->cols;
            st = read_base(c, it, r0, nr, err);
            if (!st) st = read_delta(c, it, k, r0, nr, c->x[k], err);
            for (size_t i = 0; !st && i < cnt; i++) {
                uint32_t b = abs_bits(c->x[k][i]);
                if (pass == 0)
                    h[b >> 16]++;
                else if ((b >> 16) == hi)
                    h[b & 0xffff]++;
            }
        }
        if (st) break;
        /* from the top bucket down to the one that holds the kk-th largest */
        uint64_t cum = pass == 0 ? 0 : above;
        int at = 65535;
        for (; at > 0 && cum + h[at] < kk; at--)
            cum += h[at];
        if (pass == 0)
            hi = (uint32_t)at, above = cum;
        else
            lo = (uint32_t)at, above = cum;
    }
    free(h);
    if (st) return st;
    p->kind = 1;
    p->thr = hi << 16 | lo;
    p->eq_keep = kk - above;
    return FT_OK;
}

/* The mask of value i (index in the tensor) under p; updates the running tie count. */
static inline int keep(prune *p, size_t i, float v, double prob) {
    if (p->kind == 1) {
        uint32_t b = abs_bits(v);
        if (b > p->thr) return 1;
        if (b == p->thr && p->eq_seen < p->eq_keep) {
            p->eq_seen++;
            return 1;
        }
        return 0;
    }
    return rand_uniform01(p->stream, i) < prob;
}

/* Sparsify one chunk of model k's delta in place (values first.. of the tensor). */
static void sparsify_chunk(ctx *c, int k, float *d, size_t first, size_t cnt, uint8_t *mask) {
    prune *p = &c->pr[k];
    if (p->kind == 0) return;
    if (p->kind == 3) { /* density <= 0: torch.zeros_like */
        for (size_t i = 0; i < cnt; i++)
            d[i] = 0.0f;
        return;
    }
    double prob = (double)(float)c->o->density;
    for (size_t i = 0; i < cnt; i++) {
        int m = keep(p, first + i, d[i], prob);
        if (mask) mask[first + i] = (uint8_t)m;
        d[i] = d[i] * (m ? 1.0f : 0.0f); /* tensor * mask: a dropped negative value is -0 */
        if (p->scaled) d[i] = d[i] * p->scale;
    }
}

/* L1 norms of model k's delta before and after its mask: the rescale factor (RescaleNorm.l1).
 * Summed in double and rounded once, so within an ulp or two of torch's fp32 sum. */
static ft_status l1_rescale(ctx *c, const item *it, int k, prune *p, ft_error *err) {
    double before = 0, after = 0;
    size_t rc = rows_per_chunk(c, it);
    double prob = (double)(float)c->o->density;
    prune q = *p;
    q.eq_seen = 0;
    for (size_t r0 = 0; r0 < it->rows; r0 += rc) {
        size_t nr = it->rows - r0 < rc ? it->rows - r0 : rc, cnt = nr * it->cols;
        ft_status st = read_base(c, it, r0, nr, err);
        if (!st) st = read_delta(c, it, k, r0, nr, c->x[k], err);
        if (st) return st;
        for (size_t i = 0; i < cnt; i++) {
            float v = c->x[k][i];
            before += fabs((double)v);
            if (keep(&q, r0 * it->cols + i, v, prob)) after += fabs((double)v);
        }
    }
    float bf = (float)before, af = (float)after;
    const float eps = 1e-7f;
    p->scaled = !(bf < eps || af < eps);
    p->scale = bf / af;
    return FT_OK;
}

static ft_status add_mask(ctx *c, const item *it, int k, uint8_t **out, ft_error *err) {
    if (c->nmask == c->capmask) {
        int nc = c->capmask ? 2 * c->capmask : 64;
        char **nn = realloc(c->mask_names, sizeof *nn * (size_t)nc);
        if (nn) c->mask_names = nn;
        uint8_t **nd = realloc(c->mask_data, sizeof *nd * (size_t)nc);
        if (nd) c->mask_data = nd;
        const st_tensor **nt = realloc(c->mask_t, sizeof *nt * (size_t)nc);
        if (nt) c->mask_t = nt;
        if (!nn || !nd || !nt) return oom(err, it->t->name);
        c->capmask = nc;
    }
    char name[1200];
    snprintf(name, sizeof name, "%s.%d", it->t->name, k);
    c->mask_names[c->nmask] = strdup(name);
    c->mask_data[c->nmask] = calloc(it->n ? it->n : 1, 1);
    c->mask_t[c->nmask] = it->t;
    if (!c->mask_names[c->nmask] || !c->mask_data[c->nmask]) {
        free(c->mask_names[c->nmask]);
        free(c->mask_data[c->nmask]);
        return oom(err, name);
    }
    *out = c->mask_data[c->nmask++];
    return FT_OK;
}

/* mergekit's slerp() coefficients for one tensor (its batch axis holds whole tensors: the norms
 * and the dot product are over the tensor): a pass for the two L2 norms, one for the dot product
 * of the normalized tensors (normalized before the product, as mergekit does), each summed in
 * double and rounded once (mergekit's are fp32 sums of chunk sums: within an ulp or two). */
static ft_status slerp_coefs(ctx *c, const item *it, float t, float *ca, float *cb, ft_error *err) {
    const double eps = 1e-8, dot_threshold = 0.9995;
    size_t rc = rows_per_chunk(c, it);
    double sa = 0, sb = 0, dd = 0;
    float na = 1.0f, nb = 1.0f;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r0 = 0; r0 < it->rows; r0 += rc) {
            size_t nr = it->rows - r0 < rc ? it->rows - r0 : rc, cnt = nr * it->cols;
            ft_status st = read_base(c, it, r0, nr, err);
            if (!st) st = read_model(c, it, 0, r0, nr, c->b, c->x[0], err);
            if (st) return st;
            const float *x = c->b, *y = c->x[0];
            if (pass == 0)
                for (size_t i = 0; i < cnt; i++)
                    sa += (double)x[i] * x[i], sb += (double)y[i] * y[i];
            else
                for (size_t i = 0; i < cnt; i++)
                    dd += (double)((x[i] / na) * (y[i] / nb));
        }
        if (pass == 0) {
            na = (float)sqrt(sa), nb = (float)sqrt(sb);
            if (!(na > eps)) na = 1.0f;
            if (!(nb > eps)) nb = 1.0f;
        }
    }
    float dot = (float)dd;
    dot = dot < -1.0f ? -1.0f : dot > 1.0f ? 1.0f : dot;
    if (fabsf(dot) > dot_threshold) { /* (anti)parallel: linear interpolation */
        *ca = 1.0f - t, *cb = t;
    } else {
        float theta = acosf(dot), st = sinf(theta);
        *ca = sinf((1.0f - t) * theta) / st;
        *cb = sinf(t * theta) / st;
    }
    return FT_OK;
}

/* One merged tensor, written to wr a chunk of rows at a time. */
static ft_status merge_item(ctx *c, item *it, st_writer *wr, ft_error *err) {
    const merge_models_options *o = c->o;
    ft_status st = FT_OK;
    int K = c->K;
    uint8_t *masks[MAXK] = {0};
    int taskvec = o->method != MK_LINEAR && o->method != MK_SLERP;
    /* the prune state of each model for this tensor */
    for (int k = 0; k < K && !st; k++) {
        prune *p = &c->pr[k];
        memset(p, 0, sizeof *p);
        if (!taskvec || !c->sparsify || o->density >= 1 || it->n == 0) continue;
        if (c->sparsify == 1 && o->density <= 0) {
            p->kind = 3;
            continue;
        }
        if (c->sparsify == 1) {
            st = magnitude_select(c, it, k, p, err);
        } else {
            p->kind = 2;
            uint64_t key = hash_bytes(it->t->name, strlen(it->t->name), HASH_START) ^ (uint64_t)k;
            p->stream = rand_mix64(o->seed ^ rand_mix64(key));
            if (o->dump_masks) st = add_mask(c, it, k, &masks[k], err);
        }
        if (!st && c->rescale) st = l1_rescale(c, it, k, p, err);
    }
    float wsum = 0.0f; /* weights.sum(): from +0 in model order */
    for (int k = 0; k < K; k++)
        wsum += c->w[k];
    const float lambda = (float)o->lambda, t = (float)o->t;
    float ca = 0, cb = 0;
    if (!st && o->method == MK_SLERP) st = slerp_coefs(c, it, t, &ca, &cb, err);
    size_t rc = rows_per_chunk(c, it);
    for (size_t r0 = 0; r0 < it->rows && !st; r0 += rc) {
        size_t nr = it->rows - r0 < rc ? it->rows - r0 : rc, cnt = nr * it->cols;
        float *out = c->out;
        if (o->method == MK_LINEAR) {
            /* result = zeros; result.addcmul_(M_k, w_k); result /= sum(w). PyTorch's CPU addcmul
             * kernel rounds once (a fused multiply-add): ops/axpy's fmaf kernels */
            if (c->have_base) st = read_base(c, it, r0, nr, err);
            for (size_t i = 0; i < cnt; i++)
                out[i] = 0.0f;
            for (int k = 0; k < K && !st; k++) {
                st = read_model(c, it, k, r0, nr, c->b, c->x[0], err);
                if (!st) axpy_fma(out, c->x[0], c->w[k], cnt); /* torch's addcmul: fused */
            }
            if (c->normalize)
                for (size_t i = 0; i < cnt; i++)
                    out[i] = out[i] / wsum;
        } else if (o->method == MK_SLERP) {
            st = read_base(c, it, r0, nr, err);
            if (!st) st = read_model(c, it, 0, r0, nr, c->b, c->x[0], err);
            for (size_t i = 0; !st && i < cnt; i++)
                out[i] = ca * c->b[i] + cb * c->x[0][i];
        } else {
            st = read_base(c, it, r0, nr, err);
            for (int k = 0; k < K && !st; k++) {
                st = read_delta(c, it, k, r0, nr, c->x[k], err);
                if (st) break;
                sparsify_chunk(c, k, c->x[k], r0 * it->cols, cnt, masks[k]);
                for (size_t i = 0; i < cnt; i++) /* deltas.mul_(weights) */
                    c->x[k][i] = c->x[k][i] * c->w[k];
            }
            for (size_t i = 0; !st && i < cnt; i++) {
                float mixed = 0.0f, div = wsum;
                if (c->consensus) {
                    /* get_mask("sum"): the elected sign is that of the weighted sum (+ at 0);
                     * a value counts when its sign equals it (a zero never does) */
                    float s = 0.0f;
                    for (int k = 0; k < K; k++)
                        s += c->x[k][i];
                    float maj = s >= 0.0f ? 1.0f : -1.0f;
                    div = 0.0f;
                    for (int k = 0; k < K; k++) {
                        float v = c->x[k][i];
                        float sg = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : 0.0f;
                        float m = sg == maj ? 1.0f : 0.0f;
                        mixed += v * m;
                        div += c->w[k] * m;
                    }
                    if (div == 0.0f) div = 1.0f;
                } else {
                    for (int k = 0; k < K; k++)
                        mixed += c->x[k][i];
                    if (fabsf(div) < 1e-8f) div = 1.0f;
                }
                if (c->normalize) mixed = mixed / div;
                if (o->lambda != 1.0) mixed = mixed * lambda;
                out[i] = c->b[i] + mixed;
            }
        }
        if (st) break;
        for (size_t i = 0; i < cnt; i++)
            shard_store(it->od, c->obuf, i, out[i]);
        st = st_writer_put(wr, it->t->name, c->obuf, cnt * st_dtype_size(it->od), err);
    }
    return st;
}

/* The bytes of t unchanged (a non-float tensor), a chunk at a time. */

static ft_status open_source(source *s, const char *dir, const char *opt, int allow_adapter,
                             ft_error *err) {
    s->dir = dir;
    if (is_dir_with(dir, "adapter_config.json")) {
        if (!allow_adapter)
            return ft_error_set(err, FT_ERR_INPUT, dir,
                                "an adapter stands in for a model only with --base (its model)",
                                "option %s: is a LoRA adapter, not a model folder", opt);
        snprintf(s->file, sizeof s->file, "%s/adapter_model.safetensors", dir);
        return adapter_load(dir, &s->ad, err);
    }
    ft_status st = model_dir_check(dir, err);
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!st) st = json_load_file(path, &s->cfg, err);
    if (!st) st = st_open_dir(dir, &s->set, err);
    const cJSON *qc = s->cfg ? cJSON_GetObjectItemCaseSensitive(s->cfg, "quantization_config") : 0;
    if (!st && qc)
        st = ft_error_set(err, FT_ERR_INPUT, path,
                          "merge the full-precision models (or dequantize first: ftune merge "
                          "--out-dtype)",
                          "field \"quantization_config\": quantized models are not merged");
    snprintf(s->file, sizeof s->file, "%s", dir);
    return st;
}

static void close_source(source *s) {
    st_close(s->set);
    adapter_free(s->ad);
    cJSON_Delete(s->cfg);
}

/* Models of another architecture than the layout's: a config.json field that differs. */
static ft_status same_arch(const source *lay, const source *m, ft_error *err) {
    static const char *const keys[] = {"model_type", "architectures"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(lay->cfg, keys[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(m->cfg, keys[i]);
        if ((a || b) && !(a && b && cJSON_Compare(a, b, 1))) {
            char *ta = a ? cJSON_PrintUnformatted(a) : NULL,
                 *tb = b ? cJSON_PrintUnformatted(b) : NULL;
            char where[4500];
            snprintf(where, sizeof where, "%s/config.json: field \"%s\"", m->dir, keys[i]);
            ft_status st = ft_error_set(
                err, FT_ERR_INPUT, where, "merge-models combines fine-tunes of one architecture",
                "is %s, but %s has %s", tb ? tb : "absent", lay->dir, ta ? ta : "none");
            free(ta);
            free(tb);
            return st;
        }
    }
    return FT_OK;
}

/* Each model's tensor for each item: present, of the same shape, float. */
static ft_status bind(ctx *c, item *items, int nt, ft_error *err) {
    for (int k = 0; k < c->K; k++) {
        source *m = &c->models[k];
        if (m->ad) {
            /* each module against a weight of the base */
            for (int j = 0; j < m->ad->n; j++) {
                const adapter_module *am = &m->ad->mods[j];
                char wname[1100], where[4600];
                snprintf(wname, sizeof wname, "%s.weight", am->path);
                snprintf(where, sizeof where, "%s: tensor \"%s.lora_A.weight\"", m->file, am->name);
                item *it = NULL;
                for (int i = 0; i < nt && !it; i++)
                    if (!strcmp(items[i].t->name, wname)) it = &items[i];
                if (!it)
                    return ft_error_set(err, FT_ERR_INPUT, where,
                                        "the adapter belongs to another model than --base",
                                        "targets %s, which --base %s lacks", wname, c->base.dir);
                int64_t w0 = c->conv1d ? am->in : am->out, w1 = c->conv1d ? am->out : am->in;
                if (it->t->ndim != 2 || !shard_is_float(it->t->dtype) || it->t->shape[0] != w0 ||
                    it->t->shape[1] != w1)
                    return ft_error_set(err, FT_ERR_INPUT, where,
                                        "the adapter belongs to another model than --base",
                                        "its delta is [%d, %d] (out, in) but --base's %s is not "
                                        "a float weight of that shape",
                                        am->out, am->in, wname);
                it->mod[k] = am;
            }
            continue;
        }
        for (int i = 0; i < nt; i++) {
            item *it = &items[i];
            if (!it->merged) continue;
            const st_tensor *t = st_find(m->set, it->t->name);
            char where[4600];
            snprintf(where, sizeof where, "%s: tensor \"%s\"", m->dir, it->t->name);
            if (!t)
                return ft_error_set(err, FT_ERR_INPUT, where,
                                    "the models must be fine-tunes of one base (the same tensors)",
                                    "missing (the %s has it)",
                                    c->have_base ? "--base" : "first --model");
            int same = t->ndim == it->t->ndim;
            for (int d = 0; same && d < t->ndim; d++)
                same = t->shape[d] == it->t->shape[d];
            if (!same || !shard_is_float(t->dtype))
                return ft_error_set(err, FT_ERR_INPUT, where,
                                    "the models must be fine-tunes of one base (the same shapes)",
                                    "field \"shape\" or \"dtype\" differs from the %s's",
                                    c->have_base ? "--base" : "first --model");
            it->src[k] = t;
        }
    }
    return FT_OK;
}

static ft_status write_masks(ctx *c, ft_error *err) {
    st_writer *w = st_writer_new();
    if (!w) return oom(err, c->o->dump_masks);
    ft_status st = FT_OK;
    for (int i = 0; i < c->nmask && !st; i++)
        st = st_writer_add(w, c->mask_names[i], ST_U8, c->mask_t[i]->ndim, c->mask_t[i]->shape,
                           c->mask_data[i], err);
    if (!st) st = st_writer_save(w, c->o->dump_masks, err);
    st_writer_free(w);
    return st;
}

static ft_status write_config(ctx *c, const char *dir, const outdir *od, st_dtype out_dtype,
                              const cJSON *cfg, ft_error *err) {
    char src[4200], dst[4400];
    snprintf(src, sizeof src, "%s/config.json", dir);
    outdir_path(od, "config.json", dst, sizeof dst);
    char *text = NULL;
    size_t len = 0;
    ft_status st;
    if (!c->o->out_dtype) {
        st = file_read_all(src, &text, &len, err);
        if (!st) st = atomic_write_file(dst, text, len, err);
        free(text);
        return st;
    }
    cJSON *j = cJSON_Duplicate(cfg, 1);
    if (!j) return oom(err, src);
    const char *want = out_dtype == ST_BF16  ? "bfloat16"
                       : out_dtype == ST_F16 ? "float16"
                                             : "float32";
    if (cJSON_GetObjectItemCaseSensitive(j, "torch_dtype"))
        cJSON_ReplaceItemInObjectCaseSensitive(j, "torch_dtype", cJSON_CreateString(want));
    if (cJSON_GetObjectItemCaseSensitive(j, "dtype"))
        cJSON_ReplaceItemInObjectCaseSensitive(j, "dtype", cJSON_CreateString(want));
    else
        cJSON_AddStringToObject(j, "dtype", want);
    text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return oom(err, src);
    st = atomic_write_file(dst, text, strlen(text), err);
    free(text);
    return st;
}

static ft_status write_shard(ctx *c, const outdir *od, const shard_tensor *plan, int np, int s,
                             int count, item *items, unsigned long long *done,
                             unsigned long long total, ft_error *err) {
    char name[64], path[4400];
    shard_file_name(name, sizeof name, s, count);
    outdir_path(od, name, path, sizeof path);
    st_writer *wr;
    ft_status st = shard_writer_open(plan, np, s, path, &wr, err);
    for (int i = 0; i < np && !st; i++) {
        if (plan[i].shard != s) continue;
        item *it = &items[plan[i].src];
        if (c->o->progress) c->o->progress((double)*done, (double)total, it->t->name, c->o->user);
        st = it->merged ? merge_item(c, it, wr, err) : shard_copy_tensor(it->t, wr, err);
        *done += plan[i].nbytes;
    }
    if (!st) st = st_writer_finish(wr, err);
    st_writer_free(wr);
    return st;
}

ft_status merge_models(const merge_models_options *o, merge_models_result *res, ft_error *err) {
    memset(res, 0, sizeof *res);
    ctx c = {0};
    c.o = o;
    c.K = o->n;
    ft_status st = FT_OK;
    item *items = NULL;
    shard_tensor *plan = NULL;
    outdir od = {0};
    st_dtype out_dtype = ST_F32;
    uint64_t max_shard = 0;
    if (o->out_dtype) {
        const char *s = o->out_dtype;
        if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32"))
            out_dtype = ST_F32;
        else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
            out_dtype = ST_BF16;
        else if (!strcmp(s, "f16") || !strcmp(s, "fp16") || !strcmp(s, "float16"))
            out_dtype = ST_F16;
        else
            return ft_error_set(err, FT_ERR_INPUT, "option --out-dtype", "use fp32, bf16 or f16",
                                "unknown dtype \"%s\"", s);
    }
    if ((st = shard_parse_size(o->max_shard_size ? o->max_shard_size : MERGE_DEFAULT_MAX_SHARD_SIZE,
                               &max_shard, err)))
        return st;
    if (o->n < 1 || o->n > MAXK)
        return ft_error_set(err, FT_ERR_INPUT, "option --model", NULL,
                            "give 1 to %d models (got %d)", MAXK, o->n);
    if (o->method != MK_LINEAR && !o->base_dir)
        return ft_error_set(err, FT_ERR_INPUT, "option --base",
                            "the task vectors are the models minus --base", "%s needs --base",
                            models_method_names[o->method]);
    if (o->method == MK_SLERP && o->n != 1)
        return ft_error_set(err, FT_ERR_INPUT, "option --model", NULL,
                            "slerp interpolates --base and exactly one --model (got %d)", o->n);
    if (!(o->density >= 0 && o->density <= 1) && o->method != MK_LINEAR && o->method != MK_SLERP)
        return ft_error_set(err, FT_ERR_INPUT, "option --density", NULL, "%g is outside [0, 1]",
                            o->density);
    if (!isfinite(o->lambda) || !isfinite(o->t))
        return ft_error_set(err, FT_ERR_INPUT,
                            o->method == MK_SLERP ? "option --t" : "option --lambda", NULL,
                            "not a finite number");
    /* mergekit 0.1.5's defaults: normalize for linear and ties, rescale for the DARE methods */
    int m = o->method;
    c.normalize = o->normalize >= 0 ? o->normalize : (m == MK_LINEAR || m == MK_TIES);
    c.rescale = o->rescale >= 0 ? o->rescale : (m == MK_DARE_LINEAR || m == MK_DARE_TIES);
    c.consensus = m == MK_TIES || m == MK_DARE_TIES;
    c.sparsify = m == MK_TIES ? 1 : (m == MK_DARE_LINEAR || m == MK_DARE_TIES) ? 2 : 0;
    float wsum = 0.0f;
    for (int k = 0; k < c.K; k++) {
        c.w[k] = (float)o->weights[k]; /* torch.tensor(weights, dtype=float32) */
        wsum += c.w[k];
        if (!isfinite(o->weights[k]))
            return ft_error_set(err, FT_ERR_INPUT, o->model_dirs[k], NULL,
                                "option --model: weight is not a finite number");
    }
    if (m == MK_LINEAR && c.normalize && wsum == 0.0f)
        return ft_error_set(err, FT_ERR_INPUT, "option --model",
                            "give weights that do not sum to 0, or --normalize false",
                            "linear with normalize divides by the sum of the weights, which is 0");

    c.have_base = o->base_dir != NULL;
    if (c.have_base && (st = open_source(&c.base, o->base_dir, "--base", 0, err))) goto done;
    for (int k = 0; k < c.K && !st; k++)
        st = open_source(&c.models[k], o->model_dirs[k], "--model", c.have_base, err);
    if (st) goto done;
    const source *lay = c.have_base ? &c.base : &c.models[0];
    if (!lay->set) {
        st = ft_error_set(err, FT_ERR_INPUT, o->model_dirs[0], NULL,
                          "option --model: the first model of linear without --base must be a "
                          "model folder");
        goto done;
    }
    for (int k = 0; k < c.K && !st; k++)
        if (c.models[k].set && &c.models[k] != lay) st = same_arch(lay, &c.models[k], err);
    if (st) goto done;
    c.layout = lay->set;
    c.conv1d = merge_conv1d_model(lay->cfg);
    int tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(lay->cfg, "tie_word_embeddings"));

    int nt = st_count(c.layout);
    items = calloc((size_t)(nt ? nt : 1), sizeof *items);
    plan = calloc((size_t)(nt ? nt : 1), sizeof *plan);
    if (!items || !plan) {
        st = oom(err, lay->dir);
        goto done;
    }
    size_t maxcols = 1;
    for (int i = 0; i < nt; i++) {
        item *it = &items[i];
        it->t = st_at(c.layout, i);
        it->merged = shard_is_float(it->t->dtype);
        it->od = o->out_dtype && it->merged ? out_dtype : it->t->dtype;
        it->n = it->t->nbytes / st_dtype_size(it->t->dtype);
        it->rows = it->t->ndim ? (size_t)it->t->shape[0] : 1;
        it->cols = it->rows ? it->n / it->rows : 0;
        if (!it->rows || !it->cols) it->rows = it->n ? 1 : 0, it->cols = it->n ? it->n : 1;
        if (it->merged && it->cols > maxcols) maxcols = it->cols;
    }
    if ((st = bind(&c, items, nt, err))) goto done;

    c.cap = maxcols > CHUNK ? maxcols : CHUNK;
    c.b = malloc(c.cap * sizeof(float));
    c.tmp = malloc(c.cap * sizeof(float));
    c.out = malloc(c.cap * sizeof(float));
    c.obuf = malloc(c.cap * sizeof(float));
    int ok = c.b && c.tmp && c.out && c.obuf;
    for (int k = 0; k < c.K && ok; k++)
        ok = (c.x[k] = malloc(c.cap * sizeof(float))) != NULL;
    if (!ok) {
        st = oom(err, lay->dir);
        goto done;
    }

    int np = 0;
    unsigned long long total = 0;
    for (int i = 0; i < nt; i++) {
        const st_tensor *t = items[i].t;
        if (tied && !strcmp(t->name, "lm_head.weight")) continue;
        shard_tensor *p = &plan[np++];
        p->name = t->name, p->dtype = items[i].od, p->ndim = t->ndim, p->src = i;
        memcpy(p->shape, t->shape, sizeof p->shape);
        p->nbytes = (uint64_t)items[i].n * st_dtype_size(p->dtype);
        total += p->nbytes;
        if (items[i].merged) res->merged++;
    }
    shard_sort(plan, np);
    int count = shard_split(plan, np, max_shard);

    const char *ins[MAXK + 1], *opts[MAXK + 1];
    int nin = 0;
    if (c.have_base) ins[nin] = o->base_dir, opts[nin++] = "--base";
    for (int k = 0; k < c.K; k++)
        ins[nin] = o->model_dirs[k], opts[nin++] = "--model";
    if ((st = outdir_begin(&od, o->out_dir, ins, opts, nin, o->overwrite, err))) goto done;
    unsigned long long done_bytes = 0;
    for (int s = 0; s < count && !st; s++)
        st = write_shard(&c, &od, plan, np, s, count, items, &done_bytes, total, err);
    char path[4400];
    if (!st && count > 1) {
        char *idx = shard_index_json(plan, np, count);
        outdir_path(&od, "model.safetensors.index.json", path, sizeof path);
        st = idx ? atomic_write_file(path, idx, strlen(idx), err) : oom(err, path);
        free(idx);
    }
    if (!st) st = write_config(&c, lay->dir, &od, out_dtype, lay->cfg, err);
    if (!st) st = model_copy_tokenizer_files(lay->dir, od.tmp, 1, NULL, err);
    if (!st && o->dump_masks) st = write_masks(&c, err);
    if (!st) st = outdir_commit(&od, err);
    if (!st) {
        res->tensors = np, res->shards = count, res->bytes = total;
        if (o->progress) o->progress((double)total, (double)total, NULL, o->user);
    }
done:
    if (st) outdir_abort(&od);
    free(c.b);
    free(c.tmp);
    free(c.out);
    free(c.obuf);
    for (int k = 0; k < MAXK; k++)
        free(c.x[k]);
    for (int i = 0; i < c.nmask; i++) {
        free(c.mask_names[i]);
        free(c.mask_data[i]);
    }
    free(c.mask_names);
    free(c.mask_data);
    free(c.mask_t);
    free(items);
    free(plan);
    close_source(&c.base);
    for (int k = 0; k < MAXK; k++)
        close_source(&c.models[k]);
    return st;
}
