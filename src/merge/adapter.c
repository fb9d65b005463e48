/*
 * adapter.c: PEFT LoRA adapter folders for merging (see adapter.h).
 *
 * The modules are found from the tensor names, not from target_modules: PEFT saves exactly one
 * NAME.lora_A.weight and one NAME.lora_B.weight per adapted module, so the file is the truth
 * about what the adapter changes. The config gives the scaling: lora_alpha, overridden per
 * module by alpha_pattern, whose keys PEFT matches as the regular expression (.*\.)?(KEY)$
 * against the module path (peft.utils.other.get_pattern_key: the first key that matches wins);
 * the rank is A's row count (rank_pattern changes only that).
 */
#include "merge/adapter.h"
#include "io/safetensors.h"

#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define PEFT_PREFIX "base_model.model."

static int cmp_mod(const void *a, const void *b) {
    return strcmp(((const adapter_module *)a)->name, ((const adapter_module *)b)->name);
}

const adapter_module *adapter_find(const adapter *a, const char *name) {
    adapter_module key = {.name = (char *)name};
    return bsearch(&key, a->mods, (size_t)a->n, sizeof *a->mods, cmp_mod);
}

void adapter_free(adapter *a) {
    if (!a) return;
    for (int i = 0; i < a->n; i++) {
        free(a->mods[i].name);
        free(a->mods[i].A);
        free(a->mods[i].B);
    }
    free(a->mods);
    cJSON_Delete(a->config);
    free(a);
}

/* Fields whose non-default values change what the adapter computes in ways a merge of
 * plain LoRA pairs cannot reproduce. */
static ft_status check_config(const cJSON *j, const char *where, ft_error *err) {
    const char *ptype = NULL, *bias = NULL;
    int dora = 0, lora_bias = 0;
    ft_status st;
    if ((st = json_get_string(j, "peft_type", 0, "LORA", &ptype, where, err)) ||
        (st = json_get_bool(j, "use_dora", 0, 0, &dora, where, err)) ||
        (st = json_get_bool(j, "lora_bias", 0, 0, &lora_bias, where, err)) ||
        (st = json_get_string(j, "bias", 0, "none", &bias, where, err)))
        return st;
    if (strcmp(ptype, "LORA"))
        return ft_error_set(err, FT_ERR_INPUT, where, "ftune merges LoRA adapters only",
                            "field \"peft_type\" is \"%s\", expected \"LORA\"", ptype);
    if (dora)
        return ft_error_set(
            err, FT_ERR_INPUT, where,
            "DoRA rescales each merged row by a magnitude vector; not supported yet",
            "field \"use_dora\" is true");
    if (lora_bias || strcmp(bias, "none"))
        return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                            "trained biases are not supported (field \"%s\" is %s)",
                            lora_bias ? "lora_bias" : "bias", lora_bias ? "true" : bias);
    static const char *const extra[] = {"modules_to_save", "trainable_token_indices",
                                        "target_parameters"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, extra[i]);
        if (v && !cJSON_IsNull(v) && !((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child))
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "ftune merges the LoRA pairs (lora_A, lora_B) of linear layers",
                                "field \"%s\" is set: not supported", extra[i]);
    }
    return FT_OK;
}

/* alpha for module path, from alpha_pattern (or lora_alpha). */
static ft_status module_alpha(const cJSON *pattern, double alpha, const char *path, double *out,
                              const char *where, ft_error *err) {
    *out = alpha;
    if (!cJSON_IsObject(pattern)) return FT_OK;
    for (const cJSON *e = pattern->child; e; e = e->next) {
        char re_text[1200];
        snprintf(re_text, sizeof re_text, "(.*\\.)?(%s)$", e->string);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)re_text, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                                       &ec, &eo, NULL);
        if (!re)
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "alpha_pattern key \"%s\" is not a valid regular expression",
                                e->string);
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        int rc = pcre2_match(re, (PCRE2_SPTR)path, strlen(path), 0, 0, md, NULL);
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        if (rc < 0) continue;
        if (!cJSON_IsNumber(e))
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "alpha_pattern \"%s\": expected a number", e->string);
        *out = e->valuedouble;
        return FT_OK;
    }
    return FT_OK;
}

/* "NAME.lora_A.weight" -> NAME and 'A' (or 'B'); 0 when the name is not a LoRA matrix. */
static int lora_part(const char *tname, size_t *prefix_len) {
    static const char *const sfx[2] = {".lora_A.weight", ".lora_B.weight"};
    size_t n = strlen(tname);
    for (int i = 0; i < 2; i++) {
        size_t k = strlen(sfx[i]);
        if (n > k && !strcmp(tname + n - k, sfx[i])) {
            *prefix_len = n - k;
            return i ? 'B' : 'A';
        }
    }
    return 0;
}

static ft_status read_modules(adapter *a, const st_set *s, const char *file, double alpha,
                              const cJSON *alpha_pattern, ft_error *err) {
    int nt = st_count(s);
    a->mods = calloc((size_t)(nt > 0 ? nt : 1), sizeof *a->mods);
    if (!a->mods) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    char where[5400];
    /* one module per lora_A tensor */
    for (int i = 0; i < nt; i++) {
        const st_tensor *t = st_at(s, i);
        size_t pl;
        int part = lora_part(t->name, &pl);
        snprintf(where, sizeof where, "%s: tensor \"%s\"", file, t->name);
        if (!part)
            return ft_error_set(err, FT_ERR_INPUT, where,
                                "ftune merges LoRA pairs only (no embedding LoRA, DoRA magnitudes, "
                                "modules_to_save or trainable tokens)",
                                "not a lora_A / lora_B weight");
        if (part != 'A') continue;
        adapter_module *m = &a->mods[a->n++];
        m->name = strndup(t->name, pl);
        if (!m->name) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
    }
    qsort(a->mods, (size_t)a->n, sizeof *a->mods, cmp_mod);
    for (int i = 1; i < a->n; i++)
        if (!strcmp(a->mods[i].name, a->mods[i - 1].name))
            return ft_error_set(err, FT_ERR_INPUT, file, NULL, "module %s appears twice",
                                a->mods[i].name);
    /* every lora_B has its lora_A */
    for (int i = 0; i < nt; i++) {
        const st_tensor *t = st_at(s, i);
        size_t pl;
        if (lora_part(t->name, &pl) != 'B') continue;
        char name[1024];
        snprintf(name, sizeof name, "%.*s", (int)pl, t->name);
        if (!adapter_find(a, name)) {
            snprintf(where, sizeof where, "%s: tensor \"%s\"", file, t->name);
            return ft_error_set(err, FT_ERR_INPUT, where, "the adapter file is incomplete",
                                "no matching lora_A.weight");
        }
    }
    for (int i = 0; i < a->n; i++) {
        adapter_module *m = &a->mods[i];
        m->path = strncmp(m->name, PEFT_PREFIX, strlen(PEFT_PREFIX))
                      ? m->name
                      : m->name + strlen(PEFT_PREFIX);
        char na[1100], nb[1100];
        snprintf(na, sizeof na, "%s.lora_A.weight", m->name);
        snprintf(nb, sizeof nb, "%s.lora_B.weight", m->name);
        const st_tensor *A = st_find(s, na), *B = st_find(s, nb);
        snprintf(where, sizeof where, "%s: tensor \"%s\"", file, B ? nb : na);
        if (!B)
            return ft_error_set(err, FT_ERR_INPUT, where, "the adapter file is incomplete",
                                "lora_A.weight has no matching lora_B.weight");
        for (int k = 0; k < 2; k++) {
            const st_tensor *t = k ? B : A;
            snprintf(where, sizeof where, "%s: tensor \"%s\"", file, t->name);
            if (t->ndim != 2)
                return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                    "field \"shape\": expected 2 dimensions, found %d", t->ndim);
            if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
                return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                    "field \"dtype\": expected F32, BF16 or F16, found %s",
                                    st_dtype_name(t->dtype));
        }
        m->r = (int)A->shape[0], m->in = (int)A->shape[1], m->out = (int)B->shape[0];
        if (B->shape[1] != A->shape[0] || m->r <= 0) {
            snprintf(where, sizeof where, "%s: tensor \"%s\"", file, nb);
            return ft_error_set(err, FT_ERR_INPUT, where, NULL,
                                "field \"shape\": [%lld, %lld] does not fit lora_A's [%lld, %lld] "
                                "(expected [out, %lld])",
                                (long long)B->shape[0], (long long)B->shape[1],
                                (long long)A->shape[0], (long long)A->shape[1],
                                (long long)A->shape[0]);
        }
        m->A = malloc((size_t)m->r * m->in * sizeof(float));
        m->B = malloc((size_t)m->out * m->r * sizeof(float));
        if (!m->A || !m->B) return ft_error_set(err, FT_ERR_RUNTIME, file, NULL, "out of memory");
        ft_status st = st_read_f32(s, na, 2, A->shape, m->A, err);
        if (!st) st = st_read_f32(s, nb, 2, B->shape, m->B, err);
        if (!st) st = module_alpha(alpha_pattern, alpha, m->path, &m->alpha, file, err);
        if (st) return st;
        m->scaling = a->rslora ? m->alpha / sqrt((double)m->r) : m->alpha / m->r;
    }
    if (!a->n) return ft_error_set(err, FT_ERR_INPUT, file, NULL, "holds no LoRA matrices");
    return FT_OK;
}

ft_status adapter_load(const char *dir, adapter **out, ft_error *err) {
    *out = NULL;
    adapter *a = calloc(1, sizeof *a);
    if (!a) return ft_error_set(err, FT_ERR_RUNTIME, dir, NULL, "out of memory");
    snprintf(a->dir, sizeof a->dir, "%s", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    ft_status st = json_load_file(path, &a->config, err);
    if (st) {
        if (!err->hint[0])
            snprintf(err->hint, sizeof err->hint,
                     "give the folder PEFT's save_pretrained (or ftune train) wrote");
        adapter_free(a);
        return st;
    }
    double alpha = 8;
    const char *base = NULL;
    st = check_config(a->config, path, err);
    if (!st) st = json_get_double(a->config, "lora_alpha", 0, 8, &alpha, path, err);
    if (!st) st = json_get_bool(a->config, "use_rslora", 0, 0, &a->rslora, path, err);
    if (!st) st = json_get_bool(a->config, "fan_in_fan_out", 0, 0, &a->fan_in_fan_out, path, err);
    if (!st) st = json_get_string(a->config, "base_model_name_or_path", 0, NULL, &base, path, err);
    a->base_model = base;
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(a->config, "alpha_pattern");
    st_set *s = NULL;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!st) st = st_open(path, &s, err);
    if (!st) st = read_modules(a, s, path, alpha, pattern, err);
    st_close(s);
    if (st) {
        adapter_free(a);
        return st;
    }
    *out = a;
    return FT_OK;
}
