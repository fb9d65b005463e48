/*
 * cmd_generate.c: `ftune generate`: a completion of a prompt by a model folder (with LoRA
 * adapters, unmerged), streamed to stdout as it is decoded; the statistics (prompt tokens,
 * prefill and decode speed, peak memory, why it stopped) go to stderr.
 *
 * The prompt is text (--prompt, or --prompt-file: UTF-8, checked), encoded as transformers'
 * tokenizer(text) does (with the tokenizer's BOS ...), or rendered as a user turn through the
 * chat template (--apply-chat-template, with --system), encoded as apply_chat_template does; or
 * token ids (--prompt-ids, for models without a tokenizer). --json prints one JSON object
 * instead of the text; --dump-probs FILE writes every step's logits and the distribution the
 * token was taken from (after temperature, top-k, top-p, min-p, repetition penalty) as
 * safetensors, which the peer tests compare with transformers' processors.
 * Ctrl-C ends the generation after the current token (exit 130).
 */
#include "cli/gen_args.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --dump-probs: every step's raw logits and final distribution, and the chosen ids */
typedef struct dump {
    float *logits, *probs;
    int32_t *ids;
    int n, cap, V;
    int oom;
} dump;

static void on_step(void *user, int step, const float *logits, const float *probs, int32_t id) {
    dump *d = user;
    (void)step;
    if (d->oom) return;
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        float *l = realloc(d->logits, sizeof(float) * (size_t)cap * d->V);
        if (l) d->logits = l;
        float *p = l ? realloc(d->probs, sizeof(float) * (size_t)cap * d->V) : NULL;
        if (p) d->probs = p;
        int32_t *i = p ? realloc(d->ids, sizeof(int32_t) * (size_t)cap) : NULL;
        if (i) d->ids = i;
        if (!i) {
            d->oom = 1;
            return;
        }
        d->cap = cap;
    }
    memcpy(d->logits + (size_t)d->n * d->V, logits, sizeof(float) * (size_t)d->V);
    memcpy(d->probs + (size_t)d->n * d->V, probs, sizeof(float) * (size_t)d->V);
    d->ids[d->n++] = id;
}

static ft_status dump_write(const dump *d, const char *path, const int32_t *prompt, int n,
                            ft_error *err) {
    if (d->oom) return ft_error_set(err, FT_ERR_RUNTIME, path, NULL, "out of memory");
    st_writer *w = st_writer_new();
    int64_t sl[2] = {d->n, d->V}, si[1] = {d->n}, sp[1] = {n};
    ft_status st = FT_OK;
    if (d->n) {
        st = st_writer_add(w, "logits", ST_F32, 2, sl, d->logits, err);
        if (!st) st = st_writer_add(w, "probs", ST_F32, 2, sl, d->probs, err);
        if (!st) st = st_writer_add(w, "ids", ST_I32, 1, si, d->ids, err);
    }
    if (!st) st = st_writer_add(w, "prompt_ids", ST_I32, 1, sp, prompt, err);
    if (!st) st = st_writer_save(w, path, err);
    st_writer_free(w);
    return st;
}

/* "1, 2 3" -> ids */
static ft_status parse_ids(const char *s, int32_t **ids, size_t *n, ft_error *err) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(sizeof(int32_t) * cap);
    const char *p = s;
    while (v && *p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']')
            p++;
        if (!*p) break;
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > INT32_MAX) {
            free(v);
            return ft_error_set(err, FT_ERR_INPUT, "option --prompt-ids",
                                "e.g. --prompt-ids 1,15,27",
                                "expected token ids separated by commas or spaces at \"%.20s\"", p);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, sizeof(int32_t) * (cap *= 2));
            if (!nv) free(v);
            v = nv;
            if (!v) break;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    if (!v) return ft_error_set(err, FT_ERR_RUNTIME, NULL, NULL, "out of memory");
    *ids = v, *n = k;
    return FT_OK;
}

static void json_ids(cJSON *o, const char *key, const int32_t *ids, size_t n) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
}

typedef struct gen_args {
    gen_cli g;
    const char *prompt, *prompt_file, *prompt_ids, *dump_probs;
    int apply_template, json;
} gen_args;

/* The prompt's ids, from whichever of the prompt options was given. */
static ft_status prompt_ids(const gen_args *a, infer_session *s, int32_t **ids, size_t *n,
                            ft_error *err) {
    if (a->prompt_ids) return parse_ids(a->prompt_ids, ids, n, err);
    char *text = NULL;
    size_t len = 0;
    ft_status st = FT_OK;
    const char *where = "option --prompt";
    if (a->prompt_file) {
        if ((st = file_read_all(a->prompt_file, &text, &len, err))) return st;
        where = a->prompt_file;
    } else {
        len = strlen(a->prompt);
    }
    const char *t = text ? text : a->prompt;
    if (!a->apply_template) {
        st = infer_session_encode(s, t, len, where, ids, n, err);
    } else {
        /* the template's input is JSON: check the text is UTF-8 first, to name the file */
        int32_t *probe = NULL;
        size_t np = 0;
        st = infer_session_encode(s, t, len, where, &probe, &np, err);
        free(probe);
        cJSON *msgs = cJSON_CreateArray();
        if (a->g.system) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "system");
            cJSON_AddStringToObject(m, "content", a->g.system);
            cJSON_AddItemToArray(msgs, m);
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddItemToObject(m, "content", cJSON_CreateString(t));
        cJSON_AddItemToArray(msgs, m);
        if (!st) st = infer_session_render(s, msgs, ids, n, err);
        cJSON_Delete(msgs);
    }
    free(text);
    return st;
}

static ft_status run(gen_args *a, int *interrupted, ft_error *err) {
    infer_session_options so;
    gen_cli_session(&a->g, a->apply_template, &so);
    so.need_tokenizer = !a->prompt_ids || !a->json;
    int kvf = kv_format_parse(a->g.kv_cache);
    if (kvf < 0)
        return ft_error_set(err, FT_ERR_INPUT, "option --kv-cache", "use fp32, bf16 or q8",
                            "unknown KV cache format \"%s\"", a->g.kv_cache);
    infer_session s;
    ft_status st = infer_session_open(&so, &s, err);
    if (st) return st;
    int32_t *ids = NULL;
    size_t n = 0;
    gen_options o = {0};
    int max_new = 0;
    dump d = {.V = s.m.cfg.V};
    gen_result r = {0};
    int32_t eos[GEN_MAX_EOS + 1];
    const char *stops[ARGS_LIST_MAX + 1];
    if ((st = gen_cli_sampling(&a->g, &s.gd, &o.sp, &max_new, err))) goto done;
    if ((st = prompt_ids(a, &s, &ids, &n, err))) goto done;
    int ctx = gen_cli_context(&a->g, &s, 0);
    if ((int)n > ctx) {
        st = ft_error_set(err, FT_ERR_INPUT, a->prompt_file ? a->prompt_file : "prompt",
                          "shorten the prompt (the model's context is max_position_embeddings "
                          "in config.json)",
                          "the prompt has %zu tokens; the model's context is %d", n, ctx);
        goto done;
    }
    /* the cache holds the prompt and the tokens fed back (the last one never is) */
    long need = (long)n + (max_new > 0 ? max_new - 1 : 0);
    if ((st = infer_session_start(&s, need < ctx ? (int)(need > 0 ? need : 1) : ctx, (kv_format)kvf,
                                  err)))
        goto done;
    int ne = 0;
    for (int i = 0; i < (a->g.ignore_eos ? 0 : s.gd.n_eos); i++)
        eos[ne++] = s.gd.eos[i];
    if (a->apply_template && s.eot >= 0) eos[ne++] = s.eot;
    int ns = 0;
    for (int i = 0; i < a->g.stops.n; i++)
        stops[ns++] = a->g.stops.v[i];
    if (a->apply_template && s.eot < 0 && s.eot_text[0]) stops[ns++] = s.eot_text;
    o.max_new_tokens = max_new, o.eos = eos, o.n_eos = ne, o.stops = stops, o.n_stops = ns;
    o.tok = s.tok, o.on_text = a->json ? NULL : gen_print_text, o.stop = &gen_stop_flag;
    if (a->dump_probs) o.on_step = on_step, o.user = &d;
    struct sigaction sa = {0};
    sa.sa_handler = gen_on_sigint;
    sigaction(SIGINT, &sa, NULL);
    st = generate_run(&s.im, ids, (int)n, &o, &r, err);
    signal(SIGINT, SIG_DFL);
    if (st) goto done;
    *interrupted = r.stop == GEN_INTERRUPTED;
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        json_ids(j, "prompt_ids", ids, n);
        json_ids(j, "ids", r.ids, (size_t)r.n);
        json_ids(j, "eos_ids", eos, (size_t)ne);
        if (s.tok) cJSON_AddStringToObject(j, "text", r.text ? r.text : "");
        cJSON_AddStringToObject(j, "stop", gen_stop_name(r.stop));
        char *txt = cJSON_PrintUnformatted(j);
        printf("%s\n", txt);
        free(txt);
        cJSON_Delete(j);
    } else if (r.len && r.text[r.len - 1] != '\n') {
        putchar('\n');
    }
    fflush(stdout);
    if (a->dump_probs) st = dump_write(&d, a->dump_probs, ids, (int)n, err);
    if (!a->g.quiet) {
        char wdesc[256];
        model_quant_describe(&s.m.quant, wdesc, sizeof wdesc);
        int fed = r.prompt_tokens - r.reused_tokens;
        fprintf(stderr,
                "ftune: prompt %d tokens, prefill %.1f tok/s; generated %d tokens, decode %.1f "
                "tok/s; stop: %s; %s; weights: %s; KV cache %s %.1f MB; peak memory %.0f MB\n",
                r.prompt_tokens, r.prefill_s > 0 ? fed / r.prefill_s : 0.0, r.n,
                r.decode_s > 0 && r.n > 1 ? (r.n - 1) / r.decode_s : 0.0, gen_stop_name(r.stop),
                o.sp.do_sample ? "sampled" : "greedy", wdesc, kv_format_name(s.im.kv.fmt),
                kv_cache_bytes(s.im.kv.fmt, s.im.kv.L, s.im.kv.Hkv, s.im.kv.D, s.im.kv.maxT) /
                    1048576.0,
                gen_peak_rss_mb());
    }
done:
    gen_result_free(&r);
    free(d.logits), free(d.probs), free(d.ids);
    free(ids);
    infer_session_close(&s);
    return st;
}

int cmd_generate(int argc, char **argv) {
    gen_args a = {0};
    opt_spec specs[48];
    int n = 0;
    specs[n++] = (opt_spec){"prompt", OPT_STR, &a.prompt, "TEXT", "the prompt"};
    specs[n++] = (opt_spec){"prompt-file", OPT_STR, &a.prompt_file, "FILE",
                            "read the prompt from a UTF-8 file"};
    specs[n++] =
        (opt_spec){"prompt-ids", OPT_STR, &a.prompt_ids, "IDS",
                   "the prompt as token ids (\"1,15,27\"), for models without a tokenizer"};
    specs[n++] = (opt_spec){"apply-chat-template", OPT_FLAG, &a.apply_template, NULL,
                            "render the prompt as a user turn through the chat template and stop "
                            "at its end of turn"};
    n += gen_cli_specs(&a.g, specs + n, 40);
    specs[n++] = (opt_spec){
        "json", OPT_FLAG, &a.json, NULL,
        "print one JSON object (prompt_ids, ids, eos_ids, text, stop) instead of the text"};
    specs[n++] = (opt_spec){"dump-probs", OPT_STR, &a.dump_probs, "FILE",
                            "write each step's logits and sampling distribution (safetensors)"};
    specs[n] = (opt_spec){0};
    const cmd_info info = {
        "generate", "ftune generate --model DIR [--adapter RUN] --prompt TEXT [options]",
        "Complete a prompt with a model (and LoRA adapters, unmerged), streaming the text to\n"
        "stdout; statistics go to stderr. Sampling follows transformers' generate() and the\n"
        "model's generation_config.json (docs/generate.md).",
        "  ftune generate --model SmolLM2-135M-Instruct --prompt \"Once upon a time\"\n"
        "  ftune generate --model DIR --adapter run --apply-chat-template --prompt \"Hi!\"\n"
        "  ftune generate --model DIR --adapter a:0.7 --adapter b:0.3 --prompt-file p.txt "
        "--temperature 0.7 --top-p 0.9 --seed 1"};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    int given = !!a.prompt + !!a.prompt_file + !!a.prompt_ids;
    if (!rc && (given != 1 || !a.g.model))
        rc =
            ft_error_set(&err, FT_ERR_INPUT, "generate", "run 'ftune generate --help'",
                         "--model and one of --prompt, --prompt-file or --prompt-ids are required");
    if (!rc && !a.apply_template && (a.g.system || a.g.chat_template || a.g.template_args.n))
        rc = ft_error_set(&err, FT_ERR_INPUT,
                          a.g.system          ? "option --system"
                          : a.g.chat_template ? "option --chat-template"
                                              : "option --template-arg",
                          "add --apply-chat-template",
                          "applies to the chat template, which is not used without "
                          "--apply-chat-template");
    if (!rc && a.prompt_ids && a.apply_template)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --apply-chat-template", NULL,
                          "renders text: give --prompt or --prompt-file, not --prompt-ids");
    int interrupted = 0;
    if (!rc) rc = run(&a, &interrupted, &err);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    return interrupted ? FT_ERR_INTERRUPTED : 0;
}
