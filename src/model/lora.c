/*
 * lora.c: LoRA modules (PEFT's mathematics) and PEFT adapter folders.
 *
 * Forward of one module: y += scale * (dropout(x) A^T) B^T. Backward, with xa = dropout(x) A^T
 * kept from the forward pass:
 *   dB += scale * dy^T xa;   dxa = scale * dy B;   dA += dxa^T dropout(x);   dx += dropout'(dxa A)
 * Dropout masks are not stored: each is regenerated from a counter-based hash of (seed, index),
 * so forward and backward see the same mask and a resumed run sees the same masks again. The
 * products run through ops/lora_gemm.h (one size of each is the rank).
 *
 * Adapter files follow what PEFT 0.21 writes: adapter_config.json (peft_type LORA, r,
 * lora_alpha, lora_dropout, target_modules, use_rslora, ...) and adapter_model.safetensors with
 * tensors base_model.model.model.layers.L.<self_attn|mlp>.<name>.lora_A.weight (R, in) and
 * .lora_B.weight (out, R), fp32.
 */
#include "model/lora.h"
#include "base/rand.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "ops/lora_gemm.h"
#include "ops/ops.h"

#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* ---- targets -------------------------------------------------------------------------- */

static int kind_exists(const model_config *c, lin_kind k) {
    switch (k) {
    case LIN_Q:
    case LIN_K:
    case LIN_V:
        return !c->arch->fused_qkv;
    case LIN_QKV:
        return c->arch->fused_qkv;
    case LIN_GATE:
    case LIN_UP:
        return !c->arch->fused_gate_up;
    case LIN_GATE_UP:
        return c->arch->fused_gate_up;
    default:
        return 1;
    }
}

static void lin_dims(const model_config *c, lin_kind k, int *in, int *out) {
    int HD = c->H * c->D, KD = c->Hkv * c->D;
    *in = c->C;
    switch (k) {
    case LIN_Q:
        *out = HD;
        break;
    case LIN_K:
    case LIN_V:
        *out = KD;
        break;
    case LIN_QKV:
        *out = HD + 2 * KD;
        break;
    case LIN_O:
        *in = HD, *out = c->C;
        break;
    case LIN_GATE:
    case LIN_UP:
        *out = c->I;
        break;
    case LIN_GATE_UP:
        *out = 2 * c->I;
        break;
    case LIN_DOWN:
        *in = c->I, *out = c->C;
        break;
    default:
        *out = 0;
    }
}

static lin_kind kind_by_name(const char *s, size_t n) {
    for (int k = 0; k < LIN_COUNT; k++)
        if (strlen(lin_names[k]) == n && !strncmp(lin_names[k], s, n)) return (lin_kind)k;
    return LIN_COUNT;
}

ft_status lora_parse_targets(const model_config *cfg, const char *targets, unsigned *mask,
                             ft_error *err) {
    *mask = 0;
    if (!strcmp(targets, "all-linear")) {
        for (int k = 0; k < LIN_COUNT; k++)
            if (kind_exists(cfg, k)) *mask |= 1u << k;
        return FT_OK;
    }
    const char *p = targets;
    while (*p) {
        size_t n = strcspn(p, ",");
        while (n && *p == ' ')
            p++, n--;
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        lin_kind k = kind_by_name(p, m);
        if (k == LIN_COUNT || !kind_exists(cfg, k)) {
            char names[256] = "";
            for (int j = 0; j < LIN_COUNT; j++)
                if (kind_exists(cfg, j)) {
                    strcat(names, names[0] ? ", " : "");
                    strcat(names, lin_names[j]);
                }
            char hint[400];
            snprintf(hint, sizeof hint, "this model (%s) has: %s; or use all-linear",
                     cfg->arch->hf_class, names);
            /* --lora-targets' default is PEFT's default target_modules for llama, mistral, qwen2
             * and qwen3 (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING in peft 0.21.2's
             * utils/constants.py); that table has no entry for phi3, and PEFT refuses a
             * LoraConfig without target_modules there, so ftune asks for them too
             * (tests/peers/test_lora_defaults.py) */
            if (!strcmp(targets, LORA_DEFAULT_TARGETS) && cfg->arch->fused_qkv)
                return ft_error_set(
                    err, FT_ERR_INPUT, "option --lora-targets",
                    "give --lora-targets: qkv_proj (q, k and v in one layer), or all-linear",
                    "model_type %s has no q_proj or v_proj (the default targets, PEFT's default "
                    "for llama, mistral, qwen2 and qwen3), and PEFT has no default target "
                    "modules for it",
                    cfg->arch->model_type);
            return ft_error_set(err, FT_ERR_INPUT, "option --lora-targets", hint,
                                "no linear layer named \"%.*s\"", (int)m, p);
        }
        *mask |= 1u << k;
        p += n;
        if (*p == ',') p++;
    }
    if (!*mask)
        return ft_error_set(err, FT_ERR_INPUT, "option --lora-targets", "e.g. q_proj,v_proj",
                            "no target modules given");
    return FT_OK;
}

/* ---- creation ------------------------------------------------------------------------- */

ft_status lora_create(const model_config *cfg, int R, double alpha, double dropout, int rslora,
                      unsigned mask, const unsigned char *layer_mask, lora_set **out,
                      ft_error *err) {
    if (R <= 0)
        return ft_error_set(err, FT_ERR_INPUT, "option --lora-r", NULL,
                            "the LoRA rank must be positive, got %d", R);
    if (dropout < 0 || dropout >= 1)
        return ft_error_set(err, FT_ERR_INPUT, "option --lora-dropout", NULL,
                            "dropout must be in [0, 1), got %g", dropout);
    lora_set *ls = calloc(1, sizeof *ls);
    if (!ls) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    ls->R = R, ls->alpha = alpha, ls->dropout = dropout, ls->rslora = rslora, ls->targets = mask;
    ls->scale = (float)(rslora ? alpha / sqrt((double)R) : alpha / R);
    ls->mods = calloc((size_t)cfg->L * LIN_COUNT, sizeof *ls->mods);
    ls->by_layer = calloc((size_t)cfg->L * LIN_COUNT, sizeof *ls->by_layer);
    if (!ls->mods || !ls->by_layer) {
        lora_free(ls);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    }
    size_t off = 0;
    for (int l = 0; l < cfg->L; l++) {
        if (layer_mask && !layer_mask[l]) continue;
        for (int k = 0; k < LIN_COUNT; k++) {
            if (!(mask & (1u << k)) || !kind_exists(cfg, k)) continue;
            lora_module *m = &ls->mods[ls->n++];
            m->layer = l, m->kind = k;
            lin_dims(cfg, k, &m->in, &m->out);
            m->offA = off, off += (size_t)R * m->in;
            m->offB = off, off += (size_t)m->out * R;
        }
    }
    for (int i = 0; i < ls->n; i++)
        ls->by_layer[ls->mods[i].layer * LIN_COUNT + ls->mods[i].kind] = &ls->mods[i];
    ls->n_params = off;
    ls->params = calloc(off ? off : 1, sizeof(float));
    ls->grads = calloc(off ? off : 1, sizeof(float));
    if (!ls->params || !ls->grads) {
        lora_free(ls);
        return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    }
    *out = ls;
    return FT_OK;
}

void lora_init(lora_set *ls, uint64_t seed) {
    memset(ls->params, 0, ls->n_params * sizeof(float));
    for (int i = 0; i < ls->n; i++) {
        lora_module *m = &ls->mods[i];
        double bound = 1.0 / sqrt((double)m->in);
        float *A = ls->params + m->offA;
        uint64_t s = rand_mix64(seed + 1000003ull * (uint64_t)(m->layer * LIN_COUNT + m->kind));
        for (size_t j = 0; j < (size_t)ls->R * m->in; j++)
            A[j] = (float)((2.0 * rand_uniform01(s, j) - 1.0) * bound);
    }
}

void lora_free(lora_set *ls) {
    if (!ls) return;
    free(ls->mods);
    free(ls->by_layer);
    free(ls->params);
    free(ls->grads);
    free(ls);
}

const lora_module *lora_get(const lora_set *ls, int layer, lin_kind k) {
    return ls->by_layer[layer * LIN_COUNT + k];
}

/* ---- math ----------------------------------------------------------------------------- */

/* xd = x * mask / (1 - p), mask_i = (u_{first+i} >= p): first numbers the values of a slice
 * of rows as in the whole input, so a layer run in row chunks draws the same mask. */
static void dropout_apply(float *xd, const float *x, size_t n, double p, uint64_t seed,
                          size_t first) {
    float keep = (float)(1.0 / (1.0 - p));
    for (size_t i = 0; i < n; i++)
        xd[i] = rand_uniform01(seed, first + i) >= p ? x[i] * keep : 0.0f;
}

void lora_forward(const lora_set *ls, const lora_module *m, float *out, int ldo, const float *x,
                  float *xa, float *xd_scratch, int N, uint64_t drop_seed, size_t row0) {
    const int R = ls->R;
    const float *A = ls->params + m->offA, *Bm = ls->params + m->offB;
    const float *xin = x;
    if (ls->dropout > 0) {
        dropout_apply(xd_scratch, x, (size_t)N * m->in, ls->dropout, drop_seed, row0 * m->in);
        xin = xd_scratch;
    }
    lg_xw(N, m->in, R, 1.0f, xin, m->in, A, 1, 0.0f, xa, R);      /* xa = x A^T */
    lg_hw(N, m->out, R, ls->scale, xa, R, Bm, 1, 1.0f, out, ldo); /* out += s xa B^T */
}

void lora_backward(lora_set *ls, const lora_module *m, float *dx, const float *dout, int ldo,
                   const float *x, const float *xa, float *dxa, float *xd_scratch, int N,
                   uint64_t drop_seed, size_t row0) {
    const int R = ls->R;
    const float *A = ls->params + m->offA, *Bm = ls->params + m->offB;
    float *dA = ls->grads + m->offA, *dB = ls->grads + m->offB;
    lg_pth(N, m->out, R, ls->scale, dout, ldo, xa, R, dB, 0);       /* dB += s dout^T xa */
    lg_xw(N, m->out, R, ls->scale, dout, ldo, Bm, 0, 0.0f, dxa, R); /* dxa = s dout B */
    const float *xin = x;
    if (ls->dropout > 0) {
        dropout_apply(xd_scratch, x, (size_t)N * m->in, ls->dropout, drop_seed, row0 * m->in);
        xin = xd_scratch;
    }
    lg_pth(N, m->in, R, 1.0f, xin, m->in, dxa, R, dA, 1); /* dA += dxa^T x */
    if (!dx) return;
    if (ls->dropout > 0) {
        /* dx += mask/(1-p) * (dxa A): the mask is regenerated from the same seed */
        lg_hw(N, m->in, R, 1.0f, dxa, R, A, 0, 0.0f, xd_scratch, m->in);
        float keep = (float)(1.0 / (1.0 - ls->dropout));
        for (size_t i = 0; i < (size_t)N * m->in; i++)
            if (rand_uniform01(drop_seed, row0 * m->in + i) >= ls->dropout)
                dx[i] += xd_scratch[i] * keep;
    } else {
        lg_hw(N, m->in, R, 1.0f, dxa, R, A, 0, 1.0f, dx, m->in); /* dx += dxa A */
    }
}

/* ---- PEFT adapter folders ------------------------------------------------------------- */

void lora_tensor_name(char *buf, size_t n, const lora_module *m, int is_B) {
    char w[200];
    weight_name(w, sizeof w, m->layer, m->kind, "weight");
    /* w = "model.layers.L.self_attn.q_proj.weight": insert lora_A/lora_B before "weight" */
    size_t wl = strlen(w) - strlen("weight");
    snprintf(buf, n, "base_model.model.%.*slora_%c.weight", (int)wl, w, is_B ? 'B' : 'A');
}

/* The module path PEFT matches target_modules against: "model.layers.L.self_attn.q_proj". */
static void module_path(char *buf, size_t n, int layer, lin_kind k) {
    char w[200];
    weight_name(w, sizeof w, layer, k, "weight");
    snprintf(buf, n, "%.*s", (int)(strlen(w) - strlen(".weight")), w);
}

/* Does PEFT's target_modules (list of names / module paths, or a regex string) pick
 * module (layer, k)? Lists match a module whose path equals an entry or ends with ".entry";
 * a string other than "all-linear" is a regular expression that must match the whole path. */
static int target_matches(const cJSON *tm, const pcre2_code *re, pcre2_match_data *md, int layer,
                          lin_kind k) {
    char path[256];
    module_path(path, sizeof path, layer, k);
    if (cJSON_IsString(tm)) {
        if (!strcmp(tm->valuestring, "all-linear")) return 1;
        int rc = pcre2_match(re, (PCRE2_SPTR)path, strlen(path), 0,
                             PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
        return rc >= 0;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, tm) {
        if (!cJSON_IsString(e)) continue;
        const char *s = e->valuestring;
        size_t pl = strlen(path), sl = strlen(s);
        if (!strcmp(path, s)) return 1;
        if (pl > sl && path[pl - sl - 1] == '.' && !strcmp(path + pl - sl, s)) return 1;
    }
    return 0;
}

ft_status lora_load_peft(const model_config *cfg, const char *dir, lora_set **out, ft_error *err) {
    char path[4096], where[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    cJSON *j = NULL;
    ft_status st = json_load_file(path, &j, err);
    if (st) return st;
    const char *ptype = NULL, *bias = NULL;
    long r = 0;
    double alpha = 0, dropout = 0;
    int rslora = 0, dora = 0;
    snprintf(where, sizeof where, "%s", path);
    if ((st = json_get_string(j, "peft_type", 0, "LORA", &ptype, where, err)) ||
        (st = json_get_int(j, "r", 1, 0, &r, where, err)) ||
        (st = json_get_double(j, "lora_alpha", 1, 0, &alpha, where, err)) ||
        (st = json_get_double(j, "lora_dropout", 0, 0, &dropout, where, err)) ||
        (st = json_get_bool(j, "use_rslora", 0, 0, &rslora, where, err)) ||
        (st = json_get_bool(j, "use_dora", 0, 0, &dora, where, err)) ||
        (st = json_get_string(j, "bias", 0, "none", &bias, where, err)))
        goto done;
    if (r > 16384) { /* PEFT's ranks in use are up to a few thousand; this one is a damaged file */
        st = ft_error_set(err, FT_ERR_INPUT, where, "LoRA ranks run from 1 to 16384 here",
                          "field \"r\" is %ld", r);
        goto done;
    }
    if (strcmp(ptype, "LORA")) {
        st = ft_error_set(err, FT_ERR_INPUT, where, "ftune reads LoRA adapters only",
                          "field \"peft_type\" is \"%s\", expected \"LORA\"", ptype);
        goto done;
    }
    if (dora || strcmp(bias, "none")) {
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                          "%s is not supported (expected use_dora false and bias \"none\")",
                          dora ? "DoRA (use_dora)" : "training biases (bias)");
        goto done;
    }
    const char *unsupported[] = {"rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 2; i++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, unsupported[i]);
        if (p && cJSON_IsObject(p) && p->child) {
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "field \"%s\" (per-module ranks) is not supported", unsupported[i]);
            goto done;
        }
    }
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    if (!tm || !(cJSON_IsString(tm) || cJSON_IsArray(tm))) {
        st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                          "field \"target_modules\" must be a list of module names or a string");
        goto done;
    }
    pcre2_code *re = NULL;
    pcre2_match_data *md = NULL;
    if (cJSON_IsString(tm) && strcmp(tm->valuestring, "all-linear")) {
        int ec;
        PCRE2_SIZE eo;
        re = pcre2_compile((PCRE2_SPTR)tm->valuestring, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (!re) {
            st = ft_error_set(
                err, FT_ERR_INPUT, where, NULL,
                "field \"target_modules\" is not a valid regular expression (offset %zu)",
                (size_t)eo);
            goto done;
        }
        md = pcre2_match_data_create_from_pattern(re, NULL);
    }
    /* Which (layer, kind) pairs are targeted: a kind mask plus a per-layer mask. */
    unsigned mask = 0;
    unsigned char *layer_mask = calloc((size_t)cfg->L, 1);
    unsigned *per_layer = calloc((size_t)cfg->L, sizeof *per_layer);
    /* layers_to_transform: an index or a list of indices restricting the adapted layers */
    unsigned char *allowed = malloc((size_t)cfg->L);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layers_to_transform");
    memset(allowed, lt && !cJSON_IsNull(lt) ? 0 : 1, (size_t)cfg->L);
    if (cJSON_IsNumber(lt) && lt->valueint >= 0 && lt->valueint < cfg->L) allowed[lt->valueint] = 1;
    if (cJSON_IsArray(lt)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) if (cJSON_IsNumber(e) && e->valueint >= 0 && e->valueint < cfg->L)
            allowed[e->valueint] = 1;
    }
    for (int l = 0; l < cfg->L; l++) {
        if (!allowed[l]) continue;
        for (int k = 0; k < LIN_COUNT; k++)
            if (kind_exists(cfg, k) && target_matches(tm, re, md, l, k)) {
                per_layer[l] |= 1u << k;
                mask |= 1u << k;
                layer_mask[l] = 1;
            }
    }
    free(allowed);
    if (md) pcre2_match_data_free(md);
    if (re) pcre2_code_free(re);
    /* All targeted layers must carry the same kinds (one kind mask for the set). */
    for (int l = 0; l < cfg->L && !st; l++)
        if (layer_mask[l] && per_layer[l] != mask)
            st = ft_error_set(err, FT_ERR_INPUT, where, NULL,
                              "field \"target_modules\" picks different module kinds on different "
                              "layers; ftune supports the same kinds on every adapted layer");
    if (!st && !mask)
        st = ft_error_set(err, FT_ERR_INPUT, where, "check that the adapter belongs to this model",
                          "field \"target_modules\" matches no linear layer of the model");
    lora_set *ls = NULL;
    if (!st) st = lora_create(cfg, (int)r, alpha, dropout, rslora, mask, layer_mask, &ls, err);
    free(layer_mask);
    free(per_layer);
    if (st) goto done;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_set *sts = NULL;
    st = st_open(path, &sts, err);
    for (int i = 0; !st && i < ls->n; i++) {
        lora_module *m = &ls->mods[i];
        char name[300];
        int64_t shA[2] = {ls->R, m->in}, shB[2] = {m->out, ls->R};
        lora_tensor_name(name, sizeof name, m, 0);
        st = st_read_f32(sts, name, 2, shA, ls->params + m->offA, err);
        if (st) break;
        lora_tensor_name(name, sizeof name, m, 1);
        st = st_read_f32(sts, name, 2, shB, ls->params + m->offB, err);
    }
    st_close(sts);
    if (st)
        lora_free(ls);
    else
        *out = ls;
done:
    cJSON_Delete(j);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

ft_status lora_save_peft(const lora_set *ls, const model_config *cfg, const char *dir,
                         const char *base_model, ft_error *err) {
    ft_status st = make_dirs(dir, err);
    if (st) return st;
    /* adapter_model.safetensors: names sorted as PEFT/safetensors order them */
    int nt = 2 * ls->n;
    char **names = calloc((size_t)nt, sizeof *names);
    for (int i = 0; i < ls->n; i++) {
        names[2 * i] = malloc(300), names[2 * i + 1] = malloc(300);
        lora_tensor_name(names[2 * i], 300, &ls->mods[i], 0);
        lora_tensor_name(names[2 * i + 1], 300, &ls->mods[i], 1);
    }
    qsort(names, (size_t)nt, sizeof *names, cmp_str);
    st_writer *w = st_writer_new();
    for (int t = 0; t < nt && !st; t++)
        for (int i = 0; i < ls->n; i++) {
            const lora_module *m = &ls->mods[i];
            char nm[300];
            for (int isB = 0; isB < 2; isB++) {
                lora_tensor_name(nm, sizeof nm, m, isB);
                if (strcmp(nm, names[t])) continue;
                int64_t sh[2] = {isB ? m->out : ls->R, isB ? ls->R : m->in};
                st = st_writer_add(w, names[t], ST_F32, 2, sh,
                                   ls->params + (isB ? m->offB : m->offA), err);
            }
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    for (int i = 0; i < nt; i++)
        free(names[i]);
    free(names);
    if (st) return st;

    /* adapter_config.json: every field PEFT 0.21 writes for a LoRA adapter, at its values for
     * what ftune trains (plain LoRA, no DoRA, no bias, no per-module ranks), in PEFT's order. */
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNullToObject(j, "alora_invocation_tokens");
    cJSON_AddObjectToObject(j, "alpha_pattern");
    cJSON_AddNullToObject(j, "arrow_config");
    cJSON *am = cJSON_AddObjectToObject(j, "auto_mapping");
    cJSON_AddStringToObject(am, "base_model_class", cfg->arch->hf_class);
    cJSON_AddStringToObject(am, "parent_library", "transformers");
    if (base_model)
        cJSON_AddStringToObject(j, "base_model_name_or_path", base_model);
    else
        cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddNullToObject(j, "corda_config");
    cJSON_AddBoolToObject(j, "ensure_weight_tying", 0);
    cJSON_AddNullToObject(j, "eva_config");
    cJSON_AddNullToObject(j, "exclude_modules");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON_AddBoolToObject(j, "init_lora_weights", 1);
    cJSON_AddNullToObject(j, "kasa_config");
    cJSON_AddNullToObject(j, "layer_replication");
    cJSON_AddNullToObject(j, "layers_pattern");
    /* an adapter on some layers only (one PEFT wrote with layers_to_transform) keeps that */
    int n_layers = 0;
    for (int l = 0; l < cfg->L; l++)
        for (int k = 0; k < LIN_COUNT; k++)
            if (ls->by_layer[l * LIN_COUNT + k]) {
                n_layers++;
                break;
            }
    if (n_layers < cfg->L) {
        cJSON *lt = cJSON_AddArrayToObject(j, "layers_to_transform");
        for (int l = 0; l < cfg->L; l++)
            for (int k = 0; k < LIN_COUNT; k++)
                if (ls->by_layer[l * LIN_COUNT + k]) {
                    cJSON_AddItemToArray(lt, cJSON_CreateNumber(l));
                    break;
                }
    } else {
        cJSON_AddNullToObject(j, "layers_to_transform");
    }
    cJSON_AddObjectToObject(j, "loftq_config");
    cJSON_AddNumberToObject(j, "lora_alpha", ls->alpha);
    cJSON_AddBoolToObject(j, "lora_bias", 0);
    cJSON_AddNumberToObject(j, "lora_dropout", ls->dropout);
    cJSON_AddNullToObject(j, "lora_ga_config");
    cJSON_AddNullToObject(j, "megatron_config");
    cJSON_AddStringToObject(j, "megatron_core", "megatron.core");
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddNullToObject(j, "monteclora_config");
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddNumberToObject(j, "qalora_group_size", 16);
    cJSON_AddNumberToObject(j, "r", ls->R);
    cJSON_AddObjectToObject(j, "rank_pattern");
    cJSON_AddNullToObject(j, "revision");
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int k = 0; k < LIN_COUNT; k++)
        if (ls->targets & (1u << k)) cJSON_AddItemToArray(tm, cJSON_CreateString(lin_names[k]));
    cJSON_AddNullToObject(j, "target_parameters");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddNullToObject(j, "trainable_token_indices");
    cJSON_AddNullToObject(j, "use_bdlora");
    cJSON_AddBoolToObject(j, "use_dora", 0);
    cJSON_AddBoolToObject(j, "use_qalora", 0);
    cJSON_AddBoolToObject(j, "use_rslora", ls->rslora);
    cJSON_AddNullToObject(j, "velora_config");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    return st;
}
