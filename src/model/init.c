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
#include "tok/tokenizer.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The model folder; bos, eos, pad: the special token ids config.json names (-1: null, -2: not
 * written). */
static ft_status write_model(const char *arch, const char *size, int vocab, uint64_t seed,
                             const char *out_dir, long bos, long eos, long pad, ft_error *err) {
    const arch_defaults *a = NULL;
    const size_row *s = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].name, arch)) a = &archs[i];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(sizes[i].name, size)) s = &sizes[i];
    if (!a)
        return ft_error_set(err, FT_ERR_INPUT, "option --arch",
                            "use llama, mistral, qwen2, qwen3 or phi3",
                            "unknown architecture \"%s\"", arch);
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
    struct {
        const char *key;
        long id;
    } ids[] = {{"bos_token_id", bos}, {"eos_token_id", eos}, {"pad_token_id", pad}};
    for (int i = 0; i < 3; i++)
        if (ids[i].id >= 0)
            cJSON_AddNumberToObject(j, ids[i].key, (double)ids[i].id);
        else if (ids[i].id == -1)
            cJSON_AddNullToObject(j, ids[i].key);
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
    struct {
        char name[200];
        int nd;
        int64_t sh[2];
        int kind;
    } t[16 + 20 * 64];
    int nt = 0;
#define ADD(kind_, d0, d1, ...)                                                                    \
    do {                                                                                           \
        snprintf(t[nt].name, sizeof t[nt].name, __VA_ARGS__);                                      \
        t[nt].nd = (d1) ? 2 : 1, t[nt].sh[0] = d0, t[nt].sh[1] = d1, t[nt].kind = kind_;           \
        nt++;                                                                                      \
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
        struct {
            lin_kind k;
            int out, in, bias;
        } lins[] = {{LIN_Q, HD, C, a->qkv_bias}, {LIN_K, KD, C, a->qkv_bias},
                    {LIN_V, KD, C, a->qkv_bias}, {LIN_QKV, HD + 2 * KD, C, 0},
                    {LIN_O, C, HD, 0},           {LIN_GATE, I, C, 0},
                    {LIN_UP, I, C, 0},           {LIN_GATE_UP, 2 * I, C, 0},
                    {LIN_DOWN, C, I, 0}};
        for (size_t i = 0; i < sizeof lins / sizeof lins[0]; i++) {
            lin_kind k = lins[i].k;
            int fused_kind = k == LIN_QKV || k == LIN_GATE_UP,
                plain = k == LIN_Q || k == LIN_K || k == LIN_V || k == LIN_GATE || k == LIN_UP;
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
    for (int i = 0; i < nt; i++)
        total += (size_t)t[i].sh[0] * (t[i].nd == 2 ? (size_t)t[i].sh[1] : 1);
    float *buf = malloc(total * sizeof(float));
    if (!buf) return ft_error_set(err, FT_ERR_RUNTIME, out_dir, NULL, "out of memory");
    st_writer *w = st_writer_new();
    size_t off = 0;
    for (int i = 0; i < nt && !st; i++) {
        size_t n = (size_t)t[i].sh[0] * (t[i].nd == 2 ? (size_t)t[i].sh[1] : 1);
        float *x = buf + off;
        if (t[i].kind == 0) fill_normal(x, n, 0.02, rand_mix64(seed * 1000003ull + (uint64_t)i));
        for (size_t e = 0; t[i].kind && e < n; e++)
            x[e] = t[i].kind == 1 ? 1.0f : 0.0f;
        st = st_writer_add(w, t[i].name, ST_F32, t[i].nd, t[i].sh, x, err);
        off += n;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    free(buf);
    return st;
}

ft_status model_init_random(const char *arch, const char *size, int vocab, uint64_t seed,
                            const char *out_dir, ft_error *err) {
    return write_model(arch, size, vocab, seed, out_dir, 1, 2, -2, err);
}

/* path made absolute and free of symlinks, also when its last parts do not exist yet: the
 * longest existing prefix through realpath, then the rest with "." and ".." applied as mkdir -p
 * and the later opens will apply them (a folder it creates is a real one). */
static void canonical(const char *path, char *out, size_t n) {
    char buf[4096], rest[4096] = "";
    snprintf(buf, sizeof buf, "%s", path);
    char *r;
    while (!(r = realpath(buf, NULL))) {
        char *slash = strrchr(buf, '/');
        char tmp[8200];
        snprintf(tmp, sizeof tmp, "/%s%s", slash ? slash + 1 : buf, rest);
        snprintf(rest, sizeof rest, "%.4000s", tmp);
        if (!slash)
            snprintf(buf, sizeof buf, ".");
        else if (slash == buf)
            snprintf(buf, sizeof buf, "/");
        else
            *slash = 0;
    }
    snprintf(out, n, "%s", strcmp(r, "/") ? r : "");
    free(r);
    for (char *part = strtok(rest, "/"); part; part = strtok(NULL, "/")) {
        if (!strcmp(part, ".")) continue;
        if (!strcmp(part, "..")) {
            char *slash = strrchr(out, '/');
            if (slash) *slash = 0;
            continue;
        }
        size_t l = strlen(out);
        snprintf(out + l, n - l, "/%s", part);
    }
    if (!out[0]) snprintf(out, n, "/");
}

ft_status model_out_check(const char *out, const char *in, int overwrite, ft_error *err) {
    struct stat so, si;
    int out_exists = stat(out, &so) == 0;
    if (in) {
        char co[4200], ci[4200];
        canonical(out, co, sizeof co);
        canonical(in, ci, sizeof ci);
        if ((out_exists && stat(in, &si) == 0 && so.st_dev == si.st_dev &&
             so.st_ino == si.st_ino) ||
            !strcmp(co, ci))
            return ft_error_set(err, FT_ERR_INPUT, "option --out",
                                "choose a new folder for the output; the input is never changed",
                                "\"%s\" is the --model folder \"%s\"", out, in);
    }
    if (!out_exists) return FT_OK;
    if (!S_ISDIR(so.st_mode))
        return ft_error_set(err, FT_ERR_INPUT, out, "give a folder path for --out",
                            "exists and is not a folder");
    DIR *d = opendir(out);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    if (n && !overwrite)
        return ft_error_set(err, FT_ERR_INPUT, out,
                            "choose a new --out folder, or pass --overwrite to replace its files",
                            "the output folder exists and is not empty");
    return FT_OK;
}

/* The files transformers' tokenizer save_pretrained writes (and a SentencePiece or slow
 * tokenizer's own), then generation_config.json. */
static const char *const TOKENIZER_FILES[] = {"tokenizer.json",
                                              "tokenizer_config.json",
                                              "special_tokens_map.json",
                                              "added_tokens.json",
                                              "tokenizer.model",
                                              "vocab.json",
                                              "merges.txt",
                                              "chat_template.jinja",
                                              "chat_template.json",
                                              "generation_config.json"};
#define N_TOKENIZER_FILES (int)(sizeof TOKENIZER_FILES / sizeof TOKENIZER_FILES[0])

ft_status model_copy_tokenizer_files(const char *from, const char *to, int generation_config,
                                     int *copied, ft_error *err) {
    int n = 0;
    for (int i = 0; i < N_TOKENIZER_FILES; i++) {
        if (!generation_config && !strcmp(TOKENIZER_FILES[i], "generation_config.json")) continue;
        char src[4200], dst[4200];
        snprintf(src, sizeof src, "%s/%s", from, TOKENIZER_FILES[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, TOKENIZER_FILES[i]);
        if (access(src, F_OK) != 0) continue;
        char *data;
        size_t len;
        ft_status st = file_read_all(src, &data, &len, err);
        if (!st) st = atomic_write_file(dst, data, len, err);
        if (!st) free(data);
        if (st) return st;
        n++;
    }
    if (copied) *copied = n;
    return FT_OK;
}

/* The id of tokenizer_config.json's (or special_tokens_map.json's) KEY ("bos_token", ...): -1
 * when the tokenizer has none. */
static long special_id(const tokenizer *t, const cJSON *cfg, const cJSON *map, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(map, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? tok_token_to_id(t, v->valuestring) : -1;
}

ft_status model_init(const model_init_options *o, ft_error *err) {
    ft_status st = model_out_check(o->out, NULL, o->overwrite, err);
    if (st) return st;
    if (!o->tokenizer)
        return write_model(o->arch, o->size, o->vocab > 0 ? o->vocab : 512, o->seed, o->out, 1, 2,
                           -2, err);
    /* a folder with tokenizer.json, or the file itself */
    char dir[4096];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", o->tokenizer);
    if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(dir, sizeof dir, ".");
    }
    tokenizer *t = NULL;
    if ((st = tok_load(dir, &t, err))) {
        if (!err->hint[0])
            snprintf(err->hint, sizeof err->hint,
                     "--tokenizer takes a folder with tokenizer.json (a model folder)");
        return st;
    }
    long V = (long)tok_vocab_size(t);
    if (o->vocab > 0 && o->vocab < V) {
        tok_free(t);
        return ft_error_set(
            err, FT_ERR_INPUT, "option --vocab", "leave --vocab out to take the tokenizer's size",
            "%ld is smaller than the tokenizer's vocabulary (%ld tokens, added ones "
            "included)",
            o->vocab, V);
    }
    char path[4200];
    cJSON *cfg = NULL, *map = NULL;
    ft_error ignore;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (json_load_file(path, &cfg, &ignore)) cfg = NULL;
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    if (json_load_file(path, &map, &ignore)) map = NULL;
    long bos = special_id(t, cfg, map, "bos_token"), eos = special_id(t, cfg, map, "eos_token"),
         pad = special_id(t, cfg, map, "pad_token");
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    tok_free(t);
    st = write_model(o->arch, o->size, (int)(o->vocab > 0 ? o->vocab : V), o->seed, o->out, bos,
                     eos, pad, err);
    if (!st) st = model_copy_tokenizer_files(dir, o->out, 0, NULL, err);
    return st;
}
