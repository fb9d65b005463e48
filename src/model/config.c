/*
 * config.c: config.json -> model_config, and the table of supported architectures.
 *
 * Each architecture is one row of arch_table (what the model code needs to know: fused
 * projections, biases, q/k norms) plus one row of arch_defaults (the class defaults of its
 * transformers configuration class, used when config.json leaves a field out). The facts come
 * from transformers 5.23: models/{llama,mistral,qwen2,qwen3,phi3}/configuration_*.py and
 * modeling_*.py, and modeling_rope_utils.py. Where transformers tells "absent" from "null" apart
 * (absent = class default, null = None), so do we: e.g. Qwen2 without num_key_value_heads has 32
 * key/value heads (the class default), with "num_key_value_heads": null it has H.
 *
 * RoPE: transformers 5 writes "rope_parameters": {"rope_type", "rope_theta", ...}; older files
 * write a top-level "rope_theta" and "rope_scaling": {"type" | "rope_type", "factor", ...}.
 * Both are read with transformers' precedence (rope_scaling over rope_parameters; values inside
 * the dict over top-level ones). inv_freq is computed in fp32 step by step as transformers does
 * (1 / theta^(2i/dim), then linear or llama3 scaling), so it matches torch's values to within the
 * last bit of torch's pow (which is not correctly rounded on the CPU).
 *
 * Sliding windows, as transformers 5.23 applies them: Mistral and Phi-3 use sliding_window on
 * every layer unless it is null; Qwen2/Qwen3 only when use_sliding_window is true, on the layers
 * that layer_types marks "sliding_attention" (or, without layer_types, layers >=
 * max_window_layers). A window W lets query i see keys j with i - W < j <= i
 * (masking_utils.sliding_window_overlay).
 */
#include "model/config.h"

#include "io/json.h"
#include "model/gguf_model.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

const char *const lin_names[LIN_COUNT] = {"q_proj",    "k_proj",    "v_proj",
                                          "o_proj",    "gate_proj", "up_proj",
                                          "down_proj", "qkv_proj",  "gate_up_proj"};

static const arch_info arch_table[] = {
    /* class, model_type, fused_qkv, fused_gate_up, qkv_bias, qk_norm, attention_bias,
       mlp_bias, sliding_window */
    {"LlamaForCausalLM", "llama", 0, 0, 0, 0, 1, 1, 0},
    {"MistralForCausalLM", "mistral", 0, 0, 0, 0, 0, 0, 1},
    {"Qwen2ForCausalLM", "qwen2", 0, 0, 1, 0, 0, 0, 1},
    {"Qwen3ForCausalLM", "qwen3", 0, 0, 0, 1, 1, 0, 1},
    {"Phi3ForCausalLM", "phi3", 1, 1, 0, 0, 0, 0, 1},
};
#define N_ARCH (int)(sizeof arch_table / sizeof arch_table[0])
#define SUPPORTED                                                                                  \
    "supported: LlamaForCausalLM (llama, SmolLM), MistralForCausalLM, Qwen2ForCausalLM, "          \
    "Qwen3ForCausalLM, Phi3ForCausalLM"

/* Class defaults of each configuration class (transformers 5.23), row for row with arch_table.
 * -1 means None. */
typedef struct arch_defaults {
    int Hkv;         /* num_key_value_heads when absent; -1: None -> H */
    int D;           /* head_dim when absent; -1: None -> C / H */
    double eps;      /* rms_norm_eps */
    long max_pos;    /* max_position_embeddings */
    long bos, eos;   /* bos_token_id, eos_token_id */
    long window;     /* sliding_window when absent; -1: None */
    int qwen_layers; /* windows come from use_sliding_window / layer_types / max_window_layers */
    int phi3_rope;   /* Phi3Config's own rope handling (partial_rotary_factor, default/longrope) */
} arch_defaults;

static const arch_defaults arch_def[] = {
    {-1, -1, 1e-6, 2048, 1, 2, -1, 0, 0},       /* LlamaConfig */
    {8, -1, 1e-6, 4096 * 32, 1, 2, 4096, 0, 0}, /* MistralConfig */
    {32, -1, 1e-6, 32768, -1, -1, 4096, 1, 0},  /* Qwen2Config */
    {32, 128, 1e-6, 32768, -1, -1, 4096, 1, 0}, /* Qwen3Config */
    {-1, -1, 1e-5, 4096, 1, 32000, -1, 0, 1},   /* Phi3Config */
};

const arch_info *arch_find(const char *model_type) {
    for (int i = 0; i < N_ARCH; i++)
        if (!strcmp(model_type, arch_table[i].model_type)) return &arch_table[i];
    return NULL;
}

void weight_name(char *buf, size_t n, int layer, lin_kind k, const char *suffix) {
    int attn = k == LIN_Q || k == LIN_K || k == LIN_V || k == LIN_O || k == LIN_QKV;
    snprintf(buf, n, "model.layers.%d.%s.%s.%s", layer, attn ? "self_attn" : "mlp",
             (unsigned)k < LIN_COUNT ? lin_names[k] : "?", suffix);
}

void model_config_free(model_config *cfg) {
    if (!cfg) return;
    free(cfg->window);
    free(cfg->inv_freq);
    cfg->window = NULL;
    cfg->inv_freq = NULL;
}

/* where = "PATH: field \"KEY\"" */
static const char *fw(char *buf, size_t n, const char *path, const char *key) {
    snprintf(buf, n, "%s: field \"%s\"", path, key);
    return buf;
}

/* An integer field that distinguishes absent (-> absent_def) from null (-> null_def). */
static ft_status get_int3(const cJSON *j, const char *key, long absent_def, long null_def,
                          long *out, const char *path, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) {
        *out = absent_def;
        return FT_OK;
    }
    if (cJSON_IsNull(v)) {
        *out = null_def;
        return FT_OK;
    }
    return json_get_int(j, key, 1, 0, out, path, err);
}

/* A size field: a positive integer below a sane bound. */
static ft_status check_size(long v, long max, const char *path, const char *key, ft_error *err) {
    char w[4400];
    if (v < 1 || v > max)
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, key), NULL,
                            "expected a positive integer up to %ld, found %ld", max, v);
    return FT_OK;
}

/* bos/eos: an integer, a list of integers (the first is used), or null. */
static ft_status get_token_id(const cJSON *j, const char *key, long def, long *out,
                              const char *path, ft_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    char w[4400];
    if (!v) {
        *out = def;
        return FT_OK;
    }
    if (cJSON_IsNull(v)) {
        *out = -1;
        return FT_OK;
    }
    if (cJSON_IsArray(v)) {
        if (!v->child) {
            *out = -1;
            return FT_OK;
        }
        v = v->child;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 2147483647.0)
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, key), NULL,
                            "expected a token id (non-negative integer) or a list of them, "
                            "found %s",
                            json_type_name(v));
    *out = (long)v->valuedouble;
    return FT_OK;
}

/* The rope dict in effect, following transformers' convert_rope_params_to_dict. */
typedef struct rope_src {
    const cJSON *d;   /* the dict, or NULL (= {}) */
    const char *name; /* "rope_scaling" or "rope_parameters" */
} rope_src;

static ft_status rope_get_double(const rope_src *r, const cJSON *top, const char *key, int required,
                                 double def, double *out, const char *path, ft_error *err) {
    char w[4400], k[128];
    const cJSON *v = r->d ? cJSON_GetObjectItemCaseSensitive(r->d, key) : NULL;
    if (v && !cJSON_IsNull(v)) {
        snprintf(k, sizeof k, "%s.%s", r->name, key);
        if (!cJSON_IsNumber(v))
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, k), NULL,
                                "expected a number, found %s", json_type_name(v));
        *out = v->valuedouble;
        return FT_OK;
    }
    if (top) {
        v = cJSON_GetObjectItemCaseSensitive(top, key);
        if (v && !cJSON_IsNull(v)) {
            if (!cJSON_IsNumber(v))
                return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, key), NULL,
                                    "expected a number, found %s", json_type_name(v));
            *out = v->valuedouble;
            return FT_OK;
        }
    }
    if (required) {
        snprintf(k, sizeof k, "%s.%s", r->name, key);
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, k),
                            "this rope type needs the field; see the model's original config",
                            "required field is missing (expected a number)");
    }
    *out = def;
    return FT_OK;
}

/* inv_freq[i] = 1 / theta^(2i/dim), each step in fp32 as torch computes
 * `1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))`. */
void rope_inv_freq_default(float *inv, int dim, double theta) {
    for (int i = 0; i < dim / 2; i++) {
        float ex = (float)(2 * i) / (float)dim;
        inv[i] = 1.0f / powf((float)theta, ex);
    }
}

static ft_status load_rope(const cJSON *j, const arch_defaults *ad, model_config *cfg,
                           const char *path, ft_error *err) {
    char w[4400], k[128];
    rope_src r = {NULL, "rope_parameters"};
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    if (rs && !cJSON_IsNull(rs) && !cJSON_IsObject(rs))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "rope_scaling"), NULL,
                            "expected an object or null, found %s", json_type_name(rs));
    if (rp && !cJSON_IsNull(rp) && !cJSON_IsObject(rp))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "rope_parameters"), NULL,
                            "expected an object or null, found %s", json_type_name(rp));
    if (cJSON_IsObject(rs) && rs->child) { /* `rope_scaling or rope_parameters` */
        r.d = rs;
        r.name = "rope_scaling";
    } else if (cJSON_IsObject(rp)) {
        r.d = rp;
    }
    if (r.d && cJSON_GetObjectItemCaseSensitive(r.d, "full_attention"))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, r.name),
                            "ftune supports one RoPE setting for all layers",
                            "per-layer-type rope parameters are not supported");
    double theta, partial, factor = 1.0;
    ft_status st = rope_get_double(&r, j, "rope_theta", 0, 10000.0, &theta, path, err);
    if (!st) st = rope_get_double(&r, j, "partial_rotary_factor", 0, 1.0, &partial, path, err);
    if (st) return st;
    const char *type = "default";
    const char *tkey = "rope_type";
    if (r.d) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(r.d, "rope_type");
        if (!t || cJSON_IsNull(t)) {
            t = cJSON_GetObjectItemCaseSensitive(r.d, "type");
            tkey = "type";
        }
        if (t && !cJSON_IsNull(t)) {
            snprintf(k, sizeof k, "%s.%s", r.name, tkey);
            if (!cJSON_IsString(t))
                return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, k), NULL,
                                    "expected a string, found %s", json_type_name(t));
            type = t->valuestring;
        }
    }
    snprintf(k, sizeof k, "%s.%s", r.name, tkey);
    if (ad->phi3_rope && (!strcmp(type, "su") || !strcmp(type, "yarn"))) type = "longrope";
    int is_default = !strcmp(type, "default"), is_linear = !strcmp(type, "linear"),
        is_llama3 = !strcmp(type, "llama3");
    if (ad->phi3_rope ? !is_default : !(is_default || is_linear || is_llama3))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, k),
                            ad->phi3_rope
                                ? "ftune supports rope type \"default\" for Phi3 (transformers "
                                  "allows default or longrope)"
                                : "ftune supports the rope types \"default\", \"linear\" and "
                                  "\"llama3\"",
                            "unsupported rope type \"%s\"", type);
    if (!(theta > 0) || !isfinite(theta))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "rope_theta"), NULL,
                            "expected a positive number, found %g", theta);
    if (!(partial > 0 && partial <= 1))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "partial_rotary_factor"), NULL,
                            "expected a number in (0, 1], found %g", partial);
    /* The rotated dimensions: Phi-3 and the scaled types use int(head_dim * partial); the
     * default rope of Llama, Mistral and Qwen ignores partial_rotary_factor. */
    int dim = cfg->D;
    if (ad->phi3_rope || !is_default) dim = (int)((double)cfg->D * partial);
    if (!ad->phi3_rope && dim != cfg->D)
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "partial_rotary_factor"),
                            "remove the field or set it to 1.0",
                            "partial rotation (%g) is only supported for Phi3", partial);
    if (dim < 2 || dim % 2)
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "partial_rotary_factor"), NULL,
                            "rotated dimensions (head_dim x factor = %d) must be even and >= 2",
                            dim);
    cfg->rot_dim = dim;
    cfg->attn_scaling = 1.0f;
    cfg->inv_freq = malloc(sizeof(float) * (size_t)(dim / 2));
    if (!cfg->inv_freq) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    rope_inv_freq_default(cfg->inv_freq, dim, theta);
    if (is_linear) {
        st = rope_get_double(&r, NULL, "factor", 1, 1.0, &factor, path, err);
        if (st) return st;
        snprintf(k, sizeof k, "%s.factor", r.name);
        if (!(factor >= 1.0) || !isfinite(factor))
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, k), NULL,
                                "expected a number >= 1, found %g", factor);
        for (int i = 0; i < dim / 2; i++)
            cfg->inv_freq[i] /= (float)factor;
    } else if (is_llama3) {
        double low, high, old;
        st = rope_get_double(&r, NULL, "factor", 1, 1.0, &factor, path, err);
        if (!st) st = rope_get_double(&r, NULL, "low_freq_factor", 1, 1.0, &low, path, err);
        if (!st) st = rope_get_double(&r, NULL, "high_freq_factor", 1, 4.0, &high, path, err);
        if (st) return st;
        /* original_max_position_embeddings: a top-level field wins (standardize_rope_params),
         * then the rope dict, then max_position_embeddings */
        const cJSON *top = cJSON_GetObjectItemCaseSensitive(j, "original_max_position_embeddings");
        if (top && cJSON_IsNumber(top))
            old = top->valuedouble;
        else
            st = rope_get_double(&r, NULL, "original_max_position_embeddings", 0,
                                 (double)cfg->max_pos, &old, path, err);
        if (st) return st;
        snprintf(k, sizeof k, "%s.high_freq_factor", r.name);
        if (!(factor >= 1.0) || !(low > 0) || !(high > low) || !(old > 0))
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, r.name), NULL,
                                "llama3 rope needs factor >= 1, 0 < low_freq_factor < "
                                "high_freq_factor, original_max_position_embeddings > 0 "
                                "(found %g, %g, %g, %g)",
                                factor, low, high, old);
        /* modeling_rope_utils._compute_llama3_parameters, every operation in fp32 with the
         * Python scalars cast to fp32 as torch does */
        const float two_pi = (float)(2.0 * M_PI), f = (float)factor, lo = (float)low;
        const float low_wl = (float)(old / low), high_wl = (float)(old / high);
        const float span = (float)(high - low), oldf = (float)old;
        for (int i = 0; i < dim / 2; i++) {
            float inv = cfg->inv_freq[i];
            float wl = two_pi / inv;
            float v = wl > low_wl ? inv / f : inv;
            float s = (oldf / wl - lo) / span;
            float smoothed = (1.0f - s) * v / f + s * v;
            int medium = !(wl < high_wl) && !(wl > low_wl);
            cfg->inv_freq[i] = medium ? smoothed : v;
        }
    }
    return FT_OK;
}

static ft_status load_windows(const cJSON *j, const arch_defaults *ad, model_config *cfg,
                              const char *path, ft_error *err) {
    char w[4400];
    cfg->window = calloc((size_t)cfg->L, sizeof(int));
    if (!cfg->window) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    if (!cfg->arch->uses_sliding_window) return FT_OK;
    long sw;
    ft_status st = get_int3(j, "sliding_window", ad->window, -1, &sw, path, err);
    if (st) return st;
    if (sw != -1 && (sw < 0 || sw > 0x7fffffffL))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "sliding_window"), NULL,
                            "expected a non-negative integer or null, found %ld", sw);
    if (!ad->qwen_layers) { /* Mistral, Phi-3: every layer, unless null */
        for (int l = 0; l < cfg->L; l++)
            cfg->window[l] = sw > 0 ? (int)sw : 0;
        return FT_OK;
    }
    int use;
    st = json_get_bool(j, "use_sliding_window", 0, 0, &use, path, err);
    if (st) return st;
    if (!use) sw = -1;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != cfg->L)
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "layer_types"), NULL,
                                "expected a list of %d strings (one per layer), found %s", cfg->L,
                                cJSON_IsArray(lt) ? "a list of another length"
                                                  : json_type_name(lt));
        int l = 0;
        for (const cJSON *e = lt->child; e; e = e->next, l++) {
            int sliding = cJSON_IsString(e) && !strcmp(e->valuestring, "sliding_attention");
            if (!sliding && !(cJSON_IsString(e) && !strcmp(e->valuestring, "full_attention")))
                return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "layer_types"), NULL,
                                    "entry %d: expected \"full_attention\" or "
                                    "\"sliding_attention\"",
                                    l);
            cfg->window[l] = sliding && sw > 0 ? (int)sw : 0;
        }
        return FT_OK;
    }
    long mwl;
    st = json_get_int(j, "max_window_layers", 0, 28, &mwl, path, err);
    if (st) return st;
    for (int l = 0; l < cfg->L; l++)
        cfg->window[l] = sw > 0 && l >= mwl ? (int)sw : 0;
    return FT_OK;
}

static ft_status load(const cJSON *j, model_config *cfg, const char *path, ft_error *err) {
    char w[4400];
    /* architecture: "architectures"[0], else model_type */
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const char *model_type = NULL;
    ft_status st = json_get_string(j, "model_type", 0, NULL, &model_type, path, err);
    if (st) return st;
    int row = -1;
    if (archs && !cJSON_IsNull(archs)) {
        if (!cJSON_IsArray(archs) || !cJSON_IsString(archs->child))
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "architectures"), NULL,
                                "expected a list of class names, found %s",
                                json_type_name(cJSON_IsArray(archs) ? archs->child : archs));
        const char *cls = archs->child->valuestring;
        for (int i = 0; i < N_ARCH; i++)
            if (!strcmp(cls, arch_table[i].hf_class)) row = i;
        if (row < 0) {
            /* a known backbone with another head (e.g. LlamaForSequenceClassification) */
            int mt = -1;
            for (int i = 0; model_type && i < N_ARCH; i++)
                if (!strcmp(model_type, arch_table[i].model_type)) mt = i;
            char hint[512];
            if (mt >= 0)
                snprintf(hint, sizeof hint,
                         "ftune trains causal LMs; model_type \"%s\" is supported as %s. If these "
                         "weights are a causal LM, set \"architectures\": [\"%s\"]",
                         model_type, arch_table[mt].hf_class, arch_table[mt].hf_class);
            else
                snprintf(hint, sizeof hint, "%s", SUPPORTED);
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "architectures"), hint,
                                "unsupported architecture \"%s\"", cls);
        }
    } else if (model_type) {
        for (int i = 0; i < N_ARCH; i++)
            if (!strcmp(model_type, arch_table[i].model_type)) row = i;
        if (row < 0)
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "model_type"), SUPPORTED,
                                "unsupported model_type \"%s\"", model_type);
    } else {
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "architectures"), SUPPORTED,
                            "neither \"architectures\" nor \"model_type\" is given");
    }
    cfg->arch = &arch_table[row];
    const arch_defaults *ad = &arch_def[row];

    long C, I, L, H, V, Hkv, D, max_pos;
    if ((st = json_get_int(j, "hidden_size", 1, 0, &C, path, err)) ||
        (st = json_get_int(j, "num_hidden_layers", 1, 0, &L, path, err)) ||
        (st = json_get_int(j, "num_attention_heads", 1, 0, &H, path, err)) ||
        (st = json_get_int(j, "intermediate_size", 1, 0, &I, path, err)) ||
        (st = json_get_int(j, "vocab_size", 1, 0, &V, path, err)))
        return st;
    if ((st = check_size(C, 1L << 20, path, "hidden_size", err)) ||
        (st = check_size(L, 1L << 14, path, "num_hidden_layers", err)) ||
        (st = check_size(H, 1L << 14, path, "num_attention_heads", err)) ||
        (st = check_size(I, 1L << 22, path, "intermediate_size", err)) ||
        (st = check_size(V, 1L << 28, path, "vocab_size", err)))
        return st;
    if ((st = get_int3(j, "num_key_value_heads", ad->Hkv < 0 ? H : ad->Hkv, H, &Hkv, path, err)))
        return st;
    if ((st = check_size(Hkv, H, path, "num_key_value_heads", err))) return st;
    if (H % Hkv)
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "num_key_value_heads"),
                            "each key/value head serves a whole group of query heads",
                            "num_attention_heads (%ld) is not a multiple of num_key_value_heads "
                            "(%ld)%s",
                            H, Hkv,
                            cJSON_GetObjectItemCaseSensitive(j, "num_key_value_heads")
                                ? ""
                                : " (absent: the class default)");
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(j, "head_dim");
    if (hd && !cJSON_IsNull(hd)) {
        if ((st = json_get_int(j, "head_dim", 1, 0, &D, path, err))) return st;
        if ((st = check_size(D, 1L << 14, path, "head_dim", err))) return st;
    } else if (ad->D > 0) {
        D = ad->D;
    } else {
        if (C % H)
            return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "num_attention_heads"),
                                "give head_dim, or a head count that divides hidden_size",
                                "hidden_size (%ld) is not a multiple of num_attention_heads (%ld)",
                                C, H);
        D = C / H;
    }
    if ((st = json_get_int(j, "max_position_embeddings", 0, ad->max_pos, &max_pos, path, err)))
        return st;
    if ((st = check_size(max_pos, 1L << 30, path, "max_position_embeddings", err))) return st;
    cfg->C = (int)C;
    cfg->I = (int)I;
    cfg->L = (int)L;
    cfg->H = (int)H;
    cfg->Hkv = (int)Hkv;
    cfg->D = (int)D;
    cfg->V = (int)V;
    cfg->max_pos = (int)max_pos;

    const char *act;
    if ((st = json_get_string(j, "hidden_act", 0, "silu", &act, path, err))) return st;
    if (strcmp(act, "silu") && strcmp(act, "swish"))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "hidden_act"),
                            "ftune's MLP is SwiGLU with silu (\"silu\" or \"swish\")",
                            "unsupported activation \"%s\"", act);
    double eps;
    if ((st = json_get_double(j, "rms_norm_eps", 0, ad->eps, &eps, path, err))) return st;
    if (!(eps > 0 && eps < 1))
        return ft_error_set(err, FT_ERR_INPUT, fw(w, sizeof w, path, "rms_norm_eps"), NULL,
                            "expected a small positive number, found %g", eps);
    cfg->eps = (float)eps;
    if ((st = json_get_bool(j, "tie_word_embeddings", 0, 0, &cfg->tie_embeddings, path, err)))
        return st;

    int ab = 0, mb = 0;
    if (cfg->arch->uses_attention_bias &&
        (st = json_get_bool(j, "attention_bias", 0, 0, &ab, path, err)))
        return st;
    if (cfg->arch->uses_mlp_bias && (st = json_get_bool(j, "mlp_bias", 0, 0, &mb, path, err)))
        return st;
    cfg->attn_bias = cfg->arch->qkv_bias || ab;
    cfg->o_bias = ab;
    cfg->mlp_bias = mb;

    /* dtype (transformers 5) or torch_dtype (older) */
    const char *dt = NULL;
    if ((st = json_get_string(j, "dtype", 0, NULL, &dt, path, err))) return st;
    if (!dt && (st = json_get_string(j, "torch_dtype", 0, NULL, &dt, path, err))) return st;
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt ? dt : "");
    if ((st = get_token_id(j, "bos_token_id", ad->bos, &cfg->bos_token_id, path, err)) ||
        (st = get_token_id(j, "eos_token_id", ad->eos, &cfg->eos_token_id, path, err)))
        return st;

    if ((st = load_windows(j, ad, cfg, path, err))) return st;
    return load_rope(j, ad, cfg, path, err);
}

static int ends_with_ci(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* "org/name" with no such local path: how a Hub id looks (one slash, no leading ./ ~ /). */
static int looks_like_hub_id(const char *s) {
    const char *slash = strchr(s, '/');
    if (!slash || strchr(slash + 1, '/') || slash == s || !slash[1]) return 0;
    if (s[0] == '.' || s[0] == '~' || s[0] == '/') return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("-_./", *p))) return 0;
    return 1;
}

/* The first folder under DIR/snapshots, into buf (empty if none). */
static void first_snapshot(const char *dir, char *buf, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/snapshots", dir);
    buf[0] = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(buf, n, "%.3000s/%.200s", path, e->d_name);
            break;
        }
    if (d) closedir(d);
}

ft_status model_dir_check(const char *dir, ft_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return FT_OK;
    }
    struct stat sb;
    int exists = stat(dir, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode) && ends_with_ci(dir, ".gguf"))
        return ft_error_set(
            err, FT_ERR_INPUT, dir,
            "train, eval, plan, generate, chat and tokenize take a GGUF file; for this command "
            "give the Hugging Face model folder the file was made from",
            "this is a GGUF file; this command takes a Hugging Face model "
            "folder");
    if (exists && !S_ISDIR(sb.st_mode))
        return ft_error_set(err, FT_ERR_INPUT, dir,
                            "give the folder that holds config.json and the *.safetensors files",
                            "is a file, not a model folder");
    if (!exists && looks_like_hub_id(dir)) {
        const char *name = strchr(dir, '/') + 1;
        char hint[512];
        snprintf(hint, sizeof hint,
                 "ftune reads local folders only: download it first, e.g. hf download %.150s "
                 "--local-dir %.100s, then --model %.100s",
                 dir, name, name);
        return ft_error_set(err, FT_ERR_INPUT, dir, hint,
                            "no such folder; this looks like a Hugging Face Hub id");
    }
    if (exists) {
        char snap[3300];
        first_snapshot(dir, snap, sizeof snap);
        if (snap[0]) {
            char hint[512];
            snprintf(hint, sizeof hint, "pass a snapshot folder inside it, e.g. --model %.440s",
                     snap);
            return ft_error_set(err, FT_ERR_INPUT, dir, hint,
                                "this is a Hugging Face cache folder (models--ORG--NAME), not a "
                                "model folder: it has no config.json");
        }
        DIR *d = opendir(dir);
        struct dirent *e;
        char gguf[300] = "";
        while (d && (e = readdir(d)))
            if (ends_with_ci(e->d_name, ".gguf")) {
                snprintf(gguf, sizeof gguf, "%.250s", e->d_name);
                break;
            }
        if (d) closedir(d);
        if (gguf[0])
            return ft_error_set(
                err, FT_ERR_INPUT, path,
                "train, eval, plan, generate, chat and tokenize read a GGUF file given by name",
                "cannot open config.json; the folder holds a GGUF file (%s): "
                "pass the file itself, --model %s/%s",
                gguf, dir, gguf);
    }
    return ft_error_set(err, FT_ERR_INPUT, path,
                        "give a Hugging Face model folder (it holds config.json and the "
                        "weights)",
                        exists ? "cannot open config.json"
                               : "cannot open config.json: no such folder");
}

ft_status model_config_load(const char *dir, model_config *cfg, ft_error *err) {
    memset(cfg, 0, sizeof *cfg);
    if (gguf_model_is(dir)) return gguf_config_load(dir, cfg, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    ft_status st0 = model_dir_check(dir, err);
    if (st0) return st0;
    cJSON *j = NULL;
    ft_status st = json_load_file(path, &j, err);
    if (st) return st;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return ft_error_set(err, FT_ERR_INPUT, path, NULL, "expected a JSON object");
    }
    st = load(j, cfg, path, err);
    cJSON_Delete(j);
    if (st) model_config_free(cfg);
    return st;
}
