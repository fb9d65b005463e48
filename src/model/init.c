/*
 * init.c: write a randomly initialised Hugging Face model folder (config.json +
 * model.safetensors) of a supported architecture, for demos, tests and benchmarks that must not
 * download anything. Initialisation follows transformers' _init_weights for these models:
 * linear and embedding weights ~ N(0, initializer_range = 0.02), biases 0, RMSNorm weights 1.
 */
#include "model/init.h"
#include "base/rand.h"
#include "io/atomic.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct arch_defaults {
    const char *name, *hf_class, *model_type;
    int fused, qkv_bias, qk_norm, tie;
} arch_defaults;

static const arch_defaults archs[] = {
    {"llama", "LlamaForCausalLM", "llama", 0, 0, 0, 0},
    {"mistral", "MistralForCausalLM", "mistral", 0, 0, 0, 0},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", 0, 1, 0, 1},
    {"qwen3", "Qwen3ForCausalLM", "qwen3", 0, 0, 1, 1},
    {"phi3", "Phi3ForCausalLM", "phi3", 1, 0, 0, 0},
};

typedef struct size_row {
    const char *name;
    int C, L, H, Hkv, I;
} size_row;

static const size_row sizes[] = {
    {"tiny", 64, 2, 4, 2, 176},
    {"small", 256, 4, 8, 4, 688},
    {"smollm-135m", 576, 30, 9, 3, 1536},
};

/* N(0, std) by Box-Muller over a counter-based generator. */
static void fill_normal(float *x, size_t n, double std, uint64_t seed) {
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((rand_mix64(seed ^ rand_mix64(i)) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (rand_mix64(seed ^ rand_mix64(i + 1)) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)) * std;
        x[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
}

ft_status model_init_random(const char *arch, const char *size, int vocab, uint64_t seed,
                            const char *out_dir, ft_error *err) {
    const arch_defaults *a = NULL;
    const size_row *s = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].name, arch)) a = &archs[i];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(sizes[i].name, size)) s = &sizes[i];
    if (!a)
        return ft_error_set(err, FT_ERR_INPUT, "option --arch",
                            "use llama, mistral, qwen2, qwen3 or phi3", "unknown architecture \"%s\"", arch);
    if (!s)
        return ft_error_set(err, FT_ERR_INPUT, "option --size", "use tiny, small or smollm-135m",
                            "unknown size \"%s\"", size);
    if (vocab < 4)
        return ft_error_set(err, FT_ERR_INPUT, "option --vocab", NULL, "vocabulary must be >= 4");
    ft_status st = make_dirs(out_dir, err);
    if (st) return st;
    int C = s->C, L = s->L, H = s->H, Hkv = s->Hkv, I = s->I, D = C / H, V = vocab;

    cJSON *j = cJSON_CreateObject();
    cJSON *ar = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(ar, cJSON_CreateString(a->hf_class));
    cJSON_AddStringToObject(j, "model_type", a->model_type);
    cJSON_AddNumberToObject(j, "hidden_size", C);
    cJSON_AddNumberToObject(j, "intermediate_size", I);
    cJSON_AddNumberToObject(j, "num_hidden_layers", L);
    cJSON_AddNumberToObject(j, "num_attention_heads", H);
    cJSON_AddNumberToObject(j, "num_key_value_heads", Hkv);
    cJSON_AddNumberToObject(j, "head_dim", D);
    cJSON_AddNumberToObject(j, "vocab_size", V);
    cJSON_AddNumberToObject(j, "max_position_embeddings", 2048);
    cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "initializer_range", 0.02);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", a->tie);
    cJSON_AddBoolToObject(j, "attention_bias", 0);
    cJSON_AddNumberToObject(j, "bos_token_id", 1);
    cJSON_AddNumberToObject(j, "eos_token_id", 2);
    cJSON_AddStringToObject(j, "dtype", "float32");
    cJSON *rp = cJSON_AddObjectToObject(j, "rope_parameters");
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddNumberToObject(rp, "rope_theta", 10000.0);
    cJSON_AddStringToObject(j, "transformers_version", "5.23.0");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    st = atomic_write_file(path, text, strlen(text), err);
    free(text);
    if (st) return st;

    /* The weights: read the config back so the tensor list comes from the same table the loader
     * uses. */
    model_config cfg;
    if ((st = model_config_load(out_dir, &cfg, err))) return st;
    int HD = H * D, KD = Hkv * D;
    struct { char name[200]; int nd; int64_t sh[2]; int kind; } t[16 + 20 * 64];
    int nt = 0;
#define ADD(kind_, d0, d1, ...)                                                                \
    do {                                                                                       \
        snprintf(t[nt].name, sizeof t[nt].name, __VA_ARGS__);                                  \
        t[nt].nd = (d1) ? 2 : 1, t[nt].sh[0] = d0, t[nt].sh[1] = d1, t[nt].kind = kind_;       \
        nt++;                                                                                  \
    } while (0)
    /* kind: 0 normal(0.02), 1 ones, 2 zeros */
    ADD(0, V, C, "model.embed_tokens.weight");
    ADD(1, C, 0, "model.norm.weight");
    if (!a->tie) ADD(0, V, C, "lm_head.weight");
    if (L > 60) {
        model_config_free(&cfg);
        return ft_error_set(err, FT_ERR_INPUT, "option --size", NULL, "too many layers");
    }
    for (int l = 0; l < L; l++) {
        ADD(1, C, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(1, C, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        if (a->qk_norm) {
            ADD(1, D, 0, "model.layers.%d.self_attn.q_norm.weight", l);
            ADD(1, D, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        struct { lin_kind k; int out, in, bias; } lins[] = {
            {LIN_Q, HD, C, a->qkv_bias}, {LIN_K, KD, C, a->qkv_bias}, {LIN_V, KD, C, a->qkv_bias},
            {LIN_QKV, HD + 2 * KD, C, 0}, {LIN_O, C, HD, 0}, {LIN_GATE, I, C, 0},
            {LIN_UP, I, C, 0}, {LIN_GATE_UP, 2 * I, C, 0}, {LIN_DOWN, C, I, 0}};
        for (size_t i = 0; i < sizeof lins / sizeof lins[0]; i++) {
            lin_kind k = lins[i].k;
            int fused_kind = k == LIN_QKV || k == LIN_GATE_UP, plain = k == LIN_Q || k == LIN_K ||
                                                                k == LIN_V || k == LIN_GATE || k == LIN_UP;
            if ((a->fused && plain) || (!a->fused && fused_kind)) continue;
            ADD(0, lins[i].out, lins[i].in, "%s", "");
            weight_name(t[nt - 1].name, sizeof t[nt - 1].name, l, k, "weight");
            if (lins[i].bias) {
                ADD(2, lins[i].out, 0, "%s", "");
                weight_name(t[nt - 1].name, sizeof t[nt - 1].name, l, k, "bias");
            }
        }
    }
#undef ADD
    model_config_free(&cfg);
    size_t total = 0;
    for (int i = 0; i < nt; i++) total += (size_t)t[i].sh[0] * (t[i].nd == 2 ? (size_t)t[i].sh[1] : 1);
    float *buf = malloc(total * sizeof(float));
    if (!buf) return ft_error_set(err, FT_ERR_RUNTIME, out_dir, NULL, "out of memory");
    st_writer *w = st_writer_new();
    size_t off = 0;
    for (int i = 0; i < nt && !st; i++) {
        size_t n = (size_t)t[i].sh[0] * (t[i].nd == 2 ? (size_t)t[i].sh[1] : 1);
        float *x = buf + off;
        if (t[i].kind == 0) fill_normal(x, n, 0.02, rand_mix64(seed * 1000003ull + (uint64_t)i));
        for (size_t e = 0; t[i].kind && e < n; e++) x[e] = t[i].kind == 1 ? 1.0f : 0.0f;
        st = st_writer_add(w, t[i].name, ST_F32, t[i].nd, t[i].sh, x, err);
        off += n;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    free(buf);
    return st;
}
