/*
 * cmd_chat.c: `ftune chat`: a multi-turn conversation with a model (and LoRA adapters) through
 * its chat template.
 *
 * Every turn renders the whole history (with --system first) through the template with the
 * generation prompt, as apply_chat_template(add_generation_prompt=True) does, and encodes it;
 * the KV cache keeps the positions whose ids did not change, so a turn runs only its new part.
 * The answer ends at the template's end of turn (or an EOS id, a --stop string, the token
 * limit); its text (the generated ids decoded, special tokens skipped) joins the history.
 *
 * On a terminal: a line is a turn; /reset forgets the history, /exit (or Ctrl-D) ends; Ctrl-C
 * ends the answer being written, and at the prompt ends the session. When stdin is not a
 * terminal, each line is a JSON object {"content": "..."} (content "/reset" and "/exit" work
 * too) and each answer is one JSON line {"role": "assistant", "content", "prompt_tokens",
 * "reused_tokens", "new_tokens", "stop"} (and "prompt_ids" with --echo-ids), so it can be
 * scripted.
 */
#include "cli/gen_args.h"
#include "io/json.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cJSON *message(const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddItemToObject(m, "content", cJSON_CreateString(content));
    return m;
}

static cJSON *new_history(const char *system) {
    cJSON *h = cJSON_CreateArray();
    if (system) cJSON_AddItemToArray(h, message("system", system));
    return h;
}

typedef struct chat {
    gen_cli g;
    int echo_ids, json;
    infer_session s;
    gen_options o;
    int max_new, ctx;
    int32_t eos[GEN_MAX_EOS + 1];
    const char *stops[ARGS_LIST_MAX + 1];
    cJSON *history;
} chat;

/* The answer's text for the history: its ids decoded (special tokens skipped), cut before a
 * stop string when one ended it. */
static char *answer_text(const chat *c, const gen_result *r) {
    char *text = NULL;
    size_t len = 0;
    ft_error e;
    if (tok_decode(c->s.tok, r->ids, (size_t)r->n, 1, &text, &len, &e) != FT_OK) return NULL;
    if (r->stop == GEN_STOP_STRING)
        for (int i = 0; i < c->o.n_stops; i++) {
            char *at = strstr(text, c->o.stops[i]);
            if (at && *c->o.stops[i]) *at = 0;
        }
    return text;
}

/* One user turn: render, generate, add the answer to the history. */
static ft_status turn(chat *c, const char *content, ft_error *err) {
    cJSON_AddItemToArray(c->history, message("user", content));
    int32_t *ids = NULL;
    size_t n = 0;
    ft_status st = infer_session_render(&c->s, c->history, &ids, &n, err);
    if (!st && (int)n > c->ctx)
        st = ft_error_set(err, FT_ERR_INPUT, "conversation",
                          "start over with /reset, or raise --ctx",
                          "the conversation has %zu tokens; the context holds %d", n, c->ctx);
    gen_result r = {0};
    if (!st) {
        gen_options o = c->o; /* a full context ends the answer with stop "context" */
        o.on_text = c->json ? NULL : gen_print_text;
        st = generate_run(&c->s.im, ids, (int)n, &o, &r, err);
    }
    if (st) {
        cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1);
        free(ids);
        return st;
    }
    char *text = answer_text(c, &r);
    cJSON_AddItemToArray(c->history, message("assistant", text ? text : ""));
    if (c->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "role", "assistant");
        cJSON_AddItemToObject(j, "content", cJSON_CreateString(text ? text : ""));
        cJSON_AddNumberToObject(j, "prompt_tokens", r.prompt_tokens);
        cJSON_AddNumberToObject(j, "reused_tokens", r.reused_tokens);
        cJSON_AddNumberToObject(j, "new_tokens", r.n);
        cJSON_AddStringToObject(j, "stop", gen_stop_name(r.stop));
        if (c->echo_ids) {
            cJSON *a = cJSON_AddArrayToObject(j, "prompt_ids");
            for (size_t i = 0; i < n; i++)
                cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("\n");
        if (!c->g.quiet)
            fprintf(stderr, "[%d prompt tokens (%d reused), %d generated, %.1f tok/s, stop: %s]\n",
                    r.prompt_tokens, r.reused_tokens, r.n,
                    r.decode_s > 0 && r.n > 1 ? (r.n - 1) / r.decode_s : 0.0,
                    gen_stop_name(r.stop));
    }
    fflush(stdout);
    free(text);
    free(ids);
    gen_result_free(&r);
    return FT_OK;
}

/* The user's text of one input line (JSON mode: its "content"); NULL for a blank line. */
static ft_status line_content(const chat *c, char *line, long lineno, char **content, cJSON **j,
                              ft_error *err) {
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = 0;
    *content = NULL, *j = NULL;
    if (!c->json) {
        *content = line;
        return FT_OK;
    }
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) return FT_OK;
    char where[64];
    snprintf(where, sizeof where, "stdin:%ld", lineno);
    ft_status st = json_parse(line, len, where, j, err);
    if (st) return st;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(*j, "content");
    if (!cJSON_IsString(ct)) {
        cJSON_Delete(*j);
        *j = NULL;
        return ft_error_set(err, FT_ERR_INPUT, where,
                            "each line is one JSON object: {\"content\": \"...\"}",
                            "field \"content\" (a string) is missing");
    }
    *content = ct->valuestring;
    return FT_OK;
}

static ft_status session_loop(chat *c, ft_error *err) {
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ft_status st = FT_OK;
    while (!st) {
        if (!c->json) {
            printf("> ");
            fflush(stdout);
        }
        gen_stop_flag = 0;
        errno = 0;
        if (getline(&line, &cap, stdin) < 0) {
            if (!c->json) printf("\n");
            break; /* end of input, or Ctrl-C at the prompt */
        }
        lineno++;
        char *content;
        cJSON *j;
        if ((st = line_content(c, line, lineno, &content, &j, err))) break;
        if (!content) continue;
        if (!strcmp(content, "/exit")) {
            cJSON_Delete(j);
            break;
        }
        if (!strcmp(content, "/reset")) {
            cJSON_Delete(c->history);
            c->history = new_history(c->g.system);
            infer_truncate(&c->s.im, 0);
            if (c->json) printf("{\"reset\": true}\n");
            fflush(stdout);
        } else if (*content || c->json) {
            st = turn(c, content, err);
            if (st == FT_ERR_INPUT && !c->json) { /* a terminal session goes on */
                ft_error_print(err, stderr);
                st = FT_OK;
            }
        }
        cJSON_Delete(j);
    }
    free(line);
    return st;
}

int cmd_chat(int argc, char **argv) {
    chat c = {0};
    opt_spec specs[48];
    int n = gen_cli_specs(&c.g, specs, 44);
    specs[n++] = (opt_spec){"echo-ids", OPT_FLAG, &c.echo_ids, NULL,
                            "JSON mode: add each turn's prompt ids to its answer line"};
    specs[n] = (opt_spec){0};
    args_find(specs, "ctx")->help =
        "context in tokens: the KV cache's positions (0: max_position_embeddings, at most 4096)";
    const cmd_info info = {
        "chat", "ftune chat --model DIR [--adapter RUN] [options]",
        "Talk with a model through its chat template. On a terminal a line is a turn (/reset,\n"
        "/exit; Ctrl-C ends an answer). Otherwise each stdin line is {\"content\": \"...\"} and "
        "each\n"
        "answer one JSON line.",
        "  ftune chat --model SmolLM2-135M-Instruct --adapter run\n"
        "  echo '{\"content\": \"Hi!\"}' | ftune chat --model DIR --system \"Be brief.\""};
    ft_error err = {0};
    int rc = args_parse(argc, argv, &info, specs, &err);
    if (rc == -1) return 0;
    if (!rc && !c.g.model)
        rc = ft_error_set(&err, FT_ERR_INPUT, "chat", "run 'ftune chat --help'",
                          "--model is required");
    int kvf = kv_format_parse(c.g.kv_cache);
    if (!rc && kvf < 0)
        rc = ft_error_set(&err, FT_ERR_INPUT, "option --kv-cache", "use fp32, bf16 or q8",
                          "unknown KV cache format \"%s\"", c.g.kv_cache);
    if (rc) {
        ft_error_print(&err, stderr);
        return rc;
    }
    c.json = !isatty(0);
    infer_session_options so;
    gen_cli_session(&c.g, 1, &so);
    so.need_tokenizer = 1;
    ft_status st = infer_session_open(&so, &c.s, &err);
    int opened = !st;
    if (!st) st = gen_cli_sampling(&c.g, &c.s.gd, &c.o.sp, &c.max_new, &err);
    if (!st) {
        c.ctx = gen_cli_context(&c.g, &c.s, 4096);
        st = infer_session_start(&c.s, c.ctx, (kv_format)kvf, &err);
    }
    if (!st) {
        int ne = 0, ns = 0;
        for (int i = 0; i < (c.g.ignore_eos ? 0 : c.s.gd.n_eos); i++)
            c.eos[ne++] = c.s.gd.eos[i];
        if (c.s.eot >= 0) c.eos[ne++] = c.s.eot;
        for (int i = 0; i < c.g.stops.n; i++)
            c.stops[ns++] = c.g.stops.v[i];
        if (c.s.eot < 0 && c.s.eot_text[0]) c.stops[ns++] = c.s.eot_text;
        c.o.max_new_tokens = c.max_new, c.o.eos = c.eos, c.o.n_eos = ne;
        c.o.stops = c.stops, c.o.n_stops = ns, c.o.tok = c.s.tok, c.o.stop = &gen_stop_flag;
        c.history = new_history(c.g.system);
        struct sigaction sa = {0};
        sa.sa_handler = gen_on_sigint; /* no SA_RESTART: Ctrl-C at the prompt ends the read */
        sigaction(SIGINT, &sa, NULL);
        st = session_loop(&c, &err);
        signal(SIGINT, SIG_DFL);
    }
    cJSON_Delete(c.history);
    if (opened) infer_session_close(&c.s);
    if (st) ft_error_print(&err, stderr);
    return st;
}
