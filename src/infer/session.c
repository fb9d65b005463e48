/*
 * session.c: loading what a generation needs, the adapters with their weights, and the chat
 * template's end of turn (session.h).
 */
#include "infer/session.h"
#include "base/cpu.h"
#include "io/gguf.h"
#include "io/safetensors.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* "DIR" or "DIR:W": the folder (into dir) and the weight. A folder whose own name has a colon
 * is taken whole when it exists. */
static ft_status adapter_spec(const char *spec, char *dir, size_t n, float *w, ft_error *err) {
    const char *colon = strrchr(spec, ':');
    *w = 1.0f;
    snprintf(dir, n, "%s", spec);
    if (!colon || is_dir(spec)) return FT_OK;
    char *end;
    errno = 0;
    double v = strtod(colon + 1, &end);
    if (errno || end == colon + 1 || *end || !isfinite(v))
        return ft_error_set(err, FT_ERR_INPUT, "option --adapter", "write --adapter RUN:0.5",
                            "\"%s\": the weight after ':' is not a number", spec);
    snprintf(dir, n, "%.*s", (int)(colon - spec), spec);
    *w = (float)v;
    return FT_OK;
}

/* Are the checkpoint's linear weights BF16? Generation then keeps them so (the same values as
 * an fp32 copy, in half the memory, read by the bf16 dot kernels) unless --quant says otherwise;
 * training's default converts them to fp32. */
static int checkpoint_is_bf16(const char *dir) {
    st_set *s = NULL;
    ft_error ignore;
    if (st_open_dir(dir, &s, &ignore) != FT_OK) return 0;
    const st_tensor *t = st_find(s, "model.layers.0.self_attn.q_proj.weight");
    if (!t) t = st_find(s, "model.layers.0.self_attn.qkv_proj.weight");
    int bf16 = t && t->dtype == ST_BF16;
    st_close(s);
    return bf16;
}

/* The template's end of turn, from a probe conversation rendered without a generation
 * prompt: what follows the answer. Templates that refuse the probe leave none. */
static void find_end_of_turn(infer_session *s) {
    s->eot = -1, s->eot_text[0] = 0;
    if (!s->tpl || !s->tok) return;
    static const char answer[] = "ftune-probe-answer";
    cJSON *msgs = cJSON_CreateArray();
    cJSON *u = cJSON_CreateObject(), *a = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user");
    cJSON_AddStringToObject(u, "content", "ftune-probe-question");
    cJSON_AddStringToObject(a, "role", "assistant");
    cJSON_AddStringToObject(a, "content", answer);
    cJSON_AddItemToArray(msgs, u);
    cJSON_AddItemToArray(msgs, a);
    chat_render r = {0};
    ft_error e;
    if (chat_template_render(s->tpl, msgs, NULL, 0, s->targs, &r, &e) == FT_OK) {
        const char *at = NULL, *p = r.text;
        while ((p = strstr(p, answer)))
            at = p++;
        if (at) {
            const char *rest = at + strlen(answer);
            int32_t *ids = NULL;
            size_t n = 0;
            if (*rest && tok_encode(s->tok, rest, strlen(rest), 0, &ids, &n, &e) == FT_OK && n &&
                tok_is_special(s->tok, ids[0])) {
                s->eot = ids[0];
            } else {
                /* no special token: the text up to the next newline, trimmed */
                while (*rest == ' ' || *rest == '\t')
                    rest++;
                size_t k = strcspn(rest, "\n");
                while (k && (rest[k - 1] == ' ' || rest[k - 1] == '\r'))
                    k--;
                if (k && k < sizeof s->eot_text)
                    snprintf(s->eot_text, sizeof s->eot_text, "%.*s", (int)k, rest);
            }
            free(ids);
        }
    }
    chat_render_free(&r);
    cJSON_Delete(msgs);
}

/* Does the GGUF file at path carry a vocabulary (tokenizer.ggml.model)? */
static int gguf_has_vocab(const char *path) {
    gguf_file *g;
    ft_error e;
    if (gguf_open(path, &g, &e)) return 1; /* let tok_load report the file */
    int has = gguf_find_kv(g, "tokenizer.ggml.model") != NULL;
    gguf_close(g);
    return has;
}

ft_status infer_session_open(const infer_session_options *o, infer_session *s, ft_error *err) {
    memset(s, 0, sizeof *s);
    s->eot = -1;
    if (!o->model_dir)
        return ft_error_set(err, FT_ERR_INPUT, "option --model", "give a Hugging Face model folder",
                            "--model is required");
    if (o->n_adapters > INFER_MAX_ADAPTERS)
        return ft_error_set(err, FT_ERR_INPUT, "option --adapter", NULL,
                            "at most %d adapters, got %d", INFER_MAX_ADAPTERS, o->n_adapters);
    cpu_set_threads(o->threads);
    int gguf = gguf_is_file(o->model_dir); /* a GGUF file holds the model and its vocabulary */
    ft_status st = gguf ? FT_OK : model_dir_check(o->model_dir, err);
    model_load_options load = o->load;
    if (!st && !gguf && !load.quant && !load.dtype && checkpoint_is_bf16(o->model_dir))
        load.quant = "bf16";
    if (!st) st = model_load_with(o->model_dir, &load, &s->m, err);
    if (st) return st;
    for (int i = 0; i < o->n_adapters && !st; i++) {
        char dir[4096];
        float w;
        if (!(st = adapter_spec(o->adapters[i], dir, sizeof dir, &w, err)) &&
            !(st = lora_load_peft(&s->m.cfg, dir, &s->ls[i], err))) {
            s->ad[i] = (infer_adapter){s->ls[i], w};
            s->n_ad = i + 1;
        }
    }
    if (!st) st = gen_defaults_load(o->model_dir, &s->gd, err);
    char tpath[4200];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", o->model_dir);
    /* a GGUF file's vocabulary is its tokenizer.ggml.* keys, which a file may lack */
    int have_tok = gguf ? gguf_has_vocab(o->model_dir) : access(tpath, R_OK) == 0;
    if (!st && o->need_tokenizer && !have_tok && gguf) {
        char w[4400];
        snprintf(w, sizeof w, "%s: key \"tokenizer.ggml.model\"", o->model_dir);
        st = ft_error_set(err, FT_ERR_INPUT, w, "give token ids: --prompt-ids with --json",
                          "the file carries no vocabulary, which text needs");
    } else if (!st && o->need_tokenizer && !have_tok) {
        st =
            ft_error_set(err, FT_ERR_INPUT, tpath,
                         "copy the model's tokenizer files (tokenizer.json, tokenizer_config.json) "
                         "into the folder, or give token ids: --prompt-ids with --json",
                         "the model folder has no tokenizer.json, which text needs");
    }
    if (!st && have_tok) st = tok_load(o->model_dir, &s->tok, err);
    if (!st && o->need_template) {
        st = chat_template_args(o->template_args, o->n_template_args, &s->targs, err);
        if (!st) st = chat_template_load(o->model_dir, o->chat_template, &s->tpl, err);
        if (!st) find_end_of_turn(s);
    }
    if (st) infer_session_close(s);
    return st;
}

ft_status infer_session_start(infer_session *s, int ctx, kv_format kvf, ft_error *err) {
    ft_status st = infer_init(&s->im, &s->m, s->ad, s->n_ad, ctx, kvf, 0, err);
    s->started = !st;
    return st;
}

void infer_session_close(infer_session *s) {
    if (s->started) infer_free(&s->im);
    for (int i = 0; i < INFER_MAX_ADAPTERS; i++)
        if (s->ls[i]) lora_free(s->ls[i]);
    tok_free(s->tok);
    chat_template_free(s->tpl);
    cJSON_Delete(s->targs);
    model_free(&s->m);
    memset(s, 0, sizeof *s);
}

ft_status infer_session_render(const infer_session *s, const cJSON *messages, int32_t **ids,
                               size_t *n, ft_error *err) {
    chat_render r = {0};
    ft_status st = chat_template_render(s->tpl, messages, NULL, 1, s->targs, &r, err);
    if (!st) st = tok_encode(s->tok, r.text, r.len, 0, ids, n, err);
    chat_render_free(&r);
    return st;
}

ft_status infer_session_encode(const infer_session *s, const char *text, size_t len,
                               const char *where, int32_t **ids, size_t *n, ft_error *err) {
    ft_status st = tok_encode(s->tok, text, len, 1, ids, n, err);
    if (st && where && !strcmp(err->where, "text"))
        snprintf(err->where, sizeof err->where, "%s", where);
    return st;
}
