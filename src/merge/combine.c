/*
 * combine.c: `ftune merge-adapters`: several LoRA adapters combined into one, as PEFT's
 * LoraModel.add_weighted_adapter (peft 0.21.2, tuners/lora/model.py) combines them.
 *
 * Per module (the union of the adapters' modules; an adapter without the module takes no part
 * in it), with the weights w_k given and each adapter's scaling s_k:
 * - cat: A = [w_k s_k A_k] stacked by rows (A_k * w_k * s_k, two fp32 roundings), B = [B_k] side
 *   by side; rank = the sum of the ranks (rows of adapters without the module stay zero).
 * - linear, ties, dare_linear, dare_ties, magnitude_prune: the A matrices are merged with weights
 *   sign(w_k s_k) sqrt(|w_k s_k|) and the B matrices with sqrt(|w_k s_k|) (computed in double,
 *   rounded to fp32), each by task_arith.h's function of that name; all ranks must be equal.
 * - the *_svd forms and svd: delta_k = (B_k @ A_k) * s_k (fp32, get_delta_weight), merged with
 *   the weights w_k by the same function (svd: task arithmetic), then refactored by svd.h to the
 *   rank --svd-rank (default: the largest input rank), clamped with --svd-clamp. Plain svd
 *   without a clamp never builds the delta: it is refactored from its factors.
 * One adapter: linear, whatever the method (as PEFT). The new adapter's config is the first
 * adapter's with r = lora_alpha = the new rank (its scale is 1: the scalings are inside A),
 * target_modules the union, and empty rank and alpha patterns; use_rslora is written false, where
 * PEFT keeps the first adapter's value and so would scale an rsLoRA combination by sqrt(r)
 * instead of 1 (docs/merge.md).
 *
 * DARE's masks (torch.bernoulli in PEFT) come from base/rand.h's counter-based generator keyed by
 * (--seed, module name, adapter index, which matrix): the same seed gives the same adapter, and
 * --dump-masks writes them so that a test can hand PEFT the very same masks.
 */
#include "base/hash.h"
#include "base/rand.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "merge/adapter.h"
#include "merge/merge.h"
#include "merge/outdir.h"
#include "merge/svd.h"
#include "merge/task_arith.h"
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const merge_method_names[MM_COUNT] = {"linear",
                                                  "cat",
                                                  "svd",
                                                  "ties",
                                                  "ties_svd",
                                                  "dare_linear",
                                                  "dare_ties",
                                                  "dare_linear_svd",
                                                  "dare_ties_svd",
                                                  "magnitude_prune",
                                                  "magnitude_prune_svd"};

/* What a method does: its elementwise merge, and whether it refactors by SVD. */
static const struct {
    ta_kind kind;
    int svd;
} METHOD[MM_COUNT] = {
    [MM_LINEAR] = {TA_LINEAR, 0},
    [MM_CAT] = {TA_LINEAR, 0},
    [MM_SVD] = {TA_LINEAR, 1},
    [MM_TIES] = {TA_TIES, 0},
    [MM_TIES_SVD] = {TA_TIES, 1},
    [MM_DARE_LINEAR] = {TA_DARE_LINEAR, 0},
    [MM_DARE_TIES] = {TA_DARE_TIES, 0},
    [MM_DARE_LINEAR_SVD] = {TA_DARE_LINEAR, 1},
    [MM_DARE_TIES_SVD] = {TA_DARE_TIES, 1},
    [MM_MAGNITUDE_PRUNE] = {TA_MAGNITUDE_PRUNE, 0},
    [MM_MAGNITUDE_PRUNE_SVD] = {TA_MAGNITUDE_PRUNE, 1},
};

enum { PART_A, PART_B, PART_DELTA };
static const char *const PART_NAME[3] = {"lora_A", "lora_B", "delta"};

/* One module of the output. */
typedef struct combo {
    const char *name; /* PEFT's module path */
    int in, out;
    const adapter_module *m[MERGE_MAX_ADAPTERS]; /* NULL where adapter k lacks the module */
    float *A, *B;                                /* the result, (R, in) and (out, R) */
} combo;

/* The masks DARE drew, kept for --dump-masks. */
typedef struct mask_list {
    int n, cap;
    char **names;
    uint8_t **data;
    int64_t (*shape)[2];
} mask_list;

typedef struct ctx {
    const merge_adapters_options *o;
    merge_method method;
    adapter *ad[MERGE_MAX_ADAPTERS];
    int R; /* the new rank */
    mask_list masks;
    float *scratch; /* prune_magnitude's, as large as the largest tensor merged */
} ctx;

static ft_status oom(ft_error *err, const char *where) {
    return ft_error_set(err, FT_ERR_RUNTIME, where, NULL, "out of memory");
}

/* Bernoulli(density) draws for tensor `part` of adapter k on module name: 1 keeps. */
static ft_status draw_mask(ctx *c, const char *name, int k, int part, size_t n, int64_t rows,
                           int64_t cols, uint8_t **out, ft_error *err) {
    uint8_t *m = malloc(n ? n : 1);
    if (!m) return oom(err, name);
    uint64_t key = hash_bytes(name, strlen(name), HASH_START) ^ ((uint64_t)k << 8 | (uint64_t)part);
    uint64_t stream = rand_mix64(c->o->seed ^ rand_mix64(key));
    /* torch.bernoulli(full_like(t, density)): p is density as an fp32 tensor value */
    double p = (double)(float)c->o->density;
    for (size_t i = 0; i < n; i++)
        m[i] = rand_uniform01(stream, i) < p;
    *out = m;
    if (!c->o->dump_masks) return FT_OK;
    mask_list *l = &c->masks;
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        char **nn = realloc(l->names, sizeof *nn * (size_t)nc);
        if (nn) l->names = nn;
        uint8_t **nd = realloc(l->data, sizeof *nd * (size_t)nc);
        if (nd) l->data = nd;
        int64_t(*ns)[2] = realloc(l->shape, sizeof *ns * (size_t)nc);
        if (ns) l->shape = ns;
        if (!nn || !nd || !ns) return oom(err, name);
        l->cap = nc;
    }
    char buf[1200];
    snprintf(buf, sizeof buf, "%s.%s.%d", name, PART_NAME[part], k);
    l->names[l->n] = strdup(buf);
    l->data[l->n] = malloc(n ? n : 1);
    if (!l->names[l->n] || !l->data[l->n]) {
        free(l->names[l->n]);
        free(l->data[l->n]);
        return oom(err, name);
    }
    memcpy(l->data[l->n], m, n);
    l->shape[l->n][0] = rows, l->shape[l->n][1] = cols;
    l->n++;
    return FT_OK;
}

/* Prune the task tensors t[0..N) in place as kind says (the pruning part of each method). */
static ft_status prune(ctx *c, float **t, const int *ks, int N, size_t n, int64_t rows,
                       int64_t cols, const char *name, int part, ft_error *err) {
    ta_kind kind = METHOD[c->method].kind;
    for (int v = 0; v < N; v++) {
        if (kind == TA_MAGNITUDE_PRUNE || kind == TA_TIES) {
            ta_prune_magnitude(t[v], n, c->o->density, c->scratch);
        } else if (kind == TA_DARE_LINEAR || kind == TA_DARE_TIES) {
            if (c->o->density >= 1) continue; /* PEFT: no pruning, no mask drawn */
            uint8_t *m = NULL;
            ft_status st = draw_mask(c, name, ks[v], part, n, rows, cols, &m, err);
            if (st) return st;
            ta_prune_random(t[v], n, c->o->density, m);
            free(m);
        }
    }
    return FT_OK;
}

static int is_ties(ta_kind k) { return k == TA_TIES || k == TA_DARE_TIES; }

/* cat: A rows and B columns side by side. */
static void combine_cat(ctx *c, combo *m) {
    int off = 0, R = c->R;
    for (int k = 0; k < c->o->n; k++) {
        const adapter_module *a = m->m[k];
        if (!a) continue;
        const float w = (float)c->o->weights[k], s = (float)a->scaling;
        for (size_t j = 0; j < (size_t)a->r * a->in; j++) {
            float x = a->A[j] * w;
            m->A[(size_t)off * m->in + j] = x * s;
        }
        for (int i = 0; i < m->out; i++)
            for (int j = 0; j < a->r; j++)
                m->B[(size_t)i * R + off + j] = a->B[(size_t)i * a->r + j];
        off += a->r;
    }
}

/* linear, ties, dare_*, magnitude_prune: A and B merged separately. */
static ft_status combine_factors(ctx *c, combo *m, ft_error *err) {
    float *t[MERGE_MAX_ADAPTERS] = {0};
    float wA[MERGE_MAX_ADAPTERS], wB[MERGE_MAX_ADAPTERS];
    int ks[MERGE_MAX_ADAPTERS], N = 0;
    for (int k = 0; k < c->o->n; k++) {
        const adapter_module *a = m->m[k];
        if (!a) continue;
        double ws = c->o->weights[k] * a->scaling;
        double mag = sqrt(fabs(ws));
        wA[N] = (float)(ws >= 0 ? mag : -mag);
        wB[N] = (float)mag;
        ks[N++] = k;
    }
    ft_status st = FT_OK;
    for (int part = PART_A; part <= PART_B && !st; part++) {
        size_t n = part == PART_A ? (size_t)c->R * m->in : (size_t)m->out * c->R;
        for (int v = 0; v < N && !st; v++) {
            const adapter_module *a = m->m[ks[v]];
            t[v] = malloc(n * sizeof(float));
            if (!t[v])
                st = oom(err, m->name);
            else
                memcpy(t[v], part == PART_A ? a->A : a->B, n * sizeof(float));
        }
        if (!st)
            st = prune(c, t, ks, N, n, part == PART_A ? c->R : m->out,
                       part == PART_A ? m->in : c->R, m->name, part, err);
        if (!st)
            ta_combine(part == PART_A ? m->A : m->B, (const float *const *)t,
                       part == PART_A ? wA : wB, N, n, is_ties(METHOD[c->method].kind),
                       c->o->majority_total);
        for (int v = 0; v < N; v++) {
            free(t[v]);
            t[v] = NULL;
        }
    }
    return st;
}

/* svd without a clamp: delta = sum_k w_k s_k B_k A_k = [w_k s_k B_k] @ [A_k] is refactored from
 * those factors (svd.h), never built: seconds instead of a full SVD per module on large models;
 * B @ A equal to the full path's within the SVD's rounding. */
static ft_status combine_svd_factored(ctx *c, combo *m, ft_error *err) {
    int Rt = 0;
    for (int k = 0; k < c->o->n; k++)
        if (m->m[k]) Rt += m->m[k]->r;
    float *Bc = malloc(sizeof(float) * (size_t)m->out * Rt);
    float *Ac = malloc(sizeof(float) * (size_t)Rt * m->in);
    ft_status st = FT_OK;
    if (!Bc || !Ac) st = oom(err, m->name);
    for (int k = 0, off = 0; !st && k < c->o->n; k++) {
        const adapter_module *a = m->m[k];
        if (!a) continue;
        const float f = (float)c->o->weights[k] * (float)a->scaling;
        for (int i = 0; i < m->out; i++)
            for (int j = 0; j < a->r; j++)
                Bc[(size_t)i * Rt + off + j] = a->B[(size_t)i * a->r + j] * f;
        memcpy(Ac + (size_t)off * m->in, a->A, sizeof(float) * (size_t)a->r * m->in);
        off += a->r;
    }
    if (!st) st = svd_lowrank_factored(Bc, Ac, m->out, m->in, Rt, c->R, m->A, m->B, m->name, err);
    free(Bc);
    free(Ac);
    return st;
}

/* svd and the *_svd forms: full deltas merged, then refactored. */
static ft_status combine_svd(ctx *c, combo *m, ft_error *err) {
    if (c->method == MM_SVD && isnan(c->o->svd_clamp)) return combine_svd_factored(c, m, err);
    float *t[MERGE_MAX_ADAPTERS] = {0};
    float w[MERGE_MAX_ADAPTERS];
    int ks[MERGE_MAX_ADAPTERS], N = 0;
    size_t n = (size_t)m->out * m->in;
    ft_status st = FT_OK;
    for (int k = 0; k < c->o->n && !st; k++) {
        const adapter_module *a = m->m[k];
        if (!a) continue;
        float *d = malloc(n * sizeof(float));
        if (!d) {
            st = oom(err, m->name);
            break;
        }
        t[N] = d;
        w[N] = (float)c->o->weights[k];
        ks[N++] = k;
        /* get_delta_weight: (B @ A) * scaling */
        gemm(0, 0, m->out, m->in, a->r, 1.0f, a->B, a->r, a->A, a->in, 0.0f, d, m->in);
        const float s = (float)a->scaling;
        for (size_t i = 0; i < n; i++)
            d[i] *= s;
    }
    float *delta = st ? NULL : malloc(n * sizeof(float));
    if (!st && !delta) st = oom(err, m->name);
    if (!st) st = prune(c, t, ks, N, n, m->out, m->in, m->name, PART_DELTA, err);
    if (!st) {
        ta_combine(delta, (const float *const *)t, w, N, n, is_ties(METHOD[c->method].kind),
                   c->o->majority_total);
        for (int v = 0; v < N; v++) {
            free(t[v]);
            t[v] = NULL;
        }
        st = svd_lowrank(delta, m->out, m->in, c->R,
                         isnan(c->o->svd_clamp) ? -1.0 : c->o->svd_clamp, m->A, m->B, m->name, err);
    }
    for (int v = 0; v < N; v++)
        free(t[v]);
    free(delta);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The modules of all adapters, each checked for the same shape in every adapter that has it. */
static ft_status collect(ctx *c, combo **out, int *nout, ft_error *err) {
    int total = 0;
    for (int k = 0; k < c->o->n; k++)
        total += c->ad[k]->n;
    const char **names = malloc(sizeof *names * (size_t)total);
    combo *cs = calloc((size_t)total, sizeof *cs);
    if (!names || !cs) {
        free(names);
        free(cs);
        return oom(err, "merge-adapters");
    }
    int nn = 0;
    for (int k = 0; k < c->o->n; k++)
        for (int i = 0; i < c->ad[k]->n; i++)
            names[nn++] = c->ad[k]->mods[i].name;
    qsort(names, (size_t)nn, sizeof *names, cmp_str);
    int n = 0;
    for (int i = 0; i < nn; i++)
        if (!i || strcmp(names[i], names[i - 1])) cs[n++].name = names[i];
    free(names);
    ft_status st = FT_OK;
    for (int i = 0; i < n && !st; i++) {
        combo *m = &cs[i];
        int first = -1;
        for (int k = 0; k < c->o->n && !st; k++) {
            const adapter_module *a = adapter_find(c->ad[k], m->name);
            m->m[k] = a;
            if (!a) continue;
            if (first < 0) {
                first = k, m->in = a->in, m->out = a->out;
                continue;
            }
            if (a->in != m->in || a->out != m->out) {
                char where[4600];
                snprintf(where, sizeof where,
                         "%s/adapter_model.safetensors: tensor \"%s.lora_%c.weight\": field "
                         "\"shape\"",
                         c->ad[k]->dir, m->name, a->in != m->in ? 'A' : 'B');
                st = ft_error_set(err, FT_ERR_INPUT, where,
                                  "the adapters were trained on different models",
                                  "module %s is %d x %d (out x in) here but %d x %d in %s", m->name,
                                  a->out, a->in, m->out, m->in, c->ad[first]->dir);
            }
        }
    }
    *out = cs;
    *nout = n;
    return st;
}

static int adapter_rank(const adapter *a) {
    int r = 0;
    for (int i = 0; i < a->n; i++)
        if (a->mods[i].r > r) r = a->mods[i].r;
    return r;
}

/* The new rank, and the check that the method's ranks agree. */
static ft_status choose_rank(ctx *c, ft_error *err) {
    const merge_adapters_options *o = c->o;
    if (c->method == MM_CAT) {
        c->R = 0;
        for (int k = 0; k < o->n; k++)
            c->R += adapter_rank(c->ad[k]);
        return FT_OK;
    }
    if (METHOD[c->method].svd) {
        c->R = 0;
        for (int k = 0; k < o->n; k++)
            if (adapter_rank(c->ad[k]) > c->R) c->R = adapter_rank(c->ad[k]);
        if (o->svd_rank > 0) c->R = o->svd_rank;
        return FT_OK;
    }
    c->R = c->ad[0]->mods[0].r;
    for (int k = 0; k < o->n; k++)
        for (int i = 0; i < c->ad[k]->n; i++)
            if (c->ad[k]->mods[i].r != c->R) {
                char where[4300];
                snprintf(where, sizeof where, "%s/adapter_config.json: field \"r\"", c->ad[k]->dir);
                return ft_error_set(
                    err, FT_ERR_INPUT, where,
                    "use --method cat, svd or an *_svd method, which take any ranks",
                    "module %s has rank %d, but %s has rank %d: method %s merges the A and B "
                    "matrices element by element and needs equal ranks",
                    c->ad[k]->mods[i].name, c->ad[k]->mods[i].r, c->ad[0]->dir, c->R,
                    merge_method_names[c->method]);
            }
    return FT_OK;
}

/* target_modules of the new adapter: the union of lists (first seen first), or the regular
 * expressions joined as "(a)|(b)" (PEFT's rule; a mix of the two is refused, as by PEFT). */
static ft_status target_union(ctx *c, cJSON **out, ft_error *err) {
    const cJSON *t0 = cJSON_GetObjectItemCaseSensitive(c->ad[0]->config, "target_modules");
    int is_str = cJSON_IsString(t0);
    cJSON *u = is_str ? NULL : cJSON_CreateArray();
    char *joined = NULL;
    size_t jl = 0;
    for (int k = 0; k < c->o->n; k++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c->ad[k]->config, "target_modules");
        if (cJSON_IsString(t) != is_str || (!is_str && !cJSON_IsArray(t))) {
            char where[4300];
            snprintf(where, sizeof where, "%s/adapter_config.json: field \"target_modules\"",
                     c->ad[k]->dir);
            cJSON_Delete(u);
            free(joined);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "is a %s, but %s's is a %s: PEFT cannot combine a list with a "
                                "regular expression",
                                cJSON_IsString(t) ? "string" : "list", c->ad[0]->dir,
                                is_str ? "string" : "list");
        }
        if (is_str) {
            size_t add = strlen(t->valuestring) + 4;
            char *nj = realloc(joined, jl + add + 1);
            if (!nj) {
                free(joined);
                return oom(err, "target_modules");
            }
            joined = nj;
            jl += (size_t)sprintf(joined + jl, "%s(%s)", k ? "|" : "", t->valuestring);
            continue;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, t) {
            if (!cJSON_IsString(e)) continue;
            int seen = 0;
            const cJSON *f;
            cJSON_ArrayForEach(f, u) seen |= !strcmp(f->valuestring, e->valuestring);
            if (!seen) cJSON_AddItemToArray(u, cJSON_CreateString(e->valuestring));
        }
    }
    *out = is_str ? cJSON_CreateString(joined) : u;
    free(joined);
    return FT_OK;
}

static ft_status write_config(ctx *c, const outdir *od, ft_error *err) {
    cJSON *j = cJSON_Duplicate(c->ad[0]->config, 1), *tm = NULL;
    if (!j) return oom(err, "adapter_config.json");
    ft_status st = target_union(c, &tm, err);
    if (st) {
        cJSON_Delete(j);
        return st;
    }
    static const char *const replaced[] = {
        "r", "lora_alpha", "target_modules", "alpha_pattern", "rank_pattern", "use_rslora"};
    for (int i = 0; i < 6; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(j, replaced[i]);
    cJSON_AddNumberToObject(j, "r", c->R);
    cJSON_AddNumberToObject(j, "lora_alpha", c->R);
    cJSON_AddItemToObject(j, "target_modules", tm);
    cJSON_AddObjectToObject(j, "alpha_pattern");
    cJSON_AddObjectToObject(j, "rank_pattern");
    cJSON_AddBoolToObject(j, "use_rslora", 0);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return oom(err, "adapter_config.json");
    char path[4400];
    outdir_path(od, "adapter_config.json", path, sizeof path);
    st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    return st;
}

static ft_status write_tensors(const combo *cs, int n, int R, const char *path, ft_error *err) {
    st_writer *w = st_writer_new();
    if (!w) return oom(err, path);
    ft_status st = FT_OK;
    char name[1200];
    for (int i = 0; i < n && !st; i++) {
        int64_t sa[2] = {R, cs[i].in}, sb[2] = {cs[i].out, R};
        snprintf(name, sizeof name, "%s.lora_A.weight", cs[i].name);
        st = st_writer_add(w, name, ST_F32, 2, sa, cs[i].A, err);
        snprintf(name, sizeof name, "%s.lora_B.weight", cs[i].name);
        if (!st) st = st_writer_add(w, name, ST_F32, 2, sb, cs[i].B, err);
    }
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

static ft_status write_masks(const mask_list *l, const char *path, ft_error *err) {
    st_writer *w = st_writer_new();
    if (!w) return oom(err, path);
    ft_status st = FT_OK;
    for (int i = 0; i < l->n && !st; i++)
        st = st_writer_add(w, l->names[i], ST_U8, 2, l->shape[i], l->data[i], err);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

static ft_status check_options(const merge_adapters_options *o, ft_error *err) {
    if (o->n < 1)
        return ft_error_set(err, FT_ERR_INPUT, "option --adapter", NULL,
                            "give at least one adapter (--adapter DIR[:WEIGHT], repeated)");
    if ((unsigned)o->method >= MM_COUNT)
        return ft_error_set(err, FT_ERR_INPUT, "option --method", NULL, "unknown method");
    ta_kind kind = METHOD[o->method].kind;
    if (kind != TA_LINEAR && o->n > 1 && isnan(o->density))
        return ft_error_set(err, FT_ERR_INPUT, "option --density",
                            "the fraction of values each task keeps, e.g. --density 0.5",
                            "method %s needs a density", merge_method_names[o->method]);
    if (!isnan(o->density) && !(o->density >= 0))
        return ft_error_set(err, FT_ERR_INPUT, "option --density", "a fraction in [0, 1]",
                            "density must be >= 0, got %g", o->density);
    if (!isnan(o->svd_clamp) && !(o->svd_clamp >= 0 && o->svd_clamp <= 1))
        return ft_error_set(err, FT_ERR_INPUT, "option --svd-clamp",
                            "a quantile in [0, 1], e.g. 0.99", "must be between 0 and 1, got %g",
                            o->svd_clamp);
    if (o->svd_rank < 0)
        return ft_error_set(err, FT_ERR_INPUT, "option --svd-rank", NULL, "must be positive");
    for (int k = 0; k < o->n; k++)
        if (!isfinite(o->weights[k]))
            return ft_error_set(err, FT_ERR_INPUT, "option --adapter", NULL,
                                "the weight of %s is not a finite number", o->adapter_dirs[k]);
    return FT_OK;
}

/* Adapters with different base_model_name_or_path, unless allowed. */
static ft_status check_bases(const ctx *c, ft_error *err) {
    if (c->o->allow_different_bases) return FT_OK;
    for (int k = 1; k < c->o->n; k++) {
        const char *a = c->ad[0]->base_model, *b = c->ad[k]->base_model;
        if (!a || !b || !strcmp(a, b)) continue;
        char where[4300];
        snprintf(where, sizeof where, "%s/adapter_config.json: field \"base_model_name_or_path\"",
                 c->ad[k]->dir);
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "combine adapters of one base model; if both names are the same "
                            "model, pass --allow-different-bases",
                            "is \"%s\", but %s's is \"%s\"", b, c->ad[0]->dir, a);
    }
    return FT_OK;
}

ft_status merge_adapters(const merge_adapters_options *o, merge_adapters_result *res,
                         ft_error *err) {
    memset(res, 0, sizeof *res);
    ft_status st = check_options(o, err);
    if (st) return st;
    ctx c = {.o = o, .method = o->n == 1 ? MM_LINEAR : o->method};
    combo *cs = NULL;
    int n = 0;
    outdir od = {0};
    for (int k = 0; k < o->n && !st; k++)
        st = adapter_load(o->adapter_dirs[k], &c.ad[k], err);
    if (!st) st = check_bases(&c, err);
    if (!st) st = collect(&c, &cs, &n, err);
    if (!st) st = choose_rank(&c, err);
    size_t biggest = 0;
    for (int i = 0; i < n && !st; i++) {
        combo *m = &cs[i];
        m->A = calloc((size_t)c.R * m->in, sizeof(float));
        m->B = calloc((size_t)m->out * c.R, sizeof(float));
        if (!m->A || !m->B) st = oom(err, m->name);
        size_t big = METHOD[c.method].svd ? (size_t)m->out * m->in
                                          : (size_t)c.R * (m->in > m->out ? m->in : m->out);
        if (big > biggest) biggest = big;
    }
    if (!st && !(c.scratch = malloc((biggest ? biggest : 1) * sizeof(float))))
        st = oom(err, "merge-adapters");
    for (int i = 0; i < n && !st; i++) {
        if (o->progress) o->progress(i, n, cs[i].name, o->user);
        if (c.method == MM_CAT)
            combine_cat(&c, &cs[i]);
        else if (METHOD[c.method].svd)
            st = combine_svd(&c, &cs[i], err);
        else
            st = combine_factors(&c, &cs[i], err);
    }
    const char *opts[MERGE_MAX_ADAPTERS];
    for (int k = 0; k < o->n; k++)
        opts[k] = "--adapter";
    if (!st) st = outdir_begin(&od, o->out_dir, o->adapter_dirs, opts, o->n, o->overwrite, err);
    if (!st) {
        char path[4400];
        outdir_path(&od, "adapter_model.safetensors", path, sizeof path);
        st = write_tensors(cs, n, c.R, path, err);
    }
    if (!st) st = write_config(&c, &od, err);
    if (!st && o->dump_masks) st = write_masks(&c.masks, o->dump_masks, err);
    if (!st) st = outdir_commit(&od, err);
    if (st) outdir_abort(&od);
    if (!st) {
        res->modules = n, res->rank = c.R;
        if (o->progress) o->progress(n, n, NULL, o->user);
    }
    for (int i = 0; i < n; i++) {
        free(cs[i].A);
        free(cs[i].B);
    }
    free(cs);
    free(c.scratch);
    for (int i = 0; i < c.masks.n; i++) {
        free(c.masks.names[i]);
        free(c.masks.data[i]);
    }
    free(c.masks.names);
    free(c.masks.data);
    free(c.masks.shape);
    for (int k = 0; k < o->n; k++)
        adapter_free(c.ad[k]);
    return st;
}
